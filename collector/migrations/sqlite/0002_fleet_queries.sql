-- What fleet queries need, kept beside each host's inventory blob (D15).

-- Interned (ecosystem, name, version) with a byte-sortable version key, so
-- "openssl < 3.0.13" is an index range scan.
CREATE TABLE software_catalog (
    id          INTEGER PRIMARY KEY,
    ecosystem   TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    version_key BLOB NOT NULL,
    UNIQUE (ecosystem, name, version)
);
CREATE INDEX software_catalog_by_name ON software_catalog (name, ecosystem, version_key);

-- Which catalog rows each host has installed.
CREATE TABLE host_software (
    host_id    TEXT NOT NULL,
    catalog_id INTEGER NOT NULL,
    PRIMARY KEY (host_id, catalog_id)
) WITHOUT ROWID;
CREATE INDEX host_software_by_catalog ON host_software (catalog_id, host_id);

-- Searchable facts: kind is user, ip, mac, serial, model or os; values are
-- lowercased.
CREATE TABLE host_facts (
    kind    TEXT NOT NULL,
    value   TEXT NOT NULL,
    host_id TEXT NOT NULL,
    PRIMARY KEY (kind, value, host_id)
) WITHOUT ROWID;
CREATE INDEX host_facts_by_host ON host_facts (host_id);

-- Free space per filesystem, from the latest inventory or health sample.
CREATE TABLE host_filesystems (
    host_id      TEXT NOT NULL,
    mount_point  TEXT NOT NULL,
    free_percent REAL NOT NULL,
    PRIMARY KEY (host_id, mount_point)
) WITHOUT ROWID;
CREATE INDEX host_filesystems_by_free ON host_filesystems (free_percent);

-- Tags set by technicians, e.g. criticality=high, site=berlin.
CREATE TABLE host_tags (
    host_id TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (host_id, key)
) WITHOUT ROWID;
CREATE INDEX host_tags_by_pair ON host_tags (key, value);
