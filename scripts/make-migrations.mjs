// Writes the next SQL migration for each database from the change to prisma/schema.prisma.
//   npm run db:migrations -- NAME
// Each provider folder keeps a snapshot of the schema its last migration reached; the new migration
// is `prisma migrate diff` from that snapshot to the current schema. Hand-written SQL that Prisma
// cannot express (triggers) goes into its own numbered file beside the generated ones.
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prisma, schemaFor } from './prisma-generate.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const name = process.argv[2];
if (!name || !/^[a-z0-9_]+$/.test(name)) {
  console.error('usage: npm run db:migrations -- NAME   (NAME: lower-case letters, digits and _)');
  process.exit(2);
}

for (const provider of ['postgresql', 'sqlite']) {
  const dir = join(root, 'prisma', 'migrations', provider);
  mkdirSync(dir, { recursive: true });
  const snapshot = join(dir, 'schema.snapshot.prisma');
  const schema = schemaFor[provider]();
  const from = existsSync(snapshot) ? ['--from-schema-datamodel', snapshot] : ['--from-empty'];
  const sql = prisma(['migrate', 'diff', ...from, '--to-schema-datamodel', schema, '--script'], { capture: true });
  if (!/^\s*(CREATE|ALTER|DROP|PRAGMA)/m.test(sql)) {
    console.log(`${provider}: schema unchanged, no migration written`);
    continue;
  }
  const next = readdirSync(dir).filter((f) => /^\d{4}_.*\.sql$/.test(f)).length + 1;
  const file = join(dir, `${String(next).padStart(4, '0')}_${name}.sql`);
  writeFileSync(file, sql);
  copyFileSync(schema, snapshot);
  console.log(`${provider}: wrote ${file}`);
}
