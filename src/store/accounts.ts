import { DatabaseStore, isUniqueViolation, readBoolean, readDate, readOptionalDate } from './database.ts';

export type AccountStatus = 'active' | 'pending_verification' | 'disabled' | 'locked';
export const accountStatuses: readonly AccountStatus[] = ['active', 'pending_verification', 'disabled', 'locked'];
export type Approval = 'unverified' | 'pending' | 'verified' | 'rejected';

/**
 * An account as the rest of the code sees it: roles and attributes as values, the status and the
 * approval as their closed sets. The JSON text they are stored as never leaves this module.
 */
export interface AccountRecord {
  id: string;
  email: string;
  /** See prisma/schema.prisma; optional here because nothing outside the account store reads it. */
  emailSkeleton?: string | null;
  emailVerified: boolean;
  name: string | null;
  passwordHash: string | null;
  status: AccountStatus;
  userType: string;
  roles: string[];
  approval: Approval | null;
  attributes: Record<string, unknown>;
  passwordChangedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export type NewAccount = {
  id: string;
  email: string;
  emailSkeleton: string;
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

// The look-ups of every sign-in and token request, in plain SQL (Database.sql); the rest stays
// on Prisma. Rows come back exactly as Prisma returns them.
const accountColumns = '"id", "email", "emailSkeleton", "emailVerified", "name", "passwordHash", "status", "userType", "roles", "approval", "attributes", "passwordChangedAt", "createdAt", "updatedAt"';
const byIdSql = `SELECT ${accountColumns} FROM "Account" WHERE "id" = ?`;
const byEmailSql = `SELECT ${accountColumns} FROM "Account" WHERE "email" = ?`;
const bySkeletonSql = `SELECT ${accountColumns} FROM "Account" WHERE "emailSkeleton" = ?`;

/** A row as either driver or Prisma returns it: JSON as text, Booleans and dates in their forms. */
type AccountRow = {
  id: string; email: string; emailSkeleton?: string | null; emailVerified: unknown; name: string | null; passwordHash: string | null;
  status: string; userType: string; roles: string; approval: string | null; attributes: string;
  passwordChangedAt: unknown; createdAt: unknown; updatedAt: unknown;
};

function jsonOr<T>(text: string, fallback: T, shape: (value: unknown) => boolean): T {
  try {
    const value: unknown = JSON.parse(text);
    return shape(value) ? (value as T) : fallback;
  } catch {
    return fallback;
  }
}

const isPlainObject = (value: unknown) => typeof value === 'object' && value !== null && !Array.isArray(value);
const approvals: readonly string[] = ['unverified', 'pending', 'verified', 'rejected'];

function toAccount(row: AccountRow): AccountRecord {
  return {
    id: row.id,
    email: row.email,
    emailSkeleton: row.emailSkeleton ?? null,
    emailVerified: readBoolean(row.emailVerified),
    name: row.name,
    passwordHash: row.passwordHash,
    // A status this version does not know (written by a newer one) is treated as disabled.
    status: (accountStatuses as readonly string[]).includes(row.status) ? (row.status as AccountStatus) : 'disabled',
    userType: row.userType,
    // Only the names: a stray non-string in a row written by hand drops that entry, not every role.
    roles: jsonOr<unknown[]>(row.roles, [], Array.isArray).filter((role): role is string => typeof role === 'string'),
    approval: row.approval !== null && approvals.includes(row.approval) ? (row.approval as Approval) : null,
    attributes: jsonOr<Record<string, unknown>>(row.attributes, {}, isPlainObject),
    passwordChangedAt: readOptionalDate(row.passwordChangedAt),
    createdAt: readDate(row.createdAt),
    updatedAt: readDate(row.updatedAt),
  };
}

const toOptionalAccount = (row: AccountRow | undefined): AccountRecord | null => (row ? toAccount(row) : null);

function storedChanges(changes: AccountChanges) {
  const { roles, attributes, ...rest } = changes;
  return { ...rest, ...(roles ? { roles: JSON.stringify(roles) } : {}), ...(attributes ? { attributes: JSON.stringify(attributes) } : {}) };
}

export class AccountStore extends DatabaseStore {
  async findById(id: string): Promise<AccountRecord | null> {
    return toOptionalAccount((await this.sql.query<AccountRow>(byIdSql, [id]))[0]);
  }

  async findByEmail(email: string): Promise<AccountRecord | null> {
    return toOptionalAccount((await this.sql.query<AccountRow>(byEmailSql, [email]))[0]);
  }

  async findBySkeleton(emailSkeleton: string): Promise<AccountRecord | null> {
    return toOptionalAccount((await this.sql.query<AccountRow>(bySkeletonSql, [emailSkeleton]))[0]);
  }

  /**
   * Gives rows from before the skeleton column theirs, oldest first, `batch` rows at a time: of
   * two look-alike legacy accounts the older keeps the skeleton and the younger stays NULL.
   * `skeletonOf` returns undefined for an address that is not valid under today's rules; such
   * rows stay NULL too. Safe on many nodes at once (each row is set only while still NULL).
   */
  async fillMissingSkeletons(skeletonOf: (email: string) => string | undefined, batch = 500): Promise<{ filled: number; left: number }> {
    let filled = 0;
    let left = 0;
    let last: { createdAt: Date; id: string } | undefined;
    for (;;) {
      const rows = await this.prisma.account.findMany({
        where: { emailSkeleton: null, ...(last ? { OR: [{ createdAt: { gt: last.createdAt } }, { createdAt: last.createdAt, id: { gt: last.id } }] } : {}) },
        orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
        take: batch,
        select: { id: true, email: true, createdAt: true },
      });
      for (const row of rows) {
        const emailSkeleton = skeletonOf(row.email);
        if (!emailSkeleton) {
          left++;
          continue;
        }
        try {
          if ((await this.prisma.account.updateMany({ where: { id: row.id, emailSkeleton: null }, data: { emailSkeleton } })).count === 1) filled++;
        } catch (error) {
          if (!isUniqueViolation(error)) throw error;
          left++;
        }
      }
      if (rows.length < batch) return { filled, left };
      last = rows.at(-1)!;
    }
  }

  async create(account: NewAccount): Promise<AccountRecord> {
    const { roles, attributes, ...rest } = account;
    return toAccount(await this.prisma.account.create({
      data: { ...rest, roles: JSON.stringify(roles), attributes: JSON.stringify(attributes), passwordChangedAt: account.passwordHash ? new Date() : null },
    }));
  }

  async update(id: string, changes: AccountChanges): Promise<AccountRecord> {
    return toAccount(await this.prisma.account.update({ where: { id }, data: storedChanges(changes) }));
  }

  /** Changes the status only from `from` (one conditional update); true when it changed. */
  async transitionStatus(id: string, from: AccountStatus, to: AccountStatus): Promise<boolean> {
    const result = await this.prisma.account.updateMany({ where: { id, status: from }, data: { status: to } });
    return result.count === 1;
  }

  /** A rehash of the same password: no history entry, no change of its age. */
  async setPasswordHash(id: string, passwordHash: string): Promise<void> {
    await this.prisma.account.update({ where: { id }, data: { passwordHash } });
  }

  /**
   * A new password: the old hash joins the history (trimmed to `keep` entries) in the same
   * transaction, so a crash cannot leave a changed password without its history.
   */
  async replacePassword(id: string, passwordHash: string, keep: number, extra: AccountChanges = {}): Promise<AccountRecord> {
    return this.prisma.$transaction(async (tx) => {
      const current = await tx.account.findUniqueOrThrow({ where: { id } });
      if (current.passwordHash && keep > 0) await tx.passwordHistory.create({ data: { accountId: id, hash: current.passwordHash } });
      const stale = await tx.passwordHistory.findMany({ where: { accountId: id }, orderBy: { id: 'desc' }, skip: Math.max(keep, 0), select: { id: true } });
      if (stale.length) await tx.passwordHistory.deleteMany({ where: { id: { in: stale.map((row) => row.id) } } });
      return toAccount(await tx.account.update({ where: { id }, data: { ...storedChanges(extra), passwordHash, passwordChangedAt: new Date() } }));
    });
  }

  /** The account's earlier password hashes, newest first. */
  async previousPasswordHashes(id: string, limit: number): Promise<string[]> {
    if (limit <= 0) return [];
    const rows = await this.prisma.passwordHistory.findMany({ where: { accountId: id }, orderBy: { id: 'desc' }, take: limit, select: { hash: true } });
    return rows.map((row) => row.hash);
  }

  async list(options: { limit: number; after?: string; approval?: Approval }): Promise<AccountRecord[]> {
    const rows = await this.prisma.account.findMany({
      orderBy: { email: 'asc' },
      take: options.limit,
      where: { ...(options.after ? { email: { gt: options.after } } : {}), ...(options.approval ? { approval: options.approval } : {}) },
    });
    return rows.map(toAccount);
  }
}
