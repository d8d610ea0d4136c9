-- Issue 20: the idempotency keys of the employee reports a ticket was
-- raised for, per host. An agent whose state dir was rolled back (a VM
-- snapshot restored) sends acknowledged reports again, whose
-- received_reports keys the collector has already forgotten (it keeps only
-- those at or above the spool's held_from_seq); their keys, made when the
-- employee reported, are remembered here. A key is forgotten after a year (store::sql::tickets::
-- USER_REPORT_KEY_RETENTION_MS), when its host next reports an issue.
CREATE TABLE user_report_keys (
    host_id     TEXT NOT NULL,
    report_key  TEXT NOT NULL,
    raised_at_ms BIGINT NOT NULL,
    PRIMARY KEY (host_id, report_key)
);
