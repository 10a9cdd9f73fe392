// Assembles the sign-in chain: the sign-in methods, the risk engine, the MFA policy and the
// second-factor steps over the domain services, and the flow engine that runs them. Adding a
// sign-in method is one module in src/flow/methods/, its template, and one line in `methods`.
import { randomBytes } from 'node:crypto';
import { PasswordPolicyError } from '../accounts/password-policy.ts';
import { normaliseEmail, type AccountService } from '../accounts/service.ts';
import type { SelfService } from '../accounts/self-service.ts';
import type { SignInThrottle } from '../accounts/throttle.ts';
import type { AuditSink } from '../audit/types.ts';
import type { Clock } from '../clock.ts';
import { FlowEngine, type FlowStore } from '../flow/engine.ts';
import type { MfaMethod } from '../flow/machine.ts';
import { emailCodeMethod, emailCodeMethodId, type SigninCodeSent } from '../flow/methods/email-code.ts';
import { passkeyMethod } from '../flow/methods/passkey.ts';
import { passwordMethod } from '../flow/methods/password.ts';
import { upstreamMethod } from '../flow/methods/upstream.ts';
import type { FederatedSignIn } from '../federation/sign-in.ts';
import type { DirectorySignIn } from '../federation/directory-sign-in.ts';
import { directoryMethod } from '../flow/methods/directory.ts';
import { MethodRegistry, type SignInMethod } from '../flow/methods/types.ts';
import type { MfaDecision, MfaSteps, SecondFactorPolicy } from '../flow/second-factor.ts';
import { decideMfa, type MfaPolicySettings } from '../mfa/policy.ts';
import type { MfaService } from '../mfa/service.ts';
import { recentFailuresSignal, SignalRiskEngine, type RiskSignal } from '../risk/engine.ts';
import type { AccountRecord } from '../store/accounts.ts';

const signinKey = (flowUid: string, accountId: string) => `signin:${flowUid}:${accountId}`;

const codeResultText: Record<string, string> = {
  invalid: 'the code is not correct',
  expired: 'the code has expired or was used already: ask for a new one',
  exhausted: 'too many wrong codes: ask for a new one',
  rate_limited: 'too many codes were sent; try again later',
  unavailable: 'this method is not available',
};

export interface SignInDeps {
  accounts: AccountService;
  selfService: SelfService;
  mfa: MfaService;
  throttle: SignInThrottle;
  audit: AuditSink;
  store: FlowStore;
  clock: Clock;
  policy: MfaPolicySettings;
  emailCodeSignIn: boolean;
  passkeySignIn: boolean;
  maxAttempts: number;
  ttlSeconds: number;
  /** Upstream identity providers (the connections' buttons and home-realm routing). */
  federation: FederatedSignIn;
  /** Company directories (LDAP): addresses of their domains sign in against them. */
  directories: DirectorySignIn;
  /** More sign-in methods (after the built-in ones). */
  extraMethods?: SignInMethod[];
  /** More risk signals. */
  extraSignals?: RiskSignal[];
}

/** Passwordless sign-in by code: only active accounts with a verified address get one. */
function whyNoSigninCode(account: AccountRecord | null): SigninCodeSent | undefined {
  if (!account || account.status !== 'active') return 'unknown_account';
  return account.emailVerified ? undefined : 'unverified';
}

export function signInMethods(deps: SignInDeps): SignInMethod[] {
  const { accounts, mfa } = deps;
  const methods: SignInMethod[] = [
    passwordMethod({
      async checkPassword(email, password) {
        const result = await accounts.authenticate(email, password);
        if (result.ok) return { ok: true, accountId: result.account.id, passwordExpired: result.passwordExpired };
        // The right password for an address not verified yet: a fresh link goes out (rate-limited).
        if (result.reason === 'unverified' && result.accountId) await deps.selfService.resendVerification(result.accountId, {});
        return { ok: false, reason: result.reason, ...(result.accountId ? { accountId: result.accountId } : {}) };
      },
      guard: deps.throttle,
      codeMethod: deps.emailCodeSignIn ? emailCodeMethodId : undefined,
    }),
  ];
  if (deps.emailCodeSignIn) {
    methods.push(emailCodeMethod({
      // The code is kept under the flow AND the account it was sent to: a code mailed to one
      // account (say, the attacker's own) can never sign in another one after a restart.
      async send(flowUid, email) {
        const address = normaliseEmail(email);
        // The raw address: the lookup also finds rows stored in an older form of it.
        const account = await accounts.findByEmail(email);
        const refusal = whyNoSigninCode(account);
        // Nothing is sent, but the limit still counts: the answer cannot tell the cases apart.
        if (refusal) return (await mfa.allowSend(address, 'signin')) ? refusal : 'rate_limited';
        const sent = await mfa.sendCodeTo(signinKey(flowUid, account!.id), 'email', account!.email, account!.id, { afterResponse: true, purpose: 'signin' });
        return sent === 'rate_limited' ? 'rate_limited' : 'sent';
      },
      async check(flowUid, email, code) {
        const account = await accounts.findByEmail(email);
        if (whyNoSigninCode(account)) return { ok: false, reason: 'unknown_account' };
        const check = await mfa.checkCode(signinKey(flowUid, account!.id), 'email', code);
        return check === 'ok' ? { ok: true, accountId: account!.id } : { ok: false, reason: check };
      },
    }));
  }
  if (deps.passkeySignIn) {
    methods.push(passkeyMethod({
      options: (flowUid) => mfa.webauthn.authenticationOptions(flowUid),
      async verify(flowUid, response) {
        try {
          const result = await mfa.webauthn.verifyAuthentication(flowUid, response);
          const account = await accounts.findById(result.accountId);
          if (!account || account.status !== 'active') return { ok: false };
          return { ok: true, accountId: account.id, email: account.email, amr: result.userVerified ? ['hwk', 'mfa'] : ['hwk'] };
        } catch (error) {
          if ((error as { name?: string }).name !== 'WebAuthnError') throw error;
          return { ok: false };
        }
      },
    }));
  }
  const { federation } = deps;
  methods.push(upstreamMethod({
    buttons: (clientId) => federation.buttons(clientId),
    routed: (email, clientId) => federation.routed(email, clientId),
    start: (flowUid, connectionId, request) => federation.start(flowUid, connectionId, request),
    finish: (flowUid, connectionId, params, request) => federation.finish(flowUid, connectionId, params, request),
    completeLink: (flowUid, accountId, request) => federation.completeLink(flowUid, accountId, request),
    proofMethod: 'password',
  }));
  const { directories } = deps;
  methods.push(directoryMethod({
    routed: async (email, clientId) => (await directories.routed(email, clientId))?.displayName,
    nameFor: (email) => directories.nameFor(email),
    verify: (flowUid, email, password, request) => directories.verify(flowUid, email, password, request),
    completeLink: (flowUid, accountId, request) => directories.completeLink(flowUid, accountId, request),
    changePassword: (flowUid, email, current, next, request) => directories.changePassword(flowUid, email, current, next, request),
    proofMethod: 'password',
    guard: deps.throttle,
  }));
  return [...methods, ...(deps.extraMethods ?? [])];
}

/** The MFA policy over the account's factors, after the risk verdict. */
function secondFactorPolicy(deps: Pick<SignInDeps, 'accounts' | 'mfa' | 'policy'>): SecondFactorPolicy {
  const { accounts, mfa, policy } = deps;
  return {
    async decide(flow, request, risk): Promise<MfaDecision> {
      const account = await accounts.findById(flow.accountId!);
      if (!account) return { action: 'skip', reason: 'no_account' };
      // The first factor's own method cannot be the second one too: not the same mailbox after a
      // sign-in by emailed code, not a passkey after a passkey.
      const firstFactor = flow.amr.includes('pwd') ? undefined : flow.amr.includes('hwk') ? 'webauthn' : flow.amr.includes('otp') ? 'email' : undefined;
      const enrolled: MfaMethod[] = (await mfa.enrolled(account.id)).filter((m) => m !== firstFactor);
      const decision = decideMfa(policy, {
        userType: account.userType,
        roles: account.roles,
        clientId: request.clientId,
        requestedAcr: request.acrValues ?? [],
        riskStepUp: risk.verdict === 'step_up',
        enrolled,
        // Every confirmed factor counts, usable on this node or not (an SMS factor without a provider).
        hasFactor: await mfa.hasFactor(account.id),
        remembered: await mfa.isRemembered(account.id, request.deviceToken),
        amr: flow.amr,
      });
      if (decision.action !== 'enrol') return decision;
      // Enrolment at sign-in offers what can be set up here (SMS needs a configured provider).
      return { ...decision, methods: decision.methods.filter((m) => m !== firstFactor && (m !== 'sms' || mfa.smsAvailable)) };
    },
  };
}

/** The second factors over the MFA service. */
function mfaSteps(deps: Pick<SignInDeps, 'accounts' | 'mfa'>): MfaSteps {
  const { accounts, mfa } = deps;
  return {
    async verify(flow, input) {
      const result = await mfa.verify(flow.uid, flow.accountId!, input);
      return result.ok ? { ok: true, amr: result.amr } : { ok: false, reason: result.reason };
    },
    async sendCode(flow, method) {
      if (method !== 'email' && method !== 'sms') return 'unavailable';
      return mfa.sendCode(flow.uid, flow.accountId!, method);
    },
    async startEnrolment(flow, method, destination) {
      const account = await accounts.findById(flow.accountId!);
      if (!account) return { ok: false, reason: 'unavailable' };
      switch (method) {
        case 'totp': {
          const enrolment = await mfa.startTotp(account.id, account.email);
          return { ok: true, factorId: enrolment.factorId, display: { totp: { secret: enrolment.secret, qrDataUrl: enrolment.qrDataUrl, uri: enrolment.uri } } };
        }
        case 'webauthn':
          return { ok: true, display: { webauthnOptions: await mfa.webauthn.registrationOptions(flow.uid, { id: account.id, email: account.email, name: account.name }) } };
        case 'email':
        case 'sms': {
          // Email codes go to the account's own address; SMS to the number given.
          const to = method === 'email' ? account.email : (destination ?? '').replace(/[\s()-]/g, '');
          try {
            const sent = await mfa.startCodeEnrolment(flow.uid, account.id, method, to);
            return sent === 'sent' ? { ok: true, display: { codeSentTo: method } } : { ok: false, reason: codeResultText[sent]! };
          } catch (error) {
            if ((error as { status?: number }).status === 400) return { ok: false, reason: (error as Error).message };
            throw error;
          }
        }
        default:
          return { ok: false, reason: codeResultText.unavailable! };
      }
    },
    async confirmEnrolment(flow, input) {
      const accountId = flow.accountId!;
      switch (input.method) {
        case 'totp': {
          const ok = flow.enrolment?.factorId ? await mfa.confirmTotp(accountId, flow.enrolment.factorId, input.code ?? '') : false;
          return ok ? { ok: true, amr: ['otp'] } : { ok: false, reason: codeResultText.invalid! };
        }
        case 'webauthn':
          try {
            await mfa.registerPasskey(flow.uid, accountId, input.response ?? '', input.name ?? 'Passkey');
            return { ok: true, amr: ['hwk'] };
          } catch (error) {
            if ((error as { name?: string }).name !== 'WebAuthnError') throw error;
            return { ok: false, reason: (error as Error).message };
          }
        case 'email':
        case 'sms': {
          const check = await mfa.confirmCodeEnrolment(flow.uid, accountId, input.method, input.code ?? '');
          if (check !== 'ok') return { ok: false, reason: codeResultText[check]! };
          return { ok: true, amr: input.method === 'sms' ? ['sms'] : ['otp'] };
        }
        default:
          return { ok: false, reason: codeResultText.unavailable! };
      }
    },
    backupCodes: (accountId) => mfa.generateBackupCodes(accountId),
    rememberDevice: (accountId, userAgent) => mfa.rememberDevice(accountId, userAgent),
  };
}

export function signInEngine(deps: SignInDeps): FlowEngine {
  return new FlowEngine({
    store: deps.store,
    audit: deps.audit,
    clock: deps.clock,
    methods: new MethodRegistry(signInMethods(deps)),
    risk: new SignalRiskEngine([recentFailuresSignal((ip, email) => deps.throttle.failuresOf(ip, email)), ...(deps.extraSignals ?? [])]),
    secondFactor: secondFactorPolicy(deps),
    mfa: mfaSteps(deps),
    guard: deps.throttle,
    async changePassword(accountId, password) {
      try {
        await deps.selfService.changeExpiredPassword(accountId, password, { actor: accountId });
        return { ok: true };
      } catch (error) {
        if (error instanceof PasswordPolicyError) return { ok: false, problems: [...error.problems] };
        throw error;
      }
    },
    randomToken: () => randomBytes(32).toString('base64url'),
    maxAttempts: deps.maxAttempts,
    ttlSeconds: deps.ttlSeconds,
  });
}
