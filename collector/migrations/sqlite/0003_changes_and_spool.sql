-- Issue 5: the per-host change log and what agents' spools gave up.

-- Append-only: one row per observed change of one inventory item. A host's
-- first inventory is one baseline row (section 'inventory').
CREATE TABLE host_changes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id        TEXT NOT NULL,
    observed_at_ms INTEGER NOT NULL,
    section        TEXT NOT NULL,
    item           TEXT NOT NULL,
    old_value      TEXT,
    new_value      TEXT
);
CREATE INDEX host_changes_by_host ON host_changes (host_id, observed_at_ms);
CREATE INDEX host_changes_by_time ON host_changes (observed_at_ms);

-- The agent's latest SpoolCounters message, encoded, and when it came.
ALTER TABLE hosts ADD COLUMN spool_counters BLOB;
ALTER TABLE hosts ADD COLUMN spool_counters_at_ms INTEGER;
