// The periodic check that a directory still has the users linked to it: a user removed (or, on
// Active Directory, disabled) there loses the sessions and refresh tokens held here, not only the
// next sign-in. One node runs it per interval (a lock that expires on its own); a directory that
// cannot answer ends nobody's session.
import type { AuditSink } from '../audit/types.ts';
import type { ConnectionService } from './connections.ts';
import { DirectoryUnavailable, type LdapDirectory } from './directory.ts';
import type { UpstreamIdentityStore } from '../store/upstream-identities.ts';

export interface DirectoryReviewDeps {
  connections: ConnectionService;
  directory: LdapDirectory;
  identities: UpstreamIdentityStore;
  /** Ends every session of the account (refresh tokens revoked, back-channel logout sent). */
  endSessions(accountId: string): Promise<number>;
  audit: AuditSink;
  lock: { acquire(key: string, ttlSeconds: number): Promise<string | undefined> };
  intervalSeconds: number;
}

export interface ReviewResult {
  connection: string;
  checked: number;
  removed: number;
  sessionsEnded: number;
  error?: string;
}

export class DirectoryReview {
  readonly #deps: DirectoryReviewDeps;

  constructor(deps: DirectoryReviewDeps) {
    this.#deps = deps;
  }

  /** The scheduled run: skipped when another node (or this one) ran it within the interval. */
  async tick(): Promise<ReviewResult[] | undefined> {
    if (!(await this.#deps.lock.acquire('directory-review', Math.max(1, this.#deps.intervalSeconds - 1)))) return undefined;
    return this.run();
  }

  async run(): Promise<ReviewResult[]> {
    const results: ReviewResult[] = [];
    for (const connection of await this.#deps.connections.listAll()) {
      if (connection.kind !== 'ldap' || !connection.enabled) continue;
      const links = await this.#deps.identities.listForConnection(connection.id);
      const result: ReviewResult = { connection: connection.id, checked: links.length, removed: 0, sessionsEnded: 0 };
      results.push(result);
      if (!links.length) continue;
      let present: Set<string>;
      try {
        present = await this.#deps.directory.stillThere(connection, await this.#deps.connections.secretOf(connection), links.map((l) => l.subject));
      } catch (error) {
        if (!(error instanceof DirectoryUnavailable) && !/ECONN|Timeout|socket|closed/i.test(String((error as Error).message))) throw error;
        result.error = (error as Error).message;
        continue;
      }
      for (const link of links) {
        if (present.has(link.subject)) continue;
        result.removed++;
        const ended = await this.#deps.endSessions(link.accountId);
        result.sessionsEnded += ended;
        // The directory no longer knows them: the link goes (the account stays, without this way in).
        await this.#deps.identities.delete(link.accountId, link.id);
        await this.#deps.audit.record({
          type: 'federation.upstream_removed', outcome: 'success', actor: 'directory-review', subject: link.accountId,
          details: { connection: connection.id, upstreamSubject: link.subject, sessionsEnded: ended },
        });
      }
    }
    return results;
  }
}
