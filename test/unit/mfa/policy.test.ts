// The MFA decision as a table: who is asked for a second factor, with which methods, and when
// enrolment at sign-in is allowed. Pure function, so every row is one call.
import { describe, expect, it } from 'vitest';
import { decideMfa, demandedAcr, requiredByPolicy, satisfiesAcr, type MfaFacts, type MfaPolicySettings } from '../../../src/mfa/policy.ts';

const settings: MfaPolicySettings = {
  requiredForAll: false,
  userTypes: ['external'],
  roles: ['admin'],
  clients: ['strict'],
  acrMethods: { 'urn:idp:acr:2fa': ['totp', 'webauthn', 'email', 'sms', 'backup_code'], 'urn:idp:acr:phr': ['webauthn'] },
};
const facts = (over: Partial<MfaFacts> = {}): MfaFacts => ({
  userType: 'internal', roles: [], clientId: 'app', requestedAcr: [], riskStepUp: false, enrolled: [], hasFactor: false, remembered: false, amr: ['pwd'], ...over,
});
const all = ['totp', 'webauthn', 'email', 'sms'];

describe('decideMfa', () => {
  const rows: [string, Partial<MfaFacts>, Partial<MfaPolicySettings>, unknown][] = [
    ['nobody asks, nothing enrolled: skip', {}, {}, { action: 'skip', reason: 'none' }],
    ['an enrolled method is always asked for', { enrolled: ['totp', 'backup_code'], hasFactor: true }, {}, { action: 'challenge', methods: ['totp', 'backup_code'], reason: 'enrolled' }],
    ['required for everyone, no method: enrol (backup codes never offered for enrolment)', {}, { requiredForAll: true }, { action: 'enrol', methods: all, reason: 'policy' }],
    ['required for the user type', { userType: 'external' }, {}, { action: 'enrol', methods: all, reason: 'policy' }],
    ['required for a role', { roles: ['admin'] }, {}, { action: 'enrol', methods: all, reason: 'policy' }],
    ['required for a client only', { clientId: 'strict' }, {}, { action: 'enrol', methods: all, reason: 'policy' }],
    ['risk step-up', { riskStepUp: true, enrolled: ['sms'], hasFactor: true }, {}, { action: 'challenge', methods: ['sms'], reason: 'risk' }],
    ['acr 2fa demanded', { requestedAcr: ['urn:idp:acr:2fa'], enrolled: ['totp'], hasFactor: true }, {}, { action: 'challenge', methods: ['totp'], reason: 'acr:urn:idp:acr:2fa' }],
    ['acr values in order of preference: 1fa first wins', { requestedAcr: ['urn:idp:acr:1fa', 'urn:idp:acr:2fa'] }, {}, { action: 'skip', reason: 'none' }],
    ['phr demanded, only TOTP: challenge with what it has, never enrol a passkey', { requestedAcr: ['urn:idp:acr:phr'], enrolled: ['totp'], hasFactor: true }, {}, { action: 'challenge', methods: ['totp'], reason: 'acr:urn:idp:acr:phr' }],
    ['phr demanded, no method at all: enrol a passkey', { requestedAcr: ['urn:idp:acr:phr'] }, {}, { action: 'enrol', methods: ['webauthn'], reason: 'acr:urn:idp:acr:phr' }],
    ['a remembered device stands in for policy', { remembered: true, enrolled: ['totp'], hasFactor: true }, { requiredForAll: true }, { action: 'skip', reason: 'remembered_device' }],
    ['but not for an acr demand', { remembered: true, enrolled: ['totp'], hasFactor: true, requestedAcr: ['urn:idp:acr:2fa'] }, {}, { action: 'challenge', methods: ['totp'], reason: 'acr:urn:idp:acr:2fa' }],
    ['nor for risk', { remembered: true, enrolled: ['totp'], hasFactor: true, riskStepUp: true }, {}, { action: 'challenge', methods: ['totp'], reason: 'risk' }],
    ['a multi-factor first factor (passkey with user verification) is enough', { amr: ['hwk', 'mfa'], hasFactor: true, enrolled: [] }, { requiredForAll: true }, { action: 'skip', reason: 'first_factor_is_multi_factor' }],
    ['the first factor\'s method was removed from enrolled: backup codes are what is left', { amr: ['hwk'], hasFactor: true, enrolled: ['backup_code'] }, {}, { action: 'challenge', methods: ['backup_code'], reason: 'enrolled' }],
    ['an account with a method but nothing usable here is refused, not enrolled', { amr: ['hwk'], hasFactor: true, enrolled: [] }, {}, { action: 'deny', reason: 'no_usable_factor' }],
    ['backup codes alone do not spare the enrolment when required', { enrolled: ['backup_code'] }, { requiredForAll: true }, { action: 'enrol', methods: all, reason: 'policy' }],
  ];
  it.each(rows)('%s', (_name, over, policy, expected) => {
    expect(decideMfa({ ...settings, ...policy }, facts(over))).toEqual(expected);
  });
});

describe('acr helpers', () => {
  it('demandedAcr takes the first known value only', () => {
    expect(demandedAcr(settings, ['unknown', 'urn:idp:acr:2fa'])).toBe('urn:idp:acr:2fa');
    expect(demandedAcr(settings, ['urn:idp:acr:1fa', 'urn:idp:acr:phr'])).toBeUndefined();
    expect(demandedAcr(settings, [])).toBeUndefined();
  });

  it('satisfiesAcr: 2fa needs mfa; phr needs mfa with a hardware key', () => {
    expect(satisfiesAcr(settings, 'urn:idp:acr:2fa', ['pwd'])).toBe(false);
    expect(satisfiesAcr(settings, 'urn:idp:acr:2fa', ['pwd', 'otp', 'mfa'])).toBe(true);
    expect(satisfiesAcr(settings, 'urn:idp:acr:phr', ['pwd', 'otp', 'mfa'])).toBe(false);
    expect(satisfiesAcr(settings, 'urn:idp:acr:phr', ['hwk', 'mfa'])).toBe(true);
    expect(satisfiesAcr(settings, 'urn:idp:acr:1fa', [])).toBe(true);
  });

  it('requiredByPolicy: everyone, user type, role or client', () => {
    const base = { userType: 'internal', roles: [] as string[], clientId: undefined };
    expect(requiredByPolicy(settings, base)).toBe(false);
    expect(requiredByPolicy({ ...settings, requiredForAll: true }, base)).toBe(true);
    expect(requiredByPolicy(settings, { ...base, userType: 'external' })).toBe(true);
    expect(requiredByPolicy(settings, { ...base, roles: ['viewer', 'admin'] })).toBe(true);
    expect(requiredByPolicy(settings, { ...base, clientId: 'strict' })).toBe(true);
  });
});
