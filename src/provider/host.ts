// Hosts the oidc-provider instance. oidc-provider takes its signing keys at construction, so a
// key change builds a new instance; requests go to the current one (those in flight finish on the
// old). Every KEY_REFRESH_SECONDS the node runs the key step (lifecycle tick, then reload when
// the published keys changed or the key cache TTL ended).
import type Koa from 'koa';
import mount from 'koa-mount';
import type { Keyring } from '../keys/keyring.ts';
import type { KeyLifecycle } from '../keys/lifecycle.ts';
import type { CustodyProvider } from '../keys/custody.ts';
import type { Logger } from '../log.ts';
import type { JWK } from 'jose';
import type { Provider } from './provider.ts';

export interface ProviderHostOptions {
  build(jwks: { keys: JWK[] }): Provider;
  keyring: Keyring;
  lifecycle: KeyLifecycle;
  kms: CustodyProvider;
  log: Logger;
  refreshSeconds: number;
  keyCacheTtlSeconds: number;
}

export class ProviderHost {
  readonly #options: ProviderHostOptions;
  #provider!: Provider;
  #mounted!: Koa.Middleware;
  #fingerprint = '';
  #lastRefresh = Date.now();
  #lastUnwrap = Date.now();
  #refreshing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;

  private constructor(options: ProviderHostOptions) {
    this.#options = options;
  }

  static async start(options: ProviderHostOptions): Promise<ProviderHost> {
    const host = new ProviderHost(options);
    await host.#load(await options.keyring.fingerprint());
    host.#timer = setInterval(() => {
      host.refresh().catch((error: unknown) => options.log.error({ err: error }, 'signing key refresh failed'));
    }, options.refreshSeconds * 1000);
    host.#timer.unref();
    return host;
  }

  get provider(): Provider {
    return this.#provider;
  }

  /** Routes a request to the current provider instance. */
  readonly middleware: Koa.Middleware = (ctx, next) => this.#mounted(ctx, next);

  async #load(fingerprint: string): Promise<void> {
    this.#provider = this.#options.build(await this.#options.keyring.privateJwks());
    this.#mounted = mount(this.#provider as unknown as Koa);
    this.#fingerprint = fingerprint;
    this.#lastUnwrap = Date.now();
  }

  /** Runs the key step now: lifecycle tick, then reload keys if they changed. */
  refresh(): Promise<void> {
    return (this.#refreshing ??= (async () => {
      // A refresh that started before a key was written has not seen it: the start time counts.
      const started = Date.now();
      try {
        // A KMS that stopped answering fails the refresh: the keys in memory keep signing, and
        // readiness fails once the refresh has failed for three intervals.
        await this.#options.kms.check?.();
        await this.#options.lifecycle.tick();
        const fingerprint = await this.#options.keyring.fingerprint();
        // Keys are unwrapped again when they change and when the cache TTL ends, so that revoking
        // the KMS key (or the HSM session) takes effect on running nodes too.
        if (fingerprint !== this.#fingerprint || Date.now() - this.#lastUnwrap > this.#options.keyCacheTtlSeconds * 1000) {
          await this.#load(fingerprint);
          this.#options.log.info({ keys: fingerprint }, 'signing keys loaded');
        }
        this.#lastRefresh = started;
      } finally {
        this.#refreshing = undefined;
      }
    })());
  }

  /**
   * Readiness: keys in memory keep signing through a short database or KMS outage; past three
   * missed refreshes this node may be behind a rotation, so it stops taking traffic.
   */
  async checkFresh(): Promise<void> {
    const age = Date.now() - this.#lastRefresh;
    if (age > 3 * this.#options.refreshSeconds * 1000) throw new Error(`signing keys not refreshed for ${Math.round(age / 1000)} s`);
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#refreshing?.catch(() => undefined);
  }
}
