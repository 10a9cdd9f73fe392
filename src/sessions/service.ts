// Sessions of signed-in users: the index kept beside oidc-provider's sessions, the concurrent
// session limit, and ending sessions (by the user, an administrator, a password reset or the
// limit). Ending a session removes it from the provider's store, revokes the grants (and so the
// refresh tokens) it holds, and sends back-channel logout to the clients that registered for it.
import { UAParser } from 'ua-parser-js';
import type { AuditSink } from '../audit/types.ts';
import type { Logger } from '../log.ts';
import type { UserSessionRecord, UserSessionStore } from '../store/user-sessions.ts';

/** What the provider side does when a session ends (src/provider/session-ops.ts). */
export interface ProviderSessionOps {
  destroySession(storageId: string): Promise<void>;
  revokeGrant(grantId: string): Promise<void>;
  /** Sends back-channel logout if the client registered a URI; false when it has none. */
  backchannelLogout(clientId: string, accountId: string, sid: string): Promise<boolean>;
  /** Every grant of the account (only those of `clientId` when given), offline ones included. */
  grantsOf(accountId: string, clientId?: string): Promise<string[]>;
}

export interface SessionPolicy {
  idleSeconds: number;
  absoluteSeconds: number;
  /** 0: unlimited. */
  maxConcurrent: number;
}

/** oidc-provider's Session payload, the parts we read. */
export interface ProviderSessionPayload {
  uid?: string;
  accountId?: string;
  loginTs?: number;
  amr?: string[];
  authorizations?: Record<string, { sid?: string; grantId?: string }>;
}

export interface SessionView {
  sid: string;
  device: string;
  ip: string | null;
  location: string | null;
  createdAt: Date;
  lastSeenAt: Date;
  expiresAt: Date;
  clients: string[];
}

// Reasons that end a session for good: a save of that session arriving later (a request that
// was already in flight) must not bring it back.
const finalReasons = new Set(['revoked', 'signed_out_everywhere', 'session_limit', 'password_reset', 'admin_revoked']);

export function describeDevice(userAgent: string | null): string {
  if (!userAgent) return 'Unknown device';
  const { browser, os, device } = new UAParser(userAgent).getResult();
  const parts = [browser.name && `${browser.name}${browser.major ? ` ${browser.major}` : ''}`, os.name && `on ${os.name}${os.version ? ` ${os.version}` : ''}`, device.model && `(${device.model})`].filter(Boolean);
  return parts.length ? parts.join(' ') : userAgent.slice(0, 80);
}

export class SessionService {
  readonly #store: UserSessionStore;
  readonly #audit: AuditSink;
  readonly #policy: SessionPolicy;
  readonly #ops: () => ProviderSessionOps;
  readonly #log: Logger;
  readonly #onRevokeAll: ((accountId: string) => Promise<unknown>) | undefined;

  /** `onRevokeAll`: what else ends with every session (remembered devices). */
  constructor(deps: { store: UserSessionStore; audit: AuditSink; policy: SessionPolicy; ops: () => ProviderSessionOps; log: Logger; onRevokeAll?: (accountId: string) => Promise<unknown> }) {
    this.#onRevokeAll = deps.onRevokeAll;
    this.#store = deps.store;
    this.#audit = deps.audit;
    this.#policy = deps.policy;
    this.#ops = deps.ops;
    this.#log = deps.log;
  }

  get policy(): SessionPolicy {
    return this.#policy;
  }

  /** Seconds a session saved now should live: the idle timeout, capped by the absolute lifetime. */
  ttlFor(loginTs: number | undefined, now = Date.now() / 1000): number {
    if (!loginTs) return this.#policy.idleSeconds;
    return Math.max(1, Math.floor(Math.min(this.#policy.idleSeconds, loginTs + this.#policy.absoluteSeconds - now)));
  }

  /**
   * Called when oidc-provider saves a session. Returns false when the session was ended for good
   * (the save must then be dropped, so it does not come back).
   */
  async saved(storageId: string, payload: ProviderSessionPayload, expiresIn: number, request: { ip?: string | undefined; userAgent?: string | undefined }): Promise<boolean> {
    if (!payload.uid || !payload.accountId) return true;
    const existing = await this.#store.find(payload.uid);
    if (existing?.endedAt && existing.endReason && finalReasons.has(existing.endReason)) return false;
    // Past the absolute lifetime a session in use is not saved again (oidc-provider would keep it
    // alive one second per save, and its own expiry check allows 15 s of clock skew).
    if (payload.loginTs && Date.now() / 1000 >= payload.loginTs + this.#policy.absoluteSeconds) {
      if (existing && !existing.endedAt) await this.#store.end(payload.uid, 'expired');
      return false;
    }
    const createdAt = new Date((payload.loginTs ?? Math.floor(Date.now() / 1000)) * 1000);
    const newSignIn = !existing || existing.accountId !== payload.accountId || existing.createdAt.getTime() !== createdAt.getTime();
    await this.#store.save({
      sid: payload.uid,
      storageId,
      accountId: payload.accountId,
      createdAt,
      lastSeenAt: new Date(),
      expiresAt: new Date(Date.now() + expiresIn * 1000),
      ip: request.ip ?? null,
      userAgent: request.userAgent?.slice(0, 512) ?? null,
      location: null,
      amr: JSON.stringify(payload.amr ?? []),
      clients: JSON.stringify(payload.authorizations ?? {}),
    });
    if (newSignIn && this.#policy.maxConcurrent > 0) await this.#enforceLimit(payload.accountId, payload.uid);
    return true;
  }

  async destroyed(storageId: string): Promise<void> {
    await this.#store.endByStorageId(storageId, 'logout');
  }

  async #enforceLimit(accountId: string, keepSid: string): Promise<void> {
    const active = (await this.#store.active(accountId)).filter((s) => s.sid !== keepSid);
    const excess = active.slice(Math.max(0, this.#policy.maxConcurrent - 1));
    for (const session of excess) {
      if (await this.#end(session.sid, 'session_limit')) {
        await this.#audit.record({ type: 'session.ended_by_limit', outcome: 'success', subject: accountId, details: { sid: session.sid, newSid: keepSid, limit: this.#policy.maxConcurrent } });
      }
    }
  }

  async list(accountId: string): Promise<SessionView[]> {
    return (await this.#store.active(accountId)).map((row) => ({
      sid: row.sid,
      device: describeDevice(row.userAgent),
      ip: row.ip,
      location: row.location,
      createdAt: row.createdAt,
      lastSeenAt: row.lastSeenAt,
      expiresAt: row.expiresAt,
      clients: Object.keys(JSON.parse(row.clients) as Record<string, unknown>),
    }));
  }

  find(sid: string): Promise<UserSessionRecord | null> {
    return this.#store.find(sid);
  }

  /**
   * Ends one session of an account, named by its id or by the `sid` claim one of its clients got
   * (oidc-provider gives each client its own). False when it is not an active session of that account.
   */
  async revoke(accountId: string, sidOrClientSid: string, reason: 'revoked' | 'admin_revoked', actor: string | null): Promise<boolean> {
    const row = (await this.#store.find(sidOrClientSid))
      ?? (await this.#store.active(accountId)).find((s) => Object.values(JSON.parse(s.clients) as Record<string, { sid?: string }>).some((a) => a.sid === sidOrClientSid))
      ?? null;
    if (!row || row.accountId !== accountId || row.endedAt) return false;
    const sid = row.sid;
    const ended = await this.#end(sid, reason);
    if (ended) await this.#audit.record({ type: 'session.revoked', outcome: 'success', actor, subject: accountId, details: { sid, reason } });
    return ended;
  }

  /**
   * Ends every session of an account (but `exceptSid`) and revokes every grant it holds outside
   * that session, offline grants of sessions long gone included; returns how many sessions ended.
   */
  /** Revokes every grant one client holds for the account (its tokens die with them): consent withdrawn. */
  async revokeClient(accountId: string, clientId: string): Promise<number> {
    const ops = this.#ops();
    const grants = await ops.grantsOf(accountId, clientId);
    for (const grantId of grants) await ops.revokeGrant(grantId);
    return grants.length;
  }

  async revokeAll(accountId: string, reason: 'signed_out_everywhere' | 'admin_revoked' | 'password_reset' | 'directory_removed', actor: string | null, exceptSid?: string): Promise<number> {
    let count = 0;
    let kept: string[] = [];
    for (const session of await this.#store.active(accountId)) {
      if (session.sid === exceptSid) kept = Object.values(JSON.parse(session.clients) as Record<string, { grantId?: string }>).flatMap((a) => (a.grantId ? [a.grantId] : []));
      else if (await this.#end(session.sid, reason)) count++;
    }
    const ops = this.#ops();
    const grants = (await ops.grantsOf(accountId)).filter((grantId) => !kept.includes(grantId));
    for (const grantId of grants) await ops.revokeGrant(grantId);
    await this.#onRevokeAll?.(accountId);
    await this.#audit.record({ type: 'session.revoked_all', outcome: 'success', actor, subject: accountId, details: { reason, count, grantsRevoked: grants.length } });
    return count;
  }

  async #end(sid: string, reason: string): Promise<boolean> {
    const row = await this.#store.end(sid, reason);
    if (!row) return false;
    const ops = this.#ops();
    await ops.destroySession(row.storageId);
    const clients = JSON.parse(row.clients) as Record<string, { sid?: string; grantId?: string }>;
    for (const [clientId, authorization] of Object.entries(clients)) {
      if (authorization.grantId) await ops.revokeGrant(authorization.grantId);
      try {
        const sent = await ops.backchannelLogout(clientId, row.accountId, authorization.sid ?? sid);
        if (sent) await this.#audit.record({ type: 'backchannel_logout.sent', outcome: 'success', subject: row.accountId, clientId, details: { sid: authorization.sid ?? sid, reason } });
      } catch (error) {
        this.#log.warn({ err: error, clientId }, 'back-channel logout failed');
        await this.#audit.record({ type: 'backchannel_logout.failed', outcome: 'failure', subject: row.accountId, clientId, details: { error: (error as Error).message, reason } });
      }
    }
    return true;
  }
}
