// The bench's data, made before any server starts, into a template directory (SQLite database and
// master key) that each measured configuration then copies: the real CLI migrates, registers the
// clients and creates the first user of each kind; the other users are created through the
// function `idp users create` runs (src/admin/commands.ts createUser), in this process, because
// the CLI creates one user per process (about 2.5 s each on a 2-core machine) and has no bulk
// import. TOTP is enrolled through the MFA service, as test/e2e/mfa.test.ts arranges it.
import { cpSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { createUser } from '../../src/admin/commands.ts';
import { createIdp } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { Keyring } from '../../src/keys/keyring.ts';
import { LocalMasterKey } from '../../src/keys/local-master-key.ts';
import { createLogger } from '../../src/log.ts';
import { totpCodeAt, totpStep } from '../../src/mfa/totp.ts';
import { SigningKeyStore } from '../../src/store/signing-keys.ts';
import { BenchError, idpJson } from './proc.ts';

export const resource = 'https://api.example.test';
export const resourceScope = 'api:read';
export const redirectUri = 'http://localhost:8080/callback';
export const benchPassword = 'correct horse battery staple 42 (load)';

export interface SeededUser {
  id: string;
  email: string;
  password: string;
}

export interface SeededTotpUser extends SeededUser {
  secret: string;
  /** The last time step the server has on record as used (set two minutes back at enrolment). */
  lastStep: number;
}

export interface Seeded {
  dir: string;
  ccClient: { id: string; secret: string };
  webClient: { id: string; secret: string; firstParty: boolean };
  passwordUsers: SeededUser[];
  totpUsers: SeededTotpUser[];
  /** Our RS256 signing key (private JWK), handed to the bare provider so both sign alike. */
  jwk: JWK;
  usersByCli: number;
  usersInProcess: number;
  seconds: number;
  /** Seconds per phase: the CLI commands, the in-process users, the TOTP enrolments. */
  phases: { cli: number; users: number; totp: number };
}

/** The settings our server and the CLI share for a data directory (no port, no issuer). */
export function dataEnv(dir: string, extra: Record<string, string>): Record<string, string> {
  return {
    DATABASE_URL: `file:${join(dir, 'idp.db')}`,
    MASTER_KEY_FILE: join(dir, 'master.key'),
    LOG_LEVEL: 'warn',
    RESOURCE_SERVERS: JSON.stringify([{ indicator: resource, scopes: [resourceScope], accessTokenFormat: 'jwt' }]),
    ...extra,
  };
}

async function inBatches<T>(items: T[], size: number, run: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(run));
}

export async function seed(dir: string, env: Record<string, string>, counts: { passwordUsers: number; totpUsers: number; firstParty: boolean }): Promise<Seeded> {
  const started = performance.now();
  await idpJson(['migrate'], env);
  // The first command creates the signing key and the server secrets: alone, so no two processes race for them.
  const cc = await idpJson<{ client_id: string; client_secret: string }>(['clients', 'create'], env, JSON.stringify({
    client_name: 'bench client credentials', grant_types: ['client_credentials'], scope: resourceScope, token_endpoint_auth_method: 'client_secret_basic',
  }));
  const passwordEmails = Array.from({ length: counts.passwordUsers }, (_, i) => `bench-user-${String(i + 1).padStart(4, '0')}@example.test`);
  const totpEmails = Array.from({ length: counts.totpUsers }, (_, i) => `bench-totp-${String(i + 1).padStart(4, '0')}@example.test`);
  // allSettled: on a failure no command is left running over the directory the caller then removes.
  const settled = await Promise.allSettled([
    idpJson<{ client_id: string; client_secret: string }>(['clients', 'create'], env, JSON.stringify({
      client_name: 'bench web app', redirect_uris: [redirectUri], grant_types: ['authorization_code'], response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic', ...(counts.firstParty ? { first_party: true } : {}),
    })),
    ...[passwordEmails[0], totpEmails[0]].filter((e): e is string => e !== undefined)
      .map((email) => idpJson(['users', 'create', '--email', email, '--password-stdin'], env, `${benchPassword}\n`)),
  ]);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  const web = (settled[0] as PromiseFulfilledResult<{ client_id: string; client_secret: string }>).value;
  const usersByCli = (passwordEmails.length ? 1 : 0) + (totpEmails.length ? 1 : 0);
  const phases = { cli: (performance.now() - started) / 1000, users: 0, totp: 0 };

  const config = loadConfig(env);
  const idp = await createIdp(config, createLogger('silent'));
  const totpUsers: SeededTotpUser[] = [];
  let jwk: JWK | undefined;
  try {
    const rest = [...passwordEmails.slice(1), ...totpEmails.slice(1)];
    // argon2 runs on libuv's thread pool: a few at a time use both cores.
    let t = performance.now();
    await inBatches(rest, 4, async (email) => {
      await createUser(idp, { email, password: benchPassword });
    });
    phases.users = (performance.now() - t) / 1000;
    t = performance.now();
    const lastStep = totpStep(Date.now() - 120_000);
    await inBatches(totpEmails, 8, async (email) => {
      const account = await idp.accounts.requireByEmail(email);
      const enrolment = await idp.mfa.startTotp(account.id, account.email);
      if (!(await idp.mfa.confirmTotp(account.id, enrolment.factorId, totpCodeAt(enrolment.secret, Date.now())))) throw new BenchError(`TOTP enrolment of ${email} was refused`);
      // As test/e2e/mfa.test.ts does: the confirming code spent the current step; set the factor's
      // last used step two minutes back, as if enrolled then, so every step around now is free.
      await idp.db.prisma.mfaFactor.update({ where: { id: enrolment.factorId }, data: { lastUsedStep: lastStep } });
      totpUsers.push({ id: account.id, email, password: benchPassword, secret: enrolment.secret, lastStep });
    });
    phases.totp = (performance.now() - t) / 1000;
    // The key our server signs with, unwrapped as the server does it.
    const keyring = new Keyring(new SigningKeyStore(idp.db), LocalMasterKey.load(config.MASTER_KEY_FILE, { create: false }), idp.audit);
    jwk = (await keyring.privateJwks()).keys.find((k) => k.alg === 'RS256');
    const passwordUsers: SeededUser[] = [];
    for (const email of passwordEmails) passwordUsers.push({ id: (await idp.accounts.requireByEmail(email)).id, email, password: benchPassword });
    if (!jwk?.kid || jwk.kty !== 'RSA') throw new BenchError('our IdP has no RS256 signing key');
    totpUsers.sort((a, b) => a.email.localeCompare(b.email));
    return {
      dir,
      ccClient: { id: cc.client_id, secret: cc.client_secret },
      webClient: { id: web.client_id, secret: web.client_secret, firstParty: counts.firstParty },
      passwordUsers,
      totpUsers,
      jwk,
      usersByCli,
      usersInProcess: rest.length,
      seconds: (performance.now() - started) / 1000,
      phases,
    };
  } finally {
    await idp.close();
  }
}

/** A fresh copy of the template directory (database files and master key; mode bits kept). */
export function copyData(from: string, to: string): void {
  for (const name of readdirSync(from)) cpSync(join(from, name), join(to, name));
}
