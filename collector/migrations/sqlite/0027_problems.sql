-- Issue 23, fleet-wide problems: tickets of the same rule (or the same
-- employee report text) from many hosts within a short window, linked
-- under one problem (`store::engine::problems`).
CREATE TABLE problems (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 'rule' or 'report'.
    kind              TEXT NOT NULL,
    -- The rule's name, or the report's normalised text.
    group_key         TEXT NOT NULL,
    -- kind || ':' || group_key while tickets may still join it; NULL
    -- once it is resolved or a later outbreak of its key took over. The
    -- unique index is what keeps two replicas from each opening a problem
    -- for the same key.
    gathering_key     TEXT,
    title             TEXT NOT NULL,
    -- open or resolved.
    status            TEXT NOT NULL,
    -- P1…P4, from the number of hosts and their criticality.
    priority          TEXT NOT NULL,
    hosts             INTEGER NOT NULL DEFAULT 0,
    tickets           INTEGER NOT NULL DEFAULT 0,
    open_tickets      INTEGER NOT NULL DEFAULT 0,
    -- Its hosts' weight in quarters (criticality high 16, medium 4, low 1)
    -- and its tickets' best priority: what its priority is raised from,
    -- kept so a ticket joining adds to them instead of recounting.
    weight_quarters   INTEGER NOT NULL DEFAULT 0,
    best_ticket_priority TEXT NOT NULL DEFAULT 'P4',
    opened_at_ms      INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    -- When its latest ticket joined: tickets join within the window of it.
    last_joined_at_ms INTEGER NOT NULL,
    resolved_at_ms    INTEGER,
    resolved_by       TEXT,
    resolution        TEXT
);
CREATE UNIQUE INDEX problems_gathering ON problems (gathering_key);
CREATE INDEX problems_by_status ON problems (status, id);

-- Every ticket that could join a problem (rule and employee-report
-- tickets), with its group key; problem_id once it joined one.
CREATE TABLE problem_tickets (
    ticket_id         INTEGER PRIMARY KEY,
    gathering_key     TEXT NOT NULL,
    host_id           TEXT NOT NULL,
    priority          TEXT NOT NULL,
    opened_at_ms      INTEGER NOT NULL,
    problem_id        INTEGER
);
-- The one count on the ingest path: unlinked tickets of a key in the window.
CREATE INDEX problem_tickets_unlinked ON problem_tickets (gathering_key, opened_at_ms)
    WHERE problem_id IS NULL;
CREATE INDEX problem_tickets_by_problem ON problem_tickets (problem_id, host_id)
    WHERE problem_id IS NOT NULL;

-- A problem's timeline: opened, hosts joining, priority raised, resolved.
CREATE TABLE problem_log (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    problem_id        INTEGER NOT NULL,
    at_ms             INTEGER NOT NULL,
    author            TEXT NOT NULL,
    note              TEXT NOT NULL
);
CREATE INDEX problem_log_by_problem ON problem_log (problem_id, at_ms);
