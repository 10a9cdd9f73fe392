// The rows of the audit hash chain and how one links to the one before: SHA-256 over the previous
// row's hash and the row's canonical form, so changing, inserting or removing any row breaks every
// hash after it. The store computes links as it appends; src/audit/chain.ts verifies them.
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

