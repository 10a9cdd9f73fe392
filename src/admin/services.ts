// What the operator commands (CLI and admin API) need of the IdP: the domain services, never the
// composition root itself.
import type Provider from 'oidc-provider';
import type { SelfService } from '../accounts/self-service.ts';
import type { AccountService } from '../accounts/service.ts';
import type { AuditLog } from '../audit/log.ts';
import type { ClientService } from '../clients/service.ts';
import type { Config } from '../config.ts';
import type { ConnectionService } from '../federation/connections.ts';
import type { KeyLifecycle } from '../keys/lifecycle.ts';
import type { MfaService } from '../mfa/service.ts';
import type { SessionService } from '../sessions/service.ts';
import type { SigningKeyStore } from '../store/signing-keys.ts';

export interface AdminServices {
  config: Config;
  accounts: AccountService;
  selfService: SelfService;
  sessions: SessionService;
  clients: ClientService;
  connections: ConnectionService;
  mfa: MfaService;
  audit: AuditLog;
  keys: SigningKeyStore;
  keyLifecycle: KeyLifecycle;
  /** The current oidc-provider instance: admin tokens are read from its store. */
  readonly provider: Provider;
}
