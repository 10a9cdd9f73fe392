// "Remember this device": the SHA-256 of a random token kept in a cookie, bound to one account.
import type { PrismaClient } from './database.ts';

export class TrustedDeviceStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  async add(hash: string, accountId: string, expiresAt: Date, userAgent: string | null): Promise<void> {
    await this.#prisma.trustedDevice.create({ data: { hash, accountId, expiresAt, userAgent } });
  }

  async isTrusted(hash: string, accountId: string): Promise<boolean> {
    return (await this.#prisma.trustedDevice.count({ where: { hash, accountId, expiresAt: { gt: new Date() } } })) > 0;
  }

  async forgetAll(accountId: string): Promise<number> {
    return (await this.#prisma.trustedDevice.deleteMany({ where: { accountId } })).count;
  }
}
