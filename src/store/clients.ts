import type { PrismaClient } from './database.ts';

export interface ClientRecord {
  id: string;
  metadata: string;
  secretHash: string | null;
  createdAt: Date;
}

export class ClientStore {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  find(id: string): Promise<ClientRecord | null> {
    return this.#prisma.client.findUnique({ where: { id } });
  }

  create(client: { id: string; metadata: string; secretHash: string | null }): Promise<ClientRecord> {
    return this.#prisma.client.create({ data: client });
  }

  async delete(id: string): Promise<boolean> {
    const { count } = await this.#prisma.client.deleteMany({ where: { id } });
    return count > 0;
  }

  list(): Promise<ClientRecord[]> {
    return this.#prisma.client.findMany({ orderBy: { createdAt: 'asc' } });
  }
}
