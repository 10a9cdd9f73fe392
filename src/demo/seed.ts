// First-run demo data for `idp serve --demo`: a user and a client, created once. Their
// credentials are kept in data/demo-credentials.json (mode 0600, git-ignored) so every start can
// print them; delete that file and the two records to remove the demo.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AccountService } from '../accounts/service.ts';
import type { ClientService } from '../clients/service.ts';
import type { Config } from '../config.ts';
import type { DemoClient } from './relying-party.ts';

export interface DemoCredentials extends DemoClient {
  email: string;
  password: string;
}

export const demoClientId = 'demo';
export const demoEmail = 'demo@example.com';

/** What seeding needs of the IdP. */
export interface DemoSeedServices {
  config: Pick<Config, 'ISSUER'>;
  accounts: Pick<AccountService, 'findByEmail' | 'create'>;
  clients: Pick<ClientService, 'create' | 'delete' | 'registeredAt'>;
}

export async function seedDemo(idp: DemoSeedServices, file: string): Promise<DemoCredentials> {
  const issuer = idp.config.ISSUER;
  const saved = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as DemoCredentials) : undefined;
  if (saved?.issuer === issuer) return saved;
  let password = saved?.password;
  if (!password) {
    if (await idp.accounts.findByEmail(demoEmail)) {
      throw new Error(`a ${demoEmail} account exists but ${file} is missing: restore the file, or delete the account and the database to start over`);
    }
    password = randomBytes(12).toString('base64url');
    await idp.accounts.create({ email: demoEmail, password, name: 'Demo User', emailVerified: true });
  }
  // First run, or the issuer changed: (re)register the demo client for this issuer's URLs.
  const redirectUri = `${issuer}/demo/callback`;
  if ((await idp.clients.registeredAt(demoClientId)) !== undefined) await idp.clients.delete(demoClientId);
  const created = await idp.clients.create({
    client_id: demoClientId,
    client_name: 'Demo application',
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [`${issuer}/demo`],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: 'openid profile email offline_access',
  });
  const credentials: DemoCredentials = { issuer, email: demoEmail, password, clientId: demoClientId, clientSecret: created.clientSecret!, redirectUri };
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return credentials;
}
