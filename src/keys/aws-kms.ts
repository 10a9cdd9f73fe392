// The `aws` key-encryption provider: data keys come from AWS KMS (GenerateDataKey, AES_256) and are
// unwrapped by KMS Decrypt. The plaintext data key is only ever used locally (envelope.ts seals the
// secret with AES-256-GCM and wipes it); what is stored is the KMS CiphertextBlob, with the key id
// that made it. The encryption context ({ purpose, kid } from the caller) is sent to KMS with both
// calls, so KMS refuses to unwrap a blob under any other context — and records it in CloudTrail.
//
// The SDK (@aws-sdk/client-kms and the @smithy/@aws-sdk packages under it, some 20 MB of memory in
// a process of its own) is imported at the first KMS call, not with this module: a server with
// another KMS_PROVIDER imports this module through the custody factory but never loads the SDK.
import type { KMSClient, KMSClientConfig } from '@aws-sdk/client-kms';
import { IdpError } from '../errors.ts';
import { parseWrappedDataKey, type DataKey, type EncryptionContext, type KeyEncryptionProvider } from './key-encryption.ts';

export class KmsError extends IdpError {
  constructor(message: string, cause?: unknown) {
    super('ERR_KMS', message, { status: 500, expose: false, cause });
    this.name = 'KmsError';
  }
}

export interface AwsKmsOptions {
  /** Key id, key ARN, alias name ("alias/…") or alias ARN of a symmetric KMS key. */
  keyId: string;
  region: string;
  /** A KMS endpoint other than the regional default (a VPC endpoint, FIPS endpoint, or a test server). */
  endpoint?: string;
  /** Static credentials; when omitted the SDK's default provider chain applies (env, profile, IMDS, …). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Connection, request and socket timeout of each attempt, in milliseconds (default 5000). */
  timeoutMs?: number;
  /** Attempts per operation, the first included (default 2). */
  maxAttempts?: number;
}

interface WrappedDataKey {
  v: 1;
  /** The KMS key that made the blob (the ARN KMS reports, or the configured key id). */
  keyId: string;
  /** The KMS CiphertextBlob, base64. */
  blob: string;
}

const DATA_KEY_BYTES = 32;

type KmsSdk = typeof import('@aws-sdk/client-kms');
let sdk: Promise<KmsSdk> | undefined;

/** The SDK, imported once per process at the first call that needs it. */
function loadSdk(): Promise<KmsSdk> {
  sdk ??= import('@aws-sdk/client-kms').catch((error: unknown) => {
    sdk = undefined;
    throw new KmsError(`the AWS SDK (@aws-sdk/client-kms) could not be loaded: ${describe(error)}`, error);
  });
  return sdk;
}

/** Names the failure without its payload: the SDK error's name (the KMS `__type`) or its errno code. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as NodeJS.ErrnoException).code;
  const parts = error.name === 'Error' && typeof code === 'string' ? [code] : [error.name];
  if (typeof code === 'string' && !parts.includes(code)) parts.push(code);
  // KMS and network error messages name keys and addresses, never key material; they are kept
  // (cut short) because "Key ... does not exist" or "connect ECONNREFUSED ..." is what an operator needs.
  // KMS sends no message with some errors (InvalidCiphertextException); the SDK then says "UnknownError".
  const message = error.message === 'UnknownError' ? '' : error.message.length > 300 ? `${error.message.slice(0, 300)}…` : error.message;
  return message ? `${parts.join(' ')}: ${message}` : parts.join(' ');
}

/** Copies a key the SDK handed out into a Buffer we own, and zeroes the SDK's array. */
function takeKey(bytes: Uint8Array | undefined, operation: string): Buffer {
  if (!bytes || bytes.length !== DATA_KEY_BYTES) {
    const length = bytes?.length ?? 0;
    bytes?.fill(0);
    throw new KmsError(`KMS ${operation} returned a data key of ${length} bytes, expected ${DATA_KEY_BYTES}`);
  }
  const copy = Buffer.alloc(DATA_KEY_BYTES);
  copy.set(bytes);
  bytes.fill(0);
  return copy;
}

export class AwsKmsKeyEncryption implements KeyEncryptionProvider {
  readonly name = 'aws';
  readonly keyId: string;
  readonly #config: KMSClientConfig;
  /** Made at the first call, with the SDK. */
  #client: Promise<{ sdk: KmsSdk; client: KMSClient }> | undefined;

  constructor(options: AwsKmsOptions) {
    if (!options.keyId) throw new KmsError('AWS KMS key id is empty');
    if (!options.region) throw new KmsError('AWS KMS region is empty');
    this.keyId = options.keyId;
    const timeoutMs = options.timeoutMs ?? 5000;
    const config: KMSClientConfig = {
      region: options.region,
      maxAttempts: options.maxAttempts ?? 2,
      requestHandler: { connectionTimeout: timeoutMs, requestTimeout: timeoutMs, socketTimeout: timeoutMs, throwOnRequestTimeout: true },
    };
    if (options.endpoint !== undefined) config.endpoint = options.endpoint;
    if (options.credentials !== undefined) config.credentials = { ...options.credentials };
    this.#config = config;
  }

  /** The SDK and this provider's client, both made at the first call. */
  #kms(): Promise<{ sdk: KmsSdk; client: KMSClient }> {
    this.#client ??= loadSdk().then(
      (loaded) => ({ sdk: loaded, client: new loaded.KMSClient(this.#config) }),
      (error: unknown) => {
        this.#client = undefined;
        throw error;
      },
    );
    return this.#client;
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const { sdk: { GenerateDataKeyCommand }, client } = await this.#kms();
    let response;
    try {
      response = await client.send(new GenerateDataKeyCommand({ KeyId: this.keyId, KeySpec: 'AES_256', EncryptionContext: { ...context } }));
    } catch (error) {
      throw new KmsError(`KMS GenerateDataKey failed for key ${this.keyId}: ${describe(error)}`, error);
    }
    const plaintext = takeKey(response.Plaintext, 'GenerateDataKey');
    if (!response.CiphertextBlob || response.CiphertextBlob.length === 0) {
      plaintext.fill(0);
      throw new KmsError('KMS GenerateDataKey returned no CiphertextBlob');
    }
    const wrapped: WrappedDataKey = { v: 1, keyId: response.KeyId ?? this.keyId, blob: Buffer.from(response.CiphertextBlob).toString('base64') };
    return { plaintext, wrapped: JSON.stringify(wrapped) };
  }

  async decryptDataKey(wrapped: string, context: EncryptionContext): Promise<Buffer> {
    const parsed = parseWrappedDataKey<WrappedDataKey>(wrapped, (message) => new KmsError(message));
    if (parsed === null || typeof parsed !== 'object' || parsed.v !== 1 || typeof parsed.keyId !== 'string' || typeof parsed.blob !== 'string' || !parsed.keyId || !parsed.blob) {
      throw new KmsError('wrapped data key is not a version 1 AWS KMS data key');
    }
    const { sdk: { DecryptCommand }, client } = await this.#kms();
    let response;
    try {
      response = await client.send(
        new DecryptCommand({ CiphertextBlob: Buffer.from(parsed.blob, 'base64'), KeyId: parsed.keyId, EncryptionContext: { ...context } }),
      );
    } catch (error) {
      throw new KmsError(`KMS Decrypt failed for key ${parsed.keyId}: ${describe(error)}`, error);
    }
    return takeKey(response.Plaintext, 'Decrypt');
  }

  /** Readiness: the key exists, is reachable with these credentials, and is enabled. */
  async check(): Promise<void> {
    const { sdk: { DescribeKeyCommand }, client } = await this.#kms();
    let response;
    try {
      response = await client.send(new DescribeKeyCommand({ KeyId: this.keyId }));
    } catch (error) {
      throw new KmsError(`KMS DescribeKey failed for key ${this.keyId}: ${describe(error)}`, error);
    }
    const metadata = response.KeyMetadata;
    if (!metadata) throw new KmsError(`KMS DescribeKey returned no metadata for key ${this.keyId}`);
    if (metadata.Enabled === false || (metadata.KeyState !== undefined && metadata.KeyState !== 'Enabled')) {
      throw new KmsError(`KMS key ${this.keyId} is not enabled (state ${metadata.KeyState ?? 'unknown'})`);
    }
    if (metadata.KeyUsage !== undefined && metadata.KeyUsage !== 'ENCRYPT_DECRYPT') {
      throw new KmsError(`KMS key ${this.keyId} has key usage ${metadata.KeyUsage}, not ENCRYPT_DECRYPT`);
    }
  }

  /** Closes the SDK's connection pool, if a call made one. */
  close(): void {
    void this.#client?.then(({ client }) => client.destroy(), () => undefined);
  }
}
