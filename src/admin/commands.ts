// Operator commands behind the `idp` CLI. Each takes the assembled IdP and plain input, returns
// what to print; src/main.ts owns argument parsing, standard input and exit codes.
import type { Idp } from '../app.ts';
import { ValidationError } from '../errors.ts';

export async function createClient(idp: Idp, stdinJson: string): Promise<Record<string, unknown>> {
  let input: unknown;
  try {
    input = JSON.parse(stdinJson);
  } catch {
    throw new ValidationError('standard input is not valid JSON: send RFC 7591 client metadata as a JSON object');
  }
  const created = await idp.clients.create(input);
  await idp.audit.record({ type: 'client.created', outcome: 'success', actor: 'cli', clientId: created.metadata.client_id, details: { grant_types: created.metadata.grant_types ?? ['authorization_code'] } });
  return created.clientSecret ? { ...created.metadata, client_secret: created.clientSecret, client_secret_expires_at: 0 } : created.metadata;
}

export async function listClients(idp: Idp) {
  return idp.clients.list();
}

export async function deleteClient(idp: Idp, id: string): Promise<void> {
  await idp.clients.delete(id);
  await idp.audit.record({ type: 'client.deleted', outcome: 'success', actor: 'cli', clientId: id });
}

export async function createUser(idp: Idp, input: { email: string; password: string; name?: string | undefined }) {
  const account = await idp.accounts.create({ email: input.email, password: input.password, name: input.name ?? null });
  await idp.audit.record({ type: 'user.created', outcome: 'success', actor: 'cli', subject: account.id });
  return { id: account.id, email: account.email, name: account.name, status: account.status, created_at: account.createdAt.toISOString() };
}

export async function unlockUser(idp: Idp, email: string) {
  const account = await idp.accounts.unlock(email);
  await idp.audit.record({ type: 'user.unlocked', outcome: 'success', actor: 'cli', subject: account.id });
  return { unlocked: account.email };
}

export async function listUsers(idp: Idp) {
  const accounts = await idp.accounts.list(1000);
  return accounts.map((a) => ({ id: a.id, email: a.email, name: a.name, status: a.status, email_verified: a.emailVerified, created_at: a.createdAt.toISOString() }));
}

const iso = (date: Date | null) => date?.toISOString() ?? null;

export async function listKeys(idp: Idp) {
  const keys = await idp.keys.listPublished();
  return keys.map((k) => ({
    kid: k.kid,
    alg: k.alg,
    state: k.state,
    created: iso(k.createdAt),
    activates: iso(k.activateAt),
    activated: iso(k.activatedAt),
    retired: iso(k.retiredAt),
    retires: iso(k.removeAt),
  }));
}

export async function rotateKeys(idp: Idp, options: { now?: boolean; revokeOld?: boolean; alg?: string }) {
  const result = await idp.keyLifecycle.rotate({ ...options, actor: 'cli' });
  return { kid: result!.kid, alg: result!.alg, state: result!.state, activates: result!.activateAt.toISOString() };
}

export async function retireKey(idp: Idp, kid: string) {
  await idp.keyLifecycle.retire(kid, 'cli');
  return { retired: kid };
}
