// The session index: one row per signed-in browser session, beside oidc-provider's own Session
// record (in Redis or OidcRecord), so sessions can be listed and ended per account on any node.
import { DatabaseStore, readDate, readOptionalDate } from './database.ts';

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

// Every save of an oidc-provider session reads and upserts its row here (several times per
// sign-in): plain SQL (Database.sql). Rows are those Prisma writes and reads.
const sessionColumns = '"sid", "storageId", "accountId", "createdAt", "lastSeenAt", "expiresAt", "ip", "userAgent", "location", "amr", "clients", "endedAt", "endReason"';
const findSql = `SELECT ${sessionColumns} FROM "UserSession" WHERE "sid" = ?`;
// ip, user agent and location stay those of the sign-in; lastSeenAt moves with every use, and a
// save brings an ended session back (a final ending is checked by the caller before saving).
const saveSql = `INSERT INTO "UserSession" ("sid", "storageId", "accountId", "createdAt", "lastSeenAt", "expiresAt", "ip", "userAgent", "location", "amr", "clients") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT ("sid") DO UPDATE SET "storageId" = excluded."storageId", "accountId" = excluded."accountId", "createdAt" = excluded."createdAt", "lastSeenAt" = excluded."lastSeenAt",
    "expiresAt" = excluded."expiresAt", "amr" = excluded."amr", "clients" = excluded."clients", "endedAt" = NULL, "endReason" = NULL`;
const activeSql = `SELECT ${sessionColumns} FROM "UserSession" WHERE "accountId" = ? AND "endedAt" IS NULL AND "expiresAt" > ? ORDER BY "createdAt" DESC`;
const endSql = 'UPDATE "UserSession" SET "endedAt" = ?, "endReason" = ? WHERE "sid" = ? AND "endedAt" IS NULL';
const endByStorageIdSql = 'UPDATE "UserSession" SET "endedAt" = ?, "endReason" = ? WHERE "storageId" = ? AND "endedAt" IS NULL';

type SessionRow = Omit<UserSessionRecord, 'createdAt' | 'lastSeenAt' | 'expiresAt' | 'endedAt'> & { createdAt: unknown; lastSeenAt: unknown; expiresAt: unknown; endedAt: unknown };

function toSession(row: SessionRow): UserSessionRecord {
  return {
    sid: row.sid,
    storageId: row.storageId,
    accountId: row.accountId,
    createdAt: readDate(row.createdAt),
    lastSeenAt: readDate(row.lastSeenAt),
    expiresAt: readDate(row.expiresAt),
    ip: row.ip,
    userAgent: row.userAgent,
    location: row.location,
    amr: row.amr,
    clients: row.clients,
    endedAt: readOptionalDate(row.endedAt),
    endReason: row.endReason,
  };
}

export class UserSessionStore extends DatabaseStore {
  async find(sid: string): Promise<UserSessionRecord | null> {
    const row = (await this.sql.query<SessionRow>(findSql, [sid]))[0];
    return row ? toSession(row) : null;
  }

  async save(row: SessionSave): Promise<void> {
    await this.sql.run(saveSql, [row.sid, row.storageId, row.accountId, row.createdAt, row.lastSeenAt, row.expiresAt, row.ip, row.userAgent, row.location, row.amr, row.clients]);
  }

  /** Active sessions of an account, newest sign-in first. */
  async active(accountId: string, now = new Date()): Promise<UserSessionRecord[]> {
    return (await this.sql.query<SessionRow>(activeSql, [accountId, now])).map(toSession);
  }

  /** Marks a session ended; only the first ending counts. Returns the row when this call ended it. */
  async end(sid: string, reason: string): Promise<UserSessionRecord | undefined> {
    const changed = await this.sql.run(endSql, [new Date(), reason, sid]);
    return changed === 1 ? ((await this.find(sid)) ?? undefined) : undefined;
  }

  async endByStorageId(storageId: string, reason: string): Promise<void> {
    await this.sql.run(endByStorageIdSql, [new Date(), reason, storageId]);
  }

  /** Rows ended or expired more than `keepDays` ago. */
  async sweep(keepDays = 30): Promise<void> {
    const before = new Date(Date.now() - keepDays * 86_400_000);
    await this.prisma.userSession.deleteMany({ where: { expiresAt: { lt: before } } });
  }
}
