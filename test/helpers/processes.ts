// The real `idp` command as child processes: one-shot commands (`runIdp`) and long-running
// servers (`startServer`), always with an explicit environment, plus an empty PostgreSQL
// database for tests that migrate it themselves. Every server started here is tracked so a test
// file can kill whatever is left (`killAll`) even when an assertion failed half-way.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const idpScript = fileURLToPath(new URL('../../bin/idp.js', import.meta.url));

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Only what the command needs: nothing leaks in from the test runner's own environment. */
function childEnv(env: Record<string, string>): Record<string, string> {
  // One process per server unless a test asks for workers: most tests watch or kill one process.
  // And no drain period on SIGTERM: tests stop servers all the time (a test of draining sets one).
  const base: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', WORKERS: '1', SHUTDOWN_DRAIN_SECONDS: '0' };
  if (process.env.HOME) base.HOME = process.env.HOME;
  if (process.env.TMPDIR) base.TMPDIR = process.env.TMPDIR;
  return { ...base, ...env };
}

/** Runs `idp ARGS` to completion; `stdin` is written and closed (closed at once when absent). */
export function runIdp(args: string[], options: { env: Record<string, string>; stdin?: string; cwd?: string; timeoutMs?: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [idpScript, ...args], { env: childEnv(options.env), cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`idp ${args.join(' ')} did not finish within ${options.timeoutMs ?? 20_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 20_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // the command may exit before reading everything
    child.stdin.end(options.stdin ?? '');
  });
}

/** Parses a command's standard output as JSON, with the whole result in the failure message. */
export function jsonOf<T = unknown>(result: RunResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`expected JSON on stdout (exit ${result.code}):\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
}

const running = new Set<ServerProcess>();

export class ServerProcess {
  readonly child: ChildProcess;
  readonly url: string;
  stdout = '';
  stderr = '';
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(args: string[], options: { env: Record<string, string>; cwd?: string; url: string }) {
    this.url = options.url;
    this.child = spawn(process.execPath, [idpScript, ...args], { env: childEnv(options.env), cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.stdout += c));
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    running.add(this);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => {
        this.stderr += `\nspawn error: ${error.message}`;
        this.#exit = { code: null, signal: null };
        running.delete(this);
        resolve(this.#exit);
      });
      this.child.once('close', (code, signal) => {
        this.#exit = { code, signal };
        running.delete(this);
        resolve(this.#exit);
      });
    });
  }

  get hasExited(): boolean {
    return this.#exit !== undefined;
  }

  describe(): string {
    return `idp at ${this.url} (exit ${JSON.stringify(this.#exit ?? 'still running')})\nstdout: ${this.stdout.slice(-2000)}\nstderr: ${this.stderr.slice(-4000)}`;
  }

  /** Polls /healthz then /readyz until both answer 200; fails early when the process exits. */
  async waitReady(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const path of ['/healthz', '/readyz']) {
      for (;;) {
        if (this.hasExited) throw new Error(`the server exited before it was ready: ${this.describe()}`);
        if (Date.now() > deadline) throw new Error(`the server was not ready within ${timeoutMs} ms: ${this.describe()}`);
        try {
          const response = await fetch(`${this.url}${path}`, { signal: AbortSignal.timeout(2000) });
          await response.arrayBuffer();
          if (response.status === 200) break;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Waits until standard output matches `pattern` (the banner is printed once listening). */
  async waitForOutput(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = pattern.exec(this.stdout);
      if (match) return match;
      if (this.hasExited || Date.now() > deadline) throw new Error(`stdout never matched ${pattern}: ${this.describe()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Sends `signal` and waits for the exit; SIGKILLs after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.hasExited) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

export function startServer(args: string[], options: { env: Record<string, string>; cwd?: string; url: string }): ServerProcess {
  return new ServerProcess(args, options);
}

/** Kills (SIGKILL) every server started through this module that is still running. */
export async function killAll(): Promise<void> {
  const left = [...running];
  for (const server of left) server.child.kill('SIGKILL');
  await Promise.all(left.map((s) => s.exited));
}

