#!/usr/bin/env node
// The `idp` command. The sources are TypeScript run by Node's built-in type stripping (Node >= 22.18).
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`idp: needs Node.js 22.18 or later (this is ${process.version}); run it through npm (npm run idp -- ARGS or npx idp ARGS), which uses the Node.js the project installs\n`);
  process.exit(1);
}
const { main } = await import('../src/main.ts');
await main(process.argv);
