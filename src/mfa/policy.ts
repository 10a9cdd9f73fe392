// When a sign-in needs a second factor, and which methods count. Pure: the caller gathers the
// facts (account, client, requested acr, risk, enrolled factors, remembered device).
import type { SecondFactor } from './service.ts';

export interface MfaPolicySettings {
  requiredForAll: boolean;
  userTypes: readonly string[];
  roles: readonly string[];
  clients: readonly string[];
  /** acr value → the methods that satisfy it. */
  acrMethods: Readonly<Record<string, readonly SecondFactor[]>>;
}

export interface MfaFacts {
  userType: string;
  roles: readonly string[];
  clientId: string | undefined;
  /** acr_values of the authorization request, in order of preference. */
  requestedAcr: readonly string[];
  riskStepUp: boolean;
  /** Methods the account has confirmed and this sign-in may use. */
  enrolled: readonly SecondFactor[];
  /** Whether the account has any confirmed method besides backup codes (usable here or not). */
  hasFactor: boolean;
  remembered: boolean;
  /** What the first factor already achieved (a passkey with user verification is multi-factor). */
  amr: readonly string[];
}

export type MfaDecision =
  | { action: 'skip'; reason: string }
  | { action: 'challenge'; methods: SecondFactor[]; reason: string }
  | { action: 'enrol'; methods: SecondFactor[]; reason: string }
  | { action: 'deny'; reason: string };

/** The reason the interaction policy gives when a relying party asks for a stronger acr than the session has. */
export const acrStepUpReason = 'acr_step_up';

export const allSecondFactors: readonly SecondFactor[] = ['totp', 'webauthn', 'email', 'sms', 'backup_code'];

/** Whether a sign-in with these methods satisfies an acr value. */
export function satisfiesAcr(settings: MfaPolicySettings, acr: string, amr: readonly string[]): boolean {
  const methods = settings.acrMethods[acr];
  if (!methods) return true;
  if (!amr.includes('mfa')) return false;
  // Phishing resistance (webauthn only) shows as hwk; any other list accepts any second factor.
  return methods.every((m) => m === 'webauthn') ? amr.includes('hwk') : true;
}

/** Whether configuration makes a second factor compulsory for this account (and client). */
export function requiredByPolicy(settings: MfaPolicySettings, facts: Pick<MfaFacts, 'userType' | 'roles' | 'clientId'>): boolean {
  return settings.requiredForAll
    || settings.userTypes.includes(facts.userType)
    || facts.roles.some((role) => settings.roles.includes(role))
    || (facts.clientId !== undefined && settings.clients.includes(facts.clientId));
}

/**
 * The acr a request demands a second factor for: acr_values are in order of preference, so only
 * the first value we know counts (`1fa 2fa` prefers one factor, and gets it).
 */
export function demandedAcr(settings: Pick<MfaPolicySettings, 'acrMethods'>, requested: readonly string[]): string | undefined {
  const first = requested.find((value) => value === 'urn:idp:acr:1fa' || settings.acrMethods[value]);
  return first && settings.acrMethods[first] ? first : undefined;
}

export function decideMfa(settings: MfaPolicySettings, facts: MfaFacts): MfaDecision {
  const demanded = demandedAcr(settings, facts.requestedAcr);
  const byPolicy = requiredByPolicy(settings, facts);
  const reason = demanded ? `acr:${demanded}` : facts.riskStepUp ? 'risk' : byPolicy ? 'policy' : facts.enrolled.length || facts.hasFactor ? 'enrolled' : 'none';
  if (reason === 'none') return { action: 'skip', reason };
  if (demanded ? satisfiesAcr(settings, demanded, facts.amr) : facts.amr.includes('mfa')) return { action: 'skip', reason: 'first_factor_is_multi_factor' };
  // A remembered device stands in for the second factor only when nobody asked for more.
  if (facts.remembered && !demanded && !facts.riskStepUp) return { action: 'skip', reason: 'remembered_device' };
  const methods = demanded ? [...settings.acrMethods[demanded]!] : [...allSecondFactors];
  const usable = methods.filter((m) => facts.enrolled.includes(m));
  if (usable.some((m) => m !== 'backup_code')) return { action: 'challenge', methods: usable, reason };
  // Enrolment at sign-in is only for accounts without any method: otherwise the password alone
  // could add an attacker's authenticator. Such an account proves itself with what it has (the
  // acr it reaches may fall short of the request; the relying party sees that in the token).
  if (facts.hasFactor) {
    const existing = facts.enrolled.length ? [...facts.enrolled] : [];
    return existing.length ? { action: 'challenge', methods: existing, reason } : { action: 'deny', reason: 'no_usable_factor' };
  }
  // Backup codes alone are a way back in, not a method: they do not spare the enrolment.
  return { action: 'enrol', methods: methods.filter((m) => m !== 'backup_code'), reason };
}
