// The server every conformance file tests: a real IdP on a port (PostgreSQL + Redis unless
// CONFORMANCE_BACKEND=sqlite), a user, and one client per authentication method, with
// openid-client configurations for each.
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import * as oidc from 'openid-client';
import { Browser, signIn } from '../helpers/browser.ts';
import { authorizationRequest as buildRequest } from '../helpers/oidc.ts';
import { startIdp, type Backend, type TestIdp } from '../helpers/server.ts';

export const redirectUri = 'http://localhost:8080/cb';
export const secondRedirectUri = 'http://localhost:8080/cb2';
export const postLogoutUri = 'http://localhost:8080/logged-out';
export const user = { email: 'conformance@example.com', password: 'open sesame for tests 7', name: 'Conformance User' };
const insecure = { execute: [oidc.allowInsecureRequests] };

export interface Conformance {
  t: TestIdp;
  issuer: string;
  /** client_secret_basic, two redirect URIs, refresh tokens. */
  basic: oidc.Configuration;
  basicSecret: string;
  /** client_secret_post. */
  post: oidc.Configuration;
  postSecret: string;
  /** private_key_jwt, with its private key for building assertions by hand. */
  keyJwt: oidc.Configuration;
  keyJwtPrivate: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  keyJwtPublicJwk: JWK;
  /** A public client (PKCE required). */
  publicClient: oidc.Configuration;
  stop(): Promise<void>;
}

export async function startConformance(env: Record<string, string> = {}): Promise<Conformance> {
  const backend = (process.env.CONFORMANCE_BACKEND as Backend | undefined) ?? 'postgresql+redis';
  const t = await startIdp(backend, { FETCH_ALLOW_PRIVATE_ADDRESSES: 'true', ...env });
  await t.idp.accounts.create({ email: user.email, password: user.password, name: user.name, emailVerified: true });
  const common = { post_logout_redirect_uris: [postLogoutUri], grant_types: ['authorization_code', 'refresh_token'] };
  const basicSecret = (await t.idp.clients.create({ client_id: 'rp-basic', redirect_uris: [redirectUri, secondRedirectUri], ...common })).clientSecret!;
  const postSecret = (await t.idp.clients.create({ client_id: 'rp-post', redirect_uris: [redirectUri], token_endpoint_auth_method: 'client_secret_post', ...common })).clientSecret!;
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const keyJwtPublicJwk = { ...(await exportJWK(publicKey)), alg: 'RS256', use: 'sig', kid: 'rp-key-1' };
  await t.idp.clients.create({ client_id: 'rp-key', redirect_uris: [redirectUri], token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'RS256', jwks: { keys: [keyJwtPublicJwk] }, request_object_signing_alg: 'RS256', ...common });
  await t.idp.clients.create({ client_id: 'rp-public', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', ...common });
  const issuer = new URL(t.issuer);
  return {
    t,
    issuer: t.issuer,
    basic: await oidc.discovery(issuer, 'rp-basic', basicSecret, undefined, insecure),
    basicSecret,
    post: await oidc.discovery(issuer, 'rp-post', postSecret, oidc.ClientSecretPost(postSecret), insecure),
    postSecret,
    keyJwt: await oidc.discovery(issuer, 'rp-key', undefined, oidc.PrivateKeyJwt({ key: privateKey, kid: 'rp-key-1' }), insecure),
    keyJwtPrivate: privateKey,
    keyJwtPublicJwk,
    publicClient: await oidc.discovery(issuer, 'rp-public', undefined, oidc.None(), insecure),
    stop: () => t.stop(),
  };
}

/** Builds an authorization request with PKCE, state and nonce for `config`. */
export function authorizationRequest(config: oidc.Configuration, extra: Record<string, string> = {}) {
  return buildRequest(config, { redirect_uri: redirectUri, ...extra });
}

/** Signs the conformance user in for `config` and redeems the code; returns tokens and the browser (holding the session). */
export async function loginAndRedeem(config: oidc.Configuration, extra: Record<string, string> = {}, browser = new Browser()) {
  const request = await authorizationRequest(config, extra);
  const callback = await signIn(browser, request.url, user.email, user.password);
  const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
  return { tokens, callback, browser, request };
}
