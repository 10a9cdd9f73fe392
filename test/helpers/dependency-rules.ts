// The project's dependency rules, checked on the import graph of src/ (docs/architecture.md):
// store ← domain ← flow ← edges ← app, nothing of the project in the base modules, no edge
// importing another edge, no HTTP framework or protocol engine below the edges, and the
// infrastructure packages only in their own layer.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

export type Layer = 'base' | 'store' | 'domain' | 'flow' | 'web' | 'edge' | 'app';

/** Which layer a file of src/ (path relative to src/) belongs to. */
export function layerOf(file: string): Layer {
  const [top] = file.split('/');
  if (file === 'app.ts' || file === 'main.ts' || top === 'app') return 'app';
  if (!file.includes('/')) return 'base';
  if (top === 'store') return 'store';
  if (top === 'flow') return 'flow';
  // Shared HTTP support (middleware, forms, views) that every edge may use.
  if (top === 'http') return 'web';
  if (['provider', 'interactions', 'admin', 'demo'].includes(top!)) return 'edge';
  return 'domain';
}

/** The layers each layer may import from (besides itself). */
const allowed: Record<Layer, Layer[]> = {
  base: [],
  store: ['base'],
  domain: ['base', 'store'],
  flow: ['base', 'domain'],
  web: ['base', 'domain'],
  edge: ['base', 'store', 'domain', 'flow', 'web'],
  app: ['base', 'store', 'domain', 'flow', 'web', 'edge'],
};

/** Packages only some layers may use. */
const packageRules: { pattern: RegExp; only: Layer[]; why: string }[] = [
  { pattern: /^(koa|koa-\w+|@koa\/.+)$/, only: ['web', 'edge', 'app'], why: 'the HTTP framework belongs to the edges' },
  { pattern: /^oidc-provider$/, only: ['edge', 'app'], why: 'the protocol engine is an edge' },
  { pattern: /^(@prisma\/.+|ioredis|pg|@libsql\/.+)$/, only: ['store'], why: 'only store/ touches the databases' },
];

export interface Import {
  from: string;
  /** A file of src/ (relative), or a package name. */
  to: string;
  kind: 'file' | 'package';
}

const importPattern = /(?:^|\n)\s*(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/g;

/** Every static import and re-export of every TypeScript file under `root` (generated code excepted). */
export function importGraph(root: string): Import[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        if (name !== 'generated') walk(path);
      } else if (name.endsWith('.ts')) files.push(path);
    }
  };
  walk(root);
  return files.flatMap((path) => {
    const from = relative(root, path);
    return [...readFileSync(path, 'utf8').matchAll(importPattern)].map((m): Import => {
      const spec = m[1]!;
      if (!spec.startsWith('.')) return { from, to: spec.startsWith('node:') ? spec : spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/'), kind: 'package' };
      return { from, to: relative(root, resolve(dirname(path), spec)), kind: 'file' };
    });
  });
}

/** Every import that breaks a rule, as a sentence. */
export function violations(graph: Import[]): string[] {
  const found: string[] = [];
  for (const edge of graph) {
    const fromLayer = layerOf(edge.from);
    if (edge.kind === 'package') {
      const rule = packageRules.find((r) => r.pattern.test(edge.to));
      if (rule && !rule.only.includes(fromLayer) && !edge.from.startsWith('store/generated')) found.push(`${edge.from} (${fromLayer}) imports ${edge.to}: ${rule.why}`);
      continue;
    }
    if (edge.to.startsWith('..')) {
      found.push(`${edge.from} imports ${edge.to}, outside src/`);
      continue;
    }
    const toLayer = layerOf(edge.to);
    if (toLayer === fromLayer) {
      // Edges stand side by side: one never imports another.
      if (fromLayer === 'edge' && edge.from.split('/')[0] !== edge.to.split('/')[0]) found.push(`${edge.from} imports ${edge.to}: an edge imports another edge`);
      continue;
    }
    if (!allowed[fromLayer].includes(toLayer)) found.push(`${edge.from} (${fromLayer}) imports ${edge.to} (${toLayer}): dependencies point inward`);
  }
  return found;
}
