// Authenticator-app factors: enrolment (secret, QR code, confirmation by a first code) and
// verification at sign-in. The shared secret is kept only in an envelope bound to its factor and
// account. A code is accepted once: its time step is claimed in the database before success.
//
// Six digits with three steps accepted leave about 1 in 333,000 per guess: callers must limit
// attempts per account (AttemptCounters) before calling confirmEnrolment or verify.
import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '../clock.ts';
import { ValidationError } from '../errors.ts';
import { decryptEnvelope, encryptEnvelope } from '../keys/envelope.ts';
import type { EncryptionContext, KeyEncryptionProvider } from '../keys/key-encryption.ts';
import type { MfaFactorRecord, MfaFactorStore } from '../store/mfa-factors.ts';
import { matchTotp, newTotpSecret, otpauthUri, qrCodeDataUrl } from './totp.ts';

export type TotpCheck = { ok: true; factorId: string } | { ok: false; reason: 'invalid' | 'replayed' | 'no_factor' };

export interface TotpEnrolment {
  factorId: string;
  /** Base32, for typing into an app that cannot scan. Shown once; never readable again. */
  secret: string;
  uri: string;
  qrDataUrl: string;
}

const totpType = 'totp';

/**
 * The account is in the context as well as the factor: a row moved to another account (by anyone
 * able to write to the database) no longer decrypts, so nobody can plant their own authenticator
 * on a victim's account.
 */
function secretContext(factor: { id: string; accountId: string }): EncryptionContext {
  return { purpose: 'totp-secret', factor: factor.id, account: factor.accountId };
}

export class TotpFactors {
  readonly #store: MfaFactorStore;
  readonly #kms: KeyEncryptionProvider;
  readonly #issuer: string;
  readonly #clock: Clock;

  /** `issuer` is the name the authenticator app shows beside the account (no colon allowed). */
  constructor(store: MfaFactorStore, kms: KeyEncryptionProvider, issuer: string, clock: Clock = systemClock) {
    this.#clock = clock;
    if (issuer.trim() === '' || issuer.includes(':')) throw new ValidationError('the TOTP issuer must be a non-empty name without ":"');
    this.#store = store;
    this.#kms = kms;
    this.#issuer = issuer;
  }

  /**
   * Creates a pending factor and returns what the enrolment page shows. Earlier pending TOTP
   * enrolments of the account are dropped: only the latest QR code can be confirmed.
   */
  async startEnrolment(accountId: string, email: string, name = 'Authenticator app'): Promise<TotpEnrolment> {
    const id = randomUUID();
    const secret = newTotpSecret();
    const sealed = await encryptEnvelope(this.#kms, Buffer.from(secret, 'utf8'), secretContext({ id, accountId }));
    await this.#store.deletePending(accountId, totpType);
    await this.#store.create({ id, accountId, type: totpType, name, secret: sealed });
    const uri = otpauthUri({ secret, account: email, issuer: this.#issuer });
    return { factorId: id, secret, uri, qrDataUrl: await qrCodeDataUrl(uri) };
  }

  /** The first valid code confirms the factor; that code is spent and cannot sign in afterwards. */
  async confirmEnrolment(accountId: string, factorId: string, code: string, now: number = this.#clock.now()): Promise<TotpCheck> {
    const factor = await this.#store.findById(factorId);
    if (!factor || factor.accountId !== accountId || factor.type !== totpType || factor.confirmedAt || !factor.secret) return { ok: false, reason: 'no_factor' };
    const step = await this.#match(factor, code, now);
    if (step === undefined) return { ok: false, reason: 'invalid' };
    if (!(await this.#store.claimTotpStep(factor.id, step))) return { ok: false, reason: 'replayed' };
    // Another request may have confirmed it in between with a code of another step.
    if (!(await this.#store.confirm(accountId, factor.id))) return { ok: false, reason: 'no_factor' };
    return { ok: true, factorId: factor.id };
  }

  /** Checks a sign-in code against every confirmed authenticator of the account. */
  async verify(accountId: string, code: string, now: number = this.#clock.now()): Promise<TotpCheck> {
    const factors = (await this.#store.listForAccount(accountId, { type: totpType, confirmed: true })).filter((f) => f.secret);
    if (factors.length === 0) return { ok: false, reason: 'no_factor' };
    let replayed = false;
    for (const factor of factors) {
      const step = await this.#match(factor, code, now);
      if (step === undefined) continue;
      if (await this.#store.claimTotpStep(factor.id, step)) return { ok: true, factorId: factor.id };
      replayed = true;
    }
    return { ok: false, reason: replayed ? 'replayed' : 'invalid' };
  }

  async #match(factor: MfaFactorRecord, code: string, now: number): Promise<number | undefined> {
    // Malformed input is refused before the key provider is asked for anything.
    if (!/^[0-9]{6}$/.test(code)) return undefined;
    const plain = await decryptEnvelope(this.#kms, factor.secret!, secretContext(factor));
    try {
      return matchTotp(plain.toString('utf8'), code, now);
    } finally {
      plain.fill(0);
    }
  }
}
