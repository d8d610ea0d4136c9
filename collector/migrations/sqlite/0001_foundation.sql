-- The foundation schema: fleet identity, technicians and tokens, hosts with
-- their current state, report idempotency keys, and the audit log.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE fleet_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE technicians (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'technician', 'admin')),
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    technician_id TEXT NOT NULL REFERENCES technicians (id),
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY,
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    uses_allowed  INTEGER NOT NULL,
    uses_left     INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);

CREATE TABLE hosts (
    id                   TEXT PRIMARY KEY,
    hostname             TEXT NOT NULL,
    hardware_uuid        TEXT NOT NULL DEFAULT '',
    hardware_serial      TEXT NOT NULL DEFAULT '',
    cert_serial          TEXT NOT NULL,
    cert_sha256          TEXT NOT NULL,
    enrolled_at_ms       INTEGER NOT NULL,
    os_name              TEXT NOT NULL DEFAULT '',
    os_version           TEXT NOT NULL DEFAULT '',
    agent_version        TEXT NOT NULL DEFAULT '',
    health_interval_secs INTEGER NOT NULL DEFAULT 60,
    last_seen_at_ms      INTEGER,
    session_replica      TEXT,
    goodbye_reason       TEXT,
    inventory            BLOB,
    inventory_at_ms      INTEGER,
    last_health          BLOB,
    health_at_ms         INTEGER
);
CREATE INDEX hosts_by_hostname ON hosts (hostname, id);
CREATE INDEX hosts_by_hardware_uuid ON hosts (hardware_uuid) WHERE hardware_uuid <> '';
CREATE INDEX hosts_by_hardware_serial ON hosts (hardware_serial) WHERE hardware_serial <> '';

-- One row per stored report: the idempotency key of D14.
CREATE TABLE received_reports (
    host_id        TEXT NOT NULL,
    spool_id       TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (host_id, spool_id, seq)
) WITHOUT ROWID;

CREATE TABLE audit_log (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms               INTEGER NOT NULL,
    actor_technician_id TEXT,
    actor_token_id      TEXT,
    action              TEXT NOT NULL,
    subject             TEXT NOT NULL,
    detail              TEXT NOT NULL DEFAULT ''
);
