// Child processes of the benchmark: one-shot `idp` commands, long-running servers (ours and the
// bare provider), and what /proc tells about a process tree (resident memory, CPU time).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const idpScript = fileURLToPath(new URL('../../bin/idp.js', import.meta.url));

export { freePort } from '../../test/helpers/ports.ts';

export class BenchError extends Error {}

/** Only what the child needs: nothing leaks in from the caller's environment (REDIS_URL, CONFIG_FILE, ...). */
export function childEnv(env: Record<string, string>): Record<string, string> {
  const base: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' };
  for (const name of ['HOME', 'TMPDIR', 'UV_THREADPOOL_SIZE']) if (process.env[name]) base[name] = process.env[name]!;
  return { ...base, ...env };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `node SCRIPT ARGS` to completion with the project's Node (the one running the bench). */
export function runNode(script: string, args: string[], options: { env: Record<string, string>; stdin?: string; timeoutMs?: number }): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { env: childEnv(options.env), cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timeoutMs = options.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new BenchError(`${script} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
  });
}

/** `idp ARGS`; exit code 0 and JSON on stdout, or a BenchError with the output. */
export async function idpJson<T>(args: string[], env: Record<string, string>, stdin?: string): Promise<T> {
  const result = await runNode(idpScript, args, { env, ...(stdin !== undefined ? { stdin } : {}) });
  if (result.code !== 0) throw new BenchError(`idp ${args.join(' ')} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new BenchError(`idp ${args.join(' ')}: expected JSON on stdout, got ${result.stdout.slice(0, 500)}`);
  }
}

/** A server process: spawned with the project's Node, output to a log file, stopped with SIGTERM. */
export class ServerProcess {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcess;
  readonly spawnedAt: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #stopping = false;
  #log: WriteStream;
  #tail = '';
  #stdoutLines: string[] = [];
  #lineWaiters: ((line: string) => void)[] = [];
  #partial = '';

  constructor(name: string, args: string[], options: { env: Record<string, string>; url: string; logFile: string; nodeOptions?: string[] }) {
    this.name = name;
    this.url = options.url;
    this.#log = createWriteStream(options.logFile, { flags: 'a' });
    this.spawnedAt = performance.now();
    this.child = spawn(process.execPath, [...(options.nodeOptions ?? []), ...args], { env: childEnv(options.env), cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: string) => {
      this.#log.write(chunk);
      this.#tail = (this.#tail + chunk).slice(-4000);
    };
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      keep(chunk);
      const lines = (this.#partial + chunk).split('\n');
      this.#partial = lines.pop()!;
      for (const line of lines) {
        const waiter = this.#lineWaiters.shift();
        if (waiter) waiter(line);
        else this.#stdoutLines.push(line);
      }
    });
    this.child.stderr!.setEncoding('utf8').on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => {
        keep(`\nspawn error: ${error.message}\n`);
        this.#exit = { code: null, signal: null };
        resolve(this.#exit);
      });
      this.child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The last output, for error messages. */
  get tail(): string {
    return this.#tail;
  }

  /** The next line the process writes to stdout. */
  nextLine(timeoutMs = 30_000): Promise<string> {
    const queued = this.#stdoutLines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new BenchError(`${this.name}: no output line within ${timeoutMs} ms\n${this.#tail}`)), timeoutMs);
      this.#lineWaiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }

  /** Polls GET /readyz until it answers 200; returns the milliseconds since spawn. */
  async waitReady(timeoutMs = 60_000): Promise<number> {
    const deadline = this.spawnedAt + timeoutMs;
    for (;;) {
      if (this.#exit) throw new BenchError(`${this.name} exited (${this.#exit.code ?? this.#exit.signal}) before it was ready:\n${this.#tail}`);
      try {
        const response = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
        await response.arrayBuffer();
        if (response.status === 200) return performance.now() - this.spawnedAt;
      } catch {
        // not listening yet
      }
      if (performance.now() > deadline) throw new BenchError(`${this.name} not ready within ${timeoutMs} ms:\n${this.#tail}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** True when the process ended on its own (a crash): the run is then invalid. */
  get crashed(): boolean {
    return this.#exit !== undefined && !this.#stopping;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it ended. */
  async stop(graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.#exit) {
      this.#stopping = true;
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    await new Promise<void>((resolve) => this.#log.end(resolve));
    return this.#exit!;
  }
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** The process and its descendants (cluster workers), from /proc. */
function processTree(root: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = parents.get(ppid) ?? [];
      list.push(Number(entry));
      parents.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) tree.push(...(parents.get(tree[i]!) ?? []));
  return tree;
}

export interface TreeStats {
  processes: number;
  /** Resident memory now, summed over the tree (MiB). */
  rssMB: number;
  /** Peak resident memory (VmHWM), summed over the tree's current processes (MiB). */
  peakRssMB: number;
  /** User + system CPU time of the tree's current processes so far (ms). */
  cpuMs: number;
}

/** Memory and CPU of a process tree; null where /proc is unavailable. */
export function treeStats(pid: number): TreeStats | null {
  if (!existsSync(`/proc/${pid}/status`)) return null;
  let rssKB = 0;
  let hwmKB = 0;
  let ticks = 0;
  const pids = processTree(pid);
  for (const p of pids) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      rssKB += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      hwmKB += Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone meanwhile
    }
  }
  return { processes: pids.length, rssMB: rssKB / 1024, peakRssMB: hwmKB / 1024, cpuMs: (ticks * 1000) / ticksPerSecond() };
}

/** The commit measured, and whether src/ differed from it. */
export function sourceVersion(): { commit: string | null; srcModified: boolean | null } {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), srcModified: git('status', '--porcelain', '--', 'src', 'prisma', 'package-lock.json') !== '' };
  } catch {
    return { commit: null, srcModified: null };
  }
}
