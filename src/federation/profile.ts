// What an upstream's verified claims mean for us, per preset: whose identity it is, which address
// can be trusted, our roles and attributes, and whether MFA happened there. Pure.
import type { Connection } from './settings.ts';
import { UpstreamRefusal, type UpstreamAnswer } from './oidc-upstream.ts';

export interface UpstreamProfile {
  issuer: string;
  /** Stable per upstream account: `sub`, or `<tid>:<oid>` for Entra ID (its `sub` is per app). */
  subject: string;
  email?: string | undefined;
  /** Only `email_verified: true` counts, and never from Entra ID (it asserts none). */
  emailVerified: boolean;
  name?: string | undefined;
  roles: string[];
  attributes: Record<string, unknown>;
  /** Why the upstream's MFA is trusted (amr:mfa, acr:…, acrs:c1, conditional_access_statement), if it is. */
  mfaEvidence?: string | undefined;
}

const text = (value: unknown, max = 320): string | undefined => (typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined);
const list = (value: unknown): string[] => (Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : typeof value === 'string' ? [value] : []);

export function profileOf(connection: Connection, answer: UpstreamAnswer): UpstreamProfile {
  const { settings, preset } = connection;
  const claims = answer.claims;
  let subject: string | undefined;
  if (preset === 'entra') {
    const tid = text(claims.tid, 64);
    const oid = text(claims.oid, 64);
    if (!tid || !oid) throw new UpstreamRefusal('invalid_response', 'the Entra ID token carries no tid and oid');
    if (settings.tenants.length && !settings.tenants.includes(tid.toLowerCase())) throw new UpstreamRefusal('tenant_refused', `tenant ${tid} is not on the connection's allow-list`);
    subject = `${tid.toLowerCase()}:${oid.toLowerCase()}`;
  } else {
    subject = text(claims.sub, 255);
    if (!subject) throw new UpstreamRefusal('invalid_response', 'the ID token carries no sub');
  }
  if (preset === 'google' && settings.hostedDomains.length) {
    const hd = text(claims.hd, 253)?.toLowerCase();
    if (!hd || !settings.hostedDomains.includes(hd)) throw new UpstreamRefusal('domain_refused', `Workspace domain ${hd ?? '(none: a personal account)'} is not allowed`);
  }
  const email = text(claims[settings.mapping.email]) ?? (settings.mapping.emailFallback ? text(claims[settings.mapping.emailFallback]) : undefined);
  const emailVerified = preset !== 'entra' && claims.email_verified === true;
  if (preset === 'google' && !emailVerified) throw new UpstreamRefusal('invalid_response', 'Google did not assert email_verified');
  const groups = list(claims[settings.mapping.groups]);
  const roles = [...new Set(groups.map((g) => settings.groupRoles[g]).filter((r): r is string => r !== undefined))];
  const attributes: Record<string, unknown> = {};
  for (const [ours, theirs] of Object.entries(settings.mapping.attributes)) if (claims[theirs] !== undefined) attributes[ours] = claims[theirs];
  return { issuer: answer.issuer, subject, email, emailVerified, name: text(claims[settings.mapping.name], 200), roles, attributes, mfaEvidence: mfaEvidence(connection, claims) };
}

function mfaEvidence(connection: Connection, claims: Record<string, unknown>): string | undefined {
  const { mfa } = connection.settings;
  if (mfa.trust === 'conditional_access') return 'conditional_access_statement';
  if (mfa.trust !== 'asserted') return undefined;
  if (connection.preset === 'entra') return mfa.authContext && list(claims.acrs).includes(mfa.authContext) ? `acrs:${mfa.authContext}` : undefined;
  const amr = list(claims.amr).find((value) => mfa.amr.includes(value));
  if (amr) return `amr:${amr}`;
  const acr = text(claims.acr, 256);
  return acr && mfa.acr.includes(acr) ? `acr:${acr}` : undefined;
}

/** Our tokens' amr for a federated sign-in: fed, and mfa when the upstream's MFA is trusted. */
export const federatedAmr = (profile: UpstreamProfile): string[] => (profile.mfaEvidence ? ['fed', 'mfa'] : ['fed']);
