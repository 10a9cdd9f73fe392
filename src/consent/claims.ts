// Which claims a consent may release: the account claims and custom attributes only with their
// scope, the standard ones also by name (OIDC's claims parameter). Shared by the provider's
// grant loading and the consent screen, so both release exactly what was shown.
import type { Config } from '../config.ts';

/**
 * Claims only their scope may release (the `account` claims and the custom attributes): asking for
 * one by name in the `claims` parameter is not enough. Standard claims keep OIDC's rule (a claims
 * request may ask for them on their own).
 */
export function scopeBoundClaims(config: Pick<Config, 'CLAIM_MAPPINGS'>): Map<string, string> {
  const bound = new Map<string, string>(['account_status', 'approval_status', 'user_type', 'roles'].map((claim) => [claim, 'account']));
  for (const [scope, claims] of Object.entries(config.CLAIM_MAPPINGS)) for (const claim of Object.keys(claims)) bound.set(claim, scope);
  return bound;
}

/** The requested claims a grant may hold, given the scopes it holds or asks for. */
export function grantableClaims(claims: string[], scopes: Iterable<string>, bound: Map<string, string>): string[] {
  const granted = new Set(scopes);
  return claims.filter((claim) => !bound.has(claim) || granted.has(bound.get(claim)!));
}

