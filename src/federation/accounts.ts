// Which account an upstream identity signs in to. An identity already linked signs in to its
// account. Otherwise an address alone never reaches an existing account (the nOAuth attack: an
// upstream lets anyone put any address on their profile) unless the connection is authoritative
// for its domain AND the upstream asserts email_verified: true; else the user proves the account
// by signing in to it, and the link is made once that whole sign-in (MFA included) is through.
// Without any account, JIT provisioning creates one when the connection allows it.
import { randomUUID } from 'node:crypto';
import type { AccountService } from '../accounts/service.ts';
import type { AuditSink } from '../audit/types.ts';
import type { Clock } from '../clock.ts';
import { ConflictError } from '../errors.ts';
import { isUniqueViolation } from '../store/database.ts';
import type { UpstreamIdentityRecord, UpstreamIdentityStore } from '../store/upstream-identities.ts';
import type { UpstreamProfile } from './profile.ts';
import type { Preset } from './settings.ts';

/** What linking needs of a connection of any kind (upstream OIDC, directory). */
export interface LinkableConnection {
  id: string;
  preset: Preset | string;
  settings: { authoritativeDomains: string[]; jit: { enabled: boolean; status: 'active' | 'disabled'; userType: string } };
}

export type Resolution =
  | { kind: 'account'; accountId: string; email: string; created: boolean }
  /** An account has this address: the user signs in to it first; then the identity is linked. */
  | { kind: 'proof_required'; accountId: string; email: string }
  | { kind: 'refused'; reason: 'no_account' | 'no_email' | 'account_disabled' | 'address_taken' };

/** What a proof sign-in will link once it is through (kept with the flow, short-lived). */
export interface PendingLink {
  connectionId: string;
  issuer: string;
  subject: string;
  email: string | null;
  accountId: string;
}

/** Where held links wait (the flows' short-lived store). */
export interface PendingLinks {
  set(key: string, value: unknown, ttlSeconds: number): Promise<void>;
  take<T>(key: string): Promise<T | undefined>;
}

export interface RequestContext {
  clientId?: string | undefined;
  ip?: string | undefined;
  userAgent?: string | undefined;
  requestId?: string | undefined;
}

const domainOf = (email: string) => email.slice(email.lastIndexOf('@') + 1).toLowerCase();

export class FederatedAccounts {
  readonly #accounts: AccountService;
  readonly #identities: UpstreamIdentityStore;
  readonly #audit: AuditSink;
  readonly #clock: Clock;

  readonly #otherFirstFactors: (accountId: string) => Promise<boolean>;

  /**
   * `otherFirstFactors`: whether the account can sign in without any upstream (a passkey, a code
   * mailed to its verified address) beyond a password, which is checked here.
   */
  constructor(deps: { accounts: AccountService; identities: UpstreamIdentityStore; audit: AuditSink; clock: Clock; otherFirstFactors?: (accountId: string) => Promise<boolean> }) {
    this.#otherFirstFactors = deps.otherFirstFactors ?? (async () => false);
    this.#accounts = deps.accounts;
    this.#identities = deps.identities;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
  }

  #record(type: 'federation.account_created' | 'federation.linked' | 'federation.link_required' | 'federation.link_refused' | 'federation.unlinked', outcome: 'success' | 'failure', subject: string | null, details: Record<string, unknown>, context: RequestContext) {
    return this.#audit.record({ type, outcome, subject, clientId: context.clientId, ip: context.ip, userAgent: context.userAgent, requestId: context.requestId, details });
  }

  async resolve(connection: LinkableConnection, profile: UpstreamProfile, context: RequestContext): Promise<Resolution> {
    const who = { connection: connection.id, issuer: profile.issuer, upstreamSubject: profile.subject };
    const linked = await this.#identities.find(connection.id, profile.issuer, profile.subject);
    if (linked) {
      const account = await this.#accounts.findById(linked.accountId);
      if (account) {
        await this.#identities.touch(linked.id, profile.email ?? null, new Date(this.#clock.now()));
        return account.status === 'active' ? { kind: 'account', accountId: account.id, email: account.email, created: false } : { kind: 'refused', reason: 'account_disabled' };
      }
    }
    const existing = profile.email ? await this.#accounts.findByEmail(profile.email) : null;
    if (existing) {
      const trusted = profile.emailVerified && connection.preset !== 'entra' && connection.settings.authoritativeDomains.includes(domainOf(existing.email));
      if (!trusted) {
        await this.#record('federation.link_required', 'success', existing.id, who, context);
        return { kind: 'proof_required', accountId: existing.id, email: existing.email };
      }
      await this.#link(connection, profile, existing.id, 'verified_email', context);
      return existing.status === 'active' ? { kind: 'account', accountId: existing.id, email: existing.email, created: false } : { kind: 'refused', reason: 'account_disabled' };
    }
    const { jit } = connection.settings;
    if (!jit.enabled) return { kind: 'refused', reason: 'no_account' };
    if (!profile.email) return { kind: 'refused', reason: 'no_email' };
    let created;
    try {
      created = await this.#accounts.create({
        email: profile.email, name: profile.name ?? null, emailVerified: profile.emailVerified,
        status: jit.status, userType: jit.userType, roles: profile.roles, attributes: profile.attributes,
      });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      // The same upstream account's first sign-in on another tab or node got there first: its account.
      const raced = await this.#identities.find(connection.id, profile.issuer, profile.subject);
      const account = raced && (await this.#accounts.findById(raced.accountId));
      if (account) return account.status === 'active' ? { kind: 'account', accountId: account.id, email: account.email, created: false } : { kind: 'refused', reason: 'account_disabled' };
      // A look-alike of an existing address, or that address created a moment ago by someone else:
      // never a link; the user can sign in to that account and link from there.
      return { kind: 'refused', reason: 'address_taken' };
    }
    await this.#record('federation.account_created', 'success', created.id, { ...who, status: jit.status, userType: jit.userType }, context);
    // From an address nobody verified, the link lasts until the mailbox's owner turns up.
    await this.#link(connection, profile, created.id, 'jit', context, profile.emailVerified);
    return created.status === 'active' ? { kind: 'account', accountId: created.id, email: created.email, created: true } : { kind: 'refused', reason: 'account_disabled' };
  }

  async #link(connection: LinkableConnection, profile: Pick<UpstreamProfile, 'issuer' | 'subject' | 'email'>, accountId: string, by: 'verified_email' | 'proof' | 'jit', context: RequestContext, addressProven = true): Promise<void> {
    try {
      await this.#identities.create({ id: randomUUID(), connectionId: connection.id, issuer: profile.issuer, subject: profile.subject, accountId, email: profile.email ?? null, addressProven }, new Date(this.#clock.now()));
    } catch (error) {
      // Two first sign-ins of the same upstream account at once: the other one linked it.
      if (!isUniqueViolation(error)) throw error;
      return;
    }
    await this.#record('federation.linked', 'success', accountId, { connection: connection.id, issuer: profile.issuer, upstreamSubject: profile.subject, by }, context);
  }

  /** Keeps what a proof sign-in will link, with the flow, until that sign-in is through. */
  async holdLink(store: PendingLinks, flowUid: string, pending: PendingLink, ttlSeconds: number): Promise<void> {
    await store.set(`upstream-link:${flowUid}`, pending, ttlSeconds);
  }

  /**
   * The sign-in a proof handed over to is through: links the held identity (once) when it signed
   * in to the account the address belongs to. `find`: the connection the link is for.
   */
  async completeHeldLink(store: PendingLinks, flowUid: string, accountId: string | undefined, context: RequestContext, find: (id: string) => Promise<LinkableConnection | undefined>): Promise<void> {
    const pending = await store.take<PendingLink>(`upstream-link:${flowUid}`);
    const connection = pending && (await find(pending.connectionId));
    if (pending && connection) await this.completeLink(connection, pending, accountId, context);
  }

  /** After a proof sign-in: links when it signed in to the account the address belongs to. */
  async completeLink(connection: LinkableConnection, pending: PendingLink, accountId: string | undefined, context: RequestContext): Promise<boolean> {
    if (accountId !== pending.accountId) {
      await this.#record('federation.link_refused', 'failure', accountId ?? null, { connection: pending.connectionId, upstreamSubject: pending.subject }, context);
      return false;
    }
    await this.#link(connection, { ...pending, email: pending.email ?? undefined }, accountId, 'proof', context);
    return true;
  }

  /**
   * The mailbox of the account's address was just proven (a reset, invitation or verification
   * link): links that JIT made from that address while nobody had verified it end — whoever
   * claimed the address upstream was not necessarily its owner.
   */
  async mailboxProven(accountId: string): Promise<void> {
    for (const removed of await this.#identities.deleteUnproven(accountId)) {
      await this.#record('federation.unlinked', 'success', accountId, { connection: removed.connectionId, issuer: removed.issuer, upstreamSubject: removed.subject, reason: 'address_proven_by_owner' }, {});
    }
  }

  linksOf(accountId: string): Promise<UpstreamIdentityRecord[]> {
    return this.#identities.listForAccount(accountId);
  }

  /** Whether the account can still sign in once link `id` is gone: a password, another link, a passkey or an emailed code. */
  async otherWays(accountId: string, id: string): Promise<boolean> {
    const account = await this.#accounts.findById(accountId);
    if (!account) return false;
    if (account.passwordHash !== null) return true;
    if ((await this.#identities.listForAccount(accountId)).some((link) => link.id !== id)) return true;
    return this.#otherFirstFactors(accountId);
  }

  /** Unlinks one of the account's own identities; false when it has none with that id. */
  async unlink(accountId: string, id: string, context: RequestContext): Promise<boolean> {
    const removed = await this.#identities.delete(accountId, id);
    if (!removed) return false;
    await this.#record('federation.unlinked', 'success', accountId, { connection: removed.connectionId, issuer: removed.issuer, upstreamSubject: removed.subject }, context);
    return true;
  }
}
