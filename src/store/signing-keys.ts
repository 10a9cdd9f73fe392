import { isUniqueViolation, type PrismaClient } from './database.ts';

export type KeyState = 'staged' | 'active' | 'retired';

export interface SigningKeyRecord {
  kid: string;
  alg: string;
  state: string;
  publicJwk: string;
  envelope: string;
  createdAt: Date;
  activatedAt: Date | null;
  retiredAt: Date | null;
}

export class SigningKeyStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  /** Keys that belong in the JWKS: active ones first, so a signer picking the first match picks them. */
  async listPublished(): Promise<SigningKeyRecord[]> {
    const rows = await this.#prisma.signingKey.findMany({ where: { state: { in: ['staged', 'active', 'retired'] } }, orderBy: { createdAt: 'desc' } });
    return rows.sort((a, b) => Number(b.state === 'active') - Number(a.state === 'active'));
  }

  findActive(alg: string): Promise<SigningKeyRecord | null> {
    return this.#prisma.signingKey.findUnique({ where: { activeFor: alg } });
  }

  /**
   * Inserts a key as the active one for its algorithm. Returns false when another node won the
   * race (the unique `activeFor` refused a second active key); the caller then reads the winner.
   */
  async insertActive(key: { kid: string; alg: string; publicJwk: string; envelope: string }): Promise<boolean> {
    try {
      await this.#prisma.signingKey.create({ data: { ...key, state: 'active', activeFor: key.alg, activatedAt: new Date() } });
      return true;
    } catch (error) {
      if (isUniqueViolation(error)) return false;
      throw error;
    }
  }
}
