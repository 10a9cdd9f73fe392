// `node bench/store-micro.ts`: the cost of the oidc-provider adapter's two commonest calls,
// DatabaseOidcAdapter.find and .upsert, one at a time, on SQLite and PostgreSQL, for three
// variants in the same run:
//   head    the adapter and database module of git HEAD (Prisma's model API), copied from git;
//   prisma  HEAD's adapter (Prisma's model API) on today's database module (SQLite: the libsql
//           connection reuses prepared statements);
//   sql     today's adapter (Database.sql, plain SQL on the same connection).
// Rounds alternate between the variants (after a warm-up each), so drift in what else the machine
// does falls on all alike; the median round is reported. "cpu" is this process's user+system time
// per call (for PostgreSQL the server's own work is not in it), "wall" the elapsed time per call.
//
// Environment: BENCH_OPS (2000) calls per measurement, BENCH_ROUNDS (3), BENCH_BACKENDS
// (sqlite,postgresql), BENCH_DATABASE_URL (postgresql://postgres@127.0.0.1:5432/test: a server
// where this user may create and drop a database).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { openDatabase, type Database } from '../src/store/database.ts';
import { migrate } from '../src/store/migrate.ts';
import { DatabaseOidcAdapter } from '../src/store/oidc-records.ts';

const ops = Number(process.env.BENCH_OPS ?? 2000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const backends = (process.env.BENCH_BACKENDS ?? 'sqlite,postgresql').split(',') as ('sqlite' | 'postgresql')[];
const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
const root = dirname(dirname(fileURLToPath(import.meta.url)));

interface Adapter {
  upsert(id: string, payload: Record<string, unknown>, expiresIn: number): Promise<void>;
  find(id: string): Promise<unknown>;
}
interface Variant {
  name: string;
  adapter(model: string): Adapter;
  close(): Promise<void>;
}

/** HEAD's src/store/{database,oidc-records,oidc-adapter-types}.ts in a temp folder beside this one. */
function headStore(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(root, 'bench', '.head-store-'));
  for (const file of ['database.ts', 'oidc-records.ts', 'oidc-adapter-types.ts']) {
    const text = execFileSync('git', ['show', `HEAD:src/store/${file}`], { cwd: root, encoding: 'utf8' });
    writeFileSync(join(dir, file), text.replaceAll("'./generated/", "'../../src/store/generated/"));
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function freshDatabase(kind: 'sqlite' | 'postgresql'): Promise<{ url: string; drop(): Promise<void> }> {
  if (kind === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'idp-store-micro-'));
    const url = `file:${join(dir, 'idp.db')}`;
    await migrate(url);
    return { url, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const name = `idp_bench_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  await migrate(url.href);
  return { url: url.href, drop: () => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

async function measure(calls: number, call: (i: number) => Promise<unknown>): Promise<{ wall: number; cpu: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await call(i);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { wall: wall / calls, cpu: (cpu.user + cpu.system) / 1000 / calls };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const payload = (i: number) => ({ iat: 1_900_000_000, exp: 1_900_003_600, accountId: `acct-${i % 100}`, grantId: `grant-${i % 500}`, clientId: 'bench', scope: 'openid email profile', kind: 'AccessToken', jti: `id-${i}`, gty: 'authorization_code' });

async function run(kind: 'sqlite' | 'postgresql', head: string): Promise<void> {
  const database = await freshDatabase(kind);
  const headModule = (await import(join(head, 'database.ts'))) as { openDatabase(url: string): Promise<Database> };
  const HeadAdapter = ((await import(join(head, 'oidc-records.ts'))) as { DatabaseOidcAdapter: new (prisma: unknown, model: string) => Adapter }).DatabaseOidcAdapter;
  const headDb = await headModule.openDatabase(database.url);
  const db = await openDatabase(database.url);
  const variants: Variant[] = [
    { name: 'head', adapter: (model) => new HeadAdapter(headDb.prisma, model), close: () => headDb.close() },
    { name: 'prisma', adapter: (model) => new HeadAdapter(db.prisma, model), close: async () => undefined },
    { name: 'sql', adapter: (model) => new DatabaseOidcAdapter(db, model), close: () => db.close() },
  ];
  const results = new Map<string, { upsert: { wall: number; cpu: number }[]; find: { wall: number; cpu: number }[] }>(variants.map((v) => [v.name, { upsert: [], find: [] }]));
  try {
    // Warm-up: every variant writes and reads its own model once over.
    for (const variant of variants) {
      const adapter = variant.adapter(`Warm${variant.name}`);
      await measure(200, (i) => adapter.upsert(`w-${i}`, payload(i), 600));
      await measure(200, (i) => adapter.find(`w-${i}`));
    }
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 ? [...variants].reverse() : variants;
      for (const variant of order) {
        // A model (and so ids) of its own per variant and round: each upsert inserts a new row, as
        // oidc-provider does for tokens; each find reads a row that exists, as userinfo does.
        const model = `Bench${variant.name}${round}`;
        const result = results.get(variant.name)!;
        result.upsert.push(await measure(ops, (i) => variant.adapter(model).upsert(`id-${i}`, payload(i), 600)));
        result.find.push(await measure(ops, (i) => variant.adapter(model).find(`id-${(i * 7919) % ops}`)));
      }
    }
  } finally {
    for (const variant of variants) await variant.close();
    await database.drop();
  }
  console.log(`\n${kind}: ${ops} calls per measurement, median of ${rounds} rounds (ms per call)`);
  console.log('variant   upsert cpu  upsert wall  find cpu  find wall');
  for (const [name, result] of results) {
    const cell = (values: { wall: number; cpu: number }[], key: 'wall' | 'cpu') => median(values.map((v) => v[key])).toFixed(3).padStart(key === 'cpu' ? 10 : 11);
    console.log(`${name.padEnd(8)}${cell(result.upsert, 'cpu')}  ${cell(result.upsert, 'wall')}${cell(result.find, 'cpu')}  ${cell(result.find, 'wall')}`);
  }
}

const head = headStore();
try {
  for (const kind of backends) await run(kind, head.dir);
} finally {
  head.remove();
}
