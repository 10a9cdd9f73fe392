// The audit catalogue: every event type the IdP writes, what it means and the fields of its
// details. Writers can only name a type listed here (AuditInput.type is this union); readers —
// `idp audit events|list`, the admin API — show the same list. Never put a secret, password, code
// or token in details: they are kept forever.

const login = (description: string, fields: readonly string[] = []) => ({ description, fields: ['interaction', 'from', 'to', 'email', ...fields] });

export const auditEvents = {
  // The sign-in chain (src/flow): one event per step, from the stage it left to the one it reached.
  'login.identified': login('an address was typed; the sign-in method for it was chosen', ['method']),
  'login.method_chosen': login('a method that names the account itself was chosen (passkey, upstream provider)', ['method']),
  'login.method_switched': login('the user switched sign-in method (password → emailed code)', ['method']),
  'login.restarted': login('"not you?": back to the address'),
  'login.password_verified': login('the password was right', ['method', 'accountId', 'amr']),
  'login.password_expired': login('the password was right but expired: a new one is due after every factor', ['method', 'accountId', 'amr', 'passwordExpired']),
  'login.password_rejected': login('a wrong password, unknown account, locked or disabled account (reason)', ['method', 'reason']),
  'login.verification_required': login('the right password for an address not verified yet: a new link was sent', ['method']),
  'login.signin_code_sent': login('a sign-in code was mailed', ['method']),
  'login.signin_code_not_sent': login('no sign-in code went out (no account, address not verified, rate limited); the screen said the same as when one is sent', ['method', 'reason']),
  'login.signin_code_verified': login('the mailed sign-in code was right', ['method', 'accountId', 'amr']),
  'login.signin_code_rejected': login('a wrong, expired or used-up sign-in code', ['method', 'reason']),
  'login.passkey_verified': login('a discoverable passkey signed the user in', ['method', 'accountId', 'amr']),
  'login.passkey_rejected': login('a passkey assertion did not verify', ['method', 'reason']),
  'login.upstream_redirected': login('the browser was sent to an upstream identity provider', ['method']),
  'login.upstream_verified': login('the upstream identity provider signed the user in', ['method', 'accountId', 'amr']),
  'login.upstream_rejected': login('the upstream answer was refused', ['method', 'reason']),
  'login.throttled': login('too many failed sign-ins from this origin: nothing was checked', ['retryAfterSeconds']),
  'login.attempts_exhausted': login('this sign-in used up its attempts'),
  'login.risk_allowed': login('the risk and MFA decision let the sign-in through', ['reason', 'risk']),
  'login.risk_step_up': login('a second factor is asked for', ['methods', 'reason', 'risk']),
  'login.mfa_enrolment_required': login('the account must set up a second factor first', ['methods', 'reason', 'risk']),
  'login.risk_denied': login('the sign-in was refused', ['reason', 'risk']),
  'login.mfa_code_sent': login('a second-factor code was sent', ['method', 'rateLimited']),
  'login.mfa_rejected': login('a wrong second factor', ['method', 'reason']),
  'login.mfa_verified': login('the second factor was right', ['method', 'amr']),
  'login.mfa_enrolment_started': login('set-up of a second factor began', ['method', 'factorId']),
  'login.mfa_enrolment_rejected': login('a second factor could not be set up', ['method', 'reason']),
  'login.mfa_enrolled': login('a second factor was set up during sign-in', ['method', 'amr']),
  'login.backup_codes_acknowledged': login('the user saw and kept the backup codes'),
  'login.password_change_rejected': login('a new (expired-password) password broke rules', ['problems']),
  'login.password_changed': login('the expired password was replaced'),
  'login.aborted': login('the user cancelled the sign-in'),
  // Consent and protocol events.
  'consent.granted': { description: 'the user consented to a client', fields: ['scopes', 'claims', 'resources'] },
  'consent.denied': { description: 'the user refused consent', fields: [] },
  'consent.revoked': { description: 'the user withdrew a client\'s access on the account page', fields: [] },
  'csrf.rejected': { description: 'a form post without its anti-forgery token', fields: ['path'] },
  'token.issued': { description: 'the token endpoint issued tokens', fields: ['grant_type'] },
  'token.failed': { description: 'the token endpoint refused a request', fields: ['error', 'error_description'] },
  'authorization.failed': { description: 'an authorization request was refused', fields: ['error', 'error_description'] },
  'introspection.failed': { description: 'an introspection request was refused', fields: ['error', 'error_description'] },
  'revocation.failed': { description: 'a revocation request was refused', fields: ['error', 'error_description'] },
  'userinfo.failed': { description: 'a userinfo request was refused', fields: ['error', 'error_description'] },
  'logout': { description: 'a user signed out (RP-initiated logout)', fields: [] },
  'logout.failed': { description: 'a logout request was refused', fields: ['error', 'error_description'] },
  'grant.revoked': { description: 'a grant and its tokens were revoked (logout, reuse of a one-time code or refresh token)', fields: ['grantId'] },
  'backchannel_logout.sent': { description: 'a client was told of a logout', fields: [] },
  'backchannel_logout.failed': { description: 'a client could not be told of a logout', fields: ['error'] },
  'server_error': { description: 'the protocol engine failed internally', fields: ['name'] },
  // Accounts and self-service.
  'account.registered': { description: 'a self-service registration', fields: ['email', 'userType'] },
  'account.registration_duplicate': { description: 'a registration for an address that is taken (or looks like one)', fields: ['email', 'reason'] },
  'account.verification_sent': { description: 'an address-verification link was mailed', fields: [] },
  'account.email_verified': { description: 'an address was confirmed', fields: [] },
  'account.email_verification_failed': { description: 'a confirmation link or password was wrong', fields: ['reason'] },
  'account.invited': { description: 'an invitation was mailed', fields: ['email', 'userType', 'resent'] },
  'account.invitation_accepted': { description: 'an invited user set a password', fields: [] },
  'password.changed': { description: 'a password was changed', fields: ['sessionsEnded'] },
  'password.change_failed': { description: 'a password change was refused', fields: ['reason'] },
  'password_reset.requested': { description: 'a reset link was mailed', fields: [] },
  'password_reset.refused': { description: 'a reset was asked for an address that gets no mail', fields: ['email', 'reason'] },
  'password_reset.completed': { description: 'a password was set through a reset link', fields: ['sessionsEnded'] },
  'mail.failed': { description: 'a mail could not be delivered', fields: ['channel', 'error'] },
  // Second factors.
  'mfa.enrolled': { description: 'a second factor was added', fields: ['method'] },
  'mfa.removed': { description: 'a second factor was removed', fields: ['method', 'factorId'] },
  'mfa.reset': { description: 'an administrator removed every second factor of a user', fields: ['factors', 'devices'] },
  'mfa.locked': { description: 'too many wrong second factors: locked for a while', fields: [] },
  'mfa.code_sent': { description: 'an email or SMS code was sent', fields: ['channel'] },
  'mfa.code_rate_limited': { description: 'a code was not sent: too many for this destination', fields: ['channel'] },
  'mfa.sms_daily_limit': { description: 'the deployment reached SMS_DAILY_LIMIT', fields: [] },
  'mfa.backup_codes_generated': { description: 'new backup codes replaced the old ones', fields: [] },
  'mfa.device_remembered': { description: 'a browser was remembered for skipping the second factor', fields: [] },
  'webauthn.counter_regression': { description: 'a passkey\'s signature counter went backwards (a cloned authenticator?)', fields: ['credentialId', 'stored', 'presented'] },
  // Sessions.
  'session.revoked': { description: 'a session was ended (user or administrator)', fields: ['sid', 'reason'] },
  'session.revoked_all': { description: 'every session of a user was ended', fields: ['count', 'reason'] },
  'session.ended_by_limit': { description: 'an older session ended for a new one (MAX_CONCURRENT_SESSIONS)', fields: ['sid', 'newSid', 'limit'] },
  // Operators.
  'user.created': { description: 'an operator created a user', fields: [] },
  'user.updated': { description: 'an operator changed a user', fields: ['fields', 'roles', 'userType'] },
  'user.disabled': { description: 'an operator disabled a user (sessions ended)', fields: ['sessionsEnded'] },
  'user.enabled': { description: 'an operator enabled a user', fields: [] },
  'user.approved': { description: 'an operator approved an external user', fields: [] },
  'user.rejected': { description: 'an operator rejected an external user', fields: [] },
  'user.unlocked': { description: 'an operator lifted a lockout', fields: [] },
  'client.created': { description: 'a client was registered', fields: ['grant_types', 'scope', 'token_endpoint_auth_method'] },
  'client.deleted': { description: 'a client was deleted', fields: [] },
  'admin_api.read': { description: 'the admin API read personal data', fields: ['path'] },
  'admin_api.rejected': { description: 'the admin API refused a caller', fields: ['error', 'method', 'path'] },
  // Signing keys.
  'key.generated': { description: 'a signing key was created', fields: ['kid', 'alg', 'kms'] },
  'key.staged': { description: 'a signing key was published ahead of signing', fields: ['kid', 'alg', 'activateAt', 'emergency', 'previous', 'removeOldAt'] },
  'key.activated': { description: 'a staged key became the signing key', fields: ['kid', 'previous'] },
  'key.retired': { description: 'a key was taken out of use', fields: ['kid', 'removeAt'] },
  'key.removed': { description: 'a key left the JWKS', fields: ['kid'] },
  'key.unwrapped': { description: 'a node unwrapped a signing key through the KMS', fields: ['kid', 'kms'] },
} as const satisfies Record<string, { description: string; fields: readonly string[] }>;

export type AuditEventType = keyof typeof auditEvents;

/** Whether `type` is in the catalogue (for names built from parts, like the login events). */
export function isAuditEventType(type: string): type is AuditEventType {
  return Object.hasOwn(auditEvents, type);
}
