// The key-wrapping seam. A provider hands out data keys the way a KMS does (AWS GenerateDataKey /
// Decrypt): a fresh plaintext key for local AES-256-GCM use, plus that key wrapped by a key the
// provider keeps. The encryption context is bound to the wrapped key and must match to unwrap it.
export type EncryptionContext = Readonly<Record<string, string>>;

export interface DataKey {
  /** 32 bytes; the caller wipes it after use. */
  plaintext: Buffer;
  /** Opaque to the caller; stored beside the ciphertext. */
  wrapped: string;
}

export interface KeyEncryptionProvider {
  readonly name: string;
  generateDataKey(context: EncryptionContext): Promise<DataKey>;
  decryptDataKey(wrapped: string, context: EncryptionContext): Promise<Buffer>;
}

/** Stable serialisation of an encryption context, used as AES-GCM additional data. */
export function canonicalContext(context: EncryptionContext): Buffer {
  const sorted = Object.keys(context)
    .sort()
    .map((k) => [k, context[k]]);
  return Buffer.from(JSON.stringify(sorted), 'utf8');
}

/** Parses a provider's stored wrapped data key; malformed JSON becomes the provider's own error. */
export function parseWrappedDataKey<T>(wrapped: string, fail: (message: string) => Error): T {
  try {
    return JSON.parse(wrapped) as T;
  } catch {
    throw fail('wrapped data key is not valid JSON');
  }
}
