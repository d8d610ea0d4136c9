-- Issue 20: the approval queue. An enrollment under an ordinary token that
-- claims the hardware identity of an existing host gets a new host id, as
-- before, and one pending request per host it matched; an admin approves
-- it (the new enrollment takes over the existing host) or denies it (the
-- new host stays separate). The CSR is kept so that approval can issue the
-- agent a certificate for the existing host with the key it already holds.
CREATE TABLE relink_requests (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    claimed_host_id  TEXT NOT NULL,
    new_host_id      TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    hardware_uuid    TEXT NOT NULL,
    hardware_serial  TEXT NOT NULL,
    source_addr      TEXT NOT NULL,
    token_id         TEXT NOT NULL,
    csr_der          BLOB NOT NULL,
    -- The certificate the new enrollment was issued (its interim host's).
    new_cert_sha256  TEXT NOT NULL,
    requested_at_ms  BIGINT NOT NULL,
    -- pending, approved, denied, or void (its new host was approved for
    -- another request or is gone).
    status           TEXT NOT NULL DEFAULT 'pending',
    decided_at_ms    BIGINT,
    decided_by       TEXT,
    -- After approval: the certificate issued for the claimed host, handed
    -- to the agent when it next connects with its interim certificate.
    relinked_cert_pem TEXT
);
CREATE INDEX relink_requests_by_status ON relink_requests (status, id);
CREATE INDEX relink_requests_by_new_host ON relink_requests (new_host_id);
