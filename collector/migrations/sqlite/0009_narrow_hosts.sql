-- Issue 8: the inventory (tens of KB encoded) leaves the hosts row. Every
-- health report updates hosts.last_health and last_seen_at_ms, and SQLite
-- rewrites a whole record to update one column: with the inventory inline
-- that meant reading and rewriting its overflow pages on every report.
-- A rowid table, not WITHOUT ROWID: its rows are large.
CREATE TABLE host_inventories (
    host_id         TEXT PRIMARY KEY,
    inventory       BLOB NOT NULL,
    inventory_at_ms INTEGER NOT NULL
);

INSERT INTO host_inventories (host_id, inventory, inventory_at_ms)
SELECT id, inventory, inventory_at_ms FROM hosts
WHERE inventory IS NOT NULL AND inventory_at_ms IS NOT NULL;

ALTER TABLE hosts DROP COLUMN inventory;
ALTER TABLE hosts DROP COLUMN inventory_at_ms;
