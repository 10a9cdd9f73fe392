// The `pkcs11` key-encryption provider: data keys are wrapped by an AES-256 secret key that lives on
// a PKCS#11 token (an HSM, or SoftHSM2 in tests) and never leaves it. Each data key is 32 random
// bytes made here (node:crypto); the token encrypts them with CKM_AES_GCM, a fresh 96-bit IV and the
// canonical encryption context as additional authenticated data, so unwrapping under any other
// context, or with any byte of the IV or ciphertext changed, fails on the token (fail closed).
//
// The binding is pkcs11js (Node-API, so one build loads in every Node version). It is required
// lazily, on first use, so a server that does not use this provider never loads the native addon.
// Every PKCS#11 call is synchronous: an operation (C_EncryptInit + C_Encrypt) runs within one turn
// of the event loop and cannot interleave with another on the same session.
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { realpathSync } from 'node:fs';
import type { GcmParams, Handle, Mechanism, PKCS11, Template } from 'pkcs11js';
import { IdpError } from '../errors.ts';
import { canonicalContext, parseWrappedDataKey, type DataKey, type EncryptionContext, type KeyEncryptionProvider } from './key-encryption.ts';

type Pkcs11Js = typeof import('pkcs11js');

export class Pkcs11Error extends IdpError {
  constructor(message: string, cause?: unknown) {
    super('ERR_PKCS11', message, { status: 500, expose: false, cause });
    this.name = 'Pkcs11Error';
  }
}

export interface Pkcs11Options {
  /** Path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  library: string;
  /** Slot ID as the token reports it (softhsm2-util --show-slots, pkcs11-tool -L). Give this or tokenLabel. */
  slot?: number;
  /** Label of the token. Give this or slot. */
  tokenLabel?: string;
  /** User PIN of the token. */
  pin: string;
  /** CKA_LABEL of the AES-256 secret key that wraps data keys. */
  keyLabel: string;
  /**
   * Accept a wrapping key whose CKA_EXTRACTABLE is true (default false: refused). Some HSM clusters
   * replicate keys by wrapping them, which needs it; the key must still be CKA_SENSITIVE.
   */
  allowExtractableKey?: boolean;
}

interface WrappedDataKey {
  v: 1;
  /** CKA_LABEL of the token key that wrapped it. */
  label: string;
  /** 12-byte GCM IV, base64url. */
  iv: string;
  /** Encrypted data key followed by the 16-byte GCM tag, base64url. */
  data: string;
}

const DATA_KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

// ---------------------------------------------------------------------------------------------
// A PKCS#11 module is process-wide state: C_Initialize once, C_Finalize once, and login state is
// shared by every session the process has on a token. Providers on the same module share one
// initialisation, counted, and finalised when the last one closes.

interface LoadedLibrary {
  readonly path: string;
  readonly lib: Pkcs11Js;
  readonly module: PKCS11;
  refs: number;
  /** False when someone else in this process had initialised the module: then they finalise it. */
  readonly finalize: boolean;
}

const libraries = new Map<string, LoadedLibrary>();

function loadBinding(): Pkcs11Js {
  try {
    return createRequire(import.meta.url)('pkcs11js') as Pkcs11Js;
  } catch (error) {
    throw new Pkcs11Error(
      `the pkcs11js native binding did not load (${describe(error)}); it is compiled by npm install, which needs python3, make and g++, and "pkcs11js": true in package.json allowScripts`,
      error,
    );
  }
}

function acquireLibrary(path: string): LoadedLibrary {
  let key = path;
  try {
    key = realpathSync(path);
  } catch {
    // load() below reports a missing library.
  }
  const existing = libraries.get(key);
  if (existing) {
    existing.refs += 1;
    return existing;
  }
  const lib = loadBinding();
  const module = new lib.PKCS11();
  try {
    module.load(path);
  } catch (error) {
    throw new Pkcs11Error(`cannot load PKCS#11 library ${path}: ${describe(error)}`, error);
  }
  let finalize = true;
  try {
    module.C_Initialize({ flags: lib.CKF_OS_LOCKING_OK });
  } catch (error) {
    if (codeOf(error) === lib.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      finalize = false;
    } else {
      closeQuietly(() => module.close());
      throw new Pkcs11Error(`C_Initialize of PKCS#11 library ${path} failed: ${describe(error)}`, error);
    }
  }
  const loaded: LoadedLibrary = { path: key, lib, module, refs: 1, finalize };
  libraries.set(key, loaded);
  return loaded;
}

function releaseLibrary(loaded: LoadedLibrary): void {
  loaded.refs -= 1;
  if (loaded.refs > 0) return;
  libraries.delete(loaded.path);
  if (loaded.finalize) closeQuietly(() => loaded.module.C_Finalize());
  closeQuietly(() => loaded.module.close());
}

// ---------------------------------------------------------------------------------------------

/** The numeric CKR_* code of a pkcs11js error, or undefined. */
function codeOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** Names a binding error without payload: "C_Login: CKR_PIN_INCORRECT". No PKCS#11 error carries key material. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const method = (error as { method?: unknown }).method;
  const message = error.message.length > 300 ? `${error.message.slice(0, 300)}…` : error.message;
  return typeof method === 'string' && method ? `${method}: ${message}` : message || error.name;
}

function closeQuietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // Closing is best effort: the handle may already be gone with the token or the session.
  }
}

function ulong(value: Buffer): bigint {
  return value.length >= 8 ? value.readBigUInt64LE(0) : BigInt(value.readUInt32LE(0));
}

function bool(value: Buffer): boolean {
  return value.length > 0 && value[0] !== 0;
}

interface OpenSession {
  readonly library: LoadedLibrary;
  readonly session: Handle;
  readonly key: Handle;
}

export class Pkcs11KeyEncryption implements KeyEncryptionProvider {
  readonly name = 'pkcs11';
  readonly library: string;
  readonly keyLabel: string;
  readonly #slot: number | undefined;
  readonly #tokenLabel: string | undefined;
  readonly #pin: string;
  readonly #allowExtractable: boolean;
  #state: OpenSession | undefined;
  #closed = false;

  constructor(options: Pkcs11Options) {
    if (!options.library) throw new Pkcs11Error('PKCS#11 library path is empty');
    if (!options.keyLabel) throw new Pkcs11Error('PKCS#11 key label is empty');
    if (typeof options.pin !== 'string' || options.pin === '') throw new Pkcs11Error('PKCS#11 PIN is empty');
    if ((options.slot === undefined) === (options.tokenLabel === undefined)) {
      throw new Pkcs11Error('PKCS#11 provider needs exactly one of slot and tokenLabel');
    }
    if (options.slot !== undefined && !(Number.isSafeInteger(options.slot) && options.slot >= 0)) {
      throw new Pkcs11Error(`PKCS#11 slot must be a non-negative integer, not ${String(options.slot)}`);
    }
    if (options.tokenLabel !== undefined && options.tokenLabel.trim() === '') throw new Pkcs11Error('PKCS#11 token label is empty');
    this.library = options.library;
    this.keyLabel = options.keyLabel;
    this.#slot = options.slot;
    this.#tokenLabel = options.tokenLabel?.trim();
    this.#pin = options.pin;
    this.#allowExtractable = options.allowExtractableKey ?? false;
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const aad = canonicalContext(context);
    const plaintext = randomBytes(DATA_KEY_BYTES);
    const iv = randomBytes(IV_BYTES);
    let data: Buffer;
    try {
      data = this.#withSession((state) => {
        const { module } = state.library;
        module.C_EncryptInit(state.session, this.#gcm(state.library.lib, iv, aad), state.key);
        return Buffer.from(module.C_Encrypt(state.session, plaintext, Buffer.alloc(DATA_KEY_BYTES + TAG_BYTES + 16)));
      });
    } catch (error) {
      plaintext.fill(0);
      if (error instanceof Pkcs11Error) throw error;
      throw new Pkcs11Error(`wrapping a data key on the token failed: ${describe(error)}`, error);
    }
    if (data.length !== DATA_KEY_BYTES + TAG_BYTES) {
      plaintext.fill(0);
      throw new Pkcs11Error(`token returned ${data.length} bytes for a wrapped data key, expected ${DATA_KEY_BYTES + TAG_BYTES}`);
    }
    const wrapped: WrappedDataKey = { v: 1, label: this.keyLabel, iv: iv.toString('base64url'), data: data.toString('base64url') };
    return { plaintext, wrapped: JSON.stringify(wrapped) };
  }

  async decryptDataKey(wrapped: string, context: EncryptionContext): Promise<Buffer> {
    const parsed = parseWrappedDataKey<WrappedDataKey>(wrapped, (message) => new Pkcs11Error(message));
    if (parsed === null || typeof parsed !== 'object' || parsed.v !== 1 || typeof parsed.label !== 'string' || typeof parsed.iv !== 'string' || typeof parsed.data !== 'string') {
      throw new Pkcs11Error('wrapped data key is not a version 1 PKCS#11 data key');
    }
    if (parsed.label !== this.keyLabel) {
      throw new Pkcs11Error(`data key was wrapped by token key "${parsed.label}", not by the configured "${this.keyLabel}"`);
    }
    const iv = Buffer.from(parsed.iv, 'base64url');
    const data = Buffer.from(parsed.data, 'base64url');
    if (iv.length !== IV_BYTES || data.length !== DATA_KEY_BYTES + TAG_BYTES) {
      throw new Pkcs11Error('wrapped data key has the wrong length (tampered or truncated)');
    }
    const aad = canonicalContext(context);
    const out = Buffer.alloc(DATA_KEY_BYTES + TAG_BYTES);
    try {
      const result = this.#withSession((state) => {
        const { module } = state.library;
        module.C_DecryptInit(state.session, this.#gcm(state.library.lib, iv, aad), state.key);
        try {
          return module.C_Decrypt(state.session, data, out);
        } catch (error) {
          // A session error is retried by #withSession; anything else from C_Decrypt here is the
          // token refusing the tag (SoftHSM says CKR_GENERAL_ERROR, the spec CKR_ENCRYPTED_DATA_INVALID).
          if (isSessionLost(state.library.lib, error)) throw error;
          throw new Pkcs11Error(`data key failed authentication on the token (tampered, or wrong encryption context): ${describe(error)}`, error);
        }
      });
      if (result.length !== DATA_KEY_BYTES) throw new Pkcs11Error(`token returned ${result.length} bytes for a data key, expected ${DATA_KEY_BYTES}`);
      const key = Buffer.alloc(DATA_KEY_BYTES);
      result.copy(key);
      return key;
    } catch (error) {
      if (error instanceof Pkcs11Error) throw error;
      throw new Pkcs11Error(`unwrapping a data key on the token failed: ${describe(error)}`, error);
    } finally {
      out.fill(0);
    }
  }

  /**
   * Set-up helper: creates the wrapping key on the token (AES-256, CKA_TOKEN, CKA_PRIVATE,
   * CKA_SENSITIVE, not extractable, encrypt/decrypt only) unless a key with this label is there.
   * Uses its own read/write session. Two processes racing here both end with the same single key.
   */
  async ensureKey(): Promise<{ created: boolean }> {
    if (this.#closed) throw new Pkcs11Error('PKCS#11 provider is closed');
    const library = acquireLibrary(this.library);
    const { lib, module } = library;
    let session: Handle | undefined;
    try {
      const slot = this.#findSlot(library);
      session = this.#call(`opening a read/write session on ${this.#tokenName()}`, () => module.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION));
      this.#login(library, session);
      const existing = this.#findKeys(library, session, 2);
      if (existing.length > 0) {
        const first = existing[0] as Handle;
        if (existing.length === 1) this.#checkKey(library, session, first);
        return { created: false };
      }
      const id = randomBytes(16);
      const template: Template = [
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_AES },
        { type: lib.CKA_VALUE_LEN, value: DATA_KEY_BYTES },
        { type: lib.CKA_LABEL, value: this.keyLabel },
        { type: lib.CKA_ID, value: id },
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_PRIVATE, value: true },
        { type: lib.CKA_SENSITIVE, value: true },
        { type: lib.CKA_EXTRACTABLE, value: false },
        { type: lib.CKA_ENCRYPT, value: true },
        { type: lib.CKA_DECRYPT, value: true },
        { type: lib.CKA_WRAP, value: false },
        { type: lib.CKA_UNWRAP, value: false },
        { type: lib.CKA_SIGN, value: false },
        { type: lib.CKA_VERIFY, value: false },
        { type: lib.CKA_DERIVE, value: false },
      ];
      const ours = this.#call(`generating key "${this.keyLabel}" on ${this.#tokenName()}`, () =>
        module.C_GenerateKey(session as Handle, { mechanism: lib.CKM_AES_KEY_GEN }, template),
      );
      // Another process may have created one at the same moment. Every racer keeps the key with
      // the smallest CKA_ID and destroys its own if that is not it, so one key remains.
      const all = this.#findKeys(library, session, 16);
      if (all.length > 1) {
        const ids = all.map((handle) => ({ handle, id: this.#attributes(library, session as Handle, handle, [lib.CKA_ID])[0] ?? Buffer.alloc(0) }));
        ids.sort((a, b) => Buffer.compare(a.id, b.id));
        if (!(ids[0] as { id: Buffer }).id.equals(id)) {
          closeQuietly(() => module.C_DestroyObject(session as Handle, ours));
          return { created: false };
        }
      }
      return { created: true };
    } finally {
      if (session !== undefined) closeQuietly(() => module.C_CloseSession(session as Handle));
      releaseLibrary(library);
    }
  }

  /** Closes the session and lets go of the PKCS#11 module. Idempotent; the provider is unusable after it. */
  close(): void {
    this.#closed = true;
    this.#drop();
  }

  // -------------------------------------------------------------------------------------------

  #gcm(lib: Pkcs11Js, iv: Buffer, aad: Buffer): Mechanism {
    const parameter: GcmParams = { type: lib.CK_PARAMS_GCM, iv, ivBits: IV_BYTES * 8, aad, tagBits: TAG_BYTES * 8 };
    return { mechanism: lib.CKM_AES_GCM, parameter };
  }

  /** Runs fn on the open session, opening it first; once more on a fresh session if the token dropped it. */
  #withSession<T>(fn: (state: OpenSession) => T): T {
    const state = this.#open();
    try {
      return fn(state);
    } catch (error) {
      if (!isSessionLost(state.library.lib, error)) throw error;
      this.#drop();
      return fn(this.#open());
    }
  }

  #open(): OpenSession {
    if (this.#closed) throw new Pkcs11Error('PKCS#11 provider is closed');
    if (this.#state) return this.#state;
    const library = acquireLibrary(this.library);
    const { lib, module } = library;
    let session: Handle | undefined;
    try {
      const slot = this.#findSlot(library);
      session = this.#call(`opening a session on ${this.#tokenName()}`, () => module.C_OpenSession(slot, lib.CKF_SERIAL_SESSION));
      this.#login(library, session);
      const keys = this.#findKeys(library, session, 2);
      if (keys.length === 0) {
        throw new Pkcs11Error(`no AES secret key labelled "${this.keyLabel}" on ${this.#tokenName()} (create it with: idp kms init)`);
      }
      if (keys.length > 1) throw new Pkcs11Error(`more than one secret key labelled "${this.keyLabel}" on ${this.#tokenName()}; labels must be unique`);
      const key = keys[0] as Handle;
      this.#checkKey(library, session, key);
      this.#state = { library, session, key };
      return this.#state;
    } catch (error) {
      if (session !== undefined) closeQuietly(() => module.C_CloseSession(session as Handle));
      releaseLibrary(library);
      throw error;
    }
  }

  /**
   * Closes the session. No C_Logout: login state belongs to the whole process on that token, and
   * logging out would log out every other provider's session; the token logs the process out when
   * its last session closes.
   */
  #drop(): void {
    const state = this.#state;
    if (!state) return;
    this.#state = undefined;
    closeQuietly(() => state.library.module.C_CloseSession(state.session));
    releaseLibrary(state.library);
  }

  #tokenName(): string {
    return this.#tokenLabel !== undefined ? `token "${this.#tokenLabel}"` : `slot ${String(this.#slot)}`;
  }

  #findSlot(library: LoadedLibrary): Handle {
    const { lib, module } = library;
    const slots = this.#call('listing slots', () => module.C_GetSlotList(true));
    if (this.#slot !== undefined) {
      const wanted = BigInt(this.#slot);
      const slot = slots.find((s) => ulong(s) === wanted);
      if (!slot) throw new Pkcs11Error(`no token present in slot ${this.#slot} of ${this.library}`);
      return slot;
    }
    const matches = slots.filter((s) => {
      const info = this.#call('reading token info', () => module.C_GetTokenInfo(s));
      return info.label.trim() === this.#tokenLabel && (info.flags & lib.CKF_TOKEN_INITIALIZED) !== 0;
    });
    if (matches.length === 0) throw new Pkcs11Error(`no initialised token labelled "${this.#tokenLabel}" in ${this.library}`);
    if (matches.length > 1) throw new Pkcs11Error(`${matches.length} tokens labelled "${this.#tokenLabel}" in ${this.library}; configure a slot instead`);
    return matches[0] as Handle;
  }

  #login(library: LoadedLibrary, session: Handle): void {
    const { lib, module } = library;
    try {
      module.C_Login(session, lib.CKU_USER, this.#pin);
    } catch (error) {
      // Login is per process and token: another session of this process may have logged in.
      if (codeOf(error) === lib.CKR_USER_ALREADY_LOGGED_IN) return;
      throw new Pkcs11Error(`login to ${this.#tokenName()} failed: ${describe(error)}`, error);
    }
  }

  #findKeys(library: LoadedLibrary, session: Handle, max: number): Handle[] {
    const { lib, module } = library;
    return this.#call(`finding key "${this.keyLabel}"`, () => {
      module.C_FindObjectsInit(session, [
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_AES },
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_LABEL, value: this.keyLabel },
      ]);
      try {
        return module.C_FindObjects(session, max);
      } finally {
        module.C_FindObjectsFinal(session);
      }
    });
  }

  #attributes(library: LoadedLibrary, session: Handle, object: Handle, types: number[]): Buffer[] {
    const result = this.#call(`reading attributes of key "${this.keyLabel}"`, () =>
      library.module.C_GetAttributeValue(
        session,
        object,
        types.map((type) => ({ type })),
      ),
    );
    return types.map((type) => result.find((a) => a.type === type)?.value ?? Buffer.alloc(0));
  }

  /** Refuses a key that is not a 256-bit AES encrypt/decrypt key kept secret by the token. */
  #checkKey(library: LoadedLibrary, session: Handle, key: Handle): void {
    const { lib } = library;
    const [valueLen, encrypt, decrypt, sensitive, extractable] = this.#attributes(library, session, key, [
      lib.CKA_VALUE_LEN,
      lib.CKA_ENCRYPT,
      lib.CKA_DECRYPT,
      lib.CKA_SENSITIVE,
      lib.CKA_EXTRACTABLE,
    ]) as [Buffer, Buffer, Buffer, Buffer, Buffer];
    const name = `key "${this.keyLabel}" on ${this.#tokenName()}`;
    if (ulong(valueLen) !== BigInt(DATA_KEY_BYTES)) throw new Pkcs11Error(`${name} is AES-${Number(ulong(valueLen)) * 8}, expected AES-256`);
    if (!bool(encrypt) || !bool(decrypt)) throw new Pkcs11Error(`${name} must allow CKA_ENCRYPT and CKA_DECRYPT`);
    if (!bool(sensitive)) throw new Pkcs11Error(`${name} is not CKA_SENSITIVE: its value can be read off the token`);
    if (bool(extractable) && !this.#allowExtractable) {
      throw new Pkcs11Error(`${name} is CKA_EXTRACTABLE; use a non-extractable key, or set allowExtractableKey`);
    }
  }

  /** Runs a PKCS#11 call, turning a binding error into a Pkcs11Error that names what was being done. */
  #call<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      if (error instanceof Pkcs11Error) throw error;
      throw new Pkcs11Error(`PKCS#11 ${what} failed: ${describe(error)}`, error);
    }
  }
}

/** Errors after which the session (or the login, or the key handle) is gone and a fresh one may work. */
function isSessionLost(lib: Pkcs11Js, error: unknown): boolean {
  const code = codeOf(error);
  return (
    code !== undefined &&
    [
      lib.CKR_SESSION_HANDLE_INVALID,
      lib.CKR_SESSION_CLOSED,
      lib.CKR_USER_NOT_LOGGED_IN,
      lib.CKR_KEY_HANDLE_INVALID,
      lib.CKR_OBJECT_HANDLE_INVALID,
      lib.CKR_DEVICE_REMOVED,
      lib.CKR_TOKEN_NOT_PRESENT,
    ].includes(code)
  );
}
