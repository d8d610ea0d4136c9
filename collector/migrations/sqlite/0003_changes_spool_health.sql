-- Issue 5: the per-host change log, what agents' spools gave up, and
-- health history.

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

-- Health as a time series: raw samples (resolution_s 0), downsampled to
-- hourly rows (resolution_s 3600) once past the raw retention, deleted past
-- the health retention.
CREATE TABLE health_samples (
    host_id               TEXT NOT NULL,
    resolution_s          INTEGER NOT NULL,
    at_ms                 INTEGER NOT NULL,
    samples               INTEGER NOT NULL,
    cpu_percent           REAL NOT NULL,
    cpu_max_percent       REAL NOT NULL,
    memory_used_percent   REAL NOT NULL,
    disk_used_max_percent REAL NOT NULL,
    PRIMARY KEY (host_id, resolution_s, at_ms)
) WITHOUT ROWID;
CREATE INDEX health_samples_by_time ON health_samples (resolution_s, at_ms);
