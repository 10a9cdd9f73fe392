// What each preset makes of an upstream's verified claims, and the connection rules no schema can say.
import { describe, expect, it } from 'vitest';
import { OidcUpstream, UpstreamRefusal } from '../../../src/federation/oidc-upstream.ts';
import { federatedAmr, profileOf } from '../../../src/federation/profile.ts';
import { resolveSettings, settingsProblems, type Connection, type NewConnection, type Preset } from '../../../src/federation/settings.ts';

const tenant = '11111111-1111-4111-8111-111111111111';

function connection(preset: Preset, fields: Partial<NewConnection> = {}): Connection {
  const settings = resolveSettings(preset, { client_id: 'us', issuer: 'https://upstream.example', ...fields });
  return { id: 'c', kind: 'oidc', preset, displayName: 'C', enabled: true, settings, hasSecret: true, createdAt: new Date(0), updatedAt: new Date(0) };
}

const refusal = (run: () => unknown) => {
  try {
    run();
  } catch (error) {
    if (error instanceof UpstreamRefusal) return error.reason;
    throw error;
  }
  return undefined;
};

describe('profiles from upstream claims', () => {
  it('Entra ID: keyed by tid and oid, its address never verified, tenants outside the allow-list refused', () => {
    const entra = connection('entra', { issuer: 'https://login.microsoftonline.com/organizations/v2.0', tenants: [tenant] });
    const profile = profileOf(entra, { issuer: `https://login.microsoftonline.com/${tenant}/v2.0`, claims: { sub: 'per-app', tid: tenant, oid: 'OID-1', preferred_username: 'a@contoso.com', email_verified: true } });
    expect(profile).toMatchObject({ subject: `${tenant}:oid-1`, email: 'a@contoso.com', emailVerified: false });
    expect(refusal(() => profileOf(entra, { issuer: 'x', claims: { tid: '22222222-2222-4222-8222-222222222222', oid: 'o' } }))).toBe('tenant_refused');
    expect(refusal(() => profileOf(entra, { issuer: 'x', claims: { sub: 'no-tid' } }))).toBe('invalid_response');
  });

  it('Google: email_verified required, hd checked against the allow-list', () => {
    const google = connection('google', { hosted_domains: ['Example.com'] });
    expect(profileOf(google, { issuer: 'https://accounts.google.com', claims: { sub: '1', email: 'a@example.com', email_verified: true, hd: 'example.com' } }).emailVerified).toBe(true);
    expect(refusal(() => profileOf(google, { issuer: 'g', claims: { sub: '1', email: 'a@gmail.com', email_verified: true } }))).toBe('domain_refused');
    expect(refusal(() => profileOf(google, { issuer: 'g', claims: { sub: '1', email: 'a@example.com', email_verified: false, hd: 'example.com' } }))).toBe('invalid_response');
  });

  it('maps groups to roles and claims to attributes; only email_verified: true counts', () => {
    const generic = connection('generic', { group_roles: { eng: 'engineer', ops: 'operator' }, claim_mapping: { groups: 'memberOf', attributes: { dept: 'department' } } });
    const profile = profileOf(generic, { issuer: 'i', claims: { sub: 's', email: 'x@y.z', email_verified: 'true', memberOf: ['eng', 'eng', 'other', 7], department: 'R&D' } });
    expect(profile).toMatchObject({ roles: ['engineer'], attributes: { dept: 'R&D' }, emailVerified: false });
  });

  it('MFA evidence only as the connection trusts it, and amr says fed (and mfa)', () => {
    const claims = { sub: 's', amr: ['pwd', 'mfa'], acr: 'urn:okta:loa:2fa:any' };
    expect(profileOf(connection('okta'), { issuer: 'i', claims }).mfaEvidence).toBeUndefined();
    const trusted = profileOf(connection('okta', { mfa: { trust: 'asserted' } }), { issuer: 'i', claims });
    expect(trusted.mfaEvidence).toBe('amr:mfa');
    expect(federatedAmr(trusted)).toEqual(['fed', 'mfa']);
    expect(profileOf(connection('okta', { mfa: { trust: 'asserted', amr: ['hwk'], acr: ['urn:okta:loa:2fa:any'] } }), { issuer: 'i', claims }).mfaEvidence).toBe('acr:urn:okta:loa:2fa:any');
    expect(profileOf(connection('okta', { mfa: { trust: 'asserted' } }), { issuer: 'i', claims: { sub: 's', amr: ['pwd'] } }).mfaEvidence).toBeUndefined();
    const entraBase = { issuer: `https://login.microsoftonline.com/${tenant}/v2.0` };
    const entraClaims = { tid: tenant, oid: 'o', amr: ['mfa'] };
    // Entra's evidence is its authentication context, never an amr it does not send.
    expect(profileOf(connection('entra', { ...entraBase, mfa: { trust: 'asserted', auth_context: 'c1' } }), { issuer: 'i', claims: entraClaims }).mfaEvidence).toBeUndefined();
    expect(profileOf(connection('entra', { ...entraBase, mfa: { trust: 'asserted', auth_context: 'c1' } }), { issuer: 'i', claims: { ...entraClaims, acrs: ['c1'] } }).mfaEvidence).toBe('acrs:c1');
    expect(profileOf(connection('entra', { ...entraBase, mfa: { trust: 'conditional_access' } }), { issuer: 'i', claims: entraClaims }).mfaEvidence).toBe('conditional_access_statement');
  });
});

describe('connection settings', () => {
  it('fills in each preset\'s defaults', () => {
    expect(resolveSettings('google', { client_id: 'c' })).toMatchObject({ issuer: 'https://accounts.google.com', scopes: ['openid', 'email', 'profile'], userinfo: true, jit: { enabled: true, status: 'active', userType: 'internal' } });
    expect(resolveSettings('entra', { client_id: 'c', issuer: 'https://login.microsoftonline.com/common/v2.0/' })).toMatchObject({ issuer: 'https://login.microsoftonline.com/common/v2.0', userinfo: false, mapping: { email: 'email', emailFallback: 'preferred_username' } });
    expect(resolveSettings('okta', { client_id: 'c', issuer: 'https://o.okta.com', scopes: ['groups'] }).scopes).toEqual(['openid', 'groups']);
  });

  it('the discovery issuer Entra\'s multi-tenant authorities publish is the {tenantid} template', () => {
    expect(OidcUpstream.expectedDiscoveryIssuer(connection('entra', { issuer: 'https://login.microsoftonline.com/organizations/v2.0', tenants: [tenant] }))).toBe('https://login.microsoftonline.com/{tenantid}/v2.0');
    expect(OidcUpstream.expectedDiscoveryIssuer(connection('entra', { issuer: `https://login.microsoftonline.com/${tenant}/v2.0` }))).toBe(`https://login.microsoftonline.com/${tenant}/v2.0`);
    expect(OidcUpstream.expectedDiscoveryIssuer(connection('generic', { issuer: 'https://idp.example/common/v2.0' }))).toBe('https://idp.example/common/v2.0');
  });

  it('plain http only when allowed', () => {
    const settings = resolveSettings('generic', { client_id: 'c', issuer: 'http://127.0.0.1:9000' });
    expect(settingsProblems('generic', settings, false)).toEqual(['issuer must be an https URL']);
    expect(settingsProblems('generic', settings, true)).toEqual([]);
  });
});

describe('where upstream requests may go', () => {
  it('the issuer\'s own host always; other hosts only at public addresses (unless private ones are allowed)', async () => {
    const { destinationProblem } = await import('../../../src/federation/oidc-upstream.ts');
    expect(await destinationProblem(new URL('http://127.0.0.1:9000/token'), '127.0.0.1:9000', false)).toBeUndefined();
    for (const url of ['http://localhost:9000/token', 'http://127.0.0.1:9001/x', 'http://169.254.169.254/latest/meta-data', 'http://[::1]:8080/', 'https://10.1.2.3/jwks', 'http://[::ffff:127.0.0.1]/']) {
      expect(await destinationProblem(new URL(url), 'idp.example.com', false), url).toMatch(/loopback, private or reserved|does not resolve/);
    }
    expect(await destinationProblem(new URL('http://localhost:9000/token'), 'idp.example.com', true)).toBeUndefined();
  });
});
