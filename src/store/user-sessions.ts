// The session index: one row per signed-in browser session, beside oidc-provider's own Session
// record (in Redis or OidcRecord), so sessions can be listed and ended per account on any node.
import type { PrismaClient } from './database.ts';

export interface UserSessionRecord {
  sid: string;
  storageId: string;
  accountId: string;
  createdAt: Date;
  lastSeenAt: Date;
  expiresAt: Date;
  ip: string | null;
  userAgent: string | null;
  location: string | null;
  amr: string;
  clients: string;
  endedAt: Date | null;
  endReason: string | null;
}

export type SessionSave = Omit<UserSessionRecord, 'endedAt' | 'endReason'>;

export class UserSessionStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  find(sid: string): Promise<UserSessionRecord | null> {
    return this.#prisma.userSession.findUnique({ where: { sid } });
  }

  async save(row: SessionSave): Promise<void> {
    const { sid, createdAt: _createdAt, ...changes } = row;
    // ip and user agent stay those of the sign-in; lastSeenAt moves with every use.
    const { ip: _ip, userAgent: _ua, location: _location, ...moving } = changes;
    await this.#prisma.userSession.upsert({ where: { sid }, create: row, update: { ...moving, createdAt: row.createdAt, endedAt: null, endReason: null } });
  }

  /** Active sessions of an account, newest sign-in first. */
  active(accountId: string, now = new Date()): Promise<UserSessionRecord[]> {
    return this.#prisma.userSession.findMany({ where: { accountId, endedAt: null, expiresAt: { gt: now } }, orderBy: { createdAt: 'desc' } });
  }

  /** Marks a session ended; only the first ending counts. Returns the row when this call ended it. */
  async end(sid: string, reason: string): Promise<UserSessionRecord | undefined> {
    const result = await this.#prisma.userSession.updateMany({ where: { sid, endedAt: null }, data: { endedAt: new Date(), endReason: reason } });
    return result.count === 1 ? ((await this.find(sid)) ?? undefined) : undefined;
  }

  async endByStorageId(storageId: string, reason: string): Promise<void> {
    await this.#prisma.userSession.updateMany({ where: { storageId, endedAt: null }, data: { endedAt: new Date(), endReason: reason } });
  }

  /** Rows ended or expired more than `keepDays` ago. */
  async sweep(keepDays = 30): Promise<void> {
    const before = new Date(Date.now() - keepDays * 86_400_000);
    await this.#prisma.userSession.deleteMany({ where: { expiresAt: { lt: before } } });
  }
}
