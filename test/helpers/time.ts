// Waiting in tests, where time must really pass (a server's own timers, a TTL kept by Redis or
// oidc-provider). Code of ours takes an injectable clock instead (src/clock.ts).
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const sleepUntil = (epochMs: number) => sleep(Math.max(0, epochMs - Date.now()));
