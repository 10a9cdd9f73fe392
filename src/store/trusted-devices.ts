// "Remember this device": the SHA-256 of a random token kept in a cookie, bound to one account.
import { DatabaseStore } from './database.ts';

// Checked on every sign-in that would ask for a second factor: plain SQL (Database.sql).
const isTrustedSql = 'SELECT 1 AS "trusted" FROM "TrustedDevice" WHERE "hash" = ? AND "accountId" = ? AND "expiresAt" > ? LIMIT 1';

export class TrustedDeviceStore extends DatabaseStore {
  async add(hash: string, accountId: string, expiresAt: Date, userAgent: string | null): Promise<void> {
    await this.prisma.trustedDevice.create({ data: { hash, accountId, expiresAt, userAgent } });
  }

  async isTrusted(hash: string, accountId: string): Promise<boolean> {
    return (await this.sql.query(isTrustedSql, [hash, accountId, new Date()])).length > 0;
  }

  async forgetAll(accountId: string): Promise<number> {
    return (await this.prisma.trustedDevice.deleteMany({ where: { accountId } })).count;
  }
}
