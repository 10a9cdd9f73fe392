import type { PrismaClient } from './database.ts';

export interface AccountRecord {
  id: string;
  email: string;
  emailVerified: boolean;
  name: string | null;
  passwordHash: string | null;
  status: string;
  createdAt: Date;
  updatedAt: Date;
}

export class AccountStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  findById(id: string): Promise<AccountRecord | null> {
    return this.#prisma.account.findUnique({ where: { id } });
  }

  findByEmail(email: string): Promise<AccountRecord | null> {
    return this.#prisma.account.findUnique({ where: { email } });
  }

  create(account: { id: string; email: string; name: string | null; passwordHash: string; emailVerified: boolean }): Promise<AccountRecord> {
    return this.#prisma.account.create({ data: account });
  }

  async setPasswordHash(id: string, passwordHash: string): Promise<void> {
    await this.#prisma.account.update({ where: { id }, data: { passwordHash } });
  }

  list(options: { limit: number; after?: string }): Promise<AccountRecord[]> {
    return this.#prisma.account.findMany({
      orderBy: { email: 'asc' },
      take: options.limit,
      ...(options.after ? { where: { email: { gt: options.after } } } : {}),
    });
  }
}
