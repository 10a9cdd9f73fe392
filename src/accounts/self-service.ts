// Self-service around accounts: registration with email verification, invitations, forgotten
// passwords, and password changes. The answers never tell whether an address has an account:
// registration and reset requests end the same way whether or not it exists (a look-alike of a
// taken address ends like a taken one). Mails greet by name only as greeting.ts allows: the
// registrant's text must not reach a mailbox nobody has proven to be theirs.
import type { AfterResponse } from '../after-response.ts';
import type { AuditEventType } from '../audit/events.ts';
import type { AuditSink } from '../audit/types.ts';
import type { emailMessage as EmailMessage } from '../email/templates.ts';
import { ConflictError, ValidationError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { SessionService } from '../sessions/service.ts';
import type { AccountRecord } from '../store/accounts.ts';
import { greetingFor } from './greeting.ts';
import { printable } from './identifiers.ts';
import { PasswordPolicyError } from './password-policy.ts';
import { ConfusableEmailError, normaliseEmail, type AccountService, type AttemptCounters } from './service.ts';
import type { AccountTokens } from './tokens.ts';

export interface OutgoingMail {
  send(message: { to: string; subject: string; text: string }): Promise<void>;
}

export interface SelfServiceSettings {
  issuer: string;
  registrationUserType: string;
  verificationTtlSeconds: number;
  invitationTtlSeconds: number;
  resetTtlSeconds: number;
  /** Links of one kind mailed to one account per hour, at most. */
  mailsPerHour: number;
}

export type Actor = { actor?: string | null; ip?: string | undefined; userAgent?: string | undefined; requestId?: string | undefined };

export class TokenInvalidError extends ValidationError {
  constructor() {
    super('this link is not valid any more: it was used already, it expired, or a newer one was sent');
    this.name = 'TokenInvalidError';
  }
}

export class SelfService {
  readonly #accounts: AccountService;
  readonly #tokens: AccountTokens;
  readonly #mail: OutgoingMail;
  readonly #message: typeof EmailMessage;
  readonly #sessions: SessionService;
  readonly #audit: AuditSink;
  readonly #settings: SelfServiceSettings;
  readonly #log: Logger;
  readonly #afterResponse: AfterResponse;
  readonly #counters: Pick<AttemptCounters, 'hit'>;

  readonly #mailboxProven: (accountId: string) => Promise<void>;

  /** `mailboxProven`: told when a link mailed to the account's address was used (its owner has the mailbox). */
  constructor(deps: { accounts: AccountService; tokens: AccountTokens; mail: OutgoingMail; message: typeof EmailMessage; sessions: SessionService; audit: AuditSink; settings: SelfServiceSettings; log: Logger; afterResponse: AfterResponse; counters: Pick<AttemptCounters, 'hit'>; mailboxProven?: (accountId: string) => Promise<void> }) {
    this.#mailboxProven = deps.mailboxProven ?? (async () => undefined);
    this.#counters = deps.counters;
    this.#log = deps.log;
    this.#afterResponse = deps.afterResponse;
    this.#accounts = deps.accounts;
    this.#tokens = deps.tokens;
    this.#mail = deps.mail;
    this.#message = deps.message;
    this.#sessions = deps.sessions;
    this.#audit = deps.audit;
    this.#settings = deps.settings;
  }

  #link(path: string, token: string) {
    return `${this.#settings.issuer}/account/${path}?token=${encodeURIComponent(token)}`;
  }

  async #record(type: AuditEventType, outcome: 'success' | 'failure', subject: string | null, by: Actor, details: Record<string, unknown> = {}) {
    await this.#audit.record({ type, outcome, subject, actor: by.actor ?? subject, ip: by.ip, userAgent: by.userAgent, requestId: by.requestId, details });
  }

  /**
   * Takes one mail of this kind from the account's hourly budget (bounds mail bombing). One atomic
   * count shared by every node: requests handled at the same moment (after their responses, on
   * any node) can never together send more than the budget.
   */
  async #takeMailBudget(accountId: string, purpose: 'verify_email' | 'password_reset'): Promise<boolean> {
    return (await this.#counters.hit(`mail:${purpose}:${accountId}`, 3600)) <= this.#settings.mailsPerHour;
  }

  /**
   * Mails that only some answers send (registration, reset requests) go out after the response:
   * waiting for the SMTP server would tell by the response time whether the address has an account.
   */
  #sendLater(message: { to: string; subject: string; text: string }, accountId: string): void {
    this.#afterResponse.run(() => this.#mail.send(message), async (error) => {
      this.#log.error({ err: error, subject: message.subject }, 'sending mail failed');
      await this.#audit.record({ type: 'mail.failed', outcome: 'failure', subject: accountId, details: { subject: message.subject } });
    });
  }

  async #sendVerification(account: AccountRecord): Promise<void> {
    const token = await this.#tokens.issue(account.id, 'verify_email', this.#settings.verificationTtlSeconds);
    const message = this.#message('verify-email', { name: greetingFor(account), link: this.#link('verify-email', token), minutes: String(Math.round(this.#settings.verificationTtlSeconds / 60)) });
    this.#sendLater({ to: account.email, ...message }, account.id);
  }

  /**
   * Self-service registration. The password rules are checked first, so their errors are the
   * same for taken and free addresses; a taken address then ends like a new one, without a mail.
   */
  async register(input: { email: string; name?: string | undefined; password: string }, by: Actor): Promise<void> {
    let account: AccountRecord;
    try {
      account = await this.#accounts.create({ ...input, userType: this.#settings.registrationUserType, status: 'pending_verification', emailVerified: false });
    } catch (error) {
      if (error instanceof ConflictError) {
        // The password is hashed as it would be for a new account: equal work, equal time.
        await this.#accounts.spendHashingTime(input.password);
        await this.#record('account.registration_duplicate', 'failure', null, by, { email: normaliseEmail(input.email), ...(error instanceof ConfusableEmailError ? { reason: 'lookalike' } : {}) });
        return;
      }
      throw error;
    }
    await this.#record('account.registered', 'success', account.id, by, { email: account.email, userType: account.userType });
    // The first link counts against the budget too (a new account's budget is never spent yet).
    await this.#takeMailBudget(account.id, 'verify_email');
    await this.#sendVerification(account);
  }

  /** Sends a new verification link (after a sign-in with the right password but an unverified address). */
  async resendVerification(accountId: string, by: Actor): Promise<void> {
    const account = await this.#accounts.findById(accountId);
    if (!account || account.emailVerified || !(await this.#takeMailBudget(account.id, 'verify_email'))) return;
    await this.#sendVerification(account);
    await this.#record('account.verification_sent', 'success', account.id, by);
  }

  /**
   * Confirms the address of a registered account. The account's password is asked for too: else
   * anyone could register someone else's address with a password of their own, and the owner's
   * click on the mailed link would activate the squatter's account. (An owner who did not register
   * uses "forgot password", which proves the mailbox and replaces the password.)
   */
  async verifyEmail(token: string, password: string, by: Actor): Promise<AccountRecord> {
    const pending = await this.#tokens.peek(token, 'verify_email');
    const owner = pending ? await this.#accounts.findById(pending) : null;
    if (!owner) {
      await this.#record('account.email_verification_failed', 'failure', null, by);
      throw new TokenInvalidError();
    }
    // authenticate() counts wrong passwords towards the lockout like any sign-in.
    const check = await this.#accounts.authenticate(owner.email, password);
    if (!check.ok && check.reason !== 'unverified') {
      await this.#record('account.email_verification_failed', 'failure', owner.id, by, { reason: 'password' });
      throw new ValidationError('the password is not the one of this account');
    }
    const accountId = await this.#tokens.redeem(token, 'verify_email');
    if (accountId !== owner.id) throw new TokenInvalidError();
    const account = await this.#accounts.markEmailVerified(accountId);
    await this.#mailboxProven(account.id);
    await this.#record('account.email_verified', 'success', account.id, by);
    return account;
  }

  /** An administrator creates an account without a password and mails a set-password link. */
  async invite(input: { email: string; name?: string | null; userType?: string; roles?: string[]; attributes?: Record<string, unknown> }, by: Actor): Promise<AccountRecord> {
    const account = await this.#accounts.create({ ...input, status: 'pending_verification', emailVerified: false });
    await this.#sendInvitation(account);
    await this.#record('account.invited', 'success', account.id, by, { email: account.email, userType: account.userType });
    return account;
  }

  async resendInvitation(emailInput: string, by: Actor): Promise<void> {
    const account = await this.#accounts.requireByEmail(emailInput);
    if (account.passwordHash) throw new ValidationError(`${account.email} has set a password already`);
    await this.#sendInvitation(account);
    await this.#record('account.invited', 'success', account.id, by, { email: account.email, resent: true });
  }

  async #sendInvitation(account: AccountRecord): Promise<void> {
    const token = await this.#tokens.issue(account.id, 'invitation', this.#settings.invitationTtlSeconds);
    const message = this.#message('invitation', { name: greetingFor(account), link: this.#link('invitation', token), hours: String(Math.round(this.#settings.invitationTtlSeconds / 3600)), issuer: this.#settings.issuer });
    await this.#mail.send({ to: account.email, ...message });
  }

  /** The account a link is for, while the link is valid (to show its form). */
  async accountForLink(token: string, purpose: 'invitation' | 'password_reset'): Promise<AccountRecord | undefined> {
    const accountId = await this.#tokens.peek(token, purpose);
    return accountId ? ((await this.#accounts.findById(accountId)) ?? undefined) : undefined;
  }

  /** Rules first, then the token is used up, then the password is set: a refused password keeps the link working. */
  async #setPasswordWithLink(token: string, purpose: 'invitation' | 'password_reset', password: string): Promise<AccountRecord> {
    const account = await this.accountForLink(token, purpose);
    if (!account) throw new TokenInvalidError();
    const problems = await this.#accounts.problemsWithNewPassword(account, password);
    if (problems.length) throw new PasswordPolicyError(problems);
    if ((await this.#tokens.redeem(token, purpose)) !== account.id) throw new TokenInvalidError();
    await this.#mailboxProven(account.id);
    const verified = account.emailVerified ? account : await this.#accounts.markEmailVerified(account.id);
    return this.#accounts.changePassword(verified.id, password);
  }

  async acceptInvitation(token: string, password: string, by: Actor): Promise<AccountRecord> {
    const account = await this.#setPasswordWithLink(token, 'invitation', password);
    await this.#record('account.invitation_accepted', 'success', account.id, by);
    return account;
  }

  /** Always ends the same way; a mail goes out only to an account that may reset its password. */
  async requestPasswordReset(emailInput: string, by: Actor): Promise<void> {
    const account = await this.#accounts.findByEmail(emailInput);
    // Everything past the lookup happens after the response, for every address alike: the time
    // to answer cannot tell an address with an account (a token to write, a mail) from one without.
    this.#afterResponse.run(async () => {
      const eligible = account && (account.status === 'active' || account.status === 'pending_verification');
      if (!account || !eligible || !(await this.#takeMailBudget(account.id, 'password_reset'))) {
        await this.#record('password_reset.refused', 'failure', account?.id ?? null, by, { email: printable(normaliseEmail(emailInput)), reason: !account ? 'unknown_account' : !eligible ? account.status : 'rate_limited' });
        return;
      }
      const token = await this.#tokens.issue(account.id, 'password_reset', this.#settings.resetTtlSeconds);
      const message = this.#message('password-reset', { name: greetingFor(account), link: this.#link('reset-password', token), minutes: String(Math.round(this.#settings.resetTtlSeconds / 60)) });
      await this.#record('password_reset.requested', 'success', account.id, by);
      await this.#mail.send({ to: account.email, ...message });
    }, async (error) => {
      this.#log.error({ err: error }, 'password reset request failed');
      await this.#audit.record({ type: 'mail.failed', outcome: 'failure', subject: account?.id ?? null, details: { purpose: 'password_reset' } });
    });
  }

  /** A new password through a reset link: every session of the account ends. */
  async resetPassword(token: string, password: string, by: Actor): Promise<AccountRecord> {
    const account = await this.#setPasswordWithLink(token, 'password_reset', password);
    await this.#accounts.clearFailures(account.id);
    const ended = await this.#sessions.revokeAll(account.id, 'password_reset', account.id);
    await this.#record('password_reset.completed', 'success', account.id, by, { sessionsEnded: ended });
    await this.#notifyPasswordChanged(account);
    return account;
  }

  /** From the account page: the current password is needed, and the other sessions end. */
  async changePassword(accountId: string, currentPassword: string, password: string, currentSid: string, by: Actor): Promise<AccountRecord> {
    let account: AccountRecord;
    try {
      account = await this.#accounts.changePassword(accountId, password, { currentPassword });
    } catch (error) {
      await this.#record('password.change_failed', 'failure', accountId, by, { error: (error as Error).message });
      throw error;
    }
    const ended = await this.#sessions.revokeAll(account.id, 'signed_out_everywhere', account.id, currentSid);
    await this.#record('password.changed', 'success', account.id, by, { sessionsEnded: ended });
    await this.#notifyPasswordChanged(account);
    return account;
  }

  /** After a forced change at sign-in (expired password): the account's other sessions end. */
  async changeExpiredPassword(accountId: string, password: string, by: Actor): Promise<AccountRecord> {
    const account = await this.#accounts.changePassword(accountId, password);
    const ended = await this.#sessions.revokeAll(account.id, 'signed_out_everywhere', account.id);
    await this.#record('password.changed', 'success', account.id, by, { reason: 'expired', sessionsEnded: ended });
    await this.#notifyPasswordChanged(account);
    return account;
  }

  async #notifyPasswordChanged(account: AccountRecord): Promise<void> {
    await this.#mail.send({ to: account.email, ...this.#message('password-changed', { name: greetingFor(account), time: new Date().toISOString() }) });
  }
}
