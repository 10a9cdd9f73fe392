// Upstream identity provider connections (see the Connection model). Few rows, read on the
// identify screen and at each federated sign-in: every node sees a change at once.
import { DatabaseStore } from './database.ts';

export interface ConnectionRow {
  id: string;
  kind: string;
  preset: string;
  displayName: string;
  enabled: boolean;
  /** JSON text: the settings document (src/federation/settings.ts). */
  settings: string;
  /** The wrapped client secret (an envelope), or null. */
  secret: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export type NewConnectionRow = Omit<ConnectionRow, 'createdAt' | 'updatedAt'>;

export class ConnectionStore extends DatabaseStore {
  list(): Promise<ConnectionRow[]> {
    return this.prisma.connection.findMany({ orderBy: { id: 'asc' } });
  }

  find(id: string): Promise<ConnectionRow | null> {
    return this.prisma.connection.findUnique({ where: { id } });
  }

  create(row: NewConnectionRow): Promise<ConnectionRow> {
    return this.prisma.connection.create({ data: row });
  }

  async update(id: string, changes: Partial<Omit<NewConnectionRow, 'id' | 'kind'>>): Promise<ConnectionRow | null> {
    const updated = await this.prisma.connection.updateMany({ where: { id }, data: changes });
    return updated.count ? this.find(id) : null;
  }

  async delete(id: string): Promise<boolean> {
    return (await this.prisma.connection.deleteMany({ where: { id } })).count > 0;
  }
}
