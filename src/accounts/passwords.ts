// argon2id password hashing. Parameters come from configuration (never below OWASP's minimum:
// m=19 MiB, t=2, p=1); hashes made with older parameters are upgraded at the next good login.
import argon2 from 'argon2';

export interface Argon2Params {
  memoryCost: number;
  timeCost: number;
  parallelism: number;
}

export type PasswordCheck = { ok: false } | { ok: true; needsRehash: boolean };

export class PasswordHasher {
  readonly #params: Argon2Params;
  #dummy: Promise<string> | undefined;

  constructor(params: Argon2Params) {
    this.#params = params;
  }

  hash(password: string): Promise<string> {
    return argon2.hash(password, { type: argon2.argon2id, ...this.#params });
  }

  async verify(hash: string, password: string): Promise<PasswordCheck> {
    let ok = false;
    try {
      ok = await argon2.verify(hash, password);
    } catch {
      ok = false;
    }
    return ok ? { ok: true, needsRehash: argon2.needsRehash(hash, this.#params) } : { ok: false };
  }

  /**
   * Spends the same time as a real check, for unknown users and accounts without a password, so
   * response time does not tell whether an account exists.
   */
  async verifyDummy(password: string): Promise<PasswordCheck> {
    this.#dummy ??= this.hash('dummy password that never matches');
    await this.verify(await this.#dummy, password);
    return { ok: false };
  }
}
