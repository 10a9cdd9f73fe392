// Client registration by operators (RFC 7591 metadata). oidc-provider's own schema validates the
// metadata (injected as `validate`), plus our rules: strict redirect URIs, no symmetric
// algorithms (we keep only a digest of the secret, so we cannot HMAC with it), generated secrets.
import { randomBytes } from 'node:crypto';
import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import type { ClientStore } from '../store/clients.ts';
import { isUniqueViolation } from '../store/database.ts';
import { digestClientSecret, generateClientSecret } from './secrets.ts';

export type ClientMetadata = Record<string, unknown> & { client_id: string };
export type MetadataValidator = (metadata: Record<string, unknown>) => Promise<void>;

const secretlessAuthMethods = new Set(['none', 'private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth']);
const refusedAuthMethods = new Set(['client_secret_jwt']);
const algorithmFields = [
  'id_token_signed_response_alg', 'userinfo_signed_response_alg', 'request_object_signing_alg',
  'token_endpoint_auth_signing_alg', 'introspection_signed_response_alg', 'authorization_signed_response_alg',
];
const loopbackHosts = new Set(['localhost', '127.0.0.1', '[::1]']);

// Input text rules shared by the admin API (every string of its input) and client metadata (CLI
// included): PostgreSQL cannot store a NUL (SQLite stores it, so the two backends would differ),
// lone UTF-16 surrogates cannot be encoded as UTF-8 by the database driver (a 500), and control
// characters have no place in names, URLs or attributes.
const controlCharacter = /\p{Cc}/u;
const maxTextDepth = 32;

/** Why a string is not acceptable text, or undefined. */
export function textProblem(value: string): string | undefined {
  if (!value.isWellFormed()) return 'must be well-formed Unicode (a lone UTF-16 surrogate is not)';
  if (controlCharacter.test(value)) return 'must not contain control characters';
  return undefined;
}

/**
 * The first string of a JSON value, at any depth, keys included, that breaks the text rules, as a
 * message naming its field ("redirect_uris must not contain control characters"): fields are
 * joined with dots, list positions left out. Undefined when every string is acceptable. The depth
 * is bounded so that no value, however built, can overflow the stack here.
 */
export function textIssue(value: unknown, field = '', depth = 0): string | undefined {
  if (typeof value === 'string') {
    const problem = textProblem(value);
    return problem && `${field || 'the value'} ${problem}`;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  if (depth >= maxTextDepth) return `${field || 'the value'} is nested deeper than ${maxTextDepth} levels`;
  if (Array.isArray(value)) {
    for (const item of value) {
      const issue = textIssue(item, field, depth + 1);
      if (issue) return issue;
    }
    return undefined;
  }
  for (const [key, item] of Object.entries(value)) {
    // The key itself is not repeated in the message: it is what cannot be shown.
    const keyProblem = textProblem(key);
    if (keyProblem) return `a field name${field ? ` in ${field}` : ''} ${keyProblem}`;
    const issue = textIssue(item, field ? `${field}.${key}` : key, depth + 1);
    if (issue) return issue;
  }
  return undefined;
}

function checkUri(field: string, value: unknown): void {
  if (typeof value !== 'string') throw new ValidationError(`${field} must be a list of URLs`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ValidationError(`${field}: ${JSON.stringify(value)} is not an absolute URL`);
  }
  if (url.hash || value.includes('#')) throw new ValidationError(`${field}: ${value} must not have a fragment`);
  if (url.protocol === 'http:' && !loopbackHosts.has(url.hostname)) {
    throw new ValidationError(`${field}: ${value} must use https (http is allowed only for localhost)`);
  }
  if (url.username || url.password) throw new ValidationError(`${field}: ${value} must not carry credentials`);
}

/** Our rules on top of oidc-provider's schema. */
export function checkClientPolicy(metadata: Record<string, unknown>): void {
  // First: the URL checks below would accept a NUL (the URL parser percent-encodes it), and the raw string is what is stored.
  const textError = textIssue(metadata);
  if (textError) throw new ValidationError(textError);
  const method = (metadata.token_endpoint_auth_method as string | undefined) ?? 'client_secret_basic';
  if (refusedAuthMethods.has(method)) throw new ValidationError(`token_endpoint_auth_method ${method} is not supported: use client_secret_basic, client_secret_post or private_key_jwt`);
  for (const field of algorithmFields) {
    const alg = metadata[field];
    if (typeof alg === 'string' && /^HS/.test(alg)) throw new ValidationError(`${field} ${alg} is not supported: symmetric algorithms need the client secret in clear, which we do not keep`);
  }
  for (const field of ['redirect_uris', 'post_logout_redirect_uris'] as const) {
    const list = metadata[field];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw new ValidationError(`${field} must be a list of URLs`);
    for (const uri of list) checkUri(field, uri);
  }
  if (metadata.backchannel_logout_uri !== undefined) checkUri('backchannel_logout_uri', metadata.backchannel_logout_uri);
  if ('client_secret' in metadata) throw new ValidationError('client_secret is generated by the server; do not send one');
  if (metadata.first_party !== undefined && typeof metadata.first_party !== 'boolean') throw new ValidationError('first_party must be true or false');
  // A public client proves nothing at the token endpoint: anyone knowing its id could act as it.
  const grants = Array.isArray(metadata.grant_types) ? metadata.grant_types : [];
  if (method === 'none' && grants.includes('client_credentials')) throw new ValidationError('the client_credentials grant needs a client that authenticates (not token_endpoint_auth_method none)');
  if (method === 'none' && String(metadata.scope ?? '').split(' ').includes('idp:admin')) throw new ValidationError('the idp:admin scope needs a client that authenticates (not token_endpoint_auth_method none)');
}

export interface CreatedClient {
  metadata: ClientMetadata;
  /** Present once, at creation, when the client authenticates with a secret. */
  clientSecret?: string;
}

export class ClientService {
  readonly #store: ClientStore;
  readonly #validate: MetadataValidator;
  readonly #cacheMs: number;
  // Every token request loads its client; a short-lived copy spares the database that query.
  // Not state: a miss reads the database, and a change reaches other nodes within cacheSeconds.
  readonly #cache = new Map<string, { value: Record<string, unknown> | undefined; until: number }>();
  // Clients the IdP itself uses (the account page), the same on every node, never in the database.
  readonly #builtIn: ReadonlyMap<string, ClientMetadata>;

  constructor(store: ClientStore, validate: MetadataValidator, options: { cacheSeconds?: number; builtIn?: ClientMetadata[] } = {}) {
    this.#store = store;
    this.#validate = validate;
    this.#cacheMs = (options.cacheSeconds ?? 0) * 1000;
    this.#builtIn = new Map((options.builtIn ?? []).map((client) => [client.client_id, client]));
  }

  async create(input: unknown): Promise<CreatedClient> {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new ValidationError('client metadata must be a JSON object');
    const requested = { ...(input as Record<string, unknown>) };
    checkClientPolicy(requested);
    const clientId = requested.client_id ?? randomBytes(16).toString('base64url');
    if (typeof clientId !== 'string' || !/^[A-Za-z0-9._~-]{1,128}$/.test(clientId)) {
      throw new ValidationError('client_id must be 1-128 characters of A-Z a-z 0-9 . _ ~ -');
    }
    const method = (requested.token_endpoint_auth_method as string | undefined) ?? 'client_secret_basic';
    const clientSecret = secretlessAuthMethods.has(method) ? undefined : generateClientSecret();
    // Machine clients (no authorization_code grant) have no redirect URIs or response types.
    const grantTypes = Array.isArray(requested.grant_types) ? requested.grant_types : ['authorization_code'];
    const machineDefaults = grantTypes.includes('authorization_code') ? {} : { redirect_uris: [], response_types: [] };
    const metadata: ClientMetadata = { ...machineDefaults, ...requested, client_id: clientId, client_id_issued_at: Math.floor(Date.now() / 1000) };
    const secretHash = clientSecret ? digestClientSecret(clientSecret) : null;
    try {
      await this.#validate(secretHash ? { ...metadata, client_secret: secretHash } : metadata);
    } catch (error) {
      const e = error as { error_description?: string; message?: string };
      throw new ValidationError(`invalid client metadata: ${e.error_description ?? e.message ?? String(error)}`);
    }
    this.#cache.delete(clientId);
    if (this.#builtIn.has(clientId)) throw new ConflictError(`client ${clientId} is built in`);
    if (await this.#store.find(clientId)) throw new ConflictError(`client ${clientId} exists`);
    try {
      await this.#store.create({ id: clientId, metadata: JSON.stringify(metadata), secretHash });
    } catch (error) {
      if (isUniqueViolation(error)) throw new ConflictError(`client ${clientId} exists`);
      throw error;
    }
    return clientSecret ? { metadata, clientSecret } : { metadata };
  }

  async list(): Promise<ClientMetadata[]> {
    return (await this.#store.list()).map((row) => JSON.parse(row.metadata) as ClientMetadata);
  }

  async delete(id: string): Promise<void> {
    this.#cache.delete(id);
    if (!(await this.#store.delete(id))) throw new NotFoundError(`no client ${id}`);
  }

  /**
   * The registration's creation time in epoch milliseconds, read from the database: it tells a
   * client apart from an earlier one deleted under the same id (tokens carry it, see adminScope).
   */
  async registeredAt(id: string): Promise<number | undefined> {
    return (await this.#store.find(id))?.createdAt.getTime();
  }

  /** The metadata oidc-provider loads; `client_secret` carries the digest (see provider/provider.ts). */
  async findForProvider(id: string): Promise<Record<string, unknown> | undefined> {
    const builtIn = this.#builtIn.get(id);
    if (builtIn) return builtIn;
    const cached = this.#cache.get(id);
    if (cached && cached.until > Date.now()) return cached.value;
    const row = await this.#store.find(id);
    const metadata = row ? (JSON.parse(row.metadata) as Record<string, unknown>) : undefined;
    const value = metadata && row?.secretHash ? { ...metadata, client_secret: row.secretHash } : metadata;
    if (this.#cacheMs > 0) {
      if (this.#cache.size > 10_000) this.#cache.clear();
      this.#cache.set(id, { value, until: Date.now() + this.#cacheMs });
    }
    return value;
  }
}
