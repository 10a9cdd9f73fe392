// Routes each oidc-provider model to its store: clients to our client registry, durable models
// (grants, refresh tokens) to the database, short-lived ones to Redis when configured.
import type { ClientService } from '../clients/service.ts';
import type { PrismaClient } from '../store/database.ts';
import { DatabaseOidcAdapter } from '../store/oidc-records.ts';
import { impossibleId, type OidcAdapter, type OidcPayload } from '../store/oidc-adapter-types.ts';
import type { Redis } from '../store/redis.ts';
import { RedisOidcAdapter } from '../store/redis-oidc.ts';

export const durableModels = new Set(['Grant', 'RefreshToken']);

class ClientRegistryAdapter implements OidcAdapter {
  readonly #clients: ClientService;
  constructor(clients: ClientService) {
    this.#clients = clients;
  }
  async find(id: string) {
    if (impossibleId(id)) return undefined;
    return (await this.#clients.findForProvider(id)) as OidcPayload | undefined;
  }
  #readOnly(): never {
    throw new Error('clients are managed with `idp clients`, not through oidc-provider');
  }
  async upsert() {
    this.#readOnly();
  }
  async destroy() {
    this.#readOnly();
  }
  async consume() {
    this.#readOnly();
  }
  async findByUid() {
    return undefined;
  }
  async findByUserCode() {
    return undefined;
  }
  async revokeByGrantId() {}
}

export function adapterFactory(deps: { prisma: PrismaClient; redis: Redis | undefined; clients: ClientService }) {
  // oidc-provider calls `new Adapter(modelName)`; returning an object from a constructor hands it that object.
  return function Adapter(model: string): OidcAdapter {
    if (model === 'Client') return new ClientRegistryAdapter(deps.clients);
    if (deps.redis && !durableModels.has(model)) return new RedisOidcAdapter(deps.redis, model);
    return new DatabaseOidcAdapter(deps.prisma, model);
  };
}
