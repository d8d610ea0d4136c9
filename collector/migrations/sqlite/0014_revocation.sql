-- Issue 20: revocation. A revoked host's certificates (current and any
-- renewed one waiting) are refused from the moment this commits; the
-- replicas cut its live session (relay notification, and the revocation
-- poll that reads recent rows through the partial indexes below).
ALTER TABLE hosts ADD COLUMN revoked_at_ms INTEGER;
ALTER TABLE hosts ADD COLUMN revoked_by TEXT;
ALTER TABLE hosts ADD COLUMN revoked_reason TEXT;
CREATE INDEX hosts_by_revoked_at ON hosts (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;

-- API tokens: an optional expiry, the last use (written at most once a
-- minute per token), and who revoked one.
ALTER TABLE api_tokens ADD COLUMN expires_at_ms INTEGER;
ALTER TABLE api_tokens ADD COLUMN last_used_at_ms INTEGER;
ALTER TABLE api_tokens ADD COLUMN revoked_by TEXT;
CREATE INDEX api_tokens_by_revoked_at ON api_tokens (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;

-- Enrollment tokens: a revoked one enrolls nothing.
ALTER TABLE enrollment_tokens ADD COLUMN revoked_at_ms INTEGER;
ALTER TABLE enrollment_tokens ADD COLUMN revoked_by TEXT;
