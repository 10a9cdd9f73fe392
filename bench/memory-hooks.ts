// Preloaded into a server by bench/memory-startup.ts (`node --import ./bench/memory-hooks.ts ...`):
// records every module the process loads (ESM imports and CommonJS requires alike, through
// module.registerHooks), with the size of its source, and writes the list with the process's
// first importer of each module, and the memory figures to MEMORY_TRACE_FILE when asked (SIGUSR2) and at exit. Nothing else changes.
import { writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';

const traceFile = process.env.MEMORY_TRACE_FILE;
const loaded: { url: string; bytes: number; at: number; from: string }[] = [];
const started = performance.now();

const importer = new Map<string, string>();

registerHooks({
  resolve(specifier, context, nextResolve) {
    const result = nextResolve(specifier, context);
    if (context.parentURL && !importer.has(result.url)) importer.set(result.url, context.parentURL);
    return result;
  },
  load(url, context, nextLoad) {
    const result = nextLoad(url, context);
    const source = result.source;
    const bytes = typeof source === 'string' ? Buffer.byteLength(source) : source ? (source as ArrayBufferView).byteLength : 0;
    loaded.push({ url, bytes, at: Math.round(performance.now() - started), from: importer.get(url) ?? '' });
    return result;
  },
});

function write(reason: string): void {
  if (!traceFile) return;
  const spaces = getHeapSpaceStatistics().map((s) => ({ space: s.space_name, size: s.space_size, used: s.space_used_size, physical: s.physical_space_size }));
  writeFileSync(traceFile, JSON.stringify({ reason, memory: process.memoryUsage(), spaces, modules: loaded }));
}

process.on('SIGUSR2', () => {
  write('signal');
  // MEMORY_HEAPSNAPSHOT=<file>: also a heap snapshot (seconds, and as much memory again as the heap).
  if (process.env.MEMORY_HEAPSNAPSHOT) writeHeapSnapshot(process.env.MEMORY_HEAPSNAPSHOT);
});
process.on('exit', () => write('exit'));
