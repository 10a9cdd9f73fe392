// Who wraps key material, from the configuration: the local master key (the embedded default),
// AWS KMS, or a PKCS#11 token.
import { readFileSync } from 'node:fs';
import type { Config } from '../config.ts';
import { AwsKmsKeyEncryption } from './aws-kms.ts';
import type { KeyEncryptionProvider } from './key-encryption.ts';
import { LocalMasterKey } from './local-master-key.ts';
import { Pkcs11KeyEncryption } from './pkcs11.ts';

export type CustodyProvider = KeyEncryptionProvider & { check?(): Promise<void>; close?(): void };

export function keyEncryptionProvider(config: Config): CustodyProvider {
  if (config.KMS_PROVIDER === 'pkcs11') {
    return new Pkcs11KeyEncryption({
      library: config.PKCS11_LIBRARY!,
      ...(config.PKCS11_SLOT !== undefined ? { slot: config.PKCS11_SLOT } : { tokenLabel: config.PKCS11_TOKEN_LABEL! }),
      pin: readFileSync(config.PKCS11_PIN_FILE!, 'utf8').trim(),
      keyLabel: config.PKCS11_KEY_LABEL!,
    });
  }
  if (config.KMS_PROVIDER === 'aws') {
    return new AwsKmsKeyEncryption({ keyId: config.AWS_KMS_KEY_ID!, region: config.AWS_REGION!, ...(config.AWS_KMS_ENDPOINT ? { endpoint: config.AWS_KMS_ENDPOINT } : {}) });
  }
  return LocalMasterKey.load(config.MASTER_KEY_FILE, { create: true });
}
