-- Issue 23: suggested fixes and change correlation.

-- The knowledge-base entries suggested when a ticket opened, best first,
-- written in the transaction that opened it (so its ticket.opened webhook
-- carries them). The earlier ticket's title and resolution are copied as
-- they were then, like the evidence (D23): what was suggested stays
-- readable if that ticket is reopened or its host retired.
CREATE TABLE ticket_suggestions (
    ticket_id           INTEGER NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    position            INTEGER NOT NULL,
    suggested_ticket_id INTEGER NOT NULL,
    hostname            TEXT NOT NULL,
    title               TEXT NOT NULL,
    rule                TEXT NOT NULL,
    resolution          TEXT NOT NULL,
    resolved_at_ms      INTEGER,
    score               REAL NOT NULL,
    reason              TEXT NOT NULL,
    PRIMARY KEY (ticket_id, position)
);

-- Earlier tickets of a rule that a technician resolved, newest first: the
-- "same rule" lookup reads at most a few entries of it per opened ticket,
-- however many tickets resolved by themselves. The condition is written
-- out in the same words in the query (`store::sql::suggestions`), so that
-- SQLite uses the partial index.
CREATE INDEX tickets_resolved_by_rule ON tickets (rule, resolved_at_ms)
    WHERE status IN ('resolved', 'closed') AND resolution IS NOT NULL
      AND resolution NOT IN ('', 'recovered by itself');

-- Open tickets of a rule by host: which hosts have a rule firing.
CREATE INDEX tickets_open_by_rule ON tickets (rule, host_id)
    WHERE status IN ('new', 'open', 'in_progress', 'waiting');

-- A host's changes by item and value: whether a host made a given change.
CREATE INDEX host_changes_by_item ON host_changes (host_id, item, new_value);
