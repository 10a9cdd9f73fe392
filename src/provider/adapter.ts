// Routes each oidc-provider model to its store: clients to our client registry, durable models
// (grants, refresh tokens) to the database, short-lived ones to Redis when configured.
import Provider, { errors } from 'oidc-provider';
import type { ClientService } from '../clients/service.ts';
import type { SessionService } from '../sessions/service.ts';
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
  async consume(): Promise<boolean> {
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

/** Hands every call to the store it wraps; the wrappers below override what they add. */
class ForwardingAdapter implements OidcAdapter {
  protected readonly inner: OidcAdapter;
  constructor(inner: OidcAdapter) {
    this.inner = inner;
  }
  upsert(id: string, payload: OidcPayload, expiresIn: number) {
    return this.inner.upsert(id, payload, expiresIn);
  }
  find(id: string) {
    return this.inner.find(id);
  }
  findByUid(uid: string) {
    return this.inner.findByUid(uid);
  }
  findByUserCode(userCode: string) {
    return this.inner.findByUserCode(userCode);
  }
  consume(id: string) {
    return this.inner.consume(id);
  }
  destroy(id: string) {
    return this.inner.destroy(id);
  }
  revokeByGrantId(grantId: string) {
    return this.inner.revokeByGrantId(grantId);
  }
}

/**
 * Sessions also go into the session index (src/sessions/service.ts): the request that saved them
 * tells the device and address. A session ended for good is not written back by a request that
 * was already in flight when it ended.
 */
class IndexedSessionAdapter extends ForwardingAdapter {
  readonly #sessions: SessionService;
  constructor(inner: OidcAdapter, sessions: SessionService) {
    super(inner);
    this.#sessions = sessions;
  }
  override async upsert(id: string, payload: OidcPayload, expiresIn: number) {
    const ctx = Provider.ctx;
    const keep = await this.#sessions.saved(id, payload, expiresIn, { ip: ctx?.ip, userAgent: ctx?.get('user-agent') });
    if (keep) await this.inner.upsert(id, payload, expiresIn);
    else await this.inner.destroy(id);
  }
  override async destroy(id: string) {
    await this.inner.destroy(id);
    await this.#sessions.destroyed(id);
  }
}

/**
 * What losing the race to consume a one-time record means. oidc-provider reads a code, checks
 * `consumed`, then consumes it: two requests can both pass the check. The store's consume is a
 * conditional write that exactly one of them wins; every other one is answered as the reuse it is
 * (RFC 6749 §4.1.2, §10.4): an OAuth error, never a 500, and the grant revoked with its tokens.
 */
const consumeRefusals: Record<string, { error: () => Error; revokesGrant: boolean }> = {
  AuthorizationCode: { error: () => new errors.InvalidGrant('authorization code already consumed'), revokesGrant: true },
  RefreshToken: { error: () => new errors.InvalidGrant('refresh token already used'), revokesGrant: true },
  DeviceCode: { error: () => new errors.InvalidGrant('device code already consumed'), revokesGrant: true },
  BackchannelAuthenticationRequest: { error: () => new errors.InvalidGrant('backchannel authentication request already consumed'), revokesGrant: true },
  PushedAuthorizationRequest: { error: () => new errors.InvalidRequestUri('request_uri is invalid, expired, or was already used'), revokesGrant: false },
};

/** Token models a grant owns: revoking the grant removes them all. */
export const grantTokenModels = ['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest'];

class ConsumeOnceAdapter extends ForwardingAdapter {
  readonly #refusal: (typeof consumeRefusals)[string];
  readonly #revokeGrant: (grantId: string) => Promise<void>;
  constructor(inner: OidcAdapter, refusal: (typeof consumeRefusals)[string], revokeGrant: (grantId: string) => Promise<void>) {
    super(inner);
    this.#refusal = refusal;
    this.#revokeGrant = revokeGrant;
  }
  override async consume(id: string): Promise<boolean> {
    if (await this.inner.consume(id)) return true;
    const grantId = (await this.inner.find(id))?.grantId;
    if (this.#refusal.revokesGrant && grantId) {
      await this.#revokeGrant(grantId);
      const ctx = Provider.ctx;
      ctx?.oidc?.provider.emit('grant.revoked', ctx, grantId);
    }
    throw this.#refusal.error();
  }
}

export function adapterFactory(deps: { prisma: PrismaClient; redis: Redis | undefined; clients: ClientService; sessions: SessionService }) {
  const storeFor = (model: string): OidcAdapter =>
    deps.redis && !durableModels.has(model) ? new RedisOidcAdapter(deps.redis, model) : new DatabaseOidcAdapter(deps.prisma, model);
  const revokeGrant = async (grantId: string) => {
    await Promise.all(grantTokenModels.map((model) => storeFor(model).revokeByGrantId(grantId)));
    await storeFor('Grant').destroy(grantId);
  };
  // oidc-provider calls `new Adapter(modelName)`; returning an object from a constructor hands it that object.
  return function Adapter(model: string): OidcAdapter {
    if (model === 'Client') return new ClientRegistryAdapter(deps.clients);
    if (model === 'Session') return new IndexedSessionAdapter(storeFor(model), deps.sessions);
    const refusal = consumeRefusals[model];
    return refusal ? new ConsumeOnceAdapter(storeFor(model), refusal, revokeGrant) : storeFor(model);
  };
}
