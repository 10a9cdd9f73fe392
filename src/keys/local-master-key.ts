// The embedded default key-encryption provider: a 256-bit master key in a file (keys/master.key).
// Data keys are wrapped with AES-256-GCM under it, bound to the encryption context.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { IdpError } from '../errors.ts';
import { open, seal, type Sealed } from './aes-gcm.ts';
import { canonicalContext, parseWrappedDataKey, type DataKey, type EncryptionContext, type KeyEncryptionProvider } from './key-encryption.ts';

export class MasterKeyError extends IdpError {
  constructor(message: string) {
    super('ERR_MASTER_KEY', message, { status: 500, expose: false });
    this.name = 'MasterKeyError';
  }
}

interface WrappedDataKey extends Sealed {
  v: 1;
  /** Which master key wrapped it: the first 16 hex digits of its SHA-256. */
  mk: string;
}

export class LocalMasterKey implements KeyEncryptionProvider {
  readonly name = 'local';
  readonly #key: Buffer;
  readonly #id: string;

  private constructor(key: Buffer) {
    this.#key = key;
    this.#id = createHash('sha256').update(key).digest('hex').slice(0, 16);
  }

  /** Reads the master key file, creating it (mode 0600) when `create` is set and it is missing. */
  static load(path: string, options: { create: boolean }): LocalMasterKey {
    let stat;
    try {
      stat = statSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new MasterKeyError(`cannot read master key ${path}: ${(error as Error).message}`);
      if (!options.create) throw new MasterKeyError(`master key ${path} does not exist`);
      return LocalMasterKey.#create(path);
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new MasterKeyError(`master key ${path} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}); run: chmod 600 ${path}`);
    }
    const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
    if (key.length !== 32) throw new MasterKeyError(`master key ${path} must hold 32 bytes in base64`);
    return new LocalMasterKey(key);
  }

  static #create(path: string): LocalMasterKey {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const key = randomBytes(32);
    // Written in full to a private temporary file, then linked into place: link() is atomic and
    // fails if the file exists, so a process starting at the same moment either wins or reads
    // the complete key of the winner, never a half-written file.
    const temporary = `${path}.${randomBytes(8).toString('hex')}.tmp`;
    const fd = openSync(temporary, 'wx', 0o600);
    try {
      writeSync(fd, `${key.toString('base64')}\n`);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(temporary, path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return LocalMasterKey.load(path, { create: false });
      throw new MasterKeyError(`cannot create master key ${path}: ${(error as Error).message}`);
    } finally {
      unlinkSync(temporary);
    }
    chmodSync(path, 0o600);
    return new LocalMasterKey(key);
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const plaintext = randomBytes(32);
    const wrapped: WrappedDataKey = { v: 1, mk: this.#id, ...seal(this.#key, plaintext, canonicalContext(context)) };
    return { plaintext, wrapped: JSON.stringify(wrapped) };
  }

  async decryptDataKey(wrapped: string, context: EncryptionContext): Promise<Buffer> {
    const parsed = parseWrappedDataKey<WrappedDataKey>(wrapped, (message) => new MasterKeyError(message));
    if (parsed.mk !== this.#id) throw new MasterKeyError(`data key was wrapped by master key ${parsed.mk}, not by this one (${this.#id})`);
    try {
      return open(this.#key, parsed, canonicalContext(context));
    } catch {
      throw new MasterKeyError('data key failed authentication (tampered, or wrong encryption context)');
    }
  }
}
