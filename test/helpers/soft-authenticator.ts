// A software FIDO2 authenticator that answers WebAuthn options with real responses, as a browser
// would hand them to the server (the JSON of @simplewebauthn/browser): P-256 keys from
// node:crypto, authenticator data, CBOR attestation objects in the 'none' format, and DER
// ECDSA assertion signatures. Written from the specification, independently of the server
// library it tests, so an encoding mistake on either side shows up as a failure.
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from '@simplewebauthn/server';

// --- The CBOR subset WebAuthn needs (RFC 8949): integers, byte and text strings, arrays, maps. ---

export type Cbor = number | string | Uint8Array | Cbor[] | Map<Cbor, Cbor>;

function cborHead(major: number, length: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 0) throw new Error(`CBOR: bad length ${length}`);
  if (length < 24) return Buffer.from([(major << 5) | length]);
  if (length < 0x100) return Buffer.from([(major << 5) | 24, length]);
  if (length < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = (major << 5) | 25;
    b.writeUInt16BE(length, 1);
    return b;
  }
  if (length < 0x100000000) {
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(length, 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = (major << 5) | 27;
  b.writeBigUInt64BE(BigInt(length), 1);
  return b;
}

export function cborEncode(value: Cbor): Buffer {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error('CBOR: only integers are supported');
    return value >= 0 ? cborHead(0, value) : cborHead(1, -1 - value);
  }
  if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    return Buffer.concat([cborHead(3, bytes.length), bytes]);
  }
  if (value instanceof Uint8Array) return Buffer.concat([cborHead(2, value.length), value]);
  if (Array.isArray(value)) return Buffer.concat([cborHead(4, value.length), ...value.map(cborEncode)]);
  return Buffer.concat([cborHead(5, value.size), ...[...value].flatMap(([k, v]) => [cborEncode(k), cborEncode(v)])]);
}

// --- Authenticator data (WebAuthn §6.1). ---

export const flags = { up: 0x01, uv: 0x04, be: 0x08, bs: 0x10, at: 0x40, ed: 0x80 } as const;

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest();
const b64url = (data: Uint8Array) => Buffer.from(data).toString('base64url');

function authenticatorData(rpId: string, flagBits: number, counter: number, attested?: { credentialId: Uint8Array; cosePublicKey: Uint8Array }): Buffer {
  const counterBytes = Buffer.alloc(4);
  counterBytes.writeUInt32BE(counter);
  const parts: Uint8Array[] = [sha256(rpId), Buffer.from([flagBits]), counterBytes];
  if (attested) {
    const idLength = Buffer.alloc(2);
    idLength.writeUInt16BE(attested.credentialId.length);
    parts.push(Buffer.alloc(16), idLength, attested.credentialId, attested.cosePublicKey);
  }
  return Buffer.concat(parts);
}

/** The COSE_Key (RFC 9053) of a P-256 public key for ES256. */
function coseEc2Key(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: 'jwk' });
  return cborEncode(
    new Map<Cbor, Cbor>([
      [1, 2], // kty: EC2
      [3, -7], // alg: ES256
      [-1, 1], // crv: P-256
      [-2, Buffer.from(jwk.x!, 'base64url')],
      [-3, Buffer.from(jwk.y!, 'base64url')],
    ]),
  );
}

function clientData(type: 'webauthn.create' | 'webauthn.get', challenge: string, origin: string): Buffer {
  return Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }), 'utf8');
}

// --- The authenticator. ---

export interface SoftCredential {
  /** base64url */
  id: string;
  rpId: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  cosePublicKey: Buffer;
  /** The user.id bytes from the registration options. */
  userHandle: Buffer;
  discoverable: boolean;
  counter: number;
}

interface CeremonyOverrides {
  /** The origin the "browser" reports in clientDataJSON. */
  origin?: string;
  /** The RP ID whose hash goes into the authenticator data. */
  rpId?: string;
  /** The challenge to sign instead of the options' one. */
  challenge?: string;
  /** User verification performed (the UV flag); the authenticator's default otherwise. */
  userVerified?: boolean;
  /** User presence (the UP flag); true by default. */
  userPresent?: boolean;
  /** The signature counter to report; it becomes the credential's counter. */
  counter?: number;
}

export interface RegistrationOverrides extends CeremonyOverrides {
  /** Mark the credential backup-eligible and backed up (a synced passkey). */
  synced?: boolean;
  /** What the client reports in credProps.rk; `null` omits the credProps output. */
  credPropsRk?: boolean | null;
  transports?: string[];
  /** Answer with this existing credential (base64url id) again instead of making a new one, ignoring excludeCredentials. */
  reuse?: string;
}

export interface AuthenticationOverrides extends CeremonyOverrides {
  /** Which credential to use (base64url id); else the first allowed one, or the first discoverable one. */
  credentialId?: string;
  /** The user handle to return, as text (base64url-encoded into the response); `null` omits it. Defaults to the stored one. */
  userHandle?: string | null;
}

export class SoftAuthenticator {
  readonly origin: string;
  readonly #userVerifying: boolean;
  readonly #residentKeys: boolean;
  readonly #counting: boolean;
  readonly credentials = new Map<string, SoftCredential>();

  /**
   * `origin` is what the browser would report; `userVerifying` whether it performs user
   * verification (a PIN or biometric); `residentKeys` whether it can keep discoverable credentials;
   * `counting` whether it keeps a signature counter (synced passkeys usually report 0 forever).
   */
  constructor(options: { origin: string; userVerifying?: boolean; residentKeys?: boolean; counting?: boolean }) {
    this.origin = options.origin;
    this.#userVerifying = options.userVerifying ?? true;
    this.#residentKeys = options.residentKeys ?? true;
    this.#counting = options.counting ?? true;
  }

  /** navigator.credentials.create() for these options. */
  register(options: PublicKeyCredentialCreationOptionsJSON, overrides: RegistrationOverrides = {}): RegistrationResponseJSON {
    const rpId = options.rp.id ?? new URL(this.origin).hostname;
    const reused = overrides.reuse === undefined ? undefined : this.credentials.get(overrides.reuse);
    if (overrides.reuse !== undefined && !reused) throw new Error(`the authenticator holds no credential ${overrides.reuse}`);
    if (!reused) {
      for (const excluded of options.excludeCredentials ?? []) {
        if (this.credentials.get(excluded.id)?.rpId === rpId) throw new Error('InvalidStateError: the authenticator already holds an excluded credential');
      }
    }
    const discoverable = this.#residentKeys && options.authenticatorSelection?.residentKey !== 'discouraged';
    const counter = overrides.counter ?? 0;
    let credential: SoftCredential;
    if (reused) {
      credential = reused;
      credential.counter = counter;
    } else {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      credential = {
        id: b64url(randomBytes(32)),
        rpId,
        privateKey,
        publicKey,
        cosePublicKey: coseEc2Key(publicKey),
        userHandle: Buffer.from(options.user.id, 'base64url'),
        discoverable,
        counter,
      };
    }
    const rawId = Buffer.from(credential.id, 'base64url');
    const { cosePublicKey, publicKey } = credential;

    let flagBits = flags.at;
    if (overrides.userPresent ?? true) flagBits |= flags.up;
    if (overrides.userVerified ?? this.#userVerifying) flagBits |= flags.uv;
    if (overrides.synced) flagBits |= flags.be | flags.bs;
    const authData = authenticatorData(overrides.rpId ?? rpId, flagBits, counter, { credentialId: rawId, cosePublicKey });
    const attestationObject = cborEncode(
      new Map<Cbor, Cbor>([
        ['fmt', 'none'],
        ['attStmt', new Map()],
        ['authData', authData],
      ]),
    );
    const clientDataJSON = clientData('webauthn.create', overrides.challenge ?? options.challenge, overrides.origin ?? this.origin);
    this.credentials.set(credential.id, credential);

    const rk = overrides.credPropsRk === undefined ? discoverable : overrides.credPropsRk;
    return {
      id: credential.id,
      rawId: credential.id,
      type: 'public-key',
      authenticatorAttachment: 'cross-platform',
      response: {
        clientDataJSON: b64url(clientDataJSON),
        attestationObject: b64url(attestationObject),
        authenticatorData: b64url(authData),
        transports: overrides.transports ?? ['usb'],
        publicKeyAlgorithm: -7,
        publicKey: b64url(publicKey.export({ format: 'der', type: 'spki' })),
      },
      clientExtensionResults: rk === null ? {} : { credProps: { rk } },
    };
  }

  /** navigator.credentials.get() for these options. */
  authenticate(options: PublicKeyCredentialRequestOptionsJSON, overrides: AuthenticationOverrides = {}): AuthenticationResponseJSON {
    const rpId = options.rpId ?? new URL(this.origin).hostname;
    const credential = this.#choose(rpId, options, overrides.credentialId);
    credential.counter = overrides.counter ?? (this.#counting ? credential.counter + 1 : 0);

    let flagBits = 0;
    if (overrides.userPresent ?? true) flagBits |= flags.up;
    if (overrides.userVerified ?? this.#userVerifying) flagBits |= flags.uv;
    const authData = authenticatorData(overrides.rpId ?? rpId, flagBits, credential.counter);
    const clientDataJSON = clientData('webauthn.get', overrides.challenge ?? options.challenge, overrides.origin ?? this.origin);
    const signature = sign('sha256', Buffer.concat([authData, sha256(clientDataJSON)]), credential.privateKey);

    const userHandle =
      overrides.userHandle === null ? undefined : overrides.userHandle === undefined ? b64url(credential.userHandle) : b64url(Buffer.from(overrides.userHandle, 'utf8'));
    return {
      id: credential.id,
      rawId: credential.id,
      type: 'public-key',
      authenticatorAttachment: 'cross-platform',
      response: {
        clientDataJSON: b64url(clientDataJSON),
        authenticatorData: b64url(authData),
        signature: b64url(signature),
        ...(userHandle === undefined ? {} : { userHandle }),
      },
      clientExtensionResults: {},
    };
  }

  #choose(rpId: string, options: PublicKeyCredentialRequestOptionsJSON, credentialId: string | undefined): SoftCredential {
    if (credentialId !== undefined) {
      const chosen = this.credentials.get(credentialId);
      if (!chosen) throw new Error(`the authenticator holds no credential ${credentialId}`);
      return chosen;
    }
    const allowed = options.allowCredentials ?? [];
    const found = allowed.length
      ? allowed.map((c) => this.credentials.get(c.id)).find((c) => c?.rpId === rpId)
      : [...this.credentials.values()].find((c) => c.rpId === rpId && c.discoverable);
    if (!found) throw new Error('NotAllowedError: the authenticator holds no matching credential');
    return found;
  }
}
