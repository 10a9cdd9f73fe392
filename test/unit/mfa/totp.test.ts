// TOTP codes: the RFC 6238 test vector, the drift window of one step either side, refusal of
// anything that is not six digits, and what the enrolment page shows (otpauth URI, QR code).
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../../src/errors.ts';
import { matchTotp, newTotpSecret, otpauthUri, qrCodeDataUrl, totpCodeAt, totpStep } from '../../../src/mfa/totp.ts';

const base32Alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32Decode(value: string): Buffer {
  let bits = '';
  for (const c of value) bits += base32Alphabet.indexOf(c).toString(2).padStart(5, '0');
  const bytes = bits.match(/.{8}/g) ?? [];
  return Buffer.from(bytes.map((b) => parseInt(b, 2)));
}

function base32Encode(bytes: Buffer): string {
  const bits = [...bytes].map((b) => b.toString(2).padStart(8, '0')).join('');
  return (bits.match(/.{1,5}/g) ?? []).map((chunk) => base32Alphabet[parseInt(chunk.padEnd(5, '0'), 2)]).join('');
}

/** RFC 4226 §5.3, written out independently of otplib. */
function referenceCode(secret: Buffer, step: number): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', secret).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const value = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(value % 1_000_000).padStart(6, '0');
}

const secret = newTotpSecret();
// Midway through a step, so ±30 s lands midway through the neighbouring steps.
const t = 1_750_000_005_000 + 15_000 - (1_750_000_005_000 % 30_000);

describe('newTotpSecret', () => {
  it('is base32 of 160 random bits, different each time', () => {
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(base32Decode(secret).length).toBe(20);
    expect(newTotpSecret()).not.toBe(secret);
  });
});

describe('totpCodeAt / matchTotp', () => {
  it('matches RFC 6238 Appendix B (SHA-1, 8-digit vector cut to the 6 digits apps show)', () => {
    // The RFC's seed is 20 ASCII bytes; its 8-digit code at T=59 s is 94287082.
    const rfcSecret = base32Encode(Buffer.from('12345678901234567890', 'ascii'));
    expect(totpCodeAt(rfcSecret, 59_000)).toBe('287082');
    expect(totpCodeAt(rfcSecret, 1_111_111_109_000)).toBe('081804');
    expect(totpCodeAt(rfcSecret, 2_000_000_000_000)).toBe('279037');
  });

  it('agrees with an independent HOTP implementation', () => {
    for (const time of [0, t, t + 30_000, 4_102_444_800_000]) {
      expect(totpCodeAt(secret, time)).toBe(referenceCode(base32Decode(secret), totpStep(time)));
    }
  });

  it('accepts the code of now, and of 30 s before or after, returning the code’s own step', () => {
    const step = totpStep(t);
    expect(matchTotp(secret, totpCodeAt(secret, t), t)).toBe(step);
    expect(matchTotp(secret, totpCodeAt(secret, t - 30_000), t)).toBe(step - 1);
    expect(matchTotp(secret, totpCodeAt(secret, t + 30_000), t)).toBe(step + 1);
  });

  it('refuses codes 60 s or more away', () => {
    for (const offset of [-90_000, -60_000, 60_000, 90_000]) {
      const code = totpCodeAt(secret, t + offset);
      // A collision with a code inside the window is possible (1 in 10^6 each); skip it then.
      const inWindow = [-30_000, 0, 30_000].some((o) => totpCodeAt(secret, t + o) === code);
      if (!inWindow) expect(matchTotp(secret, code, t)).toBeUndefined();
    }
  });

  it('defaults to the current time', () => {
    const before = Date.now();
    expect(matchTotp(secret, totpCodeAt(secret, before))).toBe(totpStep(before));
  });

  it('refuses a wrong code', () => {
    const good = totpCodeAt(secret, t);
    const window = new Set([-30_000, 0, 30_000].map((o) => totpCodeAt(secret, t + o)));
    const wrong = [...Array(10).keys()].map((d) => good.slice(0, 5) + String(d)).find((c) => !window.has(c))!;
    expect(matchTotp(secret, wrong, t)).toBeUndefined();
  });

  it('refuses anything that is not exactly six ASCII digits, without throwing', () => {
    const good = totpCodeAt(secret, t);
    const malformed = ['', good.slice(0, 5), `${good}0`, ` ${good}`, `${good} `, `${good.slice(0, 3)} ${good.slice(3)}`, '12345a', 'abcdef', '１２３４５６', '-12345', '12.345', '0x1234'];
    for (const input of malformed) expect(matchTotp(secret, input, t)).toBeUndefined();
  });
});

describe('otpauthUri', () => {
  it('has the issuer-prefixed label, the secret and the explicit RFC 6238 parameters', () => {
    const uri = otpauthUri({ secret, account: 'ada+mfa@example.com', issuer: 'Acme IdP' });
    expect(uri.startsWith('otpauth://totp/Acme%20IdP:ada%2Bmfa%40example.com?')).toBe(true);
    const params = new URL(uri).searchParams;
    expect(params.get('secret')).toBe(secret);
    expect(params.get('issuer')).toBe('Acme IdP');
    expect(params.get('algorithm')).toBe('SHA1');
    expect(params.get('digits')).toBe('6');
    expect(params.get('period')).toBe('30');
    expect(uri).not.toContain('+');
  });

  it('refuses an issuer with a colon, which would shift the account name', () => {
    expect(() => otpauthUri({ secret, account: 'a@example.com', issuer: 'https://idp.example.com' })).toThrow(ValidationError);
  });
});

describe('qrCodeDataUrl', () => {
  it('is a PNG data URL', async () => {
    const url = await qrCodeDataUrl(otpauthUri({ secret, account: 'a@example.com', issuer: 'Acme' }));
    expect(url.startsWith('data:image/png;base64,')).toBe(true);
    const png = Buffer.from(url.slice('data:image/png;base64,'.length), 'base64');
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  });
});
