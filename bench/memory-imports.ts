// Child of bench/memory-startup.ts, run as `node --expose-gc bench/memory-imports.ts SPEC...`:
// imports each module in turn (a package name, or a path relative to the repository) and prints,
// as one JSON line, the process's memory after each import (after two full garbage collections),
// so each entry is what that import added on top of the ones before it.
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

interface Sample {
  spec: string;
  ms: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  error?: string;
}

function sample(spec: string, ms: number, error?: string): Sample {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return { spec, ms, rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, ...(error ? { error } : {}) };
}

const samples: Sample[] = [sample('(start)', 0)];
for (const spec of process.argv.slice(2)) {
  const target = spec.startsWith('.') || spec.startsWith('/') ? pathToFileURL(resolve(spec)).href : spec;
  const started = performance.now();
  let error: string | undefined;
  try {
    await import(target);
  } catch (e) {
    error = (e as Error).message.split('\n')[0];
  }
  samples.push(sample(spec, Math.round(performance.now() - started), error));
}
process.stdout.write(`${JSON.stringify(samples)}\n`);
