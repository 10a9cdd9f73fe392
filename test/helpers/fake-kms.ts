// A STAND-IN FOR AWS KMS, for tests only. AWS cannot be reached from this machine and there is no
// KMS emulator in npm or Debian, so this is a small node:http server on 127.0.0.1 that speaks the
// AWS KMS wire protocol the real SDK uses — JSON 1.1: `POST /`, `Content-Type:
// application/x-amz-json-1.1`, `X-Amz-Target: TrentService.<Operation>`, JSON bodies with base64
// blobs, errors as HTTP 400 with `{"__type": "...", "message": "..."}` — for GenerateDataKey,
// Decrypt and DescribeKey.
//
// It behaves like KMS where the provider's safety depends on it: one random 256-bit master key per
// key id; a CiphertextBlob is AES-256-GCM over the data key with the canonical encryption context
// (and the key id in the blob's header) as additional data, so a wrong context or any tampered byte
// fails with InvalidCiphertextException, and a blob presented with another KeyId fails with
// IncorrectKeyException. It checks that every request carries a SigV4 Authorization header for
// the configured access key id (the signature itself is not verified), and counts calls per operation.
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type KmsOperation = 'GenerateDataKey' | 'Decrypt' | 'DescribeKey';
const operations: readonly KmsOperation[] = ['GenerateDataKey', 'Decrypt', 'DescribeKey'];

export interface FakeKmsRequest {
  operation: string;
  keyId: string | undefined;
  encryptionContext: Record<string, string> | undefined;
  authorization: string | undefined;
}

export interface FakeKms {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The key id created at start. */
  keyId: string;
  /** The ARN KMS reports for a key id. */
  arn(keyId: string): string;
  /** Adds another key; returns its id. */
  createKey(): string;
  /** Calls that reached an operation (after the signature check), per operation. */
  calls: Record<KmsOperation, number>;
  /** Every request received, in order (blobs left out). */
  requests: FakeKmsRequest[];
  /** When set, requests are accepted and never answered (a hung KMS). */
  stall: boolean;
  resetCounts(): void;
  close(): Promise<void>;
}

class KmsFault extends Error {
  readonly type: string;
  constructor(type: string, message: string) {
    super(message);
    this.type = type;
  }
}

const BLOB_VERSION = 1;
const ACCOUNT = '111122223333';

function canonical(context: Record<string, string>): Buffer {
  return Buffer.from(JSON.stringify(Object.entries(context).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))), 'utf8');
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function contextOf(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new KmsFault('ValidationException', 'EncryptionContext must be a map');
  for (const v of Object.values(value)) if (typeof v !== 'string') throw new KmsFault('ValidationException', 'EncryptionContext values must be strings');
  return value as Record<string, string>;
}

function base64Of(value: unknown, field: string): Buffer {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new KmsFault('SerializationException', `${field} must be base64`);
  return Buffer.from(value, 'base64');
}

export async function startFakeKms(options: { region?: string; accessKeyId?: string; secretAccessKey?: string } = {}): Promise<FakeKms> {
  const region = options.region ?? 'eu-west-1';
  const accessKeyId = options.accessKeyId ?? 'AKIAFAKEKMSTEST00001';
  const secretAccessKey = options.secretAccessKey ?? randomBytes(30).toString('base64');
  const masterKeys = new Map<string, Buffer>();
  const arn = (id: string) => `arn:aws:kms:${region}:${ACCOUNT}:key/${id}`;
  const createKey = () => {
    const id = randomUUID();
    masterKeys.set(id, randomBytes(32));
    return id;
  };

  /** Accepts a bare key id or its ARN, like KMS. */
  const resolve = (keyId: unknown): string => {
    if (typeof keyId !== 'string' || keyId === '') throw new KmsFault('ValidationException', 'KeyId is required');
    const id = keyId.startsWith(`arn:aws:kms:${region}:${ACCOUNT}:key/`) ? keyId.slice(keyId.lastIndexOf('/') + 1) : keyId;
    if (!masterKeys.has(id)) throw new KmsFault('NotFoundException', `Key '${arn(keyId)}' does not exist`);
    return id;
  };

  // Blob: version (1) | key id length (1) | key id | iv (12) | tag (16) | encrypted data key.
  // The header (version and key id) is additional data too, so it cannot be altered either.
  const wrap = (id: string, dataKey: Buffer, context: Record<string, string>): Buffer => {
    const header = Buffer.concat([Buffer.from([BLOB_VERSION, Buffer.byteLength(id)]), Buffer.from(id, 'utf8')]);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', masterKeys.get(id)!, iv);
    cipher.setAAD(Buffer.concat([header, canonical(context)]));
    const data = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return Buffer.concat([header, iv, cipher.getAuthTag(), data]);
  };
  const unwrap = (blob: Buffer, context: Record<string, string>, requestedKeyId: unknown): { id: string; dataKey: Buffer } => {
    const invalid = () => new KmsFault('InvalidCiphertextException', '');
    if (blob.length < 2 || blob[0] !== BLOB_VERSION) throw invalid();
    const idLength = blob[1]!;
    const headerLength = 2 + idLength;
    if (blob.length < headerLength + 12 + 16 + 1) throw invalid();
    const id = blob.subarray(2, headerLength).toString('utf8');
    const master = masterKeys.get(id);
    if (!master) throw invalid();
    if (requestedKeyId !== undefined && resolve(requestedKeyId) !== id) {
      throw new KmsFault('IncorrectKeyException', 'The key ID in the request does not identify a CMK that can perform this operation.');
    }
    const iv = blob.subarray(headerLength, headerLength + 12);
    const tag = blob.subarray(headerLength + 12, headerLength + 28);
    try {
      const decipher = createDecipheriv('aes-256-gcm', master, iv);
      decipher.setAAD(Buffer.concat([blob.subarray(0, headerLength), canonical(context)]));
      decipher.setAuthTag(tag);
      return { id, dataKey: Buffer.concat([decipher.update(blob.subarray(headerLength + 28)), decipher.final()]) };
    } catch {
      throw invalid();
    }
  };

  const handlers: Record<KmsOperation, (input: Record<string, unknown>) => Record<string, unknown>> = {
    GenerateDataKey(input) {
      const id = resolve(input.KeyId);
      if (input.KeySpec !== undefined && input.NumberOfBytes !== undefined) throw new KmsFault('ValidationException', 'KeySpec and NumberOfBytes are mutually exclusive');
      const length = input.KeySpec === 'AES_256' ? 32 : input.KeySpec === 'AES_128' ? 16 : typeof input.NumberOfBytes === 'number' ? input.NumberOfBytes : 0;
      if (length < 1 || length > 1024) throw new KmsFault('ValidationException', 'KeySpec or NumberOfBytes is required');
      const context = contextOf(input.EncryptionContext);
      const dataKey = randomBytes(length);
      const blob = wrap(id, dataKey, context);
      return { KeyId: arn(id), Plaintext: dataKey.toString('base64'), CiphertextBlob: blob.toString('base64') };
    },
    Decrypt(input) {
      const context = contextOf(input.EncryptionContext);
      const { id, dataKey } = unwrap(base64Of(input.CiphertextBlob, 'CiphertextBlob'), context, input.KeyId);
      return { KeyId: arn(id), Plaintext: dataKey.toString('base64'), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
    },
    DescribeKey(input) {
      const id = resolve(input.KeyId);
      return {
        KeyMetadata: {
          AWSAccountId: ACCOUNT,
          KeyId: id,
          Arn: arn(id),
          CreationDate: 1_700_000_000,
          Enabled: true,
          KeyState: 'Enabled',
          KeyUsage: 'ENCRYPT_DECRYPT',
          KeySpec: 'SYMMETRIC_DEFAULT',
          CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
          EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
          KeyManager: 'CUSTOMER',
          Origin: 'AWS_KMS',
          MultiRegion: false,
          Description: 'fake-kms test key',
        },
      };
    },
  };

  const calls = { GenerateDataKey: 0, Decrypt: 0, DescribeKey: 0 } as Record<KmsOperation, number>;
  const requests: FakeKmsRequest[] = [];
  const sockets = new Set<Socket>();

  const send = (response: ServerResponse, status: number, body: Record<string, unknown>, errorType?: string) => {
    const text = JSON.stringify(body);
    const headers: Record<string, string | number> = {
      'content-type': 'application/x-amz-json-1.1',
      'content-length': Buffer.byteLength(text),
      'x-amzn-requestid': randomUUID(),
    };
    if (errorType) headers['x-amzn-errortype'] = errorType;
    response.writeHead(status, headers);
    response.end(text);
  };
  const fail = (response: ServerResponse, type: string, message: string) => send(response, 400, { __type: type, message }, type);

  const fake: FakeKms = {
    endpoint: '',
    region,
    accessKeyId,
    secretAccessKey,
    keyId: createKey(),
    arn,
    createKey,
    calls,
    requests,
    stall: false,
    resetCounts() {
      for (const op of operations) calls[op] = 0;
      requests.length = 0;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };

  const server: Server = createServer(async (request, response) => {
    const body = await readBody(request);
    const target = request.headers['x-amz-target'];
    const authorization = request.headers.authorization;
    let input: Record<string, unknown> = {};
    let parsed = true;
    try {
      const value: unknown = body ? JSON.parse(body) : {};
      if (value === null || typeof value !== 'object' || Array.isArray(value)) parsed = false;
      else input = value as Record<string, unknown>;
    } catch {
      parsed = false;
    }
    const operation = typeof target === 'string' && target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : String(target);
    requests.push({
      operation,
      keyId: typeof input.KeyId === 'string' ? input.KeyId : undefined,
      encryptionContext: input.EncryptionContext as Record<string, string> | undefined,
      authorization,
    });
    if (fake.stall) return; // never answered; the socket is destroyed by close()

    if (request.method !== 'POST' || request.url !== '/') return fail(response, 'UnknownOperationException', `${request.method} ${request.url}`);
    if (request.headers['content-type'] !== 'application/x-amz-json-1.1') return fail(response, 'SerializationException', 'Content-Type must be application/x-amz-json-1.1');
    if (typeof authorization !== 'string' || !authorization.startsWith('AWS4-HMAC-SHA256 Credential=')) {
      return fail(response, 'MissingAuthenticationTokenException', 'Request is missing Authentication Token');
    }
    if (!authorization.startsWith(`AWS4-HMAC-SHA256 Credential=${accessKeyId}/`) || !authorization.includes(`/${region}/kms/aws4_request`)) {
      return fail(response, 'UnrecognizedClientException', 'The security token included in the request is invalid.');
    }
    if (!operations.includes(operation as KmsOperation)) return fail(response, 'UnknownOperationException', `unknown operation ${String(target)}`);
    if (!parsed) return fail(response, 'SerializationException', 'body is not a JSON object');
    calls[operation as KmsOperation] += 1;
    try {
      send(response, 200, handlers[operation as KmsOperation](input));
    } catch (error) {
      if (error instanceof KmsFault) return fail(response, error.type, error.message);
      send(response, 500, { __type: 'KMSInternalException', message: (error as Error).message }, 'KMSInternalException');
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((done, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => done());
  });
  const address = server.address();
  if (!address || typeof address !== 'object') throw new Error('fake KMS did not get a port');
  fake.endpoint = `http://127.0.0.1:${address.port}`;
  return fake;
}
