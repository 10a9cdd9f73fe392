// The audit catalogue covers every login event the flow can write (they are named at run time, so
// the compiler cannot check them), and every catalogue entry says what it means.
import { describe, expect, it } from 'vitest';
import { auditEvents, isAuditEventType } from '../../../src/audit/events.ts';
import { methodEventNames, transitions, type Stage } from '../../../src/flow/machine.ts';

describe('audit catalogue', () => {
  it('lists every login event: each flow event type and each sign-in method outcome', () => {
    const flowEvents = new Set(Object.values(transitions).flatMap((edges) => Object.keys(edges)));
    // Events named by the method's outcome are written under that name instead of their type.
    for (const generic of ['authenticated', 'authentication_rejected', 'authentication_pending']) flowEvents.delete(generic);
    const missing = [...flowEvents, ...methodEventNames].map((name) => `login.${name}`).filter((type) => !isAuditEventType(type));
    expect(missing).toEqual([]);
    expect(Object.keys(transitions).sort()).toEqual((['identify', 'authenticate', 'assess', 'mfa', 'mfa_enrol', 'backup_codes', 'change_password', 'done', 'failed'] satisfies Stage[]).sort());
  });

  it('describes every event, and names its detail fields without secrets', () => {
    for (const [type, event] of Object.entries(auditEvents)) {
      expect(type).toMatch(/^[a-z_]+(\.[a-z_]+)?$/);
      expect(event.description.length, type).toBeGreaterThan(10);
      for (const field of event.fields) expect(field, type).not.toMatch(/^(password|secret|code|token|access_token|refresh_token|id_token|client_secret)$/i);
    }
  });

  it('knows nothing outside the list', () => {
    expect(isAuditEventType('login.password_verified')).toBe(true);
    expect(isAuditEventType('login.anything')).toBe(false);
    expect(isAuditEventType('toString')).toBe(false);
  });
});
