-- Issue 21, retiring a host: a PC gone for good leaves the fleet lists and
-- raises no more tickets, and its history stays. Retiring also revokes it
-- (revoked_at_ms), so a PC that comes back must enroll again.
ALTER TABLE hosts ADD COLUMN retired_at_ms INTEGER;
ALTER TABLE hosts ADD COLUMN retired_by TEXT;
ALTER TABLE hosts ADD COLUMN retired_reason TEXT;
CREATE INDEX hosts_by_retired_at ON hosts (retired_at_ms) WHERE retired_at_ms IS NOT NULL;
