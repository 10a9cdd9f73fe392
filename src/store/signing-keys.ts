import { isUniqueViolation, type Database, type PrismaClient } from './database.ts';

export type KeyState = 'staged' | 'active' | 'retired';

export interface SigningKeyRecord {
  kid: string;
  alg: string;
  state: string;
  publicJwk: string;
  envelope: string;
  createdAt: Date;
  activateAt: Date | null;
  activatedAt: Date | null;
  retiredAt: Date | null;
  removeAt: Date | null;
}

export interface NewKey {
  kid: string;
  alg: string;
  publicJwk: string;
  envelope: string;
}

type Tx = Pick<PrismaClient, 'signingKey' | '$executeRawUnsafe'>;
const keyLockKey = 4_127_003;

/**
 * Signing keys and their state changes. Every change that touches the active key runs in one
 * transaction, serialised across nodes (an advisory lock on PostgreSQL, BEGIN IMMEDIATE on
 * SQLite), so a crash or a race never leaves zero or two active keys.
 */
export class SigningKeyStore {
  readonly #db: Database;
  constructor(db: Database) {
    this.#db = db;
  }

  get #prisma() {
    return this.#db.prisma;
  }

  async #locked<T>(run: (tx: Tx) => Promise<T>): Promise<T> {
    return this.#prisma.$transaction(async (tx) => {
      if (this.#db.provider === 'postgresql') await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(${keyLockKey})`);
      return run(tx);
    });
  }

  /** Keys that belong in the JWKS: active ones first, so a signer picking the first match picks them. */
  async listPublished(): Promise<SigningKeyRecord[]> {
    const rows = await this.#prisma.signingKey.findMany({ where: { state: { in: ['staged', 'active', 'retired'] } }, orderBy: { createdAt: 'desc' } });
    return rows.sort((a, b) => Number(b.state === 'active') - Number(a.state === 'active'));
  }

  findActive(alg: string): Promise<SigningKeyRecord | null> {
    return this.#prisma.signingKey.findUnique({ where: { activeFor: alg } });
  }

  find(kid: string): Promise<SigningKeyRecord | null> {
    return this.#prisma.signingKey.findUnique({ where: { kid } });
  }

  /**
   * Inserts a key as the active one for its algorithm. Returns false when another node won the
   * race (the unique `activeFor` refused a second active key); the caller then reads the winner.
   */
  async insertActive(key: NewKey): Promise<boolean> {
    try {
      await this.#prisma.signingKey.create({ data: { ...key, state: 'active', activeFor: key.alg, activatedAt: new Date() } });
      return true;
    } catch (error) {
      if (isUniqueViolation(error)) return false;
      throw error;
    }
  }

  /**
   * Stages a key. `unlessStaged`: only if no key of its algorithm is staged yet (returns undefined
   * then). `replaceStaged`: keys of its algorithm staged earlier are retired (removed at that
   * time) instead. `removeActiveAt`: the active key is to leave the JWKS at that time, once it is
   * replaced. Returns the kid of the key active when the new one was staged.
   */
  async insertStaged(key: NewKey, activateAt: Date, options: { unlessStaged?: boolean; replaceStaged?: Date; removeActiveAt?: Date } = {}): Promise<{ previous: string | undefined } | undefined> {
    return this.#locked(async (tx) => {
      if (options.unlessStaged && (await tx.signingKey.count({ where: { state: 'staged', alg: key.alg } }))) return undefined;
      if (options.replaceStaged) {
        await tx.signingKey.updateMany({ where: { state: 'staged', alg: key.alg }, data: { state: 'retired', retiredAt: options.replaceStaged, activateAt: null, removeAt: options.replaceStaged } });
      }
      const active = await tx.signingKey.findUnique({ where: { activeFor: key.alg } });
      if (active && options.removeActiveAt) await tx.signingKey.update({ where: { kid: active.kid }, data: { removeAt: options.removeActiveAt } });
      await tx.signingKey.create({ data: { ...key, state: 'staged', activateAt } });
      return { previous: active?.kid };
    });
  }

  /**
   * Makes a staged key the active one and retires the previous active key (published until
   * `removeOldAt`). Returns false, changing nothing, if the key is no longer staged (another node
   * promoted it first).
   */
  async promote(kid: string, now: Date, removeOldAt: Date): Promise<boolean> {
    return this.#locked(async (tx) => {
      const key = await tx.signingKey.findUnique({ where: { kid } });
      if (!key || key.state !== 'staged') return false;
      const previous = await tx.signingKey.findUnique({ where: { activeFor: key.alg } });
      if (previous) {
        // An emergency rotation may have scheduled the old key's removal earlier already.
        const removeAt = previous.removeAt && previous.removeAt < removeOldAt ? previous.removeAt : removeOldAt;
        await tx.signingKey.update({ where: { kid: previous.kid }, data: { state: 'retired', activeFor: null, retiredAt: now, removeAt } });
      }
      await tx.signingKey.update({ where: { kid }, data: { state: 'active', activeFor: key.alg, activateAt: null, activatedAt: now } });
      return true;
    });
  }

  /** Retires a staged or retired key early, or shortens a retired key's publication. Never the active key. */
  async retire(kid: string, now: Date, removeAt: Date): Promise<'retired' | 'active' | 'missing'> {
    return this.#locked(async (tx) => {
      const key = await tx.signingKey.findUnique({ where: { kid } });
      if (!key) return 'missing';
      if (key.state === 'active') return 'active';
      await tx.signingKey.update({ where: { kid }, data: { state: 'retired', retiredAt: key.retiredAt ?? now, activateAt: null, removeAt } });
      return 'retired';
    });
  }

  /** Staged keys whose activation time has come, oldest first. */
  dueForActivation(now: Date): Promise<SigningKeyRecord[]> {
    return this.#prisma.signingKey.findMany({ where: { state: 'staged', activateAt: { lte: now } }, orderBy: { activateAt: 'asc' } });
  }

  hasStaged(alg: string): Promise<boolean> {
    return this.#prisma.signingKey.count({ where: { state: 'staged', alg } }).then((n) => n > 0);
  }

  /** Deletes retired keys whose publication has ended; returns their kids. */
  async removeExpired(now: Date): Promise<string[]> {
    const expired = await this.#prisma.signingKey.findMany({ where: { state: 'retired', removeAt: { lte: now } }, select: { kid: true } });
    if (!expired.length) return [];
    await this.#prisma.signingKey.deleteMany({ where: { kid: { in: expired.map((k) => k.kid) }, state: 'retired' } });
    return expired.map((k) => k.kid);
  }
}
