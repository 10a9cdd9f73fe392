// The login flow's MFA and passwordless seams (src/flow/engine.ts FlowDeps), built on the MFA
// service, the account service and the MFA policy.
import { normaliseEmail, parseJson, type AccountService } from '../accounts/service.ts';
import type { AccountRecord } from '../store/accounts.ts';
import type { FlowDeps, MfaDecision, MfaSteps, RequestInfo } from '../flow/engine.ts';
import type { Flow, MfaMethod } from '../flow/machine.ts';
import { decideMfa, type MfaPolicySettings } from './policy.ts';
import type { MfaService } from './service.ts';

const signinKey = (flowUid: string, accountId: string) => `signin:${flowUid}:${accountId}`;
const mayUseEmailCode = (account: AccountRecord) => account.status === 'active' && account.emailVerified;

const codeResultText: Record<string, string> = {
  invalid: 'the code is not correct',
  expired: 'the code has expired or was used already: ask for a new one',
  exhausted: 'too many wrong codes: ask for a new one',
  rate_limited: 'too many codes were sent; try again later',
  unavailable: 'this method is not available',
};

export function mfaFlowSeams(deps: { mfa: MfaService; accounts: AccountService; policy: MfaPolicySettings; emailCodeSignIn: boolean; passkeySignIn: boolean }): Pick<FlowDeps, 'mfa' | 'mfaDecision' | 'verifyPasskey' | 'sendSigninCode' | 'checkSigninCode'> {
  const { mfa, accounts, policy } = deps;

  async function mfaDecision(flow: Flow, request: RequestInfo, riskStepUp: boolean): Promise<MfaDecision> {
    const account = await accounts.findById(flow.accountId!);
    if (!account) return { action: 'skip', reason: 'no_account' };
    // The first factor's own method cannot be the second one too: not the same mailbox after a
    // sign-in by emailed code, not a passkey after a passkey.
    const firstFactor = flow.amr.includes('pwd') ? undefined : flow.amr.includes('hwk') ? 'webauthn' : flow.amr.includes('otp') ? 'email' : undefined;
    const confirmed = await mfa.enrolled(account.id);
    const enrolled: MfaMethod[] = confirmed.filter((m) => m !== firstFactor);
    const decision = decideMfa(policy, {
      userType: account.userType,
      roles: parseJson<string[]>(account.roles, []),
      clientId: request.clientId,
      requestedAcr: request.acrValues ?? [],
      riskStepUp,
      enrolled,
      // Every confirmed factor counts, usable on this node or not (an SMS factor without a provider).
      hasFactor: await mfa.hasFactor(account.id),
      remembered: await mfa.isRemembered(account.id, request.deviceToken),
      amr: flow.amr,
    });
    if (decision.action !== 'enrol') return decision;
    // Enrolment at sign-in offers what can be set up here (SMS needs a configured provider).
    const methods = decision.methods.filter((m) => m !== firstFactor && (m !== 'sms' || mfa.smsAvailable));
    return { ...decision, methods };
  }

  const steps: MfaSteps = {
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
          // Email codes go to the account's own (verified) address; SMS to the number given.
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
          return check === 'ok' ? { ok: true, amr: input.method === 'sms' ? ['sms'] : ['otp'] } : { ok: false, reason: codeResultText[check]! };
        }
        default:
          return { ok: false, reason: codeResultText.unavailable! };
      }
    },
    backupCodes: (accountId) => mfa.generateBackupCodes(accountId),
    rememberDevice: (accountId, userAgent) => mfa.rememberDevice(accountId, userAgent),
  };

  return {
    mfa: steps,
    mfaDecision,
    async verifyPasskey(flowUid, response) {
      if (!deps.passkeySignIn) return { ok: false };
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
    // The code is kept under the flow AND the account it was sent to: a code mailed to one account
    // (say, the attacker's own) can never sign in another one after a restart of the flow.
    async sendSigninCode(flowUid, email) {
      if (!deps.emailCodeSignIn) return 'disabled';
      const address = normaliseEmail(email);
      const account = await accounts.findByEmail(address);
      // No account (or one that may not sign in): nothing is sent, the limit still counts, and
      // the answer is the same; a real code goes out after the response.
      if (!account || !mayUseEmailCode(account)) return (await mfa.allowSend(address, 'signin')) ? 'sent' : 'rate_limited';
      const sent = await mfa.sendCodeTo(signinKey(flowUid, account.id), 'email', account.email, account.id, { afterResponse: true, purpose: 'signin' });
      return sent === 'rate_limited' ? 'rate_limited' : 'sent';
    },
    async checkSigninCode(flowUid, email, code) {
      const account = deps.emailCodeSignIn ? await accounts.findByEmail(normaliseEmail(email)) : null;
      if (!account || !mayUseEmailCode(account)) return { ok: false, reason: 'unknown_account' };
      const check = await mfa.checkCode(signinKey(flowUid, account.id), 'email', code);
      return check === 'ok' ? { ok: true, accountId: account.id } : { ok: false, reason: check };
    },
  };
}
