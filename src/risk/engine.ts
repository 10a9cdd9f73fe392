// The risk engine: every sign-in, once its first factor is through, gets a verdict — allow,
// step_up (a second factor, even for accounts that would not need one) or deny — with the
// reasons. Signals are small modules the engine asks; the strongest verdict wins and every
// signal that spoke adds its reason. The MFA policy then decides the second factor from the
// verdict (src/mfa/policy.ts).

export type Verdict = 'allow' | 'step_up' | 'deny';

export interface RiskContext {
  accountId: string;
  email: string | undefined;
  /** The sign-in method that authenticated (password, signin_code, passkey, …). */
  method: string | undefined;
  amr: readonly string[];
  ip: string | undefined;
  userAgent: string | undefined;
  clientId: string | undefined;
}

export interface RiskVerdict {
  verdict: Verdict;
  reasons: string[];
}

/** One signal: no opinion (undefined), or a verdict with its reason. */
export interface RiskSignal {
  readonly id: string;
  evaluate(context: RiskContext): Promise<{ verdict: Verdict; reason: string } | undefined>;
}

export interface RiskEngine {
  assess(context: RiskContext): Promise<RiskVerdict>;
}

const strength: Record<Verdict, number> = { allow: 0, step_up: 1, deny: 2 };

export class SignalRiskEngine implements RiskEngine {
  readonly #signals: readonly RiskSignal[];

  constructor(signals: readonly RiskSignal[]) {
    this.#signals = signals;
  }

  async assess(context: RiskContext): Promise<RiskVerdict> {
    const opinions = (await Promise.all(this.#signals.map((signal) => signal.evaluate(context)))).filter((o) => o !== undefined);
    const verdict = opinions.reduce<Verdict>((worst, o) => (strength[o.verdict] > strength[worst] ? o.verdict : worst), 'allow');
    return { verdict, reasons: opinions.map((o) => o.reason) };
  }
}

/**
 * Failed sign-ins from this origin for this account (the sign-in throttle's counters): noted in
 * the verdict's reasons, not acted on — the throttle and the lockout already slow guessing down.
 */
export function recentFailuresSignal(failures: (ip: string, email: string) => Promise<number>): RiskSignal {
  return {
    id: 'recent_failures',
    async evaluate(context) {
      if (!context.ip || !context.email) return undefined;
      const count = await failures(context.ip, context.email);
      return count > 0 ? { verdict: 'allow', reason: `recent_failures:${count}` } : undefined;
    },
  };
}
