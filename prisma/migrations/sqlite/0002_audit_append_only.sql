-- Hand-written: the audit log is append-only (see the PostgreSQL twin of this file).
CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON "AuditEvent"
BEGIN
  SELECT RAISE(ABORT, 'AuditEvent is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON "AuditEvent"
BEGIN
  SELECT RAISE(ABORT, 'AuditEvent is append-only: DELETE refused');
END;
