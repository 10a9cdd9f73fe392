// Reads a V8 CPU profile (.cpuprofile, as written by `node --cpu-prof`) and tells where the time
// went: the functions with the most self time, and self time grouped by where the code lives
// (our src/ folders, each package in node_modules, Node's internals, native/GC).
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  /** Sampled time not spent idle (the "(idle)" node excluded). */
  busyMs: number;
  topFunctions: { function: string; where: string; selfMs: number; selfPercentOfBusy: number }[];
  byArea: { area: string; selfMs: number; selfPercentOfBusy: number }[];
  /** Our own functions (src/) by inclusive time: the time spent in them and in everything they called. */
  ownInclusive: { function: string; where: string; totalMs: number; totalPercentOfBusy: number }[];
}

/** Where a script lives: src/<folder>, a node_modules package, node internals, or a V8 pseudo-node. */
export function areaOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const src = /\/src\/([^/]+)(\/|$)/.exec(url);
  if (src) return `src/${src[1]!.replace(/\.ts$/, '')}`;
  if (url.startsWith('node:')) return 'node internals';
  return url.replace(/^file:\/\//, '');
}

function shortUrl(url: string): string {
  return url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, '').replace(/^.*?\/(src|bin|bench)\//, '$1/');
}

export function summarizeProfile(file: string, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const selfUs = new Map<number, number>();
  if (profile.samples && profile.timeDeltas) {
    // The time delta at index i+1 is the time sample i lasted.
    for (let i = 0; i < profile.samples.length; i++) {
      const us = profile.timeDeltas[i + 1] ?? 0;
      selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + us);
    }
  } else {
    const interval = (profile.endTime - profile.startTime) / Math.max(1, profile.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0));
    for (const node of profile.nodes) selfUs.set(node.id, (node.hitCount ?? 0) * interval);
  }
  const byFunction = new Map<string, { function: string; where: string; us: number }>();
  const byArea = new Map<string, number>();
  let idleUs = 0;
  let totalUs = 0;
  for (const node of profile.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    totalUs += us;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const name = functionName || '(anonymous)';
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const entry = byFunction.get(key) ?? { function: name, where, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
    const area = areaOf(url, functionName);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;

  // Inclusive time of our own functions: each sample counts once for every distinct src/ frame on its stack.
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const ownKey = (node: ProfileNode) => {
    const { functionName, url, lineNumber } = node.callFrame;
    return /\/src\//.test(url) && !url.includes('/node_modules/') && !url.includes('/src/store/generated/') ? `${functionName || '(anonymous)'}@${shortUrl(url)}:${lineNumber + 1}` : undefined;
  };
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    if (!us || byId.get(id)?.callFrame.functionName === '(idle)') continue;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const key = ownKey(byId.get(at)!);
      if (key && !seen.has(key)) {
        seen.add(key);
        inclusive.set(key, (inclusive.get(key) ?? 0) + us);
      }
    }
  }
  const pct = (us: number) => (busyUs ? Math.round((us / busyUs) * 1000) / 10 : 0);
  return {
    file,
    totalMs: totalUs / 1000,
    busyMs: busyUs / 1000,
    topFunctions: [...byFunction.values()].sort((a, b) => b.us - a.us).slice(0, top)
      .map((f) => ({ function: f.function, where: f.where, selfMs: Math.round(f.us / 100) / 10, selfPercentOfBusy: pct(f.us) })),
    byArea: [...byArea.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
      .map(([area, us]) => ({ area, selfMs: Math.round(us / 100) / 10, selfPercentOfBusy: pct(us) })),
    ownInclusive: [...inclusive.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([key, us]) => {
      const at = key.lastIndexOf('@');
      return { function: key.slice(0, at), where: key.slice(at + 1), totalMs: Math.round(us / 100) / 10, totalPercentOfBusy: pct(us) };
    }),
  };
}

export function printSummary(summary: ProfileSummary, top = 15): void {
  console.log(`profile ${summary.file}: ${Math.round(summary.busyMs)} ms busy of ${Math.round(summary.totalMs)} ms sampled`);
  console.log('  top self time (function, where, ms, % of busy):');
  for (const f of summary.topFunctions.slice(0, top)) console.log(`    ${f.selfPercentOfBusy.toFixed(1).padStart(5)} %  ${String(Math.round(f.selfMs)).padStart(6)} ms  ${f.function}  ${f.where}`);
  console.log('  self time by area:');
  for (const a of summary.byArea.slice(0, top)) console.log(`    ${a.selfPercentOfBusy.toFixed(1).padStart(5)} %  ${String(Math.round(a.selfMs)).padStart(6)} ms  ${a.area}`);
  console.log('  our functions by inclusive time (synchronous stacks only: work after an await is not charged to its caller):');
  for (const f of summary.ownInclusive.slice(0, Math.min(top, 10))) console.log(`    ${f.totalPercentOfBusy.toFixed(1).padStart(5)} %  ${String(Math.round(f.totalMs)).padStart(6)} ms  ${f.function}  ${f.where}`);
}
