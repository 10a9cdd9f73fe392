// The dependency rules of docs/architecture.md, checked on the real import graph of src/, and the
// checker itself shown to refuse a graph that breaks them.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { importGraph, layerOf, violations, type Import } from '../helpers/dependency-rules.ts';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

describe('dependency rules', () => {
  it('src/ keeps them: store ← domain ← flow ← edges ← app, no edge imports another, packages in their layer', () => {
    const graph = importGraph(src);
    expect(graph.length).toBeGreaterThan(300);
    expect(violations(graph)).toEqual([]);
  });

  it('places files in their layers', () => {
    expect(['config.ts', 'errors.ts', 'clock.ts'].map(layerOf)).toEqual(['base', 'base', 'base']);
    expect(layerOf('store/accounts.ts')).toBe('store');
    expect(['accounts/service.ts', 'mfa/policy.ts', 'risk/engine.ts', 'consent/service.ts'].map(layerOf)).toEqual(['domain', 'domain', 'domain', 'domain']);
    expect(layerOf('flow/methods/password.ts')).toBe('flow');
    expect(['provider/host.ts', 'interactions/routes.ts', 'admin/routes.ts'].map(layerOf)).toEqual(['edge', 'edge', 'edge']);
    expect(['app.ts', 'main.ts', 'app/sign-in.ts'].map(layerOf)).toEqual(['app', 'app', 'app']);
  });

  it('refuses a bad graph, naming each broken rule', () => {
    const bad: Import[] = [
      { from: 'store/accounts.ts', to: 'accounts/service.ts', kind: 'file' },
      { from: 'accounts/service.ts', to: 'flow/engine.ts', kind: 'file' },
      { from: 'flow/engine.ts', to: 'koa', kind: 'package' },
      { from: 'flow/stages.ts', to: 'oidc-provider', kind: 'package' },
      { from: 'interactions/routes.ts', to: 'admin/routes.ts', kind: 'file' },
      { from: 'admin/routes.ts', to: 'app.ts', kind: 'file' },
      { from: 'mfa/service.ts', to: 'ioredis', kind: 'package' },
      { from: 'config.ts', to: 'store/database.ts', kind: 'file' },
      // Allowed ones, for contrast.
      { from: 'flow/engine.ts', to: 'risk/engine.ts', kind: 'file' },
      { from: 'interactions/routes.ts', to: 'http/forms.ts', kind: 'file' },
      { from: 'app.ts', to: 'admin/routes.ts', kind: 'file' },
    ];
    const found = violations(bad);
    expect(found).toHaveLength(8);
    expect(found.join('\n')).toMatch(/store\/accounts\.ts \(store\) imports accounts\/service\.ts \(domain\)/);
    expect(found.join('\n')).toMatch(/flow\/engine\.ts \(flow\) imports koa: the HTTP framework belongs to the edges/);
    expect(found.join('\n')).toMatch(/an edge imports another edge/);
    expect(found.join('\n')).toMatch(/admin\/routes\.ts \(edge\) imports app\.ts \(app\)/);
    expect(found.join('\n')).toMatch(/only store\/ touches the databases/);
  });
});
