// Signing-key rotation: staged → active → retired → removed. A new key is always staged first:
// every node publishes it at its next key refresh and no node signs with it before every node
// publishes it (the node-publication delay, three refresh intervals: a node that missed three
// refreshes has failed readiness and left the load balancer). Routine rotation waits longer, the
// pre-publication delay, so relying parties' JWKS caches have the key too. The old key stays
// published until the last token it signed has expired. Emergency rotation (`now`) waits only
// for the nodes; with `revokeOld` the old key leaves the JWKS as soon as every node has stopped
// signing with it.
import type { AuditSink } from '../audit/types.ts';
import { IdpError, NotFoundError } from '../errors.ts';
import type { SigningKeyStore } from '../store/signing-keys.ts';
import type { Keyring } from './keyring.ts';

export interface RotationPolicy {
  /** Algorithms with a key of their own; each rotates on its own. */
  algs: string[];
  /** Seconds a staged key is published before it signs (≥ the JWKS cache max-age). */
  prepublicationSeconds: number;
  /** Seconds after which every node in service publishes a key written now (see keyPublicationSeconds). */
  nodePublicationSeconds: number;
  /** Seconds a retired key stays published (≥ the longest token lifetime). */
  retentionSeconds: number;
  /** Seconds between automatic rotations; 0 turns the schedule off. */
  intervalSeconds: number;
}

const later = (from: Date, seconds: number) => new Date(from.getTime() + seconds * 1000);

export class KeyLifecycle {
  readonly #store: SigningKeyStore;
  readonly #keyring: Keyring;
  readonly #audit: AuditSink;
  readonly #policy: RotationPolicy;

  constructor(store: SigningKeyStore, keyring: Keyring, audit: AuditSink, policy: RotationPolicy) {
    this.#store = store;
    this.#keyring = keyring;
    this.#audit = audit;
    this.#policy = policy;
  }

  /**
   * Stages a new key. Routine: it signs after the pre-publication delay. With `now` (emergency):
   * after the node-publication delay, replacing any key staged earlier; `revokeOld` then also
   * takes the old key out of the JWKS once every node has switched away from it.
   */
  async rotate(options: { now?: boolean; revokeOld?: boolean; actor: string; unlessStaged?: boolean; alg?: string }, at = new Date()): Promise<{ kid: string; alg: string; state: 'staged'; activateAt: Date; removeOldAt?: Date } | undefined> {
    if (options.revokeOld && !options.now) throw new IdpError('ERR_USAGE', '--revoke-old needs --now (a routine rotation keeps the old key until its tokens expire)', { status: 400 });
    const alg = options.alg ?? 'RS256';
    if (!this.#policy.algs.includes(alg)) throw new IdpError('ERR_USAGE', `${alg} is not one of KEY_ALGORITHMS (${this.#policy.algs.join(', ')})`, { status: 400 });
    const { nodePublicationSeconds, prepublicationSeconds } = this.#policy;
    const key = await this.#keyring.generate(alg);
    const activateAt = later(at, options.now ? nodePublicationSeconds : Math.max(prepublicationSeconds, nodePublicationSeconds));
    const removeOldAt = options.revokeOld ? later(activateAt, nodePublicationSeconds) : undefined;
    const staged = await this.#store.insertStaged(key, activateAt, {
      unlessStaged: options.unlessStaged ?? false,
      ...(options.now ? { replaceStaged: at } : {}),
      ...(removeOldAt ? { removeActiveAt: removeOldAt } : {}),
    });
    if (!staged) return undefined;
    await this.#audit.record({
      type: 'key.staged', outcome: 'success', actor: options.actor,
      details: { kid: key.kid, alg, activateAt: activateAt.toISOString(), emergency: Boolean(options.now), ...(removeOldAt ? { previous: staged.previous ?? null, removeOldAt: removeOldAt.toISOString() } : {}) },
    });
    return { kid: key.kid, alg, state: 'staged', activateAt, ...(removeOldAt ? { removeOldAt } : {}) };
  }

  /** Retires a staged or retired key, unpublishing it after `inSeconds` (default: now). The active key cannot be retired; rotate instead. */
  async retire(kid: string, actor: string, inSeconds = 0, at = new Date()): Promise<void> {
    const result = await this.#store.retire(kid, at, later(at, inSeconds));
    if (result === 'missing') throw new NotFoundError(`no signing key ${kid}`);
    if (result === 'active') throw new IdpError('ERR_ACTIVE_KEY', `key ${kid} is the active signing key: rotate first (idp keys rotate --now)`, { status: 409 });
    await this.#audit.record({ type: 'key.retired', outcome: 'success', actor, details: { kid, removeAt: later(at, inSeconds).toISOString() } });
    if (inSeconds === 0) await this.#store.removeExpired(at);
  }

  /**
   * The periodic step every node runs: activate staged keys that are due, remove retired keys
   * whose publication ended, and stage a new key when the schedule says so. Idempotent and safe
   * on several nodes at once. Returns whether anything changed.
   */
  async tick(at = new Date()): Promise<boolean> {
    let changed = false;
    for (const key of await this.#store.dueForActivation(at)) {
      const previous = await this.#store.findActive(key.alg);
      if (await this.#store.promote(key.kid, at, later(at, this.#policy.retentionSeconds))) {
        changed = true;
        await this.#audit.record({ type: 'key.activated', outcome: 'success', actor: 'system', details: { kid: key.kid, previous: previous?.kid ?? null } });
      }
    }
    for (const kid of await this.#store.removeExpired(at)) {
      changed = true;
      await this.#audit.record({ type: 'key.removed', outcome: 'success', actor: 'system', details: { kid } });
    }
    for (const alg of this.#policy.intervalSeconds > 0 ? this.#policy.algs : []) {
      const active = await this.#store.findActive(alg);
      const due = active?.activatedAt && later(active.activatedAt, this.#policy.intervalSeconds) <= at;
      if (due && !(await this.#store.hasStaged(alg))) {
        changed = (await this.rotate({ actor: 'schedule', unlessStaged: true, alg }, at)) !== undefined || changed;
      }
    }
    return changed;
  }
}
