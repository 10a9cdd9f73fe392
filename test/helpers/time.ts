// Waiting in tests, where time must really pass (a server's own timers, a TTL kept by Redis or
// oidc-provider). Code of ours takes an injectable clock instead (src/clock.ts).
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const sleepUntil = (epochMs: number) => sleep(Math.max(0, epochMs - Date.now()));

/**
 * A clock for the IdP under test that runs with real time plus whatever the test moved it on:
 * lockout windows, counters, TOTP steps and password ages end without waiting. Never moved back.
 */
export class TestClock {
  #offsetMs = 0;
  now(): number {
    return Date.now() + this.#offsetMs;
  }
  advance(ms: number): void {
    if (ms < 0) throw new Error('the test clock only moves forward');
    this.#offsetMs += ms;
  }
}
