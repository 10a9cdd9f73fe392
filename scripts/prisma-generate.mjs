// Generates one Prisma client per supported database from prisma/schema.prisma.
// Prisma ties a generated client to one provider, while we run the same schema on SQLite
// (embedded default) and PostgreSQL (production); the SQLite schema is derived, never edited.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'prisma', 'schema.prisma');

export function sqliteSchema() {
  const text = readFileSync(source, 'utf8');
  const derived = text
    .replace('provider = "postgresql"', 'provider = "sqlite"')
    .replace('env("PRISMA_POSTGRESQL_URL")', 'env("PRISMA_SQLITE_URL")')
    .replace('output              = "../src/store/generated/postgresql"', 'output              = "../../src/store/generated/sqlite"');
  if (derived === text || !derived.includes('"sqlite"') || !derived.includes('generated/sqlite')) {
    throw new Error('prisma-generate: could not derive the SQLite schema; check the datasource and generator blocks');
  }
  const target = join(root, 'prisma', '.derived', 'sqlite.prisma');
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, `// Derived from prisma/schema.prisma by scripts/prisma-generate.mjs. Do not edit.\n${derived}`);
  return target;
}

// The CLI only parses datasource URLs here and never connects (see prisma.config.ts). It reads
// the default schema path before the one named by --schema, so both URLs must always be set.
const placeholderUrls = { PRISMA_POSTGRESQL_URL: 'postgresql://localhost/unused', PRISMA_SQLITE_URL: 'file:./unused.db' };

export function prisma(args, options = {}) {
  return execFileSync(join(root, 'node_modules', '.bin', 'prisma'), args, {
    cwd: root,
    stdio: ['ignore', options.capture ? 'pipe' : 'inherit', 'inherit'],
    encoding: 'utf8',
    env: { ...process.env, ...placeholderUrls, PRISMA_HIDE_UPDATE_MESSAGE: '1', CHECKPOINT_DISABLE: '1' },
  });
}

export const schemaFor = { postgresql: () => source, sqlite: sqliteSchema };

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const provider of ['postgresql', 'sqlite']) {
    prisma(['generate', '--no-hints', '--schema', schemaFor[provider]()]);
  }
}
