// Single-use tokens mailed to users. Only a SHA-256 of each token is kept: the tokens are 256-bit
// random, so a plain hash suffices (no dictionary to guess from), and a leaked table reveals none.
import type { PrismaClient } from './database.ts';

export type AccountTokenPurpose = 'verify_email' | 'invitation' | 'password_reset';

export class AccountTokenStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  /**
   * Stores a new token and ends every other unused one of the account and purpose. The newest
   * row wins rather than "the row this call wrote": two replacements at the same moment (on two
   * nodes) then still leave exactly one live token, the later one, instead of two or none.
   */
  async replace(hash: string, accountId: string, purpose: AccountTokenPurpose, expiresAt: Date): Promise<void> {
    await this.#prisma.accountToken.create({ data: { hash, accountId, purpose, expiresAt } });
    const newest = await this.#prisma.accountToken.findFirst({ where: { accountId, purpose, usedAt: null }, orderBy: [{ createdAt: 'desc' }, { hash: 'desc' }], select: { hash: true, createdAt: true } });
    if (!newest) return; // a concurrent replacement already ended this one
    // Only rows older than the newest this call saw: a row written after it is left to its own call.
    const older = { OR: [{ createdAt: { lt: newest.createdAt } }, { createdAt: newest.createdAt, hash: { lt: newest.hash } }] };
    await this.#prisma.accountToken.updateMany({ where: { accountId, purpose, usedAt: null, ...older }, data: { usedAt: new Date() } });
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
}
