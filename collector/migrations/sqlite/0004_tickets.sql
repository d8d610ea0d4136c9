-- Issue 6 (groundwork): rule state per (host, rule, subject) (D20, D21) and
-- the tickets health rules open.

CREATE TABLE rule_states (
    host_id   TEXT NOT NULL,
    rule      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    -- The RuleState as JSON, e.g. {"phase":"pending","since_ms":...}.
    state     TEXT NOT NULL,
    -- The ticket this (host, rule, subject) opened, while it can reopen.
    ticket_id INTEGER,
    PRIMARY KEY (host_id, rule, subject)
) WITHOUT ROWID;

CREATE TABLE tickets (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id           TEXT NOT NULL,
    -- The rule that opened it; empty for a manual ticket.
    rule              TEXT NOT NULL,
    subject           TEXT NOT NULL,
    title             TEXT NOT NULL,
    -- new, open, in_progress, waiting, resolved, closed.
    status            TEXT NOT NULL,
    priority          TEXT NOT NULL,
    severity          TEXT NOT NULL,
    assignee          TEXT,
    escalation        INTEGER NOT NULL DEFAULT 0,
    occurrences       INTEGER NOT NULL DEFAULT 1,
    flaps             INTEGER NOT NULL DEFAULT 0,
    opened_at_ms      INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    resolved_at_ms    INTEGER,
    response_due_ms   INTEGER NOT NULL,
    resolution_due_ms INTEGER NOT NULL,
    -- What fired it, copied (D23): JSON; '{}' for a manual ticket.
    evidence          TEXT NOT NULL,
    -- The first technician action: meets the response target (D22).
    responded_at_ms   INTEGER,
    -- While waiting, the SLA clock is paused from this time (D22).
    waiting_since_ms  INTEGER,
    -- Set once the response or resolution target was missed and escalated.
    response_breached   INTEGER NOT NULL DEFAULT 0,
    resolution_breached INTEGER NOT NULL DEFAULT 0,
    -- How it was resolved, for the knowledge base.
    resolution        TEXT
);
CREATE INDEX tickets_by_status ON tickets (status, priority, resolution_due_ms);
CREATE INDEX tickets_by_host ON tickets (host_id, opened_at_ms);

CREATE TABLE ticket_worklog (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    author    TEXT NOT NULL,
    note      TEXT NOT NULL
);
CREATE INDEX ticket_worklog_by_ticket ON ticket_worklog (ticket_id, at_ms);
