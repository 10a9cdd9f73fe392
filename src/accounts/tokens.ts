// Single-use links mailed to users: email verification, invitations, password resets. The token
// is 256 random bits in the link; the database keeps only its SHA-256.
import { createHash, randomBytes } from 'node:crypto';
import type { AccountTokenPurpose, AccountTokenStore } from '../store/account-tokens.ts';

export type { AccountTokenPurpose };

const tokenShape = /^[A-Za-z0-9_-]{43}$/;
const digest = (token: string) => createHash('sha256').update(token).digest('base64url');

export class AccountTokens {
  readonly #store: AccountTokenStore;
  constructor(store: AccountTokenStore) {
    this.#store = store;
  }

  /** A fresh token; earlier unused tokens of the same purpose stop working. */
  async issue(accountId: string, purpose: AccountTokenPurpose, ttlSeconds: number): Promise<string> {
    const token = randomBytes(32).toString('base64url');
    await this.#store.replace(digest(token), accountId, purpose, new Date(Date.now() + ttlSeconds * 1000));
    return token;
  }

  peek(token: string, purpose: AccountTokenPurpose): Promise<string | undefined> {
    return tokenShape.test(token) ? this.#store.peek(digest(token), purpose) : Promise.resolve(undefined);
  }

  redeem(token: string, purpose: AccountTokenPurpose): Promise<string | undefined> {
    return tokenShape.test(token) ? this.#store.consume(digest(token), purpose) : Promise.resolve(undefined);
  }
}
