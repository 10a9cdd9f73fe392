// Our client registration rules on top of oidc-provider's schema, and client secret digests.
import { describe, expect, it } from 'vitest';
import { checkClientPolicy } from '../../../src/clients/service.ts';
import { clientSecretMatches, digestClientSecret, generateClientSecret, isClientSecretDigest } from '../../../src/clients/secrets.ts';
import { ValidationError } from '../../../src/errors.ts';

function refusal(metadata: Record<string, unknown>): ValidationError {
  try {
    checkClientPolicy(metadata);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error(`expected ${JSON.stringify(metadata)} to be refused`);
}

describe('redirect URIs', () => {
  it.each([
    'https://app.example.com/callback',
    'https://app.example.com:8443/cb?x=1',
    'http://localhost/callback',
    'http://localhost:8080/callback',
    'http://127.0.0.1:3000/cb',
    'http://[::1]:8080/cb',
    'com.example.app:/oauth2redirect',
  ])('accepts %s', (uri) => {
    expect(() => checkClientPolicy({ redirect_uris: [uri] })).not.toThrow();
  });

  it.each([
    'http://app.example.com/callback',
    'http://localhost.example.com/callback',
    'http://127.0.0.2/cb',
    'http://10.0.0.1/cb',
    'http://[::2]/cb',
    'http://0.0.0.0/cb',
  ])('refuses plain http to a non-loopback host: %s', (uri) => {
    expect(refusal({ redirect_uris: [uri] }).message).toBe(`redirect_uris: ${uri} must use https (http is allowed only for localhost)`);
  });

  it.each(['https://app.example.com/cb#section', 'https://app.example.com/cb#', 'http://localhost:8080/cb#x'])('refuses a fragment: %s', (uri) => {
    expect(refusal({ redirect_uris: [uri] }).message).toMatch(/must not have a fragment$/);
  });

  it('refuses credentials in the URI', () => {
    expect(refusal({ redirect_uris: ['https://user:pass@app.example.com/cb'] }).message).toMatch(/must not carry credentials$/);
  });

  it.each([
    [['/relative/callback'], /is not an absolute URL$/],
    [['not a url'], /is not an absolute URL$/],
    [[42], /must be a list of URLs$/],
    ['https://app.example.com/cb', /must be a list of URLs$/],
  ] as const)('refuses %j', (value, message) => {
    expect(refusal({ redirect_uris: value }).message).toMatch(message);
  });

  it('checks every entry, not only the first', () => {
    expect(refusal({ redirect_uris: ['https://ok.example.com/cb', 'http://evil.example.com/cb'] }).message).toContain('http://evil.example.com/cb');
  });

  it('applies the same rules to post_logout_redirect_uris and backchannel_logout_uri', () => {
    expect(refusal({ post_logout_redirect_uris: ['http://app.example.com/bye'] }).message).toMatch(/^post_logout_redirect_uris: .* must use https/);
    expect(refusal({ post_logout_redirect_uris: ['https://app.example.com/bye#x'] }).message).toMatch(/^post_logout_redirect_uris: .*fragment/);
    expect(refusal({ backchannel_logout_uri: 'http://app.example.com/bc' }).message).toMatch(/^backchannel_logout_uri: .* must use https/);
    expect(refusal({ backchannel_logout_uri: 'https://app.example.com/bc#x' }).message).toMatch(/^backchannel_logout_uri: .*fragment/);
    expect(() => checkClientPolicy({ post_logout_redirect_uris: ['http://localhost:8080/bye'], backchannel_logout_uri: 'https://app.example.com/bc' })).not.toThrow();
  });

  it('accepts metadata without redirect URIs (machine clients)', () => {
    expect(() => checkClientPolicy({ grant_types: ['client_credentials'] })).not.toThrow();
    expect(() => checkClientPolicy({})).not.toThrow();
  });
});

describe('authentication methods and algorithms', () => {
  it('refuses client_secret_jwt', () => {
    expect(refusal({ token_endpoint_auth_method: 'client_secret_jwt' }).message).toMatch(/^token_endpoint_auth_method client_secret_jwt is not supported/);
  });

  it.each(['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none', 'tls_client_auth'])('accepts %s', (method) => {
    expect(() => checkClientPolicy({ token_endpoint_auth_method: method })).not.toThrow();
  });

  const algorithmFields = [
    'id_token_signed_response_alg', 'userinfo_signed_response_alg', 'request_object_signing_alg',
    'token_endpoint_auth_signing_alg', 'introspection_signed_response_alg', 'authorization_signed_response_alg',
  ];
  it.each(algorithmFields.flatMap((field) => ['HS256', 'HS384', 'HS512'].map((alg) => [field, alg] as const)))('refuses %s = %s', (field, alg) => {
    const error = refusal({ [field]: alg });
    expect(error.message).toBe(`${field} ${alg} is not supported: symmetric algorithms need the client secret in clear, which we do not keep`);
  });

  it.each(algorithmFields)('accepts asymmetric algorithms in %s', (field) => {
    for (const alg of ['RS256', 'PS256', 'ES256', 'EdDSA']) expect(() => checkClientPolicy({ [field]: alg })).not.toThrow();
  });
});

describe('other fields', () => {
  it('refuses a client_secret in the input, whatever its value', () => {
    expect(refusal({ client_secret: 'my-own-secret' }).message).toBe('client_secret is generated by the server; do not send one');
    expect(refusal({ client_secret: '' }).message).toMatch(/^client_secret is generated/);
    expect(refusal({ client_secret: undefined }).message).toMatch(/^client_secret is generated/);
  });

  it('first_party must be a boolean', () => {
    expect(refusal({ first_party: 'yes' }).message).toBe('first_party must be true or false');
    expect(refusal({ first_party: 1 }).message).toBe('first_party must be true or false');
    expect(() => checkClientPolicy({ first_party: true })).not.toThrow();
    expect(() => checkClientPolicy({ first_party: false })).not.toThrow();
  });

  it('does not change the metadata it checks', () => {
    const metadata = { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'client_secret_post' };
    const copy = structuredClone(metadata);
    checkClientPolicy(metadata);
    expect(metadata).toEqual(copy);
  });
});

// PostgreSQL cannot store a NUL (SQLite can: the backends would differ), and a lone surrogate
// cannot be encoded as UTF-8 by the driver; the URL checks alone let both through.
describe('text in any field', () => {
  it.each([
    [{ redirect_uris: ['https://app.example.com/cb\u0000'] }, 'redirect_uris must not contain control characters'],
    [{ redirect_uris: ['https://app.example.com/cb', 'https://app.example.com/\u0001'] }, 'redirect_uris must not contain control characters'],
    [{ backchannel_logout_uri: 'https://app.example.com/\u0000' }, 'backchannel_logout_uri must not contain control characters'],
    [{ client_name: 'Evil\u0000Corp' }, 'client_name must not contain control characters'],
    [{ client_name: 'two\nlines' }, 'client_name must not contain control characters'],
    [{ client_name: 'C1 \u009b' }, 'client_name must not contain control characters'],
    [{ client_name: 'lone \ud800' }, 'client_name must be well-formed Unicode (a lone UTF-16 surrogate is not)'],
    [{ client_name: 'lone \udfffx' }, 'client_name must be well-formed Unicode (a lone UTF-16 surrogate is not)'],
    [{ contacts: ['ops@example.com', 'x\u007f'] }, 'contacts must not contain control characters'],
    [{ jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'a\u0000' }] } }, 'jwks.keys.x must not contain control characters'],
    [{ 'x\u0000y': 1 }, 'a field name must not contain control characters'],
    [{ jwks: { '\ud800': [] } }, 'a field name in jwks must be well-formed Unicode (a lone UTF-16 surrogate is not)'],
  ])('refuses %j', (metadata, message) => {
    expect(refusal(metadata).message).toBe(message);
  });

  it('accepts any other Unicode, surrogate pairs included', () => {
    expect(() => checkClientPolicy({ client_name: 'Ünïcødé 日本 😀 \u00a0', redirect_uris: ['https://app.example.com/cb?q=%00'] })).not.toThrow();
  });

  it('refuses a value nested too deeply to walk, without overflowing the stack', () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 20_000; i++) deep = [deep];
    expect(refusal({ x_extra: deep }).message).toBe('x_extra is nested deeper than 32 levels');
  });
});

describe('client secrets', () => {
  it('generates 256-bit base64url secrets, different each time', () => {
    const secrets = new Set(Array.from({ length: 50 }, () => generateClientSecret()));
    expect(secrets.size).toBe(50);
    for (const s of secrets) {
      expect(s).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(Buffer.from(s, 'base64url')).toHaveLength(32);
    }
  });

  it('the digest is a prefixed SHA-256 and never equals or contains the secret', () => {
    const secret = generateClientSecret();
    const digest = digestClientSecret(secret);
    expect(digest).toMatch(/^sha256:[A-Za-z0-9_-]{43}$/);
    expect(digest).not.toBe(secret);
    expect(digest).not.toContain(secret);
    expect(digestClientSecret(secret)).toBe(digest);
    expect(digestClientSecret(generateClientSecret())).not.toBe(digest);
  });

  it('isClientSecretDigest tells digests from secrets', () => {
    const secret = generateClientSecret();
    expect(isClientSecretDigest(digestClientSecret(secret))).toBe(true);
    expect(isClientSecretDigest(secret)).toBe(false);
    expect(isClientSecretDigest(undefined)).toBe(false);
    expect(isClientSecretDigest(42)).toBe(false);
  });

  it('clientSecretMatches accepts the secret and nothing else', () => {
    const secret = generateClientSecret();
    const digest = digestClientSecret(secret);
    expect(clientSecretMatches(digest, secret)).toBe(true);
    expect(clientSecretMatches(digest, generateClientSecret())).toBe(false);
    expect(clientSecretMatches(digest, `${secret} `)).toBe(false);
    expect(clientSecretMatches(digest, secret.slice(0, -1))).toBe(false);
    expect(clientSecretMatches(digest, '')).toBe(false);
    // Presenting the stored digest itself is not the secret.
    expect(clientSecretMatches(digest, digest)).toBe(false);
    // A stored value that is not a digest of ours never matches, even with itself.
    expect(clientSecretMatches(secret, secret)).toBe(false);
    expect(clientSecretMatches('', '')).toBe(false);
  });
});
