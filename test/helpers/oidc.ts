// Authorization requests as a relying party builds them: PKCE (S256), state and nonce, with the
// parameters a test chooses on top.
import * as oidc from 'openid-client';

export async function authorizationRequest(config: oidc.Configuration, params: Record<string, string> & { redirect_uri: string }) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    scope: 'openid',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...params,
  });
  return { url, verifier, state, nonce };
}
