// Third-party browser files for the interaction screens, served under /static/vendor/<name> straight
// from node_modules, so the shipped file is always the pinned package's (nothing copied into the repo).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

/** A file of an installed package, found from its entry point: package exports hide dist/ from resolution. */
function packageFile(name: string, entryToFile: string): string {
  const path = join(dirname(require.resolve(name)), entryToFile);
  // A broken install should stop the server at start, not surface as a 404 in someone's sign-in.
  if (!existsSync(path)) throw new Error(`vendor file ${path} of ${name} is missing; reinstall dependencies`);
  return path;
}

// @simplewebauthn/browser ships no single-file ES module: dist/bundle holds UMD bundles only, and
// esm/ is a tree of ~20 modules importing each other. The UMD bundle has no imports at all; loaded
// as a module (where `exports` and `define` do not exist) it sets globalThis.SimpleWebAuthnBrowser,
// which is how interactions/static/passkey.js uses it. Serve it as text/javascript.
export const vendorFiles: Record<string, string> = {
  'simplewebauthn-browser.js': packageFile('@simplewebauthn/browser', '../dist/bundle/index.umd.min.js'),
};
