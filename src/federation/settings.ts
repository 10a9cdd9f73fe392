// What an upstream OIDC connection is: the operator's document (admin API body, CLI standard
// input), checked here once, with each preset's defaults and rules. The admin contract uses these
// schemas, so the API, the CLI and the OpenAPI document say the same.
import { z } from 'zod';
import { ValidationError } from '../errors.ts';

export const presets = ['entra', 'okta', 'google', 'jumpcloud', 'generic'] as const;
export type Preset = (typeof presets)[number];

/** Entra ID's multi-tenant authorities: the discovery issuer is a template with {tenantid}. */
export const entraMultiTenant = new Set(['common', 'organizations', 'consumers']);

const connectionId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { error: 'must be 1 to 63 lower-case letters, digits and "-", starting with a letter or digit' });
const url = z.string().min(1, { error: 'is required' }).max(2048);
const name = z.string().min(1, { error: 'is required' }).max(256);
const names = z.array(name).max(100);
const domain = z.string().min(1).max(253).regex(/^[a-z0-9.-]+$/i, { error: 'must be a domain name (letters, digits, "." and "-")' });
const claimName = z.string().min(1).max(128);

const mapping = z.strictObject({
  email: claimName.optional().meta({ description: 'the claim holding the address (default email; Entra: email, else preferred_username)' }),
  name: claimName.optional().meta({ description: 'default name' }),
  groups: claimName.optional().meta({ description: 'the claim holding group names or ids (default groups)' }),
  attributes: z.record(z.string().max(64), claimName).optional().meta({ description: 'our attribute name → upstream claim name' }),
});

const jit = z.strictObject({
  enabled: z.boolean().optional().meta({ description: 'create an account at the first sign-in (default true)' }),
  status: z.enum(['active', 'disabled']).optional().meta({ description: 'the new account\'s status (default active)' }),
  user_type: z.string().min(1).max(64).optional().meta({ description: 'the new account\'s user type (default internal); one of APPROVAL_USER_TYPES puts it into the approval workflow' }),
});

const mfa = z.strictObject({
  trust: z.enum(['never', 'asserted', 'conditional_access']).optional().meta({
    description: 'never (default): our MFA policy applies; asserted: skip ours when the upstream says MFA happened (amr/acr, Entra: the auth_context in acrs); conditional_access (Entra only): the operator states the tenant enforces MFA, recorded with every sign-in',
  }),
  amr: names.optional().meta({ description: 'amr values that mean MFA happened (default ["mfa"])' }),
  acr: names.optional().meta({ description: 'acr values that mean MFA happened' }),
  auth_context: z.string().regex(/^c([1-9]|[1-9][0-9])$/, { error: 'must be an Entra authentication context id (c1 … c99)' }).optional()
    .meta({ description: 'Entra: the authentication context (c1…c99) requested with the claims parameter; its presence in acrs is the evidence' }),
});

const fields = {
  display_name: name.meta({ description: 'the button\'s text after "Continue with"' }),
  logo_url: url.optional().meta({ description: 'an https image for the button' }),
  enabled: z.boolean().optional(),
  issuer: url.optional().meta({ description: 'the upstream issuer (discovery at issuer/.well-known/openid-configuration); Google: default https://accounts.google.com; Entra: https://login.microsoftonline.com/<tenant id | organizations | common>/v2.0' }),
  client_id: name,
  client_secret: z.string().min(1).max(4096).meta({ description: 'write-only: stored wrapped by the KMS, never shown again' }),
  token_endpoint_auth_method: z.enum(['client_secret_basic', 'client_secret_post']).optional(),
  scopes: names.optional().meta({ description: 'default openid email profile' }),
  claim_mapping: mapping.optional(),
  group_roles: z.record(z.string().max(256), z.string().max(64)).optional().meta({ description: 'upstream group → our role' }),
  clients: names.optional().meta({ description: 'client ids whose sign-in offers this connection; "*" for every client' }),
  domains: z.array(domain).max(100).optional().meta({ description: 'email domains routed straight to this connection (home-realm discovery)' }),
  jit: jit.optional(),
  authoritative_domains: z.array(domain).max(100).optional().meta({ description: 'link to an existing account by email only for these domains, and only when the upstream asserts email_verified: true (never for Entra ID)' }),
  mfa: mfa.optional(),
  tenants: z.array(z.string().uuid({ error: 'must be a tenant id (a GUID)' })).max(100).optional().meta({ description: 'Entra: the tenant ids let in (required for organizations/common)' }),
  hosted_domains: z.array(domain).max(100).optional().meta({ description: 'Google: Workspace domains (hd) let in' }),
  end_session: z.boolean().optional().meta({ description: 'after sign-out here, continue to the upstream\'s end_session_endpoint' }),
  userinfo: z.boolean().optional().meta({ description: 'read the userinfo endpoint for claims missing from the ID token (default: true, Entra false)' }),
};

export const NewConnectionSchema = z.strictObject({
  id: connectionId.optional().meta({ description: 'default: from display_name' }),
  kind: z.literal('oidc').optional(),
  preset: z.enum(presets),
  ...fields,
});
export type NewConnection = z.output<typeof NewConnectionSchema>;

export const ConnectionChangesSchema = NewConnectionSchema.omit({ id: true, kind: true }).partial();
export type ConnectionChanges = z.output<typeof ConnectionChangesSchema>;

/** A connection as the federation code reads it: presets applied, every default filled in. */
export interface ConnectionSettings {
  issuer: string;
  clientId: string;
  tokenEndpointAuthMethod: 'client_secret_basic' | 'client_secret_post';
  scopes: string[];
  logoUrl?: string | undefined;
  mapping: { email: string; emailFallback?: string | undefined; name: string; groups: string; attributes: Record<string, string> };
  groupRoles: Record<string, string>;
  clients: string[];
  domains: string[];
  jit: { enabled: boolean; status: 'active' | 'disabled'; userType: string };
  authoritativeDomains: string[];
  mfa: { trust: 'never' | 'asserted' | 'conditional_access'; amr: string[]; acr: string[]; authContext?: string | undefined };
  tenants: string[];
  hostedDomains: string[];
  endSession: boolean;
  userinfo: boolean;
}

export interface Connection {
  id: string;
  kind: 'oidc';
  preset: Preset;
  displayName: string;
  enabled: boolean;
  settings: ConnectionSettings;
  hasSecret: boolean;
  createdAt: Date;
  updatedAt: Date;
}

const lower = (list: string[] | undefined) => [...new Set((list ?? []).map((d) => d.toLowerCase()))];

/** The operator's fields (snake case, as the API takes them) → settings, with the preset's defaults. */
export function resolveSettings(preset: Preset, input: Omit<NewConnection, 'id' | 'kind' | 'preset' | 'display_name' | 'enabled' | 'client_secret'>): ConnectionSettings {
  const entra = preset === 'entra';
  const issuer = input.issuer ?? (preset === 'google' ? 'https://accounts.google.com' : undefined);
  if (!issuer) throw new ValidationError('issuer is required');
  return {
    issuer: issuer.replace(/\/+$/, ''),
    clientId: input.client_id,
    tokenEndpointAuthMethod: input.token_endpoint_auth_method ?? 'client_secret_basic',
    scopes: input.scopes?.length ? [...new Set(['openid', ...input.scopes])] : ['openid', 'email', 'profile'],
    logoUrl: input.logo_url,
    mapping: {
      email: input.claim_mapping?.email ?? 'email',
      // Entra ID sends email only when the tenant fills it; the UPN is the usual address there.
      emailFallback: entra && !input.claim_mapping?.email ? 'preferred_username' : undefined,
      name: input.claim_mapping?.name ?? 'name',
      groups: input.claim_mapping?.groups ?? 'groups',
      attributes: input.claim_mapping?.attributes ?? {},
    },
    groupRoles: input.group_roles ?? {},
    clients: [...new Set(input.clients ?? [])],
    domains: lower(input.domains),
    jit: { enabled: input.jit?.enabled ?? true, status: input.jit?.status ?? 'active', userType: input.jit?.user_type ?? 'internal' },
    authoritativeDomains: lower(input.authoritative_domains),
    mfa: { trust: input.mfa?.trust ?? 'never', amr: input.mfa?.amr ?? ['mfa'], acr: input.mfa?.acr ?? [], authContext: input.mfa?.auth_context },
    tenants: lower(input.tenants),
    hostedDomains: lower(input.hosted_domains),
    endSession: input.end_session ?? false,
    userinfo: input.userinfo ?? !entra,
  };
}

/** The issuer's tenant segment for Entra ID (https://login.microsoftonline.com/<tenant>/v2.0). */
export function entraTenantOf(issuer: string): string | undefined {
  try {
    return new URL(issuer).pathname.split('/').filter(Boolean)[0]?.toLowerCase();
  } catch {
    return undefined;
  }
}

/**
 * The rules between fields that a schema cannot say. `allowHttp`: plain-http issuers and logos
 * (development and tests on loopback only).
 */
export function settingsProblems(preset: Preset, settings: ConnectionSettings, allowHttp: boolean): string[] {
  const problems: string[] = [];
  const checkUrl = (field: string, value: string | undefined) => {
    if (value === undefined) return;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      problems.push(`${field} must be an absolute URL`);
      return;
    }
    if (parsed.protocol !== 'https:' && !(allowHttp && parsed.protocol === 'http:')) problems.push(`${field} must be an https URL`);
    if (parsed.username || parsed.password || parsed.hash || parsed.search) problems.push(`${field} must not carry credentials, a query or a fragment`);
  };
  checkUrl('issuer', settings.issuer);
  checkUrl('logo_url', settings.logoUrl);
  if (!settings.scopes.includes('openid')) problems.push('scopes must include openid');
  if (preset === 'entra') {
    if (settings.authoritativeDomains.length) problems.push('authoritative_domains cannot be used with Entra ID: it asserts no email_verified, so its email never links an account');
    const tenant = entraTenantOf(settings.issuer);
    if (tenant && entraMultiTenant.has(tenant) && !settings.tenants.length) problems.push(`tenants is required for the multi-tenant issuer ${tenant}: only the listed tenant ids are let in`);
    if (settings.mfa.trust === 'asserted' && !settings.mfa.authContext) problems.push('mfa.auth_context is required to trust Entra ID\'s MFA as asserted (its ID tokens carry no amr); or state mfa.trust conditional_access');
  } else {
    if (settings.tenants.length) problems.push('tenants is for Entra ID connections only');
    if (settings.mfa.trust === 'conditional_access') problems.push('mfa.trust conditional_access is for Entra ID connections only');
    if (settings.mfa.authContext) problems.push('mfa.auth_context is for Entra ID connections only');
  }
  if (preset !== 'google' && settings.hostedDomains.length) problems.push('hosted_domains is for Google connections only');
  return problems;
}

/** Settings as stored: the JSON document of the Connection row. */
export function readSettings(text: string): ConnectionSettings | undefined {
  try {
    const parsed = JSON.parse(text) as ConnectionSettings;
    return typeof parsed === 'object' && parsed && typeof parsed.issuer === 'string' && typeof parsed.clientId === 'string' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** The settings back in the operator's words (what `show` prints): never the secret. */
export function settingsView(settings: ConnectionSettings) {
  return {
    issuer: settings.issuer,
    client_id: settings.clientId,
    token_endpoint_auth_method: settings.tokenEndpointAuthMethod,
    scopes: settings.scopes,
    logo_url: settings.logoUrl ?? null,
    claim_mapping: { email: settings.mapping.email, name: settings.mapping.name, groups: settings.mapping.groups, attributes: settings.mapping.attributes },
    group_roles: settings.groupRoles,
    clients: settings.clients,
    domains: settings.domains,
    jit: { enabled: settings.jit.enabled, status: settings.jit.status, user_type: settings.jit.userType },
    authoritative_domains: settings.authoritativeDomains,
    mfa: { trust: settings.mfa.trust, amr: settings.mfa.amr, acr: settings.mfa.acr, ...(settings.mfa.authContext ? { auth_context: settings.mfa.authContext } : {}) },
    tenants: settings.tenants,
    hosted_domains: settings.hostedDomains,
    end_session: settings.endSession,
    userinfo: settings.userinfo,
  };
}

/** The settings as operator input again (for a change merged over them): the view, minus what the view adds. */
export function settingsInput(settings: ConnectionSettings): Omit<NewConnection, 'id' | 'kind' | 'preset' | 'display_name' | 'enabled' | 'client_secret'> {
  const { logo_url: logo, claim_mapping: { email, ...mapping }, ...view } = settingsView(settings);
  // An Entra default (email, else preferred_username) stays a default rather than becoming "email".
  return { ...view, ...(logo ? { logo_url: logo } : {}), claim_mapping: settings.mapping.emailFallback ? mapping : { email, ...mapping } };
}
