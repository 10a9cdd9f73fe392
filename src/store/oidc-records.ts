// oidc-provider models in the database (table OidcRecord): always the durable ones, and the
// short-lived ones too when no Redis is configured. Expired rows read as missing and are swept.
import type { PrismaClient } from './database.ts';
import { epochSeconds, impossibleId, type OidcAdapter, type OidcPayload } from './oidc-adapter-types.ts';

export class DatabaseOidcAdapter implements OidcAdapter {
  readonly #prisma: PrismaClient;
  readonly #model: string;

  constructor(prisma: PrismaClient, model: string) {
    this.#prisma = prisma;
    this.#model = model;
  }

  async upsert(id: string, payload: OidcPayload, expiresIn: number): Promise<void> {
    const row = {
      payload: JSON.stringify(payload),
      grantId: payload.grantId ?? null,
      uid: payload.uid ?? null,
      userCode: payload.userCode ?? null,
      expiresAt: expiresIn ? new Date(Date.now() + expiresIn * 1000) : null,
    };
    await this.#prisma.oidcRecord.upsert({
      where: { model_id: { model: this.#model, id } },
      create: { model: this.#model, id, ...row },
      update: row,
    });
  }

  async find(id: string): Promise<OidcPayload | undefined> {
    if (impossibleId(id)) return undefined;
    return this.#read(await this.#prisma.oidcRecord.findUnique({ where: { model_id: { model: this.#model, id } } }));
  }

  async findByUid(uid: string): Promise<OidcPayload | undefined> {
    if (impossibleId(uid)) return undefined;
    return this.#read(await this.#prisma.oidcRecord.findFirst({ where: { model: this.#model, uid } }));
  }

  async findByUserCode(userCode: string): Promise<OidcPayload | undefined> {
    if (impossibleId(userCode)) return undefined;
    return this.#read(await this.#prisma.oidcRecord.findFirst({ where: { model: this.#model, userCode } }));
  }

  async consume(id: string): Promise<boolean> {
    if (impossibleId(id)) return false;
    // One conditional UPDATE: only the request that finds it unconsumed changes a row.
    const { count } = await this.#prisma.oidcRecord.updateMany({ where: { model: this.#model, id, consumedAt: null }, data: { consumedAt: new Date() } });
    return count === 1;
  }

  async destroy(id: string): Promise<void> {
    if (impossibleId(id)) return;
    await this.#prisma.oidcRecord.deleteMany({ where: { model: this.#model, id } });
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (impossibleId(grantId)) return;
    await this.#prisma.oidcRecord.deleteMany({ where: { model: this.#model, grantId } });
  }

  #read(row: { payload: string; expiresAt: Date | null; consumedAt: Date | null } | null): OidcPayload | undefined {
    if (!row || (row.expiresAt && row.expiresAt.getTime() <= Date.now())) return undefined;
    const payload = JSON.parse(row.payload) as OidcPayload;
    return row.consumedAt ? { ...payload, consumed: epochSeconds(row.consumedAt) } : payload;
  }
}

/**
 * Every grant of an account (grants are always in the database). Offline grants outlive the
 * session that made them, so ending "all sessions" must find them here, not in the session index.
 */
export async function grantIdsOfAccount(prisma: PrismaClient, accountId: string, clientId?: string): Promise<string[]> {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(accountId)) return [];
  const rows = await prisma.oidcRecord.findMany({ where: { model: 'Grant', payload: { contains: `"accountId":"${accountId}"` } }, select: { id: true, payload: true } });
  // The text match narrows; the parsed payload decides.
  return rows.filter((row) => {
    const grant = JSON.parse(row.payload) as { accountId?: string; clientId?: string };
    return grant.accountId === accountId && (clientId === undefined || grant.clientId === clientId);
  }).map((row) => row.id);
}

/** Deletes expired rows; safe to run on every node. Returns how many went. */
export async function sweepExpiredRecords(prisma: PrismaClient, now = new Date()): Promise<number> {
  // Mailed-link rows stay a day past their expiry: the hourly mail limit counts them.
  const dayAgo = new Date(now.getTime() - 86_400_000);
  const results = await Promise.all([
    prisma.oidcRecord.deleteMany({ where: { expiresAt: { lte: now } } }),
    prisma.expiringValue.deleteMany({ where: { expiresAt: { lte: now } } }),
    prisma.attemptCounter.deleteMany({ where: { expiresAt: { lte: now.getTime() / 1000 } } }),
    prisma.rateLimiterFlexible.deleteMany({ where: { expire: { lte: now } } }),
    prisma.accountToken.deleteMany({ where: { expiresAt: { lte: dayAgo } } }),
    prisma.trustedDevice.deleteMany({ where: { expiresAt: { lte: now } } }),
  ]);
  return results.reduce((sum, r) => sum + r.count, 0);
}
