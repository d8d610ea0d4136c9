-- D28: the audit log becomes a hash chain. Each row carries its place in the
-- chain (seq, 1, 2, 3, ... with no gaps), the hash of the row before it
-- (prev_hash; 64 zeros for the first) and its own hash, SHA-256 over the
-- canonical encoding in collector/src/audit/chain.rs.
--
-- The hashes cannot be computed in SQL (SQLite has no SHA-256), so rows
-- written before this migration get seq, prev_hash and hash on the first
-- open after it (SqliteStore::open -> chain_unchained), in one transaction,
-- before anything else can append. The columns are therefore nullable here;
-- every append since fills them in the same statement that inserts the row.
ALTER TABLE audit_log ADD COLUMN seq INTEGER;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_by_seq ON audit_log (seq);
-- Only pre-migration rows are ever unchained; the partial index keeps the
-- check at each open cheap.
CREATE INDEX audit_log_unchained ON audit_log (id) WHERE hash IS NULL;
CREATE INDEX audit_log_by_time ON audit_log (at_ms);

-- The chain head: one row, the last seq and its hash. Every append updates
-- it in the appending transaction, which serialises appends: on SQLite the
-- UPDATE takes the database write lock; on PostgreSQL the same UPDATE (or
-- SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE) locks the row,
-- so two replicas can never both extend the same seq and fork the chain.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
