// The hash chain: each row's hash is SHA-256 over the previous row's hash and the row's
// canonical form, so changing, inserting or removing any row breaks every hash after it.

// The link format lives with the rows (the store chains each append in its transaction).
import { chainHash, genesisHash, type StoredRow } from '../store/audit-rows.ts';

export { canonicalRow, chainHash, genesisHash, type ChainedFields, type StoredRow } from '../store/audit-rows.ts';

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
