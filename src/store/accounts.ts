import type { PrismaClient } from './database.ts';

export type AccountStatus = 'active' | 'pending_verification' | 'disabled' | 'locked';
export const accountStatuses: readonly AccountStatus[] = ['active', 'pending_verification', 'disabled', 'locked'];
export type Approval = 'unverified' | 'pending' | 'verified' | 'rejected';

export interface AccountRecord {
  id: string;
  email: string;
  emailVerified: boolean;
  name: string | null;
  passwordHash: string | null;
  status: string;
  userType: string;
  /** JSON array of role names. */
  roles: string;
  approval: string | null;
  /** JSON object of custom attributes. */
  attributes: string;
  passwordChangedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export type NewAccount = {
  id: string;
  email: string;
  name: string | null;
  passwordHash: string | null;
  emailVerified: boolean;
  status: AccountStatus;
  userType: string;
  roles: string[];
  approval: Approval | null;
  attributes: Record<string, unknown>;
};

export type AccountChanges = Partial<{
  name: string | null;
  emailVerified: boolean;
  status: AccountStatus;
  userType: string;
  roles: string[];
  approval: Approval | null;
  attributes: Record<string, unknown>;
}>;

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

  create(account: NewAccount): Promise<AccountRecord> {
    const { roles, attributes, ...rest } = account;
    return this.#prisma.account.create({
      data: { ...rest, roles: JSON.stringify(roles), attributes: JSON.stringify(attributes), passwordChangedAt: account.passwordHash ? new Date() : null },
    });
  }

  update(id: string, changes: AccountChanges): Promise<AccountRecord> {
    const { roles, attributes, ...rest } = changes;
    return this.#prisma.account.update({
      where: { id },
      data: { ...rest, ...(roles ? { roles: JSON.stringify(roles) } : {}), ...(attributes ? { attributes: JSON.stringify(attributes) } : {}) },
    });
  }

  /** Changes the status only from `from` (one conditional update); true when it changed. */
  async transitionStatus(id: string, from: AccountStatus, to: AccountStatus): Promise<boolean> {
    const result = await this.#prisma.account.updateMany({ where: { id, status: from }, data: { status: to } });
    return result.count === 1;
  }

  /** A rehash of the same password: no history entry, no change of its age. */
  async setPasswordHash(id: string, passwordHash: string): Promise<void> {
    await this.#prisma.account.update({ where: { id }, data: { passwordHash } });
  }

  /**
   * A new password: the old hash joins the history (trimmed to `keep` entries) in the same
   * transaction, so a crash cannot leave a changed password without its history.
   */
  async replacePassword(id: string, passwordHash: string, keep: number, extra: AccountChanges = {}): Promise<AccountRecord> {
    return this.#prisma.$transaction(async (tx) => {
      const current = await tx.account.findUniqueOrThrow({ where: { id } });
      if (current.passwordHash && keep > 0) await tx.passwordHistory.create({ data: { accountId: id, hash: current.passwordHash } });
      const stale = await tx.passwordHistory.findMany({ where: { accountId: id }, orderBy: { id: 'desc' }, skip: Math.max(keep, 0), select: { id: true } });
      if (stale.length) await tx.passwordHistory.deleteMany({ where: { id: { in: stale.map((row) => row.id) } } });
      const { roles, attributes, ...rest } = extra;
      return tx.account.update({
        where: { id },
        data: { ...rest, ...(roles ? { roles: JSON.stringify(roles) } : {}), ...(attributes ? { attributes: JSON.stringify(attributes) } : {}), passwordHash, passwordChangedAt: new Date() },
      });
    });
  }

  /** The account's earlier password hashes, newest first. */
  async previousPasswordHashes(id: string, limit: number): Promise<string[]> {
    if (limit <= 0) return [];
    const rows = await this.#prisma.passwordHistory.findMany({ where: { accountId: id }, orderBy: { id: 'desc' }, take: limit, select: { hash: true } });
    return rows.map((row) => row.hash);
  }

  list(options: { limit: number; after?: string; approval?: Approval }): Promise<AccountRecord[]> {
    return this.#prisma.account.findMany({
      orderBy: { email: 'asc' },
      take: options.limit,
      where: { ...(options.after ? { email: { gt: options.after } } : {}), ...(options.approval ? { approval: options.approval } : {}) },
    });
  }
}
