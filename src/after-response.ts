// Work that must not hold up the response (a mail whose delivery time would tell whether an address
// has an account): started at once, tracked so that shutdown (and tests) can wait for it, and its
// failure handed to a handler instead of being lost or thrown.
export class AfterResponse {
  readonly #running = new Set<Promise<unknown>>();

  run(task: () => Promise<unknown>, onError: (error: unknown) => Promise<unknown> | void): void {
    const running = task().catch(async (error: unknown) => {
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
