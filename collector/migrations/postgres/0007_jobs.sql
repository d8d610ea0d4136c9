-- Issue 7: diagnostic jobs. A job is recorded when a technician asks, sent
-- to the agent at once or when it reconnects, and finished by the agent's
-- spooled result (D26), by a cancel, or by its expiry. The PostgreSQL port
-- of sqlite/0007.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL,
    diagnostic      TEXT NOT NULL,
    -- The encoded DiagnosticParams, and catalog::describe of them.
    params          BYTEA NOT NULL,
    params_text     TEXT NOT NULL,
    risk            TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    technician_id   TEXT,
    token_id        TEXT,
    ticket_id       BIGINT,
    -- queued, sent, completed, failed, timed_out, refused, cancelled, expired.
    state           TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    sent_at_ms      BIGINT,
    started_at_ms   BIGINT,
    finished_at_ms  BIGINT,
    exit_code       BIGINT,
    reason          TEXT,
    output          BYTEA,
    truncated       BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX jobs_by_host ON jobs (host_id, state, created_at_ms);
CREATE INDEX jobs_by_state ON jobs (state, expires_at_ms);
CREATE INDEX jobs_by_created ON jobs (created_at_ms);

-- What the agent said it enables on its last connect (D25).
ALTER TABLE hosts ADD COLUMN catalog_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN enabled_diagnostics TEXT NOT NULL DEFAULT '';
