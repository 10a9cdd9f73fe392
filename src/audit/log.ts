// The audit writer. Callers await `record`, which resolves once the event is committed. Events
// that arrive while a write is in flight are committed together in the next transaction (group
// commit), so a busy token endpoint pays one chained insert per batch, not one per event.
import type { ChainedFields } from './chain.ts';
import { ChainVerifier, type StoredRow, type VerifyResult } from './chain.ts';
import type { AuditInput, AuditSink } from './types.ts';

export interface AuditStorage {
  append(rows: ChainedFields[]): Promise<void>;
  page(afterSeq: number, limit: number): Promise<StoredRow[]>;
  search(filter: { type?: string | undefined; subject?: string | undefined; since?: Date | undefined; beforeSeq?: number | undefined; limit: number }): Promise<StoredRow[]>;
}

/** One event as operators read it (CLI, admin API). */
export interface AuditEventView {
  seq: number;
  time: string;
  type: string;
  outcome: string;
  actor: string | null;
  subject: string | null;
  clientId: string | null;
  ip: string | null;
  requestId: string | null;
  details: Record<string, unknown>;
}

interface Pending {
  row: ChainedFields;
  resolve: () => void;
  reject: (error: unknown) => void;
}

const maxBatch = 500;

export function toRow(event: AuditInput, now = new Date()): ChainedFields {
  const text = (v: string | null | undefined, max = 512) => (v == null || v === '' ? null : v.slice(0, max));
  return {
    time: now,
    requestId: text(event.requestId, 128),
    actor: text(event.actor),
    subject: text(event.subject),
    clientId: text(event.clientId),
    ip: text(event.ip, 64),
    userAgent: text(event.userAgent),
    type: event.type,
    outcome: event.outcome,
    details: JSON.stringify(event.details ?? {}),
  };
}

export class AuditLog implements AuditSink {
  readonly #storage: AuditStorage;
  #queue: Pending[] = [];
  #writing: Promise<void> | undefined;

  constructor(storage: AuditStorage) {
    this.#storage = storage;
  }

  record(event: AuditInput): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ row: toRow(event), resolve, reject });
      // Group commit without waiting: the first event starts a write at the end of this turn of
      // the event loop (events of the same turn join it); events arriving while it runs form the
      // next batch. A busy node writes one multi-row INSERT per batch, an idle one at once.
      this.#writing ??= new Promise((wait) => setImmediate(wait)).then(() => this.#drain());
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, maxBatch);
        try {
          await this.#storage.append(batch.map((p) => p.row));
          for (const p of batch) p.resolve();
        } catch (error) {
          for (const p of batch) p.reject(error);
        }
      }
    } finally {
      this.#writing = undefined;
    }
  }

  /** Resolves when everything recorded so far is committed (used at shutdown). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** The newest events matching the filter, newest first (after a flush: nothing recorded is missing). */
  async search(filter: Parameters<AuditStorage['search']>[0]): Promise<AuditEventView[]> {
    await this.flush();
    return (await this.#storage.search(filter)).map((row) => ({
      seq: row.seq, time: row.time.toISOString(), type: row.type, outcome: row.outcome, actor: row.actor, subject: row.subject,
      clientId: row.clientId, ip: row.ip, requestId: row.requestId, details: JSON.parse(row.details) as Record<string, unknown>,
    }));
  }

  async verify(): Promise<VerifyResult> {
    const verifier = new ChainVerifier();
    let after = 0;
    for (;;) {
      const rows = await this.#storage.page(after, 1000);
      if (!rows.length) return verifier.finish();
      for (const row of rows) {
        const broken = verifier.next(row);
        if (broken) return broken;
      }
      after = rows[rows.length - 1]!.seq;
    }
  }
}
