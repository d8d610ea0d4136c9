-- Issue 8: host_software keyed by a small integer per host instead of the
-- host's text id. A first inventory writes about 1,000 rows; with a text
-- id (36 bytes, random order) every row landed at a random place in a
-- b-tree of millions and the page cache thrashed. Keys are handed out in
-- order, so a new host's rows append to the end of the primary key, and
-- each row is a few bytes.
-- A table of its own rather than hosts.rowid: VACUUM may renumber the
-- implicit rowid of a table whose key is not INTEGER PRIMARY KEY.
CREATE TABLE host_keys (
    key     INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL UNIQUE
);

INSERT INTO host_keys (host_id) SELECT DISTINCT host_id FROM host_software ORDER BY host_id;

CREATE TABLE host_software_by_key (
    host_key   INTEGER NOT NULL,
    catalog_id INTEGER NOT NULL,
    PRIMARY KEY (host_key, catalog_id)
) WITHOUT ROWID;

INSERT INTO host_software_by_key (host_key, catalog_id)
SELECT k.key, s.catalog_id FROM host_software s JOIN host_keys k ON k.host_id = s.host_id
ORDER BY k.key, s.catalog_id;

DROP TABLE host_software;
ALTER TABLE host_software_by_key RENAME TO host_software;
CREATE INDEX host_software_by_catalog ON host_software (catalog_id, host_key);
