// The audit hash chain on its own: a chain built with chainHash verifies, and each kind of
// tampering (changed field, removed row, inserted row, swapped order) is reported at the right seq.
import { describe, expect, it } from 'vitest';
import { canonicalRow, ChainVerifier, chainHash, genesisHash, type ChainedFields, type StoredRow, type VerifyResult } from '../../../src/audit/chain.ts';
import { toRow } from '../../../src/audit/log.ts';

function fields(i: number): ChainedFields {
  return {
    time: new Date(Date.UTC(2025, 0, 1, 12, 0, i, i)),
    requestId: `req-${i}`,
    actor: i % 2 ? 'cli' : null,
    subject: `acct-${i}`,
    clientId: 'webapp',
    ip: `198.51.100.${i}`,
    userAgent: 'agent/1.0',
    type: i % 3 ? 'login.identified' : 'login.password_rejected',
    outcome: i % 3 ? 'success' : 'failure',
    details: JSON.stringify({ n: i }),
  };
}

/** Rows 1..n chained the way AuditEventStore stores them. */
function buildChain(n: number): StoredRow[] {
  const rows: StoredRow[] = [];
  let prev = genesisHash;
  for (let seq = 1; seq <= n; seq++) {
    const f = fields(seq);
    const hash = chainHash(prev, f);
    rows.push({ ...f, seq, prevHash: prev, hash });
    prev = hash;
  }
  return rows;
}

function verify(rows: StoredRow[]): VerifyResult {
  const verifier = new ChainVerifier();
  for (const row of rows) {
    const broken = verifier.next(row);
    if (broken) return broken;
  }
  return verifier.finish();
}

describe('chainHash', () => {
  it('is a hex SHA-256 and deterministic', () => {
    const a = chainHash(genesisHash, fields(1));
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(chainHash(genesisHash, fields(1))).toBe(a);
    expect(genesisHash).toBe('0'.repeat(64));
  });

  it('depends on the previous hash', () => {
    expect(chainHash(genesisHash, fields(1))).not.toBe(chainHash('1'.repeat(64), fields(1)));
  });

  const changes: [keyof ChainedFields, unknown][] = [
    ['time', new Date(Date.UTC(2025, 0, 1, 12, 0, 1, 2))],
    ['requestId', 'req-other'],
    ['actor', 'admin'],
    ['subject', null],
    ['clientId', 'other-client'],
    ['ip', '198.51.100.99'],
    ['userAgent', 'agent/2.0'],
    ['type', 'login.password_verified'],
    ['outcome', 'failure'],
    ['details', JSON.stringify({ n: 2 })],
  ];
  it.each(changes)('changes when %s changes', (field, value) => {
    const original = fields(1);
    expect(original[field]).not.toEqual(value);
    expect(chainHash(genesisHash, { ...original, [field]: value })).not.toBe(chainHash(genesisHash, original));
  });

  it('tells null from the string "null" and from an empty string', () => {
    const base = fields(2);
    expect(base.actor).toBeNull();
    const hashes = new Set([null, 'null', ''].map((actor) => chainHash(genesisHash, { ...base, actor })));
    expect(hashes.size).toBe(3);
  });

  it('cannot be fooled by moving text between adjacent fields', () => {
    const a = { ...fields(1), requestId: 'ab', actor: 'c' };
    const b = { ...fields(1), requestId: 'a', actor: 'bc' };
    expect(canonicalRow(a)).not.toBe(canonicalRow(b));
    expect(chainHash(genesisHash, a)).not.toBe(chainHash(genesisHash, b));
  });

  it('the canonical form lists the fields in a fixed order with an ISO time', () => {
    expect(JSON.parse(canonicalRow(fields(1)))).toEqual([
      '2025-01-01T12:00:01.001Z', 'req-1', 'cli', 'acct-1', 'webapp', '198.51.100.1', 'agent/1.0', 'login.identified', 'success', '{"n":1}',
    ]);
  });
});

describe('ChainVerifier', () => {
  it('an intact chain verifies and counts its rows', () => {
    expect(verify(buildChain(25))).toEqual({ ok: true, rows: 25 });
  });

  it('an empty chain verifies with zero rows', () => {
    expect(verify([])).toEqual({ ok: true, rows: 0 });
  });

  it('rows from the real writer format (toRow) chain and verify', () => {
    let prev = genesisHash;
    const rows: StoredRow[] = [];
    for (let seq = 1; seq <= 3; seq++) {
      const f = toRow({ type: 'login.identified', outcome: 'success', ip: '', requestId: 'x'.repeat(300), details: { seq } });
      const hash = chainHash(prev, f);
      rows.push({ ...f, seq, prevHash: prev, hash });
      prev = hash;
    }
    expect(rows[0]!.ip).toBeNull();
    expect(rows[0]!.requestId).toHaveLength(128);
    expect(verify(rows)).toEqual({ ok: true, rows: 3 });
  });

  it.each([1, 7, 20])('a changed field in row %i is reported at that seq', (seq) => {
    const rows = buildChain(20);
    rows[seq - 1] = { ...rows[seq - 1]!, outcome: rows[seq - 1]!.outcome === 'success' ? 'failure' : 'success' };
    const result = verify(rows);
    expect(result).toMatchObject({ ok: false, seq, rows: seq });
    expect(result.ok || result.reason).toMatch(/row was changed/);
  });

  it('a changed row whose hash was recomputed is reported at the next seq', () => {
    const rows = buildChain(10);
    const changed = { ...rows[4]!, subject: 'acct-attacker' };
    rows[4] = { ...changed, hash: chainHash(changed.prevHash, changed) };
    const result = verify(rows);
    expect(result).toMatchObject({ ok: false, seq: 6 });
    expect(result.ok || result.reason).toMatch(/removed or inserted/);
  });

  it('a changed time (by one millisecond) is detected', () => {
    const rows = buildChain(5);
    rows[2] = { ...rows[2]!, time: new Date(rows[2]!.time.getTime() + 1) };
    expect(verify(rows)).toMatchObject({ ok: false, seq: 3 });
  });

  it('a changed stored hash is reported at that seq', () => {
    const rows = buildChain(5);
    rows[1] = { ...rows[1]!, hash: 'f'.repeat(64) };
    expect(verify(rows)).toMatchObject({ ok: false, seq: 2 });
  });

  it.each([1, 5, 9])('a removed row %i is reported at the row after it', (removed) => {
    const rows = buildChain(10).filter((r) => r.seq !== removed);
    const result = verify(rows);
    expect(result).toMatchObject({ ok: false, seq: removed + 1, rows: removed });
    expect(result.ok || result.reason).toMatch(/removed or inserted/);
  });

  it('removing the last row cannot be seen from the rows alone (only the row count tells)', () => {
    // The chain has no end marker: truncation at the head verifies, with one row fewer.
    expect(verify(buildChain(10).slice(0, 9))).toEqual({ ok: true, rows: 9 });
  });

  it('swapped rows (contents exchanged between seq 4 and 5) are reported at seq 4', () => {
    const rows = buildChain(8);
    const { seq: seq4, ...four } = rows[3]!;
    const { seq: seq5, ...five } = rows[4]!;
    rows[3] = { ...five, seq: seq4 };
    rows[4] = { ...four, seq: seq5 };
    const result = verify(rows);
    expect(result).toMatchObject({ ok: false, seq: 4, rows: 4 });
    expect(result.ok || result.reason).toMatch(/removed or inserted/);
  });

  it('rows walked out of order are reported at the first misplaced row', () => {
    const rows = buildChain(6);
    const reordered = [rows[0]!, rows[2]!, rows[1]!, ...rows.slice(3)];
    expect(verify(reordered)).toMatchObject({ ok: false, seq: 3 });
  });

  it('an inserted row is reported at that row', () => {
    const rows = buildChain(6);
    const forged: StoredRow = { ...fields(99), seq: 4, prevHash: rows[2]!.hash, hash: chainHash(rows[2]!.hash, fields(99)) };
    const withInsert = [...rows.slice(0, 3), forged, ...rows.slice(3).map((r) => ({ ...r, seq: r.seq + 1 }))];
    // The forged row chains correctly; the row after it no longer does.
    expect(verify(withInsert)).toMatchObject({ ok: false, seq: 5 });
  });

  it('a chain that does not start at the genesis hash is reported at its first row', () => {
    const rows = buildChain(5).slice(1);
    expect(verify(rows)).toMatchObject({ ok: false, seq: 2, rows: 1 });
  });
});
