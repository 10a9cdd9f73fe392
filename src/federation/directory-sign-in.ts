// One directory sign-in: the address and password typed on our screen, checked against the
// company's LDAP directory. Our own limits come first — failures per login are counted here and
// stop the attempt before the directory is asked, so nobody can lock company accounts in AD
// through us — then search-then-bind, then the account: keyed by the directory's stable id (a
// rename keeps it), its name, attributes and group roles refreshed at every sign-in.
import type { AccountService, AttemptCounters } from '../accounts/service.ts';
import type { AuditSink } from '../audit/types.ts';
import type { FederatedAccounts, RequestContext } from './accounts.ts';
import type { ConnectionService } from './connections.ts';
import { tellsAccountState } from './directory-errors.ts';
import { LdapDirectory, type DirectoryUser } from './directory.ts';
import type { DirectoryConnection } from './directory-settings.ts';
import type { ShortLivedValues } from './sign-in.ts';

export type DirectoryResult =
  | { kind: 'signed_in'; accountId: string; email: string }
  | { kind: 'proof_required'; email: string; connectionName: string }
  | { kind: 'rejected'; reason: string }
  | { kind: 'throttled'; retryAfterSeconds: number }
  /** The password was right but the directory refuses the account (disabled, expired, locked…). */
  | { kind: 'refused'; reason: string; connectionName: string }
  | { kind: 'unavailable'; connectionName: string };

export interface DirectorySignInDeps {
  connections: ConnectionService;
  directory: LdapDirectory;
  accounts: FederatedAccounts;
  accountService: AccountService;
  counters: AttemptCounters;
  audit: AuditSink;
  store: ShortLivedValues;
  lockout: { threshold: number; windowSeconds: number };
  ttlSeconds: number;
}

export class DirectorySignIn {
  readonly #deps: DirectorySignInDeps;

  constructor(deps: DirectorySignInDeps) {
    this.#deps = deps;
  }

  async routed(email: string, clientId: string | undefined): Promise<DirectoryConnection | undefined> {
    return this.#deps.connections.directoryFor(email, clientId);
  }

  /** The directory's name for the screen of an address already routed to it. */
  async nameFor(email: string): Promise<string | undefined> {
    return (await this.#deps.connections.directoryFor(email, undefined, { anyClient: true }))?.displayName;
  }

  #audit(type: 'federation.signed_in' | 'federation.refused', outcome: 'success' | 'failure', subject: string | null, details: Record<string, unknown>, context: RequestContext) {
    return this.#deps.audit.record({ type, outcome, subject, clientId: context.clientId, ip: context.ip, userAgent: context.userAgent, requestId: context.requestId, details });
  }

  async verify(flowUid: string, email: string, password: string, context: RequestContext): Promise<DirectoryResult> {
    const connection = await this.routed(email, context.clientId);
    if (!connection) return { kind: 'rejected', reason: 'no_directory' };
    const failures = `directory-failures:${connection.id}:${email.trim().toLowerCase()}`;
    const { threshold, windowSeconds } = this.#deps.lockout;
    // Counted before the directory is asked (one atomic step, any node): of many parallel
    // attempts, at most `threshold` reach it; a right password gives the attempt back.
    if ((await this.#deps.counters.hit(failures, windowSeconds)) > threshold) {
      await this.#audit('federation.refused', 'failure', null, { connection: connection.id, reason: 'locked_here', detail: `${threshold} wrong passwords within ${windowSeconds} s: the directory was not asked` }, context);
      return { kind: 'throttled', retryAfterSeconds: windowSeconds };
    }
    const answer = await this.#deps.directory.authenticate(connection, await this.#deps.connections.secretOf(connection), email, password);
    if (!answer.ok) {
      if (answer.reason === 'unavailable') {
        await this.#audit('federation.refused', 'failure', null, { connection: connection.id, reason: 'directory_unavailable', detail: answer.detail }, context);
        return { kind: 'unavailable', connectionName: connection.displayName };
      }
      const stateTold = tellsAccountState(answer.reason as never) && !['invalid_login', 'no_user', 'ambiguous'].includes(answer.reason);
      await this.#audit('federation.refused', 'failure', null, { connection: connection.id, reason: answer.reason, detail: 'the directory refused the sign-in' }, context);
      return stateTold ? { kind: 'refused', reason: answer.reason, connectionName: connection.displayName } : { kind: 'rejected', reason: answer.reason };
    }
    await this.#deps.counters.reset(failures);
    return this.#signedIn(connection, answer.user, email, flowUid, context);
  }

  /**
   * Active Directory: the expired (532) or must-change (773) password replaced by the user, who
   * types the current one again; counted like a sign-in.
   */
  async changePassword(flowUid: string, email: string, current: string, next: string, context: RequestContext): Promise<DirectoryResult | { kind: 'refused_by_policy'; connectionName: string }> {
    const connection = await this.routed(email, context.clientId);
    if (!connection) return { kind: 'rejected', reason: 'no_directory' };
    const failures = `directory-failures:${connection.id}:${email.trim().toLowerCase()}`;
    const { threshold, windowSeconds } = this.#deps.lockout;
    if ((await this.#deps.counters.hit(failures, windowSeconds)) > threshold) return { kind: 'throttled', retryAfterSeconds: windowSeconds };
    const answer = await this.#deps.directory.changePassword(connection, await this.#deps.connections.secretOf(connection), email, current, next);
    if (!answer.ok) {
      if (answer.reason === 'unavailable') return { kind: 'unavailable', connectionName: connection.displayName };
      if (answer.reason === 'refused_by_policy') {
        await this.#audit('federation.refused', 'failure', null, { connection: connection.id, reason: 'new_password_refused', detail: 'the directory refused the new password (its rules)' }, context);
        return { kind: 'refused_by_policy', connectionName: connection.displayName };
      }
      await this.#audit('federation.refused', 'failure', null, { connection: connection.id, reason: answer.reason, detail: 'the directory refused the password change' }, context);
      return { kind: 'rejected', reason: answer.reason };
    }
    await this.#deps.counters.reset(failures);
    return this.#signedIn(connection, answer.user, email, flowUid, context);
  }

  async #signedIn(connection: DirectoryConnection, user: DirectoryUser, email: string, flowUid: string, context: RequestContext): Promise<DirectoryResult> {
    const address = user.email ?? email;
    const roles = LdapDirectory.rolesOf(connection, user.groups);
    const profile = {
      issuer: `ldap:${connection.id}`, subject: user.id, email: address, name: user.name,
      // The directory has no email_verified: the operator says which domains it owns.
      emailVerified: connection.settings.authoritativeDomains.includes(address.slice(address.lastIndexOf('@') + 1).toLowerCase()),
      roles, attributes: user.custom,
    };
    const resolution = await this.#deps.accounts.resolve(connection, profile, context);
    const who = { connection: connection.id, issuer: profile.issuer, upstreamSubject: user.id };
    switch (resolution.kind) {
      case 'account': {
        // The directory is the source of truth for what it maps: refreshed at every sign-in.
        const changes = {
          ...(user.name ? { name: user.name } : {}),
          ...(Object.keys(connection.settings.groupRoles).length ? { roles } : {}),
          ...(Object.keys(user.custom).length ? { attributes: { ...(await this.#deps.accountService.findById(resolution.accountId))?.attributes, ...user.custom } } : {}),
        };
        if (!resolution.created && Object.keys(changes).length) await this.#deps.accountService.update(resolution.email, changes);
        await this.#audit('federation.signed_in', 'success', resolution.accountId, { ...who, mfaEvidence: null, amr: ['pwd'] }, context);
        return { kind: 'signed_in', accountId: resolution.accountId, email: resolution.email };
      }
      case 'proof_required':
        await this.#deps.accounts.holdLink(this.#deps.store, flowUid, { connectionId: connection.id, issuer: profile.issuer, subject: user.id, email: address, accountId: resolution.accountId }, this.#deps.ttlSeconds);
        return { kind: 'proof_required', email: resolution.email, connectionName: connection.displayName };
      case 'refused':
        await this.#audit('federation.refused', 'failure', null, { ...who, reason: resolution.reason, detail: 'no account may be signed in to' }, context);
        return { kind: 'refused', reason: resolution.reason, connectionName: connection.displayName };
    }
  }

  completeLink(flowUid: string, accountId: string | undefined, context: RequestContext): Promise<void> {
    return this.#deps.accounts.completeHeldLink(this.#deps.store, flowUid, accountId, context, (id) => this.#deps.connections.findDirectory(id));
  }
}
