// An LDAP directory connection (OpenLDAP, Active Directory): the operator's document, checked
// once, with each preset's defaults. The user types address and password on our screen; we
// search the directory with a service account, then bind as the user.
import { z } from 'zod';

export const directoryPresets = ['openldap', 'active_directory'] as const;
export type DirectoryPreset = (typeof directoryPresets)[number];

const name = z.string().min(1, { error: 'is required' }).max(256);
const domain = z.string().min(1).max(253).regex(/^[a-z0-9.-]+$/i, { error: 'must be a domain name (letters, digits, "." and "-")' });
const attribute = z.string().regex(/^[A-Za-z][A-Za-z0-9-]{0,63}$/, { error: 'must be an attribute name' });
const dn = z.string().min(1).max(1024);

const fields = {
  display_name: name,
  enabled: z.boolean().optional(),
  urls: z.array(z.string().min(1).max(2048)).min(1, { error: 'must name at least one server' }).max(10)
    .meta({ description: 'ldaps:// or ldap:// server URLs, tried in order (failover)' }),
  start_tls: z.boolean().optional().meta({ description: 'ldap:// URLs: upgrade with StartTLS (default true)' }),
  ca_pem: z.string().max(65_536).optional().meta({ description: 'the CA bundle (PEM) the servers\' certificates chain to (default: the system\'s)' }),
  insecure_plain_ldap: z.boolean().optional().meta({ description: 'allow ldap:// without StartTLS: passwords cross the network in clear (a warning at every start)' }),
  bind_dn: dn.meta({ description: 'the service account that searches for users' }),
  bind_password: z.string().min(1).max(4096).meta({ description: 'write-only: stored wrapped by the KMS, never shown again' }),
  user_base: dn.meta({ description: 'where users are searched (subtree)' }),
  user_filter: z.string().max(1024).optional().meta({ description: 'a filter with {login} for the typed address (escaped); default per preset' }),
  attributes: z.strictObject({
    id: attribute.optional(), email: attribute.optional(), name: attribute.optional(),
    custom: z.record(z.string().max(64), attribute).optional(),
  }).optional().meta({ description: 'id (stable key: entryUUID / objectGUID), email, name, custom (our attribute → directory attribute)' }),
  group_base: dn.optional().meta({ description: 'where groups are searched (default: the user base\'s parent)' }),
  group_roles: z.record(z.string().max(1024), z.string().max(64)).optional().meta({ description: 'group DN or cn → our role (nested groups count)' }),
  clients: z.array(name).max(100).optional(),
  domains: z.array(domain).max(100).optional().meta({ description: 'email domains whose addresses sign in against this directory' }),
  jit: z.strictObject({
    enabled: z.boolean().optional(),
    status: z.enum(['active', 'disabled']).optional(),
    user_type: z.string().min(1).max(64).optional(),
  }).optional(),
  authoritative_domains: z.array(domain).max(100).optional().meta({ description: 'the directory owns these addresses: an existing account with one is linked without proof' }),
  timeout_seconds: z.number().int().min(1).max(30).optional().meta({ description: 'per directory operation (default 5)' }),
};

export const NewDirectorySchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { error: 'must be 1 to 63 lower-case letters, digits and "-", starting with a letter or digit' }).optional(),
  kind: z.literal('ldap'),
  preset: z.enum(directoryPresets),
  ...fields,
});
export type NewDirectory = z.output<typeof NewDirectorySchema>;
export const DirectoryChangesSchema = NewDirectorySchema.omit({ id: true, kind: true }).partial();
export type DirectoryChanges = z.output<typeof DirectoryChangesSchema>;

export interface DirectorySettings {
  urls: string[];
  startTls: boolean;
  caPem?: string | undefined;
  insecurePlain: boolean;
  bindDn: string;
  userBase: string;
  userFilter: string;
  attributes: { id: string; email: string; name: string; custom: Record<string, string> };
  groupBase: string;
  groupRoles: Record<string, string>;
  clients: string[];
  domains: string[];
  jit: { enabled: boolean; status: 'active' | 'disabled'; userType: string };
  authoritativeDomains: string[];
  timeoutSeconds: number;
}

export interface DirectoryConnection {
  id: string;
  kind: 'ldap';
  preset: DirectoryPreset;
  displayName: string;
  enabled: boolean;
  settings: DirectorySettings;
  hasSecret: boolean;
  createdAt: Date;
  updatedAt: Date;
}

const presetDefaults: Record<DirectoryPreset, { filter: string; id: string; email: string; name: string }> = {
  // RFC 4519 names; entryUUID (RFC 4530) survives renames.
  openldap: { filter: '(&(objectClass=inetOrgPerson)(|(mail={login})(uid={login})))', id: 'entryUUID', email: 'mail', name: 'cn' },
  // Disabled users too: AD's own answer (533 after the right password) is shown; objectGUID survives renames and moves.
  active_directory: {
    filter: '(&(objectCategory=person)(objectClass=user)(|(userPrincipalName={login})(mail={login})(sAMAccountName={login})))',
    id: 'objectGUID', email: 'mail', name: 'displayName',
  },
};

const lower = (list: string[] | undefined) => [...new Set((list ?? []).map((d) => d.toLowerCase()))];

export function resolveDirectorySettings(preset: DirectoryPreset, input: Omit<NewDirectory, 'id' | 'kind' | 'preset' | 'display_name' | 'enabled' | 'bind_password'>): DirectorySettings {
  const defaults = presetDefaults[preset];
  const userBase = input.user_base;
  return {
    urls: input.urls,
    startTls: input.start_tls ?? true,
    caPem: input.ca_pem,
    insecurePlain: input.insecure_plain_ldap ?? false,
    bindDn: input.bind_dn,
    userBase,
    userFilter: input.user_filter ?? defaults.filter,
    attributes: {
      id: input.attributes?.id ?? defaults.id,
      email: input.attributes?.email ?? defaults.email,
      name: input.attributes?.name ?? defaults.name,
      custom: input.attributes?.custom ?? {},
    },
    groupBase: input.group_base ?? (userBase.split(/(?<!\\),/).slice(1).join(',') || userBase),
    groupRoles: input.group_roles ?? {},
    clients: [...new Set(input.clients ?? [])],
    domains: lower(input.domains),
    jit: { enabled: input.jit?.enabled ?? true, status: input.jit?.status ?? 'active', userType: input.jit?.user_type ?? 'internal' },
    authoritativeDomains: lower(input.authoritative_domains),
    timeoutSeconds: input.timeout_seconds ?? 5,
  };
}

export function directoryProblems(settings: DirectorySettings): string[] {
  const problems: string[] = [];
  for (const url of settings.urls) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      problems.push(`urls: ${url.slice(0, 100)} is not a URL`);
      continue;
    }
    if (parsed.protocol !== 'ldaps:' && parsed.protocol !== 'ldap:') problems.push(`urls: ${url.slice(0, 100)} must be ldaps:// or ldap://`);
    if (parsed.protocol === 'ldap:' && !settings.startTls && !settings.insecurePlain) problems.push(`urls: ${url.slice(0, 100)} is plain LDAP without StartTLS: passwords would cross the network in clear (set insecure_plain_ldap to allow it)`);
    if (parsed.pathname && parsed.pathname !== '/' || parsed.search || parsed.username) problems.push(`urls: ${url.slice(0, 100)} must be scheme://host[:port] only`);
  }
  if (!settings.userFilter.includes('{login}')) problems.push('user_filter must contain {login}');
  if ((settings.userFilter.match(/\(/g) ?? []).length !== (settings.userFilter.match(/\)/g) ?? []).length) problems.push('user_filter has unbalanced parentheses');
  if (settings.caPem !== undefined && !settings.caPem.includes('-----BEGIN CERTIFICATE-----')) problems.push('ca_pem must be PEM certificates');
  return problems;
}

export function readDirectorySettings(text: string): DirectorySettings | undefined {
  try {
    const parsed = JSON.parse(text) as DirectorySettings;
    return typeof parsed === 'object' && parsed && Array.isArray(parsed.urls) && typeof parsed.bindDn === 'string' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

export function directorySettingsView(settings: DirectorySettings) {
  return {
    urls: settings.urls, start_tls: settings.startTls, has_ca_pem: settings.caPem !== undefined, insecure_plain_ldap: settings.insecurePlain,
    bind_dn: settings.bindDn, user_base: settings.userBase, user_filter: settings.userFilter,
    attributes: settings.attributes, group_base: settings.groupBase, group_roles: settings.groupRoles,
    clients: settings.clients, domains: settings.domains,
    jit: { enabled: settings.jit.enabled, status: settings.jit.status, user_type: settings.jit.userType },
    authoritative_domains: settings.authoritativeDomains, timeout_seconds: settings.timeoutSeconds,
  };
}

export function directorySettingsInput(settings: DirectorySettings): Omit<NewDirectory, 'id' | 'kind' | 'preset' | 'display_name' | 'enabled' | 'bind_password'> {
  const { has_ca_pem: _shown, ...view } = directorySettingsView(settings);
  return { ...view, ...(settings.caPem ? { ca_pem: settings.caPem } : {}) };
}

