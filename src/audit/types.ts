// What the rest of the code hands to the audit log. Never put secrets, passwords or tokens in
// `details`: it is stored verbatim and kept forever.
import type { AuditEventType } from './events.ts';

export type AuditOutcome = 'success' | 'failure';

export interface AuditInput {
  /** One of the catalogue (src/audit/events.ts). */
  type: AuditEventType;
  outcome: AuditOutcome;
  actor?: string | null | undefined;
  subject?: string | null | undefined;
  clientId?: string | null | undefined;
  requestId?: string | null | undefined;
  ip?: string | null | undefined;
  userAgent?: string | null | undefined;
  details?: Record<string, unknown>;
}

export interface AuditSink {
  record(event: AuditInput): Promise<void>;
}
