-- Issue 22, the web console: local accounts (a technician who signs in
-- with a password instead of an API token) and the console's sessions.
-- A password is kept only as an Argon2id PHC string; a session's cookie
-- value only as its SHA-256. A session signed in with an API token names
-- the token, so revoking or expiring the token ends the session too.

CREATE TABLE local_users (
    technician_id      TEXT PRIMARY KEY REFERENCES technicians (id),
    password_hash      TEXT NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    password_set_at_ms INTEGER NOT NULL
);

CREATE TABLE web_sessions (
    id              TEXT PRIMARY KEY,
    secret_sha256   TEXT NOT NULL UNIQUE,
    technician_id   TEXT NOT NULL REFERENCES technicians (id),
    api_token_id    TEXT REFERENCES api_tokens (id),
    csrf_token      TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    last_seen_at_ms INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL
);
CREATE INDEX web_sessions_by_technician ON web_sessions (technician_id);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at_ms);
