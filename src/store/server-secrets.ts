import { isUniqueViolation, type PrismaClient } from './database.ts';

export class ServerSecretStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  async find(name: string): Promise<string | undefined> {
    return (await this.#prisma.serverSecret.findUnique({ where: { name } }))?.envelope;
  }

  /** Stores the envelope unless one exists; returns whichever is stored (first writer wins). */
  async insertOrGet(name: string, envelope: string): Promise<string> {
    try {
      await this.#prisma.serverSecret.create({ data: { name, envelope } });
      return envelope;
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      const stored = await this.find(name);
      if (!stored) throw error;
      return stored;
    }
  }
}
