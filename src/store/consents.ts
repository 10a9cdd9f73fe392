// Consents of accounts to third-party clients (see the Consent model). One row per (account,
// client); a new consent merges into it.
import type { PrismaClient } from './database.ts';

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

export class ConsentStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  find(accountId: string, clientId: string, now: Date): Promise<ConsentRecord | null> {
    return this.#prisma.consent.findFirst({ where: { accountId, clientId, expiresAt: { gt: now } } });
  }

  async save(row: Pick<ConsentRecord, 'accountId' | 'clientId' | 'scopes' | 'claims' | 'resources' | 'expiresAt'>): Promise<void> {
    const { accountId, clientId, ...data } = row;
    await this.#prisma.consent.upsert({ where: { accountId_clientId: { accountId, clientId } }, create: row, update: data });
  }

  async delete(accountId: string, clientId: string): Promise<boolean> {
    return (await this.#prisma.consent.deleteMany({ where: { accountId, clientId } })).count > 0;
  }

  list(accountId: string, now: Date): Promise<ConsentRecord[]> {
    return this.#prisma.consent.findMany({ where: { accountId, expiresAt: { gt: now } }, orderBy: { updatedAt: 'desc' } });
  }
}
