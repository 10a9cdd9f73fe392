-- DropIndex
DROP INDEX "AuditEvent_hash_key";

