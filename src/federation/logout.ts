// RP-initiated logout that continues at the upstream: after a user who signed in through a
// connection with `end_session` signs out here, the browser goes on to that upstream's
// end_session_endpoint, and comes back to us (one registered post-logout URI per IdP) to finish
// where the relying party asked. The connection is the one the account signed in through last.
import { randomBytes } from 'node:crypto';
import type { FederatedAccounts } from './accounts.ts';
import type { ConnectionService } from './connections.ts';
import { UpstreamRefusal, type OidcUpstream } from './oidc-upstream.ts';
import type { ShortLivedValues } from './sign-in.ts';

export interface UpstreamLogoutDeps {
  connections: ConnectionService;
  accounts: FederatedAccounts;
  upstream: OidcUpstream;
  store: ShortLivedValues;
  issuer: string;
}

export class UpstreamLogout {
  readonly #deps: UpstreamLogoutDeps;

  constructor(deps: UpstreamLogoutDeps) {
    this.#deps = deps;
  }

  /** Where the upstream sends the browser back after its logout: register it there. */
  get returnUri(): string {
    return `${this.#deps.issuer}/interaction/logged-out`;
  }

  /**
   * The upstream logout URL for an account that just signed out of a federated session, or
   * undefined. `returnTo`: where our own logout was going to send the browser.
   */
  async continueAt(accountId: string, returnTo: string | undefined): Promise<string | undefined> {
    const links = (await this.#deps.accounts.linksOf(accountId)).sort((a, b) => (b.lastUsedAt?.getTime() ?? 0) - (a.lastUsedAt?.getTime() ?? 0));
    const connection = links[0] && (await this.#deps.connections.find(links[0].connectionId));
    if (!connection?.enabled || !connection.settings.endSession) return undefined;
    let endpoint: string | undefined;
    try {
      endpoint = (await this.#deps.upstream.metadata(connection)).end_session_endpoint;
    } catch (error) {
      if (error instanceof UpstreamRefusal) return undefined;
      throw error;
    }
    if (!endpoint) return undefined;
    const state = randomBytes(24).toString('base64url');
    await this.#deps.store.set(`upstream-logout:${state}`, { returnTo: returnTo ?? null }, 600);
    const url = new URL(endpoint);
    url.searchParams.set('client_id', connection.settings.clientId);
    url.searchParams.set('post_logout_redirect_uri', this.returnUri);
    url.searchParams.set('state', state);
    return url.href;
  }

  /** Back from the upstream: where our logout was going (once), or undefined for our own page. */
  async returned(state: string): Promise<string | undefined> {
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(state)) return undefined;
    return (await this.#deps.store.take<{ returnTo: string | null }>(`upstream-logout:${state}`))?.returnTo ?? undefined;
  }
}
