// Consents of accounts to third-party clients (see the Consent model). One row per (account,
// client); a new consent merges into it.
import { DatabaseStore, readDate } from './database.ts';

export interface ConsentRecord {
  accountId: string;
  clientId: string;
  scopes: string;
  claims: string;
  resources: string;
  createdAt: Date;
  updatedAt: Date;
  expiresAt: Date;
}

// Looked up on every sign-in to a third-party client: plain SQL (Database.sql).
const findSql = 'SELECT "accountId", "clientId", "scopes", "claims", "resources", "createdAt", "updatedAt", "expiresAt" FROM "Consent" WHERE "accountId" = ? AND "clientId" = ? AND "expiresAt" > ?';

type ConsentRow = Omit<ConsentRecord, 'createdAt' | 'updatedAt' | 'expiresAt'> & { createdAt: unknown; updatedAt: unknown; expiresAt: unknown };

export class ConsentStore extends DatabaseStore {
  async find(accountId: string, clientId: string, now: Date): Promise<ConsentRecord | null> {
    const row = (await this.sql.query<ConsentRow>(findSql, [accountId, clientId, now]))[0];
    if (!row) return null;
    return { ...row, createdAt: readDate(row.createdAt), updatedAt: readDate(row.updatedAt), expiresAt: readDate(row.expiresAt) };
  }

  async save(row: Pick<ConsentRecord, 'accountId' | 'clientId' | 'scopes' | 'claims' | 'resources' | 'expiresAt'>): Promise<void> {
    const { accountId, clientId, ...data } = row;
    await this.prisma.consent.upsert({ where: { accountId_clientId: { accountId, clientId } }, create: row, update: data });
  }

  async delete(accountId: string, clientId: string): Promise<boolean> {
    return (await this.prisma.consent.deleteMany({ where: { accountId, clientId } })).count > 0;
  }

  list(accountId: string, now: Date): Promise<ConsentRecord[]> {
    return this.prisma.consent.findMany({ where: { accountId, expiresAt: { gt: now } }, orderBy: { updatedAt: 'desc' } });
  }
}
