// Single-use tokens mailed to users. Only a SHA-256 of each token is kept: the tokens are 256-bit
// random, so a plain hash suffices (no dictionary to guess from), and a leaked table reveals none.
import type { PrismaClient } from './database.ts';

export type AccountTokenPurpose = 'verify_email' | 'invitation' | 'password_reset';

export class AccountTokenStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  async create(hash: string, accountId: string, purpose: AccountTokenPurpose, expiresAt: Date): Promise<void> {
    await this.#prisma.accountToken.create({ data: { hash, accountId, purpose, expiresAt } });
  }

  /** The account of a live token, without using it up (to render the form a link leads to). */
  async peek(hash: string, purpose: AccountTokenPurpose): Promise<string | undefined> {
    const row = await this.#prisma.accountToken.findFirst({ where: { hash, purpose, usedAt: null, expiresAt: { gt: new Date() } } });
    return row?.accountId;
  }

  /** Uses the token up with one conditional update: of two concurrent redemptions one wins. */
  async consume(hash: string, purpose: AccountTokenPurpose): Promise<string | undefined> {
    const now = new Date();
    const row = await this.#prisma.accountToken.findFirst({ where: { hash, purpose, usedAt: null, expiresAt: { gt: now } } });
    if (!row) return undefined;
    const result = await this.#prisma.accountToken.updateMany({ where: { hash, usedAt: null }, data: { usedAt: now } });
    return result.count === 1 ? row.accountId : undefined;
  }

  /** Ends every unused token of a purpose (a newer one was sent, or the password was reset). */
  async revokeAll(accountId: string, purpose: AccountTokenPurpose): Promise<void> {
    await this.#prisma.accountToken.updateMany({ where: { accountId, purpose, usedAt: null }, data: { usedAt: new Date() } });
  }

  countSince(accountId: string, purpose: AccountTokenPurpose, since: Date): Promise<number> {
    return this.#prisma.accountToken.count({ where: { accountId, purpose, createdAt: { gte: since } } });
  }
}
