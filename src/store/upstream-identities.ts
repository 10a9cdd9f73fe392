// Upstream identities linked to accounts (see the UpstreamIdentity model): the unique
// (connection, issuer, subject) makes a second link of the same upstream account fail, on any node.
import { DatabaseStore } from './database.ts';

export interface UpstreamIdentityRecord {
  id: string;
  connectionId: string;
  issuer: string;
  subject: string;
  accountId: string;
  email: string | null;
  /** False for a JIT link made from an address nobody verified. */
  addressProven: boolean;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export class UpstreamIdentityStore extends DatabaseStore {
  find(connectionId: string, issuer: string, subject: string): Promise<UpstreamIdentityRecord | null> {
    return this.prisma.upstreamIdentity.findUnique({ where: { connectionId_issuer_subject: { connectionId, issuer, subject } } });
  }

  listForAccount(accountId: string): Promise<UpstreamIdentityRecord[]> {
    return this.prisma.upstreamIdentity.findMany({ where: { accountId }, orderBy: { createdAt: 'asc' } });
  }

  create(row: Omit<UpstreamIdentityRecord, 'createdAt' | 'lastUsedAt' | 'addressProven'> & { addressProven?: boolean }, now: Date): Promise<UpstreamIdentityRecord> {
    return this.prisma.upstreamIdentity.create({ data: { ...row, lastUsedAt: now } });
  }

  async touch(id: string, email: string | null, now: Date): Promise<void> {
    await this.prisma.upstreamIdentity.updateMany({ where: { id }, data: { lastUsedAt: now, email } });
  }

  /** Only the account's own link: the id alone never unlinks someone else's. */
  async delete(accountId: string, id: string): Promise<UpstreamIdentityRecord | null> {
    const row = await this.prisma.upstreamIdentity.findFirst({ where: { id, accountId } });
    if (!row) return null;
    const deleted = await this.prisma.upstreamIdentity.deleteMany({ where: { id, accountId } });
    return deleted.count ? row : null;
  }

  /** Links made from addresses nobody verified: removed once the mailbox's owner proves it. */
  async deleteUnproven(accountId: string): Promise<UpstreamIdentityRecord[]> {
    const rows = await this.prisma.upstreamIdentity.findMany({ where: { accountId, addressProven: false } });
    if (rows.length) await this.prisma.upstreamIdentity.deleteMany({ where: { accountId, addressProven: false } });
    return rows;
  }

  listForConnection(connectionId: string, limit = 10_000): Promise<UpstreamIdentityRecord[]> {
    return this.prisma.upstreamIdentity.findMany({ where: { connectionId }, orderBy: { id: 'asc' }, take: limit });
  }

  async deleteForConnection(connectionId: string): Promise<number> {
    return (await this.prisma.upstreamIdentity.deleteMany({ where: { connectionId } })).count;
  }
}
