// WebAuthn ceremonies end to end against real storage: a software authenticator produces real
// responses, the service verifies them with @simplewebauthn/server, credentials live in the
// MfaFactor table and challenges in the shared store (the ExpiringValue table or Redis).
import { randomUUID } from 'node:crypto';
import type { AuthenticationResponseJSON } from '@simplewebauthn/server';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AuditInput } from '../../src/audit/types.ts';
import { IdpError, NotFoundError } from '../../src/errors.ts';
import { challengeTtlSeconds, WebAuthnError, WebAuthnService, type WebAuthnOptions } from '../../src/mfa/webauthn.ts';
import { openDatabase, type Database } from '../../src/store/database.ts';
import { DatabaseExpiringValues, RedisExpiringValues, type ExpiringValues } from '../../src/store/expiring-values.ts';
import { openRedis, type Redis } from '../../src/store/redis.ts';
import { WebAuthnCredentialStore } from '../../src/store/webauthn-credentials.ts';
import { rejection } from '../helpers/assertions.ts';
import { freshDatabase, redisNamespace, type TestDatabase } from '../helpers/databases.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';

const origin = 'https://id.example.test';
const rpId = 'id.example.test';

/** The WebAuthnError a promise rejects with, checked to be a client error. */
async function refusal(promise: Promise<unknown>): Promise<WebAuthnError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(WebAuthnError);
  expect(error).toBeInstanceOf(IdpError);
  expect((error as WebAuthnError).status).toBe(400);
  expect((error as WebAuthnError).expose).toBe(true);
  return error as WebAuthnError;
}

const cases = [
  { kind: 'sqlite', values: 'database' },
  { kind: 'sqlite', values: 'redis' },
  { kind: 'postgresql', values: 'database' },
  { kind: 'postgresql', values: 'redis' },
] as const;

describe.each(cases)('WebAuthn on $kind, challenges in $values', ({ kind, values }) => {
  let t: TestDatabase;
  let db: Database;
  let ns: Awaited<ReturnType<typeof redisNamespace>> | undefined;
  let redis: Redis | undefined;
  let challenges: ExpiringValues;
  let store: WebAuthnCredentialStore;
  let events: AuditInput[];

  beforeAll(async () => {
    t = await freshDatabase(kind);
    db = await openDatabase(t.url);
    if (values === 'redis') {
      ns = await redisNamespace();
      redis = openRedis(ns.url, ns.prefix);
      challenges = new RedisExpiringValues(redis);
    } else {
      challenges = new DatabaseExpiringValues(db.prisma);
    }
    store = new WebAuthnCredentialStore(db.prisma);
  });

  afterAll(async () => {
    await redis?.quit();
    await ns?.clear();
    await db?.close();
    await t?.drop();
  });

  beforeEach(() => {
    events = [];
  });

  function service(options: Partial<WebAuthnOptions> = {}): WebAuthnService {
    return new WebAuthnService({
      rpId,
      rpName: 'Example ID',
      origin,
      userVerification: 'required',
      failOnCounterRegression: true,
      challenges,
      store,
      audit: (event) => void events.push(event),
      ...options,
    });
  }

  const newAccount = () => ({ id: randomUUID(), email: `${randomUUID()}@example.test`, name: 'Ada Lovelace' });

  /** A fresh account with one credential on a fresh authenticator. */
  async function enrolled(webauthn = service(), authenticator = new SoftAuthenticator({ origin })) {
    const account = newAccount();
    const flow = randomUUID();
    const response = authenticator.register(await webauthn.registrationOptions(flow, account));
    const factorId = await webauthn.verifyRegistration(flow, account.id, response, 'My key');
    return { account, authenticator, factorId, credentialId: response.id, webauthn };
  }

  async function signIn(webauthn: WebAuthnService, authenticator: SoftAuthenticator, accountId: string | undefined, overrides: Parameters<SoftAuthenticator['authenticate']>[1] = {}) {
    const flow = randomUUID();
    const response = authenticator.authenticate(await webauthn.authenticationOptions(flow, accountId), overrides);
    return webauthn.verifyAuthentication(flow, response, accountId);
  }

  describe('registration', () => {
    it('options: the account as an opaque user handle, preferred resident key, no attestation, ES256 and RS256', async () => {
      const account = newAccount();
      const options = await service().registrationOptions(randomUUID(), account);
      expect(options.rp).toEqual({ id: rpId, name: 'Example ID' });
      expect(Buffer.from(options.user.id, 'base64url').toString('utf8')).toBe(account.id);
      expect(options.user.name).toBe(account.email);
      expect(options.user.displayName).toBe('Ada Lovelace');
      expect(options.attestation).toBe('none');
      expect(options.authenticatorSelection).toMatchObject({ residentKey: 'preferred', userVerification: 'required' });
      expect(options.pubKeyCredParams.map((p) => p.alg)).toEqual([-7, -257]);
      expect(options.excludeCredentials).toEqual([]);
      expect(options.extensions).toMatchObject({ credProps: true });
      expect(options.challenge).toMatch(/^[A-Za-z0-9_-]{32,}$/);
    });

    it('stores a confirmed credential with its key, counter, transports and discoverability', async () => {
      const account = newAccount();
      const authenticator = new SoftAuthenticator({ origin });
      const webauthn = service();
      const flow = randomUUID();
      const response = authenticator.register(await webauthn.registrationOptions(flow, account), { counter: 7, transports: ['usb', 'nfc'] });
      // As the form posts it: JSON text.
      const factorId = await webauthn.verifyRegistration(flow, account.id, JSON.stringify(response), '  YubiKey\n5  ');

      const stored = await store.findByCredentialId(response.id);
      expect(stored).toMatchObject({ id: factorId, accountId: account.id, name: 'YubiKey 5', counter: 7, transports: ['usb', 'nfc'], discoverable: true, lastUsedAt: null });
      expect(stored!.confirmedAt).toBeInstanceOf(Date);
      expect(Buffer.from(stored!.publicKey, 'base64url').equals(authenticator.credentials.get(response.id)!.cosePublicKey)).toBe(true);
      const row = await db.prisma.mfaFactor.findUnique({ where: { id: factorId } });
      expect(row).toMatchObject({ type: 'webauthn', credentialId: response.id, transports: '["usb","nfc"]', secret: null });
    });

    it('discoverable follows credProps, else a synced (multi-device) credential counts as discoverable', async () => {
      const webauthn = service();
      const register = async (overrides: Parameters<SoftAuthenticator['register']>[1]) => {
        const account = newAccount();
        const flow = randomUUID();
        const response = new SoftAuthenticator({ origin }).register(await webauthn.registrationOptions(flow, account), overrides);
        await webauthn.verifyRegistration(flow, account.id, response, '');
        return (await store.findByCredentialId(response.id))!;
      };
      expect((await register({ credPropsRk: false })).discoverable).toBe(false);
      expect((await register({ credPropsRk: true })).discoverable).toBe(true);
      expect((await register({ credPropsRk: null, synced: true })).discoverable).toBe(true);
      const plain = await register({ credPropsRk: null });
      expect(plain.discoverable).toBe(false);
      expect(plain.name).toBe('Passkey');
    });

    it("excludes the account's existing credentials, and a re-registered credential is refused", async () => {
      const { account, authenticator, credentialId, webauthn } = await enrolled();
      const flow = randomUUID();
      const options = await webauthn.registrationOptions(flow, account);
      expect(options.excludeCredentials).toEqual([{ id: credentialId, type: 'public-key', transports: ['usb'] }]);
      expect(() => authenticator.register(options)).toThrow(/InvalidStateError/);
      // An authenticator that ignores the exclusion list meets the unique credential id.
      const again = authenticator.register(options, { reuse: credentialId });
      expect((await refusal(webauthn.verifyRegistration(flow, account.id, again, 'Again'))).code).toBe('ERR_WEBAUTHN_DUPLICATE');
      expect(await store.listForAccount(account.id)).toHaveLength(1);
    });

    it('refuses a wrong origin, a wrong RP ID, a missing UV flag, another account, a reused challenge', async () => {
      const webauthn = service();
      const account = newAccount();
      const attempt = async (overrides: Parameters<SoftAuthenticator['register']>[1], accountId = account.id) => {
        const flow = randomUUID();
        const response = new SoftAuthenticator({ origin }).register(await webauthn.registrationOptions(flow, account), overrides);
        return refusal(webauthn.verifyRegistration(flow, accountId, response, 'x'));
      };
      const wrongOrigin = await attempt({ origin: 'https://evil.example' });
      expect(wrongOrigin.code).toBe('ERR_WEBAUTHN_VERIFICATION');
      expect((wrongOrigin.cause as Error).message).toContain('origin');
      expect((await attempt({ rpId: 'evil.example' })).code).toBe('ERR_WEBAUTHN_VERIFICATION');
      expect(((await attempt({ userVerified: false })).cause as Error).message).toContain('User verification');
      expect((await attempt({ challenge: Buffer.from('not the challenge').toString('base64url') })).code).toBe('ERR_WEBAUTHN_VERIFICATION');
      expect((await attempt({}, randomUUID())).code).toBe('ERR_WEBAUTHN_CHALLENGE');
      expect(await store.listForAccount(account.id)).toEqual([]);

      const flow = randomUUID();
      const response = new SoftAuthenticator({ origin }).register(await webauthn.registrationOptions(flow, account));
      await webauthn.verifyRegistration(flow, account.id, response, 'ok');
      expect((await refusal(webauthn.verifyRegistration(flow, account.id, response, 'replay'))).code).toBe('ERR_WEBAUTHN_CHALLENGE');
    });

    it('refuses malformed responses and names before touching the challenge', async () => {
      const webauthn = service();
      const account = newAccount();
      const flow = randomUUID();
      const response = new SoftAuthenticator({ origin }).register(await webauthn.registrationOptions(flow, account));
      for (const bad of ['{not json', '{}', JSON.stringify({ id: response.id }), null, 42]) {
        expect((await refusal(webauthn.verifyRegistration(flow, account.id, bad, 'x'))).code).toBe('ERR_WEBAUTHN_MALFORMED');
      }
      expect((await refusal(webauthn.verifyRegistration(flow, account.id, response, 'x'.repeat(65)))).code).toBe('ERR_WEBAUTHN_INVALID_NAME');
      await webauthn.verifyRegistration(flow, account.id, response, 'fine');
    });
  });

  describe('authentication', () => {
    it('as a second factor: only the account’s credentials are allowed; the counter and last use are stored', async () => {
      const { account, authenticator, factorId, credentialId, webauthn } = await enrolled();
      const flow = randomUUID();
      const options = await webauthn.authenticationOptions(flow, account.id);
      expect(options.rpId).toBe(rpId);
      expect(options.userVerification).toBe('required');
      expect(options.allowCredentials).toEqual([{ id: credentialId, type: 'public-key', transports: ['usb'] }]);
      const result = await webauthn.verifyAuthentication(flow, authenticator.authenticate(options), account.id);
      expect(result).toEqual({ accountId: account.id, factorId, userVerified: true });
      const stored = (await store.findByCredentialId(credentialId))!;
      expect(stored.counter).toBe(1);
      expect(stored.lastUsedAt).toBeInstanceOf(Date);
      expect((await signIn(webauthn, authenticator, account.id)).factorId).toBe(factorId);
      expect((await store.findByCredentialId(credentialId))!.counter).toBe(2);
      expect(events).toEqual([]);
    });

    it('passwordless: no allowed credentials, the user handle names the account', async () => {
      const { account, authenticator, factorId, webauthn } = await enrolled();
      const flow = randomUUID();
      const options = await webauthn.authenticationOptions(flow);
      expect(options.allowCredentials).toEqual([]);
      const result = await webauthn.verifyAuthentication(flow, JSON.stringify(authenticator.authenticate(options)));
      expect(result).toEqual({ accountId: account.id, factorId, userVerified: true });
    });

    it('passwordless: a user handle that is not the credential’s owner, or none at all, is refused', async () => {
      const { authenticator, webauthn } = await enrolled();
      const other = await enrolled(webauthn);
      expect((await refusal(signIn(webauthn, authenticator, undefined, { userHandle: other.account.id }))).code).toBe('ERR_WEBAUTHN_USER_MISMATCH');
      expect((await refusal(signIn(webauthn, authenticator, undefined, { userHandle: null }))).code).toBe('ERR_WEBAUTHN_USER_MISMATCH');
    });

    it('a second factor with another account’s credential is refused like an unknown one', async () => {
      const mine = await enrolled();
      const theirs = await enrolled(mine.webauthn);
      const flow = randomUUID();
      const options = await mine.webauthn.authenticationOptions(flow, mine.account.id);
      const response = theirs.authenticator.authenticate(options, { credentialId: theirs.credentialId });
      expect((await refusal(mine.webauthn.verifyAuthentication(flow, response, mine.account.id))).code).toBe('ERR_WEBAUTHN_UNKNOWN_CREDENTIAL');
      // Options made for one account cannot be finished as another.
      const flow2 = randomUUID();
      const options2 = await mine.webauthn.authenticationOptions(flow2, mine.account.id);
      const response2 = theirs.authenticator.authenticate(options2, { credentialId: theirs.credentialId });
      expect((await refusal(mine.webauthn.verifyAuthentication(flow2, response2, theirs.account.id))).code).toBe('ERR_WEBAUTHN_CHALLENGE');
      // Nor by leaving the account out: the options remember it.
      const flow3 = randomUUID();
      const response3 = theirs.authenticator.authenticate(await mine.webauthn.authenticationOptions(flow3, mine.account.id), { credentialId: theirs.credentialId });
      expect((await refusal(mine.webauthn.verifyAuthentication(flow3, response3))).code).toBe('ERR_WEBAUTHN_UNKNOWN_CREDENTIAL');
    });

    it('an unknown credential is refused', async () => {
      const { webauthn } = await enrolled();
      const stranger = new SoftAuthenticator({ origin });
      // Created on the authenticator, never registered with the server.
      stranger.register(await webauthn.registrationOptions(randomUUID(), newAccount()));
      expect((await refusal(signIn(webauthn, stranger, undefined))).code).toBe('ERR_WEBAUTHN_UNKNOWN_CREDENTIAL');
    });

    it('an account without credentials gets no second-factor options (they would allow any passkey)', async () => {
      expect((await refusal(service().authenticationOptions(randomUUID(), randomUUID()))).code).toBe('ERR_WEBAUTHN_NO_CREDENTIALS');
    });

    it('a challenge works once, also when two submissions race', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      const flow = randomUUID();
      const response = authenticator.authenticate(await webauthn.authenticationOptions(flow, account.id));
      await webauthn.verifyAuthentication(flow, response, account.id);
      expect((await refusal(webauthn.verifyAuthentication(flow, response, account.id))).code).toBe('ERR_WEBAUTHN_CHALLENGE');

      const raced = randomUUID();
      const racing = authenticator.authenticate(await webauthn.authenticationOptions(raced, account.id));
      const outcomes = await Promise.allSettled([webauthn.verifyAuthentication(raced, racing, account.id), webauthn.verifyAuthentication(raced, racing, account.id)]);
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      const failed = outcomes.find((o) => o.status === 'rejected')!;
      expect((failed.reason as WebAuthnError).code).toBe('ERR_WEBAUTHN_CHALLENGE');
    });

    it('a failed attempt burns the challenge', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      const flow = randomUUID();
      const options = await webauthn.authenticationOptions(flow, account.id);
      await refusal(webauthn.verifyAuthentication(flow, authenticator.authenticate(options, { origin: 'https://evil.example' }), account.id));
      expect((await refusal(webauthn.verifyAuthentication(flow, authenticator.authenticate(options), account.id))).code).toBe('ERR_WEBAUTHN_CHALLENGE');
    });

    it('challenges live in the shared store with a five-minute TTL: another node finishes the ceremony', async () => {
      const { account, authenticator } = await enrolled();
      const flow = randomUUID();
      const options = await service().authenticationOptions(flow, account.id);
      if (redis) {
        const ttl = await redis.ttl(`kv:webauthn:authentication:${flow}`);
        expect(ttl).toBeGreaterThan(challengeTtlSeconds - 5);
        expect(ttl).toBeLessThanOrEqual(challengeTtlSeconds);
      } else {
        const row = await db.prisma.expiringValue.findUnique({ where: { key: `webauthn:authentication:${flow}` } });
        const left = row!.expiresAt.getTime() - Date.now();
        expect(left).toBeGreaterThan((challengeTtlSeconds - 5) * 1000);
        expect(left).toBeLessThanOrEqual(challengeTtlSeconds * 1000);
      }
      expect(challengeTtlSeconds).toBe(300);
      expect(options.timeout).toBeLessThan(challengeTtlSeconds * 1000);
      const result = await service().verifyAuthentication(flow, authenticator.authenticate(options), account.id);
      expect(result.accountId).toBe(account.id);
      expect(await challenges.get(`webauthn:authentication:${flow}`)).toBeUndefined();
    });

    it('registration and authentication challenges of one flow do not overwrite each other', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      const flow = randomUUID();
      const authOptions = await webauthn.authenticationOptions(flow, account.id);
      const newKey = new SoftAuthenticator({ origin });
      const registration = newKey.register(await webauthn.registrationOptions(flow, account));
      await webauthn.verifyAuthentication(flow, authenticator.authenticate(authOptions), account.id);
      await webauthn.verifyRegistration(flow, account.id, registration, 'Second key');
      expect(await store.listForAccount(account.id)).toHaveLength(2);
    });

    it('a wrong origin or a wrong RP ID is refused', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      const wrongOrigin = await refusal(signIn(webauthn, authenticator, account.id, { origin: 'https://id.example.test.evil.example' }));
      expect(wrongOrigin.code).toBe('ERR_WEBAUTHN_VERIFICATION');
      expect((wrongOrigin.cause as Error).message).toContain('origin');
      const wrongRp = await refusal(signIn(webauthn, authenticator, account.id, { rpId: 'example.test' }));
      expect(wrongRp.code).toBe('ERR_WEBAUTHN_VERIFICATION');
      expect((wrongRp.cause as Error).message).toMatch(/RP ID/i);
    });

    it('a signature by another key is refused', async () => {
      const { account, authenticator, credentialId, webauthn } = await enrolled();
      // Swap the credential's private key for a fresh one: same id, wrong key.
      const impostor = new SoftAuthenticator({ origin });
      impostor.register(await webauthn.registrationOptions(randomUUID(), newAccount()));
      const [fake] = impostor.credentials.values();
      authenticator.credentials.get(credentialId)!.privateKey = fake!.privateKey;
      const error = await refusal(signIn(webauthn, authenticator, account.id));
      expect(error.code).toBe('ERR_WEBAUTHN_VERIFICATION');
      expect((await store.findByCredentialId(credentialId))!.counter).toBe(0);
    });

    it('with UV required, a response without the UV flag is refused; with UV preferred it passes, unverified', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      const error = await refusal(signIn(webauthn, authenticator, account.id, { userVerified: false }));
      expect((error.cause as Error).message).toContain('User verification');
      const preferred = service({ userVerification: 'preferred' });
      expect(await signIn(preferred, authenticator, account.id, { userVerified: false })).toMatchObject({ accountId: account.id, userVerified: false });
      // User presence is always required.
      await refusal(signIn(preferred, authenticator, account.id, { userPresent: false }));
    });

    it('UV preferred: a security key without UV registers and signs in', async () => {
      const webauthn = service({ userVerification: 'preferred' });
      const { account, authenticator } = await enrolled(webauthn, new SoftAuthenticator({ origin, userVerifying: false }));
      expect(await signIn(webauthn, authenticator, account.id)).toMatchObject({ accountId: account.id, userVerified: false });
    });
  });

  describe('signature counter', () => {
    it('a counter that goes back is recorded and refused when so configured; the stored counter stays', async () => {
      const { account, authenticator, factorId, credentialId, webauthn } = await enrolled();
      await signIn(webauthn, authenticator, account.id, { counter: 5 });
      const error = await refusal(signIn(webauthn, authenticator, account.id, { counter: 3 }));
      expect(error.code).toBe('ERR_WEBAUTHN_COUNTER_REGRESSION');
      // Equal is a regression too: a counter must grow.
      expect((await refusal(signIn(webauthn, authenticator, account.id, { counter: 5 }))).code).toBe('ERR_WEBAUTHN_COUNTER_REGRESSION');
      expect(events).toEqual([
        { type: 'webauthn.counter_regression', outcome: 'failure', subject: account.id, details: { factorId, storedCounter: 5, newCounter: 3, refused: true } },
        { type: 'webauthn.counter_regression', outcome: 'failure', subject: account.id, details: { factorId, storedCounter: 5, newCounter: 5, refused: true } },
      ]);
      expect((await store.findByCredentialId(credentialId))!.counter).toBe(5);
      expect((await signIn(webauthn, authenticator, account.id, { counter: 6 })).factorId).toBe(factorId);
    });

    it('a counter that goes back is recorded but allowed when not configured to fail; the higher counter is kept', async () => {
      const lenient = service({ failOnCounterRegression: false });
      const { account, authenticator, factorId, credentialId } = await enrolled(lenient);
      await signIn(lenient, authenticator, account.id, { counter: 10 });
      const before = (await store.findByCredentialId(credentialId))!.lastUsedAt!;
      await new Promise((r) => setTimeout(r, 5));
      expect(await signIn(lenient, authenticator, account.id, { counter: 2 })).toEqual({ accountId: account.id, factorId, userVerified: true });
      expect(events).toEqual([{ type: 'webauthn.counter_regression', outcome: 'failure', subject: account.id, details: { factorId, storedCounter: 10, newCounter: 2, refused: false } }]);
      const stored = (await store.findByCredentialId(credentialId))!;
      expect(stored.counter).toBe(10);
      expect(stored.lastUsedAt!.getTime()).toBeGreaterThan(before.getTime());
    });

    it('a counter that drops to zero is a regression; an authenticator that never counts is fine', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      await signIn(webauthn, authenticator, account.id, { counter: 1 });
      expect((await refusal(signIn(webauthn, authenticator, account.id, { counter: 0 }))).code).toBe('ERR_WEBAUTHN_COUNTER_REGRESSION');

      events = [];
      const synced = await enrolled(webauthn, new SoftAuthenticator({ origin, counting: false }));
      for (let i = 0; i < 3; i++) await signIn(webauthn, synced.authenticator, synced.account.id);
      expect(events).toEqual([]);
      expect((await store.findByCredentialId(synced.credentialId))!.counter).toBe(0);
    });

    it('two concurrent assertions with the same counter (a cloned key used at once): one passes, one is a regression', async () => {
      const { account, authenticator, webauthn } = await enrolled();
      const flows = [randomUUID(), randomUUID()];
      const responses: AuthenticationResponseJSON[] = [];
      for (const flow of flows) responses.push(authenticator.authenticate(await webauthn.authenticationOptions(flow, account.id), { counter: 9 }));
      const outcomes = await Promise.allSettled(flows.map((flow, i) => webauthn.verifyAuthentication(flow, responses[i], account.id)));
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      expect(((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as WebAuthnError).code).toBe('ERR_WEBAUTHN_COUNTER_REGRESSION');
      expect(events.map((e) => e.type)).toEqual(['webauthn.counter_regression']);
    });

    it('counters beyond 2^31 round-trip exactly', async () => {
      const { account, authenticator, credentialId, webauthn } = await enrolled();
      await signIn(webauthn, authenticator, account.id, { counter: 0xfffffff0 });
      expect((await store.findByCredentialId(credentialId))!.counter).toBe(0xfffffff0);
      await signIn(webauthn, authenticator, account.id);
      expect((await store.findByCredentialId(credentialId))!.counter).toBe(0xfffffff1);
    });
  });

  describe('managing credentials', () => {
    it('several per account; each signs in; rename and delete are scoped to the account', async () => {
      const webauthn = service();
      const account = newAccount();
      const keys = [new SoftAuthenticator({ origin }), new SoftAuthenticator({ origin }), new SoftAuthenticator({ origin })];
      const ids: string[] = [];
      for (const [i, key] of keys.entries()) {
        const flow = randomUUID();
        ids.push(await webauthn.verifyRegistration(flow, account.id, key.register(await webauthn.registrationOptions(flow, account)), `Key ${i + 1}`));
      }
      expect((await webauthn.listCredentials(account.id)).map((c) => c.name)).toEqual(['Key 1', 'Key 2', 'Key 3']);
      const options = await webauthn.authenticationOptions(randomUUID(), account.id);
      expect(options.allowCredentials).toHaveLength(3);
      for (const [i, key] of keys.entries()) expect((await signIn(webauthn, key, account.id)).factorId).toBe(ids[i]);

      await webauthn.renameCredential(account.id, ids[1]!, 'Laptop');
      expect((await webauthn.listCredentials(account.id)).map((c) => c.name)).toEqual(['Key 1', 'Laptop', 'Key 3']);
      expect((await refusal(webauthn.renameCredential(account.id, ids[1]!, '   '))).code).toBe('ERR_WEBAUTHN_INVALID_NAME');

      const other = newAccount();
      expect(await rejection(webauthn.renameCredential(other.id, ids[0]!, 'Mine now'))).toBeInstanceOf(NotFoundError);
      expect(await rejection(webauthn.deleteCredential(other.id, ids[0]!))).toBeInstanceOf(NotFoundError);
      expect(await store.rename(other.id, ids[0]!, 'x')).toBe(false);
      expect(await store.delete(other.id, ids[0]!)).toBe(false);

      await webauthn.deleteCredential(account.id, ids[0]!);
      expect((await webauthn.listCredentials(account.id)).map((c) => c.id)).toEqual([ids[1], ids[2]]);
      expect(await rejection(webauthn.deleteCredential(account.id, ids[0]!))).toBeInstanceOf(NotFoundError);
      // A deleted credential no longer signs in.
      const flow = randomUUID();
      const response = keys[0]!.authenticate(await webauthn.authenticationOptions(flow, account.id), { credentialId: keys[0]!.credentials.keys().next().value! });
      expect((await refusal(webauthn.verifyAuthentication(flow, response, account.id))).code).toBe('ERR_WEBAUTHN_UNKNOWN_CREDENTIAL');
      expect((await signIn(webauthn, keys[2]!, account.id)).factorId).toBe(ids[2]);
    });

    it('the store never touches factors of another type', async () => {
      const accountId = randomUUID();
      const totpId = randomUUID();
      await db.prisma.mfaFactor.create({ data: { id: totpId, accountId, type: 'totp', name: 'Phone', secret: 'envelope', credentialId: `totp-${totpId}` } });
      expect(await store.listForAccount(accountId)).toEqual([]);
      expect(await store.findByCredentialId(`totp-${totpId}`)).toBeNull();
      expect(await store.rename(accountId, totpId, 'x')).toBe(false);
      expect(await store.delete(accountId, totpId)).toBe(false);
      expect(await store.updateCounter(totpId, 5)).toBe(false);
      expect(await db.prisma.mfaFactor.findUnique({ where: { id: totpId } })).toMatchObject({ name: 'Phone', counter: 0 });
    });
  });

  it('refuses an RP ID that does not cover the origin at construction', () => {
    expect(() => service({ rpId: 'other.example' })).toThrow(/RP ID/);
    expect(() => service({ rpId: 'example.test' })).not.toThrow();
  });
});
