// Second factors and passwordless sign-in as one service: which methods an account has, sending
// and checking codes, enrolment, management, administrators' reset, and remembered devices. The
// login flow (src/flow/) and the account page call this; each method keeps its own module.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { AttemptCounters, LockoutPolicy } from '../accounts/service.ts';
import type { OutgoingMail } from '../accounts/self-service.ts';
import type { AfterResponse } from '../after-response.ts';
import type { AuditSink } from '../audit/types.ts';
import type { Logger } from '../log.ts';
import type { emailMessage as EmailMessage } from '../email/templates.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import type { MfaFactorStore } from '../store/mfa-factors.ts';
import type { ExpiringValues } from '../store/expiring-values.ts';
import type { TrustedDeviceStore } from '../store/trusted-devices.ts';
import type { BackupCodes } from './backup-codes.ts';
import type { CodeCheck, CodePurpose, OneTimeCodes } from './one-time-codes.ts';
import { isE164, type OtpSender } from './otp-senders.ts';
import type { TotpEnrolment, TotpFactors } from './totp-factors.ts';
import type { WebAuthnService } from './webauthn.ts';

/** The login flow's name for second-factor methods. */
export type SecondFactor = 'totp' | 'webauthn' | 'email' | 'sms' | 'backup_code';

/** RFC 8176 method references for each method (email codes have no value of their own: otp). */
export function amrFor(method: SecondFactor, userVerified = false): string[] {
  switch (method) {
    case 'webauthn':
      // User verification (PIN or biometrics on the authenticator) makes a passkey multi-factor on its own.
      return userVerified ? ['hwk', 'mfa'] : ['hwk'];
    case 'sms':
      return ['sms'];
    default:
      return ['otp'];
  }
}

export interface AvailableMethods {
  totp: boolean;
  webauthn: boolean;
  /** Masked destinations of confirmed email / SMS factors. */
  email?: string;
  sms?: string;
  backupCodes: number;
}

export type FactorCheck = { ok: true; method: SecondFactor; amr: string[] } | { ok: false; method: SecondFactor; reason: 'invalid' | 'replayed' | 'expired' | 'exhausted' | 'locked' | 'unavailable' };

export interface FactorInput {
  method: SecondFactor;
  code?: string;
  response?: string;
}

export interface FactorView {
  id: string;
  type: string;
  name: string;
  detail: string | null;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export function maskDestination(value: string): string {
  if (value.includes('@')) {
    const [local, domain] = value.split('@') as [string, string];
    return `${local.slice(0, 1)}${'•'.repeat(Math.max(1, Math.min(local.length - 1, 6)))}@${domain}`;
  }
  return `${'•'.repeat(Math.max(0, value.length - 4))}${value.slice(-4)}`;
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('base64url');

export interface MfaDeps {
  factors: MfaFactorStore;
  totp: TotpFactors;
  backupCodes: BackupCodes;
  webauthn: WebAuthnService;
  codes: OneTimeCodes;
  pending: ExpiringValues;
  mail: OutgoingMail;
  message: typeof EmailMessage;
  sms: OtpSender | undefined;
  counters: AttemptCounters;
  /** Wrong second-factor codes per account lock like wrong passwords. */
  lockout: LockoutPolicy;
  trustedDevices: TrustedDeviceStore;
  audit: AuditSink;
  rememberDays: number;
  /** Phone number prefixes SMS may go to (e.g. "+41"); empty: any. */
  smsPrefixes: readonly string[];
  /** SMS of the whole deployment per day. */
  smsDailyLimit: number;
  log: Logger;
  afterResponse: AfterResponse;
  /** A code that reached the account's mailbox proves the address as a mailed link would. */
  addressProven?(accountId: string, address: string): Promise<unknown>;
}

const smsPerAccountPerDay = 10;

export class MfaService {
  readonly #d: MfaDeps;

  constructor(deps: MfaDeps) {
    this.#d = deps;
  }

  get webauthn(): WebAuthnService {
    return this.#d.webauthn;
  }

  get rememberDays(): number {
    return this.#d.rememberDays;
  }

  get smsAvailable(): boolean {
    return this.#d.sms !== undefined;
  }

  async methods(accountId: string): Promise<AvailableMethods> {
    const factors = await this.#d.factors.listForAccount(accountId, { confirmed: true });
    const email = factors.find((f) => f.type === 'email')?.destination;
    const sms = factors.find((f) => f.type === 'sms')?.destination;
    return {
      totp: factors.some((f) => f.type === 'totp'),
      webauthn: factors.some((f) => f.type === 'webauthn'),
      ...(email ? { email: maskDestination(email) } : {}),
      ...(sms && this.#d.sms ? { sms: maskDestination(sms) } : {}),
      backupCodes: await this.#d.backupCodes.remaining(accountId),
    };
  }

  async hasFactor(accountId: string): Promise<boolean> {
    return (await this.#d.factors.listForAccount(accountId, { confirmed: true })).length > 0;
  }

  /** The methods the account can use as a second factor now. */
  async enrolled(accountId: string): Promise<SecondFactor[]> {
    const m = await this.methods(accountId);
    return [...(m.totp ? ['totp' as const] : []), ...(m.webauthn ? ['webauthn' as const] : []), ...(m.email ? ['email' as const] : []), ...(m.sms ? ['sms' as const] : []), ...(m.backupCodes > 0 ? ['backup_code' as const] : [])];
  }

  // ---- Codes by email and SMS -------------------------------------------------------------------

  async #destination(accountId: string, channel: 'email' | 'sms'): Promise<string | undefined> {
    const factors = await this.#d.factors.listForAccount(accountId, { type: channel, confirmed: true });
    return factors[0]?.destination ?? undefined;
  }

  async #deliver(channel: 'email' | 'sms', destination: string, code: string): Promise<void> {
    const minutes = String(Math.round(this.#d.codes.rules.ttlSeconds / 60));
    if (channel === 'email') await this.#d.mail.send({ to: destination, ...this.#d.message('email-code', { code, minutes }) });
    else await this.#d.sms!.send(destination, `Your sign-in code is ${code}. It expires in ${minutes} minutes.`);
  }

  /** Sends a code to an address or number, under the per-destination hourly limit. */
  async sendCodeTo(key: string, channel: 'email' | 'sms', destination: string, subject: string | null, options: { afterResponse?: boolean; purpose?: CodePurpose } = {}): Promise<'sent' | 'rate_limited' | 'unavailable'> {
    if (channel === 'sms' && !this.#d.sms) return 'unavailable';
    // SMS costs money per message: besides the per-number limit, one account sends a few a day.
    if (channel === 'sms' && !this.#smsAllowed(destination)) return 'unavailable';
    const smsBudgetLeft = channel !== 'sms' || ((!subject || (await this.#d.counters.hit(`sms-per-account:${subject}`, 86_400)) <= smsPerAccountPerDay) && (await this.#withinDailySmsLimit()));
    const issued = smsBudgetLeft ? await this.#d.codes.issue(`${channel}:${key}`, destination, options.purpose) : ({ ok: false } as const);
    if (!issued.ok) {
      await this.#d.audit.record({ type: 'mfa.code_rate_limited', outcome: 'failure', subject, details: { channel } });
      return 'rate_limited';
    }
    if (options.afterResponse) {
      // Only accounts get codes: waiting for delivery would tell by the response time which addresses have one.
      this.#d.afterResponse.run(() => this.#deliver(channel, destination, issued.code), (error) =>
        this.#d.audit.record({ type: 'mail.failed', outcome: 'failure', subject, details: { channel, error: (error as Error).message } }));
    } else {
      await this.#deliver(channel, destination, issued.code);
    }
    await this.#d.audit.record({ type: 'mfa.code_sent', outcome: 'success', subject, details: { channel } });
    return 'sent';
  }

  /** Counts a code request for an address that gets no code, so the limit answers alike. */
  allowSend(destination: string, purpose: CodePurpose): Promise<boolean> {
    return this.#d.codes.allowSend(destination, purpose);
  }

  /** The deployment's daily SMS cap: a pumping attack spread over many accounts stops there. */
  async #withinDailySmsLimit(): Promise<boolean> {
    const sent = await this.#d.counters.hit('sms-deployment', 86_400);
    if (sent <= this.#d.smsDailyLimit) return true;
    if (sent === this.#d.smsDailyLimit + 1) {
      this.#d.log.error({ limit: this.#d.smsDailyLimit }, 'daily SMS limit reached: codes by SMS are refused until the window ends');
      await this.#d.audit.record({ type: 'mfa.sms_daily_limit', outcome: 'failure', details: { limit: this.#d.smsDailyLimit } });
    }
    return false;
  }

  #smsAllowed(destination: string): boolean {
    return this.#d.smsPrefixes.length === 0 || this.#d.smsPrefixes.some((prefix) => destination.startsWith(prefix));
  }

  /** A code to the account's confirmed email / SMS factor, for the second-factor step. */
  async sendCode(key: string, accountId: string, channel: 'email' | 'sms'): Promise<'sent' | 'rate_limited' | 'unavailable'> {
    const destination = await this.#destination(accountId, channel);
    if (!destination) return 'unavailable';
    return this.sendCodeTo(key, channel, destination, accountId);
  }

  checkCode(key: string, channel: 'email' | 'sms', code: string): Promise<CodeCheck> {
    return this.#d.codes.verify(`${channel}:${key}`, code);
  }

  // ---- Second-factor check ----------------------------------------------------------------------

  /**
   * Checks one second-factor answer. Failures are counted per account and lock second factors like
   * wrong passwords lock the password (`key` is the sign-in flow, for codes and challenges).
   */
  async verify(key: string, accountId: string, input: FactorInput): Promise<FactorCheck> {
    const failuresKey = `mfa-failures:${accountId}`;
    const { threshold, windowSeconds, durationSeconds } = this.#d.lockout;
    if ((await this.#d.counters.peek(failuresKey)) >= threshold) return { ok: false, method: input.method, reason: 'locked' };
    const result = await this.#check(key, accountId, input);
    if (result.ok) {
      await this.#d.counters.reset(failuresKey);
      return result;
    }
    if (result.reason === 'unavailable') return result;
    const failures = await this.#d.counters.hit(failuresKey, windowSeconds);
    if (failures >= threshold) {
      await this.#d.counters.extend(failuresKey, durationSeconds);
      await this.#d.audit.record({ type: 'mfa.locked', outcome: 'failure', subject: accountId, details: { failures } });
    }
    return result;
  }

  async #check(key: string, accountId: string, input: FactorInput): Promise<FactorCheck> {
    const code = (input.code ?? '').trim();
    switch (input.method) {
      case 'totp': {
        const result = await this.#d.totp.verify(accountId, code.replace(/\s+/g, ''));
        if (result.ok) return { ok: true, method: 'totp', amr: amrFor('totp') };
        return { ok: false, method: 'totp', reason: result.reason === 'no_factor' ? 'unavailable' : result.reason };
      }
      case 'backup_code':
        return (await this.#d.backupCodes.consume(accountId, code)) ? { ok: true, method: 'backup_code', amr: amrFor('backup_code') } : { ok: false, method: 'backup_code', reason: 'invalid' };
      case 'email':
      case 'sms': {
        if (!(await this.#destination(accountId, input.method))) return { ok: false, method: input.method, reason: 'unavailable' };
        const check = await this.checkCode(key, input.method, code);
        return check === 'ok' ? { ok: true, method: input.method, amr: amrFor(input.method) } : { ok: false, method: input.method, reason: check };
      }
      case 'webauthn': {
        try {
          const result = await this.#d.webauthn.verifyAuthentication(key, input.response ?? '', accountId);
          return { ok: true, method: 'webauthn', amr: amrFor('webauthn', result.userVerified) };
        } catch (error) {
          if ((error as { name?: string }).name !== 'WebAuthnError') throw error;
          return { ok: false, method: 'webauthn', reason: 'invalid' };
        }
      }
    }
  }

  // ---- Enrolment --------------------------------------------------------------------------------

  startTotp(accountId: string, email: string): Promise<TotpEnrolment> {
    return this.#d.totp.startEnrolment(accountId, email);
  }

  async confirmTotp(accountId: string, factorId: string, code: string): Promise<boolean> {
    const result = await this.#d.totp.confirmEnrolment(accountId, factorId, code.replace(/\s+/g, ''));
    if (result.ok) await this.#enrolled(accountId, 'totp');
    return result.ok;
  }

  /** Email and SMS enrolment: a code goes to the new destination; the factor exists once it comes back. */
  async startCodeEnrolment(key: string, accountId: string, channel: 'email' | 'sms', destination: string): Promise<'sent' | 'rate_limited' | 'unavailable'> {
    if (channel === 'sms' && !isE164(destination)) throw new ValidationError('enter the phone number in international form, for example +41791234567');
    if (channel === 'sms' && !this.#smsAllowed(destination)) throw new ValidationError('codes cannot be sent to phone numbers of this country');
    await this.#d.pending.set(`enrol:${channel}:${key}`, { accountId, destination }, this.#d.codes.rules.ttlSeconds);
    return this.sendCodeTo(`enrol:${key}`, channel, destination, accountId);
  }

  async confirmCodeEnrolment(key: string, accountId: string, channel: 'email' | 'sms', code: string): Promise<CodeCheck> {
    const pending = await this.#d.pending.get<{ accountId: string; destination: string }>(`enrol:${channel}:${key}`);
    if (!pending || pending.accountId !== accountId) return 'expired';
    const check = await this.checkCode(`enrol:${key}`, channel, code);
    if (check !== 'ok') return check;
    await this.#d.pending.delete(`enrol:${channel}:${key}`);
    // One factor per channel: a new address or number replaces the old one.
    for (const old of await this.#d.factors.listForAccount(accountId, { type: channel })) await this.#d.factors.delete(accountId, old.id);
    await this.#d.factors.create({ id: randomUUID(), accountId, type: channel, name: channel === 'email' ? 'Email' : 'Phone', destination: pending.destination, confirmedAt: new Date() });
    if (channel === 'email') await this.#d.addressProven?.(accountId, pending.destination);
    await this.#enrolled(accountId, channel);
    return 'ok';
  }

  async registerPasskey(key: string, accountId: string, response: string, name: string): Promise<string> {
    const id = await this.#d.webauthn.verifyRegistration(key, accountId, response, name);
    await this.#enrolled(accountId, 'webauthn');
    return id;
  }

  async #enrolled(accountId: string, method: SecondFactor): Promise<void> {
    await this.#d.audit.record({ type: 'mfa.enrolled', outcome: 'success', subject: accountId, details: { method } });
  }

  /** A new set of backup codes (the old set stops working); shown once. */
  async generateBackupCodes(accountId: string): Promise<string[]> {
    const codes = await this.#d.backupCodes.generate(accountId);
    await this.#d.audit.record({ type: 'mfa.backup_codes_generated', outcome: 'success', subject: accountId });
    return codes;
  }

  // ---- Management -------------------------------------------------------------------------------

  async list(accountId: string): Promise<FactorView[]> {
    return (await this.#d.factors.listForAccount(accountId, { confirmed: true })).map((f) => ({
      id: f.id, type: f.type, name: f.name, detail: f.destination ? maskDestination(f.destination) : null, createdAt: f.createdAt, lastUsedAt: f.lastUsedAt,
    }));
  }

  /** Removes one factor; the last one cannot go while MFA is required for the account. */
  async remove(accountId: string, factorId: string, mfaRequired: boolean): Promise<void> {
    const factors = await this.#d.factors.listForAccount(accountId, { confirmed: true });
    if (!factors.some((f) => f.id === factorId)) throw new NotFoundError('no such method on your account');
    if (mfaRequired && factors.length === 1) throw new ValidationError('this is your only second factor and your organisation requires one: add another method first');
    await this.#d.factors.delete(accountId, factorId);
    if (factors.length === 1) await this.#d.backupCodes.clear(accountId);
    // A device remembered for a second factor is not remembered past a change of factors.
    await this.#d.trustedDevices.forgetAll(accountId);
    await this.#d.audit.record({ type: 'mfa.removed', outcome: 'success', subject: accountId, actor: accountId, details: { factorId, type: factors.find((f) => f.id === factorId)!.type } });
  }

  /** An administrator's reset: every factor, backup code and remembered device goes. */
  async reset(accountId: string, actor: string): Promise<{ factors: number; devices: number }> {
    const factors = await this.#d.factors.deleteAllForAccount(accountId);
    await this.#d.backupCodes.clear(accountId);
    const devices = await this.#d.trustedDevices.forgetAll(accountId);
    await this.#d.audit.record({ type: 'mfa.reset', outcome: 'success', subject: accountId, actor, details: { factors, devices } });
    return { factors, devices };
  }

  // ---- Remembered devices -----------------------------------------------------------------------

  async rememberDevice(accountId: string, userAgent: string | undefined): Promise<string | undefined> {
    if (this.#d.rememberDays <= 0) return undefined;
    const token = randomBytes(32).toString('base64url');
    await this.#d.trustedDevices.add(hashToken(token), accountId, new Date(Date.now() + this.#d.rememberDays * 86_400_000), userAgent?.slice(0, 512) ?? null);
    await this.#d.audit.record({ type: 'mfa.device_remembered', outcome: 'success', subject: accountId, details: { days: this.#d.rememberDays } });
    return token;
  }

  async isRemembered(accountId: string, token: string | undefined): Promise<boolean> {
    if (this.#d.rememberDays <= 0 || !token || !/^[A-Za-z0-9_-]{43}$/.test(token)) return false;
    return this.#d.trustedDevices.isTrusted(hashToken(token), accountId);
  }
}
