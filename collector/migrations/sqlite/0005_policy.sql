-- Issue 6: fleet policy in the store (D7). Each `deskpulse rules apply`
-- appends a version; the newest is in force, older ones are history.
CREATE TABLE fleet_policy (
    version       INTEGER PRIMARY KEY AUTOINCREMENT,
    text          TEXT NOT NULL,
    applied_by    TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL
);

CREATE INDEX tickets_by_assignee ON tickets (assignee, status);
CREATE INDEX tickets_by_rule ON tickets (rule, opened_at_ms);


