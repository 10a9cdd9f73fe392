// Envelope encryption: each secret gets its own data key from the KeyEncryptionProvider; the
// secret is sealed locally with AES-256-GCM and only the wrapped data key is kept beside it.
import { IdpError } from '../errors.ts';
import { open, seal, type Sealed } from './aes-gcm.ts';
import { canonicalContext, type EncryptionContext, type KeyEncryptionProvider } from './key-encryption.ts';

interface Envelope extends Sealed {
  v: 1;
  provider: string;
  dataKey: string;
}

export class EnvelopeError extends IdpError {
  constructor(message: string, cause?: unknown) {
    super('ERR_ENVELOPE', message, { status: 500, expose: false, cause });
    this.name = 'EnvelopeError';
  }
}

export async function encryptEnvelope(kms: KeyEncryptionProvider, plaintext: Buffer, context: EncryptionContext): Promise<string> {
  const dataKey = await kms.generateDataKey(context);
  try {
    const envelope: Envelope = { v: 1, provider: kms.name, dataKey: dataKey.wrapped, ...seal(dataKey.plaintext, plaintext, canonicalContext(context)) };
    return JSON.stringify(envelope);
  } finally {
    dataKey.plaintext.fill(0);
  }
}

export async function decryptEnvelope(kms: KeyEncryptionProvider, stored: string, context: EncryptionContext): Promise<Buffer> {
  let envelope: Envelope;
  try {
    envelope = JSON.parse(stored) as Envelope;
  } catch (error) {
    throw new EnvelopeError('stored envelope is not valid JSON', error);
  }
  if (envelope.v !== 1) throw new EnvelopeError(`unsupported envelope version ${String(envelope.v)}`);
  if (envelope.provider !== kms.name) throw new EnvelopeError(`envelope was made by key provider "${envelope.provider}", configured is "${kms.name}"`);
  const key = await kms.decryptDataKey(envelope.dataKey, context);
  try {
    return open(key, envelope, canonicalContext(context));
  } catch (error) {
    throw new EnvelopeError('envelope failed authentication (tampered, or wrong encryption context)', error);
  } finally {
    key.fill(0);
  }
}
