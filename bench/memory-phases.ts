// Memory by startup phase, in one process, the way `idp serve` starts (run with --expose-gc; the
// data directory must be migrated). Prints one JSON line: the memory after each phase.
//
//   node --expose-gc bench/memory-phases.ts            (env: DATABASE_URL, MASTER_KEY_FILE, ...)
//   MEMORY_PHASES=database node --expose-gc bench/memory-phases.ts   (only open the database and query it)
import { createServer } from 'node:http';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const samples: { phase: string; ms: number; rss: number; heapUsed: number; external: number; arrayBuffers: number }[] = [];
let last = performance.now();
function sample(phase: string): void {
  const ms = Math.round(performance.now() - last);
  gc!();
  gc!();
  const m = process.memoryUsage();
  samples.push({ phase, ms, rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers });
  last = performance.now();
}

sample('(start)');
const { loadConfig } = await import('../src/config.ts');
const { createLogger } = await import('../src/log.ts');
const config = loadConfig(process.env);
sample('config, log');
if (process.env.MEMORY_PHASES === 'database') {
  const { openDatabase } = await import('../src/store/database.ts');
  sample('import src/store/database.ts');
  const db = await openDatabase(config.DATABASE_URL);
  sample('openDatabase (pragmas: the first queries compile Prisma\'s WASM)');
  await db.prisma.account.findMany({ take: 1 });
  sample('a model query');
  await db.close();
} else {
  await import('../src/main.ts');
  sample('import src/main.ts (every static import)');
  const { pendingMigrations } = await import('../src/store/migrate.ts');
  await pendingMigrations(config.DATABASE_URL);
  sample('pendingMigrations');
  const { createIdp } = await import('../src/app.ts');
  const idp = await createIdp(config, createLogger('warn'));
  sample('createIdp');
  const server = createServer(idp.app.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  for (const path of ['/readyz', '/.well-known/openid-configuration', '/jwks']) await (await fetch(`${url}${path}`)).arrayBuffer();
  sample('listen, /readyz, discovery, jwks');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await idp.close();
}
process.stdout.write(`${JSON.stringify(samples)}\n`);
process.exit(0);
