// WebAuthn ceremonies (passkeys and security keys) on @simplewebauthn/server: registration, a
// second factor for a known account, and passwordless sign-in with a discoverable credential.
//
// Challenges live in the shared ExpiringValues store, keyed by the caller's flow id, so any node
// can finish a ceremony another started. A challenge is consumed before its response is checked:
// a failed attempt cannot be retried against it, and a replayed response finds nothing.
//
// @simplewebauthn/server (with its ASN.1/X.509 stack, about 9 MB of a server's memory) is
// imported at the first ceremony, not at start: every use of it is in an async method.
import { randomUUID } from 'node:crypto';
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from '@simplewebauthn/server';
import type { AuditInput } from '../audit/types.ts';
import { ConfigError, IdpError, NotFoundError } from '../errors.ts';
import { isUniqueViolation } from '../store/database.ts';
import type { ExpiringValues } from '../store/expiring-values.ts';
import type { WebAuthnCredentialRecord, WebAuthnCredentialStore } from '../store/webauthn-credentials.ts';

type SimpleWebAuthn = typeof import('@simplewebauthn/server');
let library: Promise<SimpleWebAuthn> | undefined;

/** @simplewebauthn/server, imported once per process, at the first ceremony. */
function simpleWebAuthn(): Promise<SimpleWebAuthn> {
  library ??= import('@simplewebauthn/server').catch((error: unknown) => {
    library = undefined;
    throw error;
  });
  return library;
}

export type UserVerification = 'required' | 'preferred' | 'discouraged';

export type WebAuthnFailure =
  | 'challenge'
  | 'malformed'
  | 'verification'
  | 'unknown_credential'
  | 'user_mismatch'
  | 'counter_regression'
  | 'duplicate'
  | 'no_credentials'
  | 'invalid_name';

/** Every refusal of a ceremony: a client error (400) with a message fit for the user; the library's detail stays in `cause`. */
export class WebAuthnError extends IdpError {
  readonly reason: WebAuthnFailure;
  constructor(reason: WebAuthnFailure, message: string, cause?: unknown) {
    super(`ERR_WEBAUTHN_${reason.toUpperCase()}`, message, { status: 400, expose: true, cause });
    this.name = 'WebAuthnError';
    this.reason = reason;
  }
}

export interface WebAuthnOptions {
  /** The hostname of the issuer (or a registrable suffix of it). */
  rpId: string;
  rpName: string;
  /** The issuer's origin, e.g. https://id.example.com */
  origin: string;
  userVerification: UserVerification;
  failOnCounterRegression: boolean;
  challenges: ExpiringValues;
  store: WebAuthnCredentialStore;
  audit?: (event: AuditInput) => Promise<void> | void;
}

export interface WebAuthnAccount {
  id: string;
  email: string;
  name?: string | null;
}

export interface WebAuthnAuthentication {
  accountId: string;
  factorId: string;
  userVerified: boolean;
}

export type WebAuthnCredentialSummary = Pick<WebAuthnCredentialRecord, 'id' | 'name' | 'discoverable' | 'transports' | 'createdAt' | 'lastUsedAt'>;

type Ceremony = 'registration' | 'authentication';

interface PendingChallenge {
  challenge: string;
  /** Registration: the account the options were made for. Authentication: the account whose credentials were allowed, or null (passwordless). */
  accountId: string | null;
}

export const challengeTtlSeconds = 300;
// Shorter than the challenge's life, so a ceremony the browser still accepts can always be posted.
const ceremonyTimeoutMs = 180_000;
// ES256 and RS256 (COSE algorithm ids): what platform authenticators and security keys offer.
const supportedAlgorithmIDs = [-7, -257];
// The WebAuthn limit on user.id.
const maxUserHandleBytes = 64;
const maxNameLength = 64;

function challengeKey(ceremony: Ceremony, flowId: string): string {
  return `webauthn:${ceremony}:${flowId}`;
}

/** A credential name for display: single-line, trimmed, bounded. */
function cleanName(name: string, fallback?: string): string {
  const cleaned = name.replace(/[\u0000-\u001f\u007f]/g, ' ').replace(/\s+/g, ' ').trim();
  if (!cleaned && fallback) return fallback;
  if (!cleaned) throw new WebAuthnError('invalid_name', 'Give the passkey a name.');
  if (cleaned.length > maxNameLength) throw new WebAuthnError('invalid_name', `A passkey name has at most ${maxNameLength} characters.`);
  return cleaned;
}

/** The browser's JSON (as posted, or already parsed), checked only for the fields read before the library sees it. */
function parseResponse<T>(response: unknown): T & { id: string; response: Record<string, unknown> } {
  let value = response;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (error) {
      throw new WebAuthnError('malformed', 'The passkey response was malformed.', error);
    }
  }
  const candidate = value as { id?: unknown; response?: unknown } | null;
  if (typeof candidate !== 'object' || candidate === null || typeof candidate.id !== 'string' || !candidate.id || typeof candidate.response !== 'object' || candidate.response === null) {
    throw new WebAuthnError('malformed', 'The passkey response was malformed.');
  }
  return candidate as T & { id: string; response: Record<string, unknown> };
}

function summary(record: WebAuthnCredentialRecord): WebAuthnCredentialSummary {
  const { id, name, discoverable, transports, createdAt, lastUsedAt } = record;
  return { id, name, discoverable, transports, createdAt, lastUsedAt };
}

export class WebAuthnService {
  readonly #rpId: string;
  readonly #rpName: string;
  readonly #origin: string;
  readonly #userVerification: UserVerification;
  readonly #failOnCounterRegression: boolean;
  readonly #challenges: ExpiringValues;
  readonly #store: WebAuthnCredentialStore;
  readonly #audit: ((event: AuditInput) => Promise<void> | void) | undefined;

  constructor(options: WebAuthnOptions) {
    let origin: URL;
    try {
      origin = new URL(options.origin);
    } catch {
      throw new ConfigError(`webauthn: origin ${options.origin} is not a URL`);
    }
    const host = origin.hostname;
    // Browsers refuse an RP ID that is not the page's host or a suffix of it; fail at start, not at the first ceremony.
    if (host !== options.rpId && !host.endsWith(`.${options.rpId}`)) {
      throw new ConfigError(`webauthn: the RP ID ${options.rpId} must be the origin's host ${host} or a parent domain of it`);
    }
    this.#rpId = options.rpId;
    this.#rpName = options.rpName;
    this.#origin = origin.origin;
    this.#userVerification = options.userVerification;
    this.#failOnCounterRegression = options.failOnCounterRegression;
    this.#challenges = options.challenges;
    this.#store = options.store;
    this.#audit = options.audit;
  }

  /** Options for navigator.credentials.create(), for `account` to add a credential. */
  async registrationOptions(flowId: string, account: WebAuthnAccount): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const userID = new TextEncoder().encode(account.id);
    if (userID.byteLength > maxUserHandleBytes) throw new ConfigError(`webauthn: account id ${account.id} is longer than ${maxUserHandleBytes} bytes`);
    const existing = await this.#store.listForAccount(account.id);
    const { generateRegistrationOptions } = await simpleWebAuthn();
    const options = await generateRegistrationOptions({
      rpName: this.#rpName,
      rpID: this.#rpId,
      // The user handle is the account id: opaque, stable, and what passwordless sign-in resolves.
      userID,
      userName: account.email,
      userDisplayName: account.name || account.email,
      timeout: ceremonyTimeoutMs,
      attestationType: 'none',
      excludeCredentials: existing.map((c) => ({ id: c.credentialId, transports: c.transports })),
      authenticatorSelection: { residentKey: 'preferred', userVerification: this.#userVerification },
      supportedAlgorithmIDs,
    });
    await this.#remember('registration', flowId, { challenge: options.challenge, accountId: account.id });
    return options;
  }

  /**
   * Checks the browser's answer to `registrationOptions` and stores the credential (confirmed).
   * `response` is the JSON the browser produced, as text or parsed. Returns the factor id.
   */
  async verifyRegistration(flowId: string, accountId: string, response: unknown, name: string): Promise<string> {
    const credentialName = cleanName(name, 'Passkey');
    const parsed = parseResponse<RegistrationResponseJSON>(response);
    const { verifyRegistrationResponse } = await simpleWebAuthn();
    const pending = await this.#consume('registration', flowId);
    if (pending.accountId !== accountId) {
      throw new WebAuthnError('challenge', 'This passkey request was made for another account; please start again.');
    }
    let info;
    try {
      const result = await verifyRegistrationResponse({
        response: parsed,
        expectedChallenge: pending.challenge,
        expectedOrigin: this.#origin,
        expectedRPID: this.#rpId,
        requireUserVerification: this.#userVerification === 'required',
        supportedAlgorithmIDs,
      });
      if (!result.verified) throw new Error('the attestation did not verify');
      info = result.registrationInfo;
    } catch (error) {
      throw new WebAuthnError('verification', 'The passkey could not be verified; please try again.', error);
    }
    // credProps is the client's word and only decides whether we offer the credential for
    // passwordless sign-in; synced passkeys (multi-device) are discoverable in practice.
    const rk = (parsed.clientExtensionResults as { credProps?: { rk?: unknown } } | undefined)?.credProps?.rk;
    const discoverable = typeof rk === 'boolean' ? rk : info.credentialDeviceType === 'multiDevice';
    const id = randomUUID();
    try {
      await this.#store.create({
        id,
        accountId,
        name: credentialName,
        credentialId: info.credential.id,
        publicKey: Buffer.from(info.credential.publicKey).toString('base64url'),
        counter: info.credential.counter,
        transports: info.credential.transports ?? [],
        discoverable,
        confirmedAt: new Date(),
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw new WebAuthnError('duplicate', 'This passkey is already registered.', error);
      throw error;
    }
    return id;
  }

  /**
   * Options for navigator.credentials.get(). With `accountId`, a second factor: only that
   * account's credentials are allowed. Without, passwordless: the browser offers any
   * discoverable credential for this RP, and the user handle tells whose it is.
   */
  async authenticationOptions(flowId: string, accountId?: string): Promise<PublicKeyCredentialRequestOptionsJSON> {
    let allowCredentials: { id: string; transports: string[] }[] = [];
    if (accountId !== undefined) {
      const credentials = (await this.#store.listForAccount(accountId)).filter((c) => c.confirmedAt);
      // An empty list would turn a second-factor request into a passwordless one.
      if (!credentials.length) throw new WebAuthnError('no_credentials', 'This account has no passkey.');
      allowCredentials = credentials.map((c) => ({ id: c.credentialId, transports: c.transports }));
    }
    const { generateAuthenticationOptions } = await simpleWebAuthn();
    const options = await generateAuthenticationOptions({
      rpID: this.#rpId,
      allowCredentials,
      timeout: ceremonyTimeoutMs,
      userVerification: this.#userVerification,
    });
    await this.#remember('authentication', flowId, { challenge: options.challenge, accountId: accountId ?? null });
    return options;
  }

  /**
   * Checks the browser's answer to `authenticationOptions`. `expectedAccountId` is the account the
   * caller already knows (second factor); without it, and without one given to the options, the
   * credential's owner signs in (passwordless).
   */
  async verifyAuthentication(flowId: string, response: unknown, expectedAccountId?: string): Promise<WebAuthnAuthentication> {
    const parsed = parseResponse<AuthenticationResponseJSON>(response);
    const { verifyAuthenticationResponse } = await simpleWebAuthn();
    const pending = await this.#consume('authentication', flowId);
    if (pending.accountId !== null && expectedAccountId !== undefined && pending.accountId !== expectedAccountId) {
      throw new WebAuthnError('challenge', 'This passkey request was made for another account; please start again.');
    }
    const expected = expectedAccountId ?? pending.accountId ?? undefined;

    const credential = await this.#store.findByCredentialId(parsed.id);
    // Someone else's credential looks the same as an unknown one.
    if (!credential || !credential.confirmedAt || (expected !== undefined && credential.accountId !== expected)) {
      throw new WebAuthnError('unknown_credential', 'This passkey is not registered for this account.');
    }
    const userHandle = parsed.response.userHandle;
    if (userHandle !== undefined && userHandle !== null && userHandle !== '') {
      if (typeof userHandle !== 'string' || Buffer.from(userHandle, 'base64url').toString('utf8') !== credential.accountId) {
        throw new WebAuthnError('user_mismatch', 'This passkey does not belong to this account.');
      }
    } else if (expected === undefined) {
      // Passwordless needs the user handle (a discoverable credential always returns it).
      throw new WebAuthnError('user_mismatch', 'This passkey did not say which account it belongs to.');
    }

    let info;
    try {
      const result = await verifyAuthenticationResponse({
        response: parsed,
        expectedChallenge: pending.challenge,
        expectedOrigin: this.#origin,
        expectedRPID: this.#rpId,
        // Counter 0 turns off the library's own counter check, which throws before the signature
        // is verified; ours runs after, so only a genuine (possibly cloned) key is reported.
        credential: { id: credential.credentialId, publicKey: Buffer.from(credential.publicKey, 'base64url'), counter: 0, transports: credential.transports },
        requireUserVerification: this.#userVerification === 'required',
      });
      if (!result.verified) throw new Error('the signature did not verify');
      info = result.authenticationInfo;
    } catch (error) {
      throw new WebAuthnError('verification', 'The passkey could not be verified; please try again.', error);
    }

    const newCounter = info.newCounter;
    const regressed = (newCounter > 0 || credential.counter > 0) && newCounter <= credential.counter;
    // The compare-and-set in the store also catches a concurrent assertion with the same counter.
    if (regressed || !(await this.#store.updateCounter(credential.id, newCounter))) {
      await this.#audit?.({
        type: 'webauthn.counter_regression',
        outcome: 'failure',
        subject: credential.accountId,
        details: { factorId: credential.id, storedCounter: credential.counter, newCounter, refused: this.#failOnCounterRegression },
      });
      if (this.#failOnCounterRegression) {
        throw new WebAuthnError('counter_regression', 'This passkey cannot be used: its signature counter went backwards, which suggests a copied authenticator.');
      }
      await this.#store.markUsed(credential.id);
    }
    return { accountId: credential.accountId, factorId: credential.id, userVerified: info.userVerified };
  }

  async listCredentials(accountId: string): Promise<WebAuthnCredentialSummary[]> {
    return (await this.#store.listForAccount(accountId)).map(summary);
  }

  async renameCredential(accountId: string, factorId: string, name: string): Promise<void> {
    if (!(await this.#store.rename(accountId, factorId, cleanName(name)))) throw new NotFoundError('no such passkey');
  }

  /** Whether removing the last factor is allowed is the caller's policy. */
  async deleteCredential(accountId: string, factorId: string): Promise<void> {
    if (!(await this.#store.delete(accountId, factorId))) throw new NotFoundError('no such passkey');
  }

  async #remember(ceremony: Ceremony, flowId: string, pending: PendingChallenge): Promise<void> {
    await this.#challenges.set(challengeKey(ceremony, flowId), pending, challengeTtlSeconds);
  }

  async #consume(ceremony: Ceremony, flowId: string): Promise<PendingChallenge> {
    const key = challengeKey(ceremony, flowId);
    const pending = await this.#challenges.get<PendingChallenge>(key);
    if (!pending) throw new WebAuthnError('challenge', 'This passkey request expired or was already used; please try again.');
    // get and delete are two steps; the lock (atomic in Redis and in the table) lets only one of
    // two concurrent submissions of the same challenge through.
    const once = await this.#challenges.acquire(`webauthn:used:${pending.challenge}`, challengeTtlSeconds);
    await this.#challenges.delete(key);
    if (!once) throw new WebAuthnError('challenge', 'This passkey request expired or was already used; please try again.');
    return pending;
  }
}
