-- D28: the audit log becomes a hash chain. Each row carries its place in the
-- chain (seq, 1, 2, 3, ... with no gaps), the hash of the row before it
-- (prev_hash; 64 zeros for the first) and its own hash, SHA-256 over the
-- canonical encoding in collector/src/audit/chain.rs. The PostgreSQL port
-- of sqlite/0008.
--
-- The hashes are computed in Rust on both backends, so the two can never
-- disagree on the encoding. Rows written before this migration (none on a
-- fresh database) are chained on the first open after it
-- (postgres::audit::chain_unchained), which is why the columns are
-- nullable; every append since fills them in the statement that inserts
-- the row.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_by_seq ON audit_log (seq);
-- Only pre-migration rows are ever unchained; the partial index keeps the
-- check at each open cheap.
CREATE INDEX audit_log_unchained ON audit_log (id) WHERE hash IS NULL;
CREATE INDEX audit_log_by_time ON audit_log (at_ms);

-- The chain head: one row, the last seq and its hash. Every append locks
-- it first (SELECT ... FOR UPDATE) in the appending transaction, so two
-- replicas can never both extend the same seq and fork the chain.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
