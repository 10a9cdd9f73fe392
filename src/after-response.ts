// Work that must not hold up the response (a mail whose delivery time would tell whether an address
// has an account): started at once, tracked so that shutdown (and tests) can wait for it, and its
// failure handed to a handler instead of being lost or thrown.
const startDelayMs = 100;

export class AfterResponse {
  readonly #running = new Set<Promise<unknown>>();

  run(task: () => Promise<unknown>, onError: (error: unknown) => Promise<unknown> | void): void {
    // Started a little later: SQLite answers on this thread, so work begun at once would run (and
    // take its time) before the response is written, or before a client on this machine has read it.
    const later = new Promise<void>((resolve) => setTimeout(resolve, startDelayMs));
    const running = later.then(task).catch(async (error: unknown) => {
      await Promise.resolve(onError(error)).catch(() => undefined);
    });
    this.#running.add(running);
    void running.finally(() => this.#running.delete(running));
  }

  /** Resolves once everything started so far (and anything it started) has finished. */
  async settled(): Promise<void> {
    while (this.#running.size) await Promise.all([...this.#running]);
  }
}
