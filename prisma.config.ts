// Prisma CLI configuration. Declaring a driver adapter makes the CLI use its JavaScript schema
// engine, so `prisma generate` and `prisma migrate diff` need no engine download (this machine and
// CI are offline). We never let the CLI migrate a real database: `idp migrate` applies our SQL.
import { defineConfig } from 'prisma/config';

export default defineConfig({
  experimental: { adapter: true },
  engine: 'js',
  async adapter() {
    const { PrismaLibSQL } = await import('@prisma/adapter-libsql');
    return new PrismaLibSQL({ url: ':memory:' });
  },
});
