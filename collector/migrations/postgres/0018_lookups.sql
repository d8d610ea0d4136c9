-- Issue 21, lookups that help: `hosts --software` compares package names
-- without regard to case (`lower(name)`, exact or a `*` glob as LIKE), so
-- the catalog is indexed by the lowered name (text_pattern_ops: equality
-- and LIKE prefixes both use it, whatever the database's collation).
CREATE INDEX software_catalog_by_lower_name ON software_catalog (lower(name) text_pattern_ops);

-- Issue 21, tickets: a ticket reopened by hand kept its old resolution,
-- shown as current. A resolution belongs to a resolved or closed ticket
-- only; the old one stays in the worklog.
UPDATE tickets SET resolution = NULL
WHERE resolution IS NOT NULL AND status NOT IN ('resolved', 'closed');
