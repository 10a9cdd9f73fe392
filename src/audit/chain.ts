// The hash chain: each row's hash is SHA-256 over the previous row's hash and the row's
// canonical form, so changing, inserting or removing any row breaks every hash after it.
import { createHash } from 'node:crypto';

export const genesisHash = '0'.repeat(64);

export interface ChainedFields {
  time: Date;
  requestId: string | null;
  actor: string | null;
  subject: string | null;
  clientId: string | null;
  ip: string | null;
  userAgent: string | null;
  type: string;
  outcome: string;
  details: string;
}

/** Fixed field order, ISO time, explicit nulls: the same row always serialises the same way. */
export function canonicalRow(row: ChainedFields): string {
  return JSON.stringify([
    row.time.toISOString(),
    row.requestId,
    row.actor,
    row.subject,
    row.clientId,
    row.ip,
    row.userAgent,
    row.type,
    row.outcome,
    row.details,
  ]);
}

export function chainHash(prevHash: string, row: ChainedFields): string {
  return createHash('sha256').update(prevHash).update('\n').update(canonicalRow(row)).digest('hex');
}

export interface StoredRow extends ChainedFields {
  seq: number;
  prevHash: string;
  hash: string;
}

export type VerifyResult = { ok: true; rows: number } | { ok: false; rows: number; seq: number; reason: string };

/** Walks rows in seq order (streamed in pages by the caller) and reports the first broken link. */
export class ChainVerifier {
  #expectedPrev = genesisHash;
  #rows = 0;

  next(row: StoredRow): VerifyResult | undefined {
    this.#rows += 1;
    if (row.prevHash !== this.#expectedPrev) {
      return { ok: false, rows: this.#rows, seq: row.seq, reason: 'prevHash does not match the previous row (a row was removed or inserted)' };
    }
    if (chainHash(row.prevHash, row) !== row.hash) {
      return { ok: false, rows: this.#rows, seq: row.seq, reason: 'hash does not match the row (the row was changed)' };
    }
    this.#expectedPrev = row.hash;
    return undefined;
  }

  finish(): VerifyResult {
    return { ok: true, rows: this.#rows };
  }
}
