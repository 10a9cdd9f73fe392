import { DatabaseStore, readDate } from './database.ts';

export interface ClientRecord {
  id: string;
  metadata: string;
  secretHash: string | null;
  createdAt: Date;
}

// Read on every protocol request that names a client (behind the client service's cache): plain SQL.
const findSql = 'SELECT "id", "metadata", "secretHash", "createdAt", "updatedAt" FROM "Client" WHERE "id" = ?';

export class ClientStore extends DatabaseStore {
  /** The row as Prisma returns it (updatedAt too). */
  async find(id: string): Promise<ClientRecord | null> {
    const row = (await this.sql.query<{ id: string; metadata: string; secretHash: string | null; createdAt: unknown; updatedAt: unknown }>(findSql, [id]))[0];
    return row ? { id: row.id, metadata: row.metadata, secretHash: row.secretHash, createdAt: readDate(row.createdAt), updatedAt: readDate(row.updatedAt) } as ClientRecord : null;
  }

  create(client: { id: string; metadata: string; secretHash: string | null }): Promise<ClientRecord> {
    return this.prisma.client.create({ data: client });
  }

  async delete(id: string): Promise<boolean> {
    const { count } = await this.prisma.client.deleteMany({ where: { id } });
    return count > 0;
  }

  list(): Promise<ClientRecord[]> {
    return this.prisma.client.findMany({ orderBy: { createdAt: 'asc' } });
  }
}
