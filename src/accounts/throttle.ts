// Sign-in throttling by network origin, on top of per-account lockout: failed passwords are
// counted per IP and per (IP, account), so one address cannot guess across many accounts (or lock
// them all out) without being slowed down. Answered with its own message: it reveals nothing
// about any account.
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { normaliseEmail } from './service.ts';

export interface ThrottleVerdict {
  allowed: boolean;
  retryAfterSeconds: number;
}

export class SignInThrottle {
  readonly #perIp: RateLimiterAbstract;
  readonly #perIpAccount: RateLimiterAbstract;

  constructor(perIp: RateLimiterAbstract, perIpAccount: RateLimiterAbstract) {
    this.#perIp = perIp;
    this.#perIpAccount = perIpAccount;
  }

  async check(ip: string, email: string): Promise<ThrottleVerdict> {
    const [byIp, byPair] = await Promise.all([this.#perIp.get(ip), this.#perIpAccount.get(pairKey(ip, email))]);
    const exhausted = [byIp, byPair].filter((res) => res && res.remainingPoints <= 0);
    if (!exhausted.length) return { allowed: true, retryAfterSeconds: 0 };
    return { allowed: false, retryAfterSeconds: Math.ceil(Math.max(...exhausted.map((res) => res!.msBeforeNext)) / 1000) };
  }

  async failed(ip: string, email: string): Promise<void> {
    // penalty() adds points without throwing when the limit is passed (consume() would).
    await Promise.all([this.#perIp.penalty(ip, 1), this.#perIpAccount.penalty(pairKey(ip, email), 1)]);
  }

  /** Failed sign-ins of this (IP, account) pair in the current window. */
  async failuresOf(ip: string, email: string): Promise<number> {
    return (await this.#perIpAccount.get(pairKey(ip, email)))?.consumedPoints ?? 0;
  }

  async succeeded(ip: string, email: string): Promise<void> {
    await this.#perIpAccount.delete(pairKey(ip, email));
  }
}

// One budget per account, whatever form of its address is typed (punycode or Unicode domain, case).
const pairKey = (ip: string, email: string) => `${ip}|${normaliseEmail(email)}`;
