-- Issue 20: rotating the fleet CA (docs/ca-rotation.md). Every CA the fleet
-- has had, one row each: the active one issues host certificates; during
-- an overlap the one before it ("old") is still trusted and still signs the
-- server certificate; a retired one's host certificates are refused.
-- sealed_key is the CA's private key sealed under the key of the CA it
-- replaced, so every replica holding the fleet CA can take the new one
-- from here, and the database alone reveals no key (NULL for the first).
CREATE TABLE fleet_cas (
    sha256        TEXT PRIMARY KEY,
    cert_pem      TEXT NOT NULL,
    sealed_key    TEXT,
    sealed_by     TEXT,
    state         TEXT NOT NULL CHECK (state IN ('active', 'old', 'retired')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
);
CREATE UNIQUE INDEX fleet_cas_one_active ON fleet_cas (state) WHERE state = 'active';
CREATE UNIQUE INDEX fleet_cas_one_old ON fleet_cas (state) WHERE state = 'old';

-- Which CA issued each host's current and renewed certificate. Every
-- certificate issued before this migration came from the one fleet CA.
ALTER TABLE hosts ADD COLUMN cert_ca_sha256 TEXT;
ALTER TABLE hosts ADD COLUMN next_cert_ca_sha256 TEXT;
UPDATE hosts SET cert_ca_sha256 = (SELECT value FROM fleet_meta WHERE key = 'ca_sha256');
UPDATE hosts SET next_cert_ca_sha256 = cert_ca_sha256 WHERE next_cert_sha256 IS NOT NULL;
CREATE INDEX hosts_by_cert_ca ON hosts (cert_ca_sha256);
