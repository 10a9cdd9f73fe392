// The limits against SMS pumping, through the MFA service of a running IdP: a per-account daily
// budget and a deployment-wide daily cap, both in the shared counters. SMS go to a local server
// that speaks Twilio's REST API (test/helpers/fake-sms-providers.ts): the real service cannot be
// reached from here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeSmsProviders, type FakeSmsProviders } from '../helpers/fake-sms-providers.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';

describe.each(backends)('SMS limits on %s', (backend) => {
  let sms: FakeSmsProviders;
  let t: TestIdp;
  beforeAll(async () => {
    sms = await startFakeSmsProviders();
    t = await startIdp(backend, {
      SMS_PROVIDER: 'twilio', SMS_FROM: '+15005550006', TWILIO_ACCOUNT_SID: sms.twilio.accountSid, TWILIO_AUTH_TOKEN: sms.twilio.authToken,
      SMS_API_BASE_URL: sms.url, SMS_DAILY_LIMIT: '12',
    });
  });
  afterAll(async () => {
    await t?.stop();
    await sms?.close();
  });

  const send = (key: string, number: string, account: string) => t.idp.mfa.sendCodeTo(key, 'sms', number, account);

  it('one account gets at most 10 SMS a day, whatever the numbers', async () => {
    const results = [];
    for (let i = 0; i < 11; i++) results.push(await send(`a${i}`, `+4179123450${String(i).padStart(2, '0')}`, 'account-a'));
    expect(results.slice(0, 10)).toEqual(Array(10).fill('sent'));
    expect(results[10]).toBe('rate_limited');
    expect(sms.received).toHaveLength(10);
  });

  it('the deployment stops at SMS_DAILY_LIMIT across accounts, logs it once in the audit, and sends nothing more', async () => {
    // 10 went out above (the 11th stopped at the account budget): two more fit under 12.
    expect(await send('b1', '+41791234600', 'account-b')).toBe('sent');
    expect(await send('c1', '+41791234601', 'account-c')).toBe('sent');
    expect(await send('d1', '+41791234602', 'account-d')).toBe('rate_limited');
    expect(await send('e1', '+41791234603', 'account-e')).toBe('rate_limited');
    expect(sms.received).toHaveLength(12);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'mfa.sms_daily_limit' } })).toBe(1);
  });
});
