// The process: parses the command line, loads configuration, runs a command, sets the exit code.
// The only module that touches `process`.
import cluster, { type Worker } from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { AggregatorRegistry } from 'prom-client';
import { Command, CommanderError } from 'commander';
import type { Idp } from './app.ts';
import { keyEncryptionProvider } from './keys/custody.ts';
import { Pkcs11KeyEncryption } from './keys/pkcs11.ts';
import {
  auditCatalogue, createClient, createUser, searchAudit, type AuditQuery, decideApproval, deleteClient, inviteUser, listClients, listKeys, listSessions, listUsers, retireKey, revokeSessions, rotateKeys,
  resetUserMfa, setUserStatus, showUser, unlockUser, updateUser, type UserAttributesInput,
  createConnection, deleteConnection, listConnections, showConnection, testConnection, updateConnection,
} from './admin/commands.ts';
import { loadConfig, redactedConfig, type Config } from './config.ts';
import type { DemoCredentials } from './demo/seed.ts';
import { IdpError } from './errors.ts';
import { createHttpServer } from './http/server.ts';
import { createLogger, type Logger } from './log.ts';
import { migrate, pendingMigrations } from './store/migrate.ts';

class UsageError extends Error {}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new UsageError('this command reads standard input; pipe the input in');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function configFrom(options: { config?: string }): Config {
  return loadConfig(options.config ? { ...process.env, CONFIG_FILE: options.config } : process.env);
}

/** Runs a command against a fully assembled IdP (logs to stderr, so stdout stays clean JSON). */
async function withIdp<T>(options: { config?: string }, run: (idp: Idp) => Promise<T>): Promise<T> {
  const config = configFrom(options);
  const log = createLogger(config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL, process.stderr);
  const pending = await pendingMigrations(config.DATABASE_URL);
  if (pending.length) throw new UsageError(`the database needs migrating (${pending.length} pending): run \`idp migrate\` first`);
  const { createIdp } = await import('./app.ts');
  const idp = await createIdp(config, log);
  try {
    return await run(idp);
  } finally {
    await idp.close();
  }
}

function banner(config: Config, url: string, demo: DemoCredentials | undefined): string {
  const lines = [
    '',
    `  Identity provider running at ${url}`,
    `  Issuer:     ${config.ISSUER}`,
    `  Discovery:  ${config.ISSUER}/.well-known/openid-configuration`,
  ];
  if (demo) {
    lines.push(
      '',
      `  Demo sign-in: open ${config.ISSUER}/demo`,
      `    user:          ${demo.email}`,
      `    password:      ${demo.password}`,
      `    client_id:     ${demo.clientId}`,
      `    client_secret: ${demo.clientSecret}`,
      `    redirect_uri:  ${demo.redirectUri}`,
      '  (demo credentials are kept in data/demo-credentials.json)',
      `  Account page (sessions, password, second factors): ${config.ISSUER}/account`,
    );
  }
  return `${lines.join('\n')}\n\n`;
}

interface ServeOptions {
  config?: string;
  demo?: boolean;
  migrate?: boolean;
  workers?: number;
}

const demoFile = 'data/demo-credentials.json';
const shutdownGraceMs = 30_000;

/** The URL a server listens at, for logs and the banner. */
function listenUrl(config: Config, port: number): string {
  return `http://${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${port}`;
}

/**
 * One IdP listening on the configured port (in a worker, the port the cluster shares): built,
 * listening, and stopped on SIGTERM/SIGINT after the requests in flight are answered.
 */
async function startNode(options: ServeOptions, log: Logger, config: Config, extra: { metrics?: () => Promise<string> } = {}): Promise<{ idp: Idp; port: number; demo: DemoCredentials | undefined; stop(signal: string): Promise<void> }> {
  let demo: DemoCredentials | undefined;
  // The composition root and the demo load here, not at start: the primary of --workers never needs them.
  const [{ createIdp }, demoApp] = await Promise.all([import('./app.ts'), options.demo ? import('./demo/relying-party.ts') : undefined]);
  const idp = await createIdp(config, log, { routes: demoApp ? [demoApp.demoRelyingParty(() => demo)] : [], ...extra });
  const server = createHttpServer(idp.app);
  try {
    if (options.demo) demo = await (await import('./demo/seed.ts')).seedDemo(idp, demoFile);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.PORT, config.HOST, resolve);
    });
  } catch (error) {
    // Close the database and Redis connections, or they would keep a failed process alive.
    await idp.close();
    throw error;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.PORT;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // SIGTERM: readiness fails first, so the load balancer sends new requests elsewhere.
    if (signal === 'SIGTERM' && config.SHUTDOWN_DRAIN_SECONDS > 0) {
      idp.drain();
      await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DRAIN_SECONDS * 1000));
    }
    // No new connections; idle keep-alive ones close; requests in flight are answered first.
    server.closeIdleConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await idp.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  return { idp, port, demo, stop };
}

async function serve(options: ServeOptions, log: Logger, config: Config): Promise<void> {
  if (cluster.isWorker) return serveWorker(options, log.child({ worker: cluster.worker!.id }), config);
  if (options.demo || options.migrate) {
    const applied = await migrate(config.DATABASE_URL);
    if (applied.length) log.info({ applied }, 'migrations applied');
  } else {
    const pending = await pendingMigrations(config.DATABASE_URL);
    if (pending.length) throw new UsageError(`the database needs migrating (${pending.length} pending): run \`idp migrate\` or start with --migrate`);
  }
  const workers = options.workers ?? (config.WORKERS || availableParallelism());
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new UsageError('--workers must be a whole number from 1 to 64');
  if (workers === 1) {
    const { idp, port, demo } = await startNode(options, log, config);
    const url = listenUrl(config, port);
    log.info({ url, database: idp.db.provider, redis: Boolean(idp.redis), config: redactedConfig(config) }, 'listening');
    if (options.demo) process.stdout.write(banner(config, url, demo));
    return;
  }
  await servePrimary(options, log, config, workers);
}

/** A worker of `idp serve --workers N`: one node of the cluster; /metrics asks the primary for all. */
async function serveWorker(options: ServeOptions, log: Logger, config: Config): Promise<void> {
  const metrics = () => new Promise<string>((resolve, reject) => {
    const id = randomUUID();
    const answer = (message: { type?: string; id?: string; text?: string; error?: string }) => {
      if (message?.type !== 'idp:metrics' || message.id !== id) return;
      process.off('message', answer);
      if (message.error !== undefined) reject(new Error(message.error));
      else resolve(message.text ?? '');
    };
    process.on('message', answer);
    process.send!({ type: 'idp:metrics', id });
  });
  // The primary's worker.disconnect(): the cluster stops handing us connections and closes our
  // server once the requests in flight are answered; then the IPC channel closes, and we end.
  // Listened for before the start: a cluster stopped while this worker starts ends it too, at
  // once (it has served nothing yet, and it could not listen without the primary).
  let node: Awaited<ReturnType<typeof startNode>> | undefined;
  process.once('disconnect', () => (node ? void node.stop('disconnect') : process.exit(0)));
  node = await startNode(options, log, config, { metrics });
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'idp:drain') node.idp.drain();
  });
}

/**
 * The primary of `idp serve --workers N`: migrates and seeds once, forks the workers (every one
 * stateless: they share the port, the database and Redis), replaces a worker that dies, gathers
 * their metrics, restarts them one by one on SIGHUP (configuration reload), and on SIGTERM lets
 * each finish the requests in flight before exiting.
 */
async function servePrimary(options: ServeOptions, log: Logger, config: Config, count: number): Promise<void> {
  let demo: DemoCredentials | undefined;
  if (options.demo) {
    const [{ createIdp }, { seedDemo }] = await Promise.all([import('./app.ts'), import('./demo/seed.ts')]);
    const idp = await createIdp(config, log);
    try {
      demo = await seedDemo(idp, demoFile);
    } finally {
      await idp.close();
    }
  }
  const aggregator = new AggregatorRegistry();
  const retiring = new WeakSet<Worker>();
  let stopping = false;
  let port = config.PORT;
  const exitOf = (worker: Worker) => new Promise<void>((resolve) => (worker.isDead() ? resolve() : worker.once('exit', () => resolve())));
  const stopWorker = async (worker: Worker) => {
    // Not a signal: disconnect() first takes the worker out of the cluster's round robin, so no
    // connection is handed to a server that is closing.
    if (worker.isConnected()) worker.disconnect();
    const timer = setTimeout(() => worker.process.kill('SIGKILL'), shutdownGraceMs);
    await exitOf(worker);
    clearTimeout(timer);
  };
  // Handled from the start: a SIGTERM while the workers still start (the first may already
  // answer) stops every worker, started or not, and ends with 0 like any other stop.
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const workers = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => Boolean(worker));
    if (signal === 'SIGTERM' && config.SHUTDOWN_DRAIN_SECONDS > 0) {
      for (const worker of workers) if (worker.isConnected()) worker.send({ type: 'idp:drain' });
      await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DRAIN_SECONDS * 1000));
    }
    await Promise.all(workers.map(stopWorker));
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  const fork = () => new Promise<Worker>((resolve, reject) => {
    const worker = cluster.fork();
    worker.on('message', (message: { type?: string; id?: string }) => {
      if (message?.type !== 'idp:metrics') return;
      aggregator.clusterMetrics()
        .then((text) => worker.send({ type: 'idp:metrics', id: message.id, text }))
        .catch((error: unknown) => worker.send({ type: 'idp:metrics', id: message.id, error: (error as Error).message }));
    });
    worker.once('listening', (address) => {
      port = address.port;
      resolve(worker);
    });
    worker.once('exit', (code, signal) => {
      reject(new Error(`worker ${worker.id} exited before listening (code ${code ?? signal})`));
      if (stopping || retiring.has(worker)) return;
      log.error({ worker: worker.id, code, signal }, 'worker exited; starting another');
      fork().catch((error: unknown) => log.error({ err: error }, 'could not start a worker'));
    });
  });
  log.info({ workers: count }, 'starting workers');
  try {
    await Promise.all(Array.from({ length: count }, fork));
  } catch (error) {
    if (stopping) return; // a stop signal came first; stop() ends the process
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    throw error;
  }
  const url = listenUrl(config, port);
  log.info({ url, workers: count, config: redactedConfig(config) }, 'listening');
  if (options.demo) process.stdout.write(banner(config, url, demo));

  let reloading = false;
  process.on('SIGHUP', () => {
    if (reloading || stopping) return;
    reloading = true;
    void (async () => {
      // One at a time, the new one listening before the old one goes: the port never goes unserved.
      for (const old of Object.values(cluster.workers ?? {})) {
        if (!old || retiring.has(old)) continue;
        await fork();
        retiring.add(old);
        await stopWorker(old);
      }
      log.info({ workers: count }, 'workers restarted');
    })().catch((error: unknown) => log.error({ err: error }, 'restarting the workers failed')).finally(() => (reloading = false));
  });
}

export function buildProgram(): Command {
  const program = new Command('idp')
    .description('OpenID Connect identity provider')
    .option('--config <file>', 'JSON configuration file (same names as the environment variables; the environment wins)')
    .showHelpAfterError()
    .exitOverride();
  const globals = () => program.opts<{ config?: string }>();

  program.command('serve').description('run the server')
    .option('--demo', 'migrate, seed a demo user and client on first run, mount the demo app at /demo, print credentials')
    .option('--migrate', 'apply pending migrations before starting')
    .option('--workers <n>', 'worker processes sharing the port (default WORKERS, or one per CPU core; 1: a single process)', (v: string) => Number(v))
    .action(async (options: { demo?: boolean; migrate?: boolean; workers?: number }) => {
      const config = configFrom(globals());
      await serve({ ...globals(), ...options }, createLogger(config.LOG_LEVEL), config);
    });

  program.command('migrate').description('apply pending database migrations').action(async () => {
    const config = configFrom(globals());
    const applied = await migrate(config.DATABASE_URL);
    print({ applied });
  });

  const clients = program.command('clients').description('manage relying parties');
  clients.command('create').description('register a client from RFC 7591 metadata JSON on standard input; prints it with its client_secret (shown once)')
    .action(async () => {
      const input = await readStdin();
      print(await withIdp(globals(), (idp) => createClient(idp, input)));
    });
  clients.command('list').description('list clients').action(async () => print(await withIdp(globals(), listClients)));
  clients.command('delete').description('delete a client').argument('<id>', 'client_id')
    .action(async (id: string) => {
      await withIdp(globals(), (idp) => deleteClient(idp, id));
      print({ deleted: id });
    });

  const connections = program.command('connections').description('upstream identity providers users sign in through (Entra ID, Okta, Google, JumpCloud, any OpenID provider)');
  connections.command('create').description('add a connection from its JSON on standard input: the admin API\'s NewConnection (OIDC) or NewDirectory ("kind":"ldap"); its secret is stored wrapped and never shown again')
    .action(async () => {
      const input = await readStdin();
      print(await withIdp(globals(), (idp) => createConnection(idp, input)));
    });
  connections.command('list').description('list connections').action(async () => print(await withIdp(globals(), listConnections)));
  connections.command('show').description('show one connection (never its secret)').argument('<id>', 'connection id')
    .action(async (id: string) => print(await withIdp(globals(), (idp) => showConnection(idp, id))));
  connections.command('update').description('change a connection: the fields to change as JSON on standard input').argument('<id>', 'connection id')
    .action(async (id: string) => {
      const input = await readStdin();
      print(await withIdp(globals(), (idp) => updateConnection(idp, id, input)));
    });
  connections.command('delete').description('delete a connection and the accounts\' links to it').argument('<id>', 'connection id')
    .action(async (id: string) => {
      await withIdp(globals(), (idp) => deleteConnection(idp, id));
      print({ deleted: id });
    });
  connections.command('test').description('OIDC: fetch the upstream\'s discovery document and JWKS; LDAP: bind with the service account (and look up --login); report what is wrong; exits 1 when a check fails').argument('<id>', 'connection id')
    .option('--login <address>', 'LDAP: a user to look up and show mapped (no password is checked)')
    .action(async (id: string, options: { login?: string }) => {
      const result = await withIdp(globals(), (idp) => testConnection(idp, id, options.login));
      print(result);
      if (!result.ok) process.exitCode = 1;
    });

  const users = program.command('users').description('manage user accounts');
  const profileOptions = (command: Command) => command
    .option('--name <name>', 'display name')
    .option('--user-type <type>', 'user type, e.g. internal or external (password rules, approval, MFA policy)')
    .option('--roles <roles>', 'comma-separated role names', (v: string) => v.split(',').map((r) => r.trim()).filter(Boolean))
    .option('--attributes <json>', 'custom attributes as a JSON object (released as claims per CLAIM_MAPPINGS)');
  profileOptions(users.command('create').description('create a user; the password is read from standard input')
    .requiredOption('--email <email>', 'email address (the login name)')
    .requiredOption('--password-stdin', 'read the password from standard input (one line)'))
    .action(async (options: { email: string } & UserAttributesInput) => {
      const password = (await readStdin()).replace(/\r?\n$/, '');
      print(await withIdp(globals(), (idp) => createUser(idp, { ...options, password })));
    });
  profileOptions(users.command('invite').description('create a user without a password and email a single-use link to set one').argument('<email>', 'email address'))
    .action(async (email: string, options: UserAttributesInput) => print(await withIdp(globals(), (idp) => inviteUser(idp, { ...options, email }))));
  profileOptions(users.command('update').description('change a user\'s name, user type, roles or attributes').argument('<email>', 'the account\'s email address'))
    .action(async (email: string, options: UserAttributesInput) => print(await withIdp(globals(), (idp) => updateUser(idp, email, options))));
  users.command('show').description('show one user').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => showUser(idp, email))));
  users.command('list').description('list users').option('--pending-approval', 'only accounts waiting for approval')
    .action(async (options: { pendingApproval?: boolean }) => print(await withIdp(globals(), (idp) => listUsers(idp, options))));
  users.command('unlock').description('lift a lockout (temporary or permanent) after too many wrong passwords').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => unlockUser(idp, email))));
  users.command('disable').description('stop a user from signing in and end their sessions').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => setUserStatus(idp, email, 'disabled'))));
  users.command('enable').description('let a disabled user sign in again').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => setUserStatus(idp, email, 'active'))));
  users.command('approve').description('approve an account waiting for approval (approval_status: verified)').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => decideApproval(idp, email, 'verified'))));
  users.command('reject').description('reject an account waiting for approval (approval_status: rejected)').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => decideApproval(idp, email, 'rejected'))));

  users.command('reset-mfa').description('remove every second factor, backup code and remembered device of a user (they enrol again at the next sign-in)').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => resetUserMfa(idp, email))));

  const sessions = program.command('sessions').description('signed-in sessions of users');
  sessions.command('list').description('list a user\'s active sessions').argument('<email>', 'the account\'s email address')
    .action(async (email: string) => print(await withIdp(globals(), (idp) => listSessions(idp, email))));
  sessions.command('revoke').description('end one session (by sid) or every session of a user: revokes their refresh tokens and sends back-channel logout')
    .argument('<email>', 'the account\'s email address').argument('[sid]', 'the session id (sid claim); all sessions when left out')
    // Session ids are random and may start with "-": never read one as an option.
    .allowUnknownOption()
    .action(async (email: string, sid: string | undefined) => print(await withIdp(globals(), (idp) => revokeSessions(idp, email, sid))));

  const keys = program.command('keys').description('signing keys');
  keys.command('list').description('list signing keys with their state and dates').action(async () => print(await withIdp(globals(), listKeys)));
  keys.command('rotate').description('stage a new signing key; it signs after KEY_PREPUBLICATION_SECONDS, and the old key stays published until its tokens expire')
    .option('--now', 'emergency: the new key signs as soon as every node publishes it (3 × KEY_REFRESH_SECONDS + 2 s)')
    .option('--revoke-old', 'with --now: the old key also leaves the JWKS once every node has switched (its tokens stop verifying)')
    .option('--wait', 'wait until the new key signs, then print it')
    .option('--alg <alg>', 'which algorithm\'s key to rotate (one of KEY_ALGORITHMS)', 'RS256')
    .action(async (options: { now?: boolean; revokeOld?: boolean; wait?: boolean; alg?: string }) => print(await withIdp(globals(), async (idp) => {
      const rotated = await rotateKeys(idp, options);
      const seconds = Math.max(0, Math.ceil((Date.parse(rotated.activates) - Date.now()) / 1000));
      process.stderr.write(`idp: key ${rotated.kid} is published now and signs from ${rotated.activates} (in ${seconds} s), once every node publishes it; running nodes switch on their own\n`);
      if (!options.wait) return rotated;
      // Any node's key step activates it when due; this one does too, so --wait ends without a server.
      for (;;) {
        await idp.keyLifecycle.tick();
        const key = await idp.keys.find(rotated.kid);
        if (key?.state === 'active') return { ...rotated, state: 'active', activated: key.activatedAt?.toISOString() ?? null };
        if (key?.state !== 'staged') throw new IdpError('ERR_KEY_REPLACED', `key ${rotated.kid} was replaced before it signed (another rotation)`, { status: 409 });
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    })));
  keys.command('retire').description('remove a staged or retired key from the JWKS now (the active key cannot be retired: rotate first)').argument('<kid>', 'key id')
    .action(async (kid: string) => print(await withIdp(globals(), (idp) => retireKey(idp, kid))));

  const kms = program.command('kms').description('key custody');
  kms.command('init').description('KMS_PROVIDER=pkcs11: create the AES-256 wrapping key on the token if it is missing')
    .action(async () => {
      const config = configFrom(globals());
      const provider = keyEncryptionProvider(config);
      try {
        if (!(provider instanceof Pkcs11KeyEncryption)) throw new UsageError(`kms init is for KMS_PROVIDER=pkcs11 (configured: ${config.KMS_PROVIDER})`);
        print(await provider.ensureKey());
      } finally {
        provider.close?.();
      }
    });

  const audit = program.command('audit').description('the security audit log');
  audit.command('events').description('the audit catalogue: every event type, what it means and its detail fields').action(() => print(auditCatalogue()));
  audit.command('list').description('audit events, newest first')
    .option('--type <type>', 'an event type (see idp audit events), or a family by its prefix ending in "." (login., key.)')
    .option('--user <user>', 'the account, by address or id')
    .option('--since <time>', 'ISO 8601 date and time')
    .option('--before <seq>', 'only events older than this sequence number (the next page)', (v: string) => Number(v))
    .option('--limit <n>', '1 to 1000 (default 100)', (v: string) => Number(v))
    .action(async (options: AuditQuery) => print(await withIdp(globals(), (idp) => searchAudit(idp, options))));
  audit.command('verify').description('check the hash chain; exits 1 and names the first tampered row if it is broken')
    .action(async () => {
      const result = await withIdp(globals(), (idp) => idp.audit.verify());
      print(result);
      if (!result.ok) process.exitCode = 1;
    });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? 0 : 2;
      return;
    }
    const usage = error instanceof UsageError || (error instanceof IdpError && error.status < 500);
    const message = error instanceof IdpError && error.code === 'ERR_CONFIG' ? `configuration error: ${error.message}` : (error as Error).message;
    process.stderr.write(`idp: ${message}\n`);
    process.exitCode = usage || (error instanceof IdpError && error.code === 'ERR_CONFIG') ? 2 : 1;
  }
}
