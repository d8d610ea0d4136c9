-- Issue 6: webhooks (fleet policy, D7) with their delivery outbox, and the
-- knowledge base: a full-text index of resolved tickets.

CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- http:// or https://, checked before it is stored.
    url           TEXT NOT NULL,
    -- The subscribed events, comma-separated: ticket.opened,ticket.updated,...
    events        TEXT NOT NULL,
    -- The HMAC key that signs every payload. Unlike API tokens it must be
    -- stored as given (a hash cannot sign); no API ever returns it.
    secret        TEXT NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);

-- One row per (ticket event, matching webhook), written in the transaction
-- of the ticket change. The body is the signed JSON, fixed at that moment.
CREATE TABLE webhook_outbox (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id         INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    delivery_id        TEXT NOT NULL UNIQUE,
    event              TEXT NOT NULL,
    ticket_id          INTEGER NOT NULL,
    body               TEXT NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    -- pending, delivered or failed (gave up).
    state              TEXT NOT NULL DEFAULT 'pending',
    attempts           INTEGER NOT NULL DEFAULT 0,
    -- A pending row is due from this time; claiming it pushes this out by
    -- a lease, so a crashed delivery is retried once the lease ends.
    next_attempt_at_ms INTEGER NOT NULL,
    last_attempt_at_ms INTEGER,
    -- The receiver's HTTP status, or NULL when no response came.
    last_status        INTEGER,
    last_error         TEXT,
    delivered_at_ms    INTEGER
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at_ms);
CREATE INDEX webhook_outbox_by_webhook ON webhook_outbox (webhook_id, state);
-- A ticket's events go to each receiver in order: only the oldest pending
-- row of a (webhook, ticket) may be claimed.
CREATE INDEX webhook_outbox_by_ticket ON webhook_outbox (webhook_id, ticket_id, state, id);

-- The knowledge base: resolved and closed tickets' title, resolution and
-- technician notes (system notes left out), rowid = ticket id. Porter
-- stemming lets "crash" find "crashes".
CREATE VIRTUAL TABLE kb_fts USING fts5 (
    title, resolution, notes,
    tokenize = 'porter unicode61'
);

-- Triggers keep the index in step inside whatever transaction resolves,
-- reopens, retitles or annotates a ticket, so no code path can forget it.
CREATE TRIGGER kb_ticket_changed AFTER UPDATE OF status, resolution, title ON tickets
BEGIN
    DELETE FROM kb_fts WHERE rowid = old.id;
    INSERT INTO kb_fts (rowid, title, resolution, notes)
    SELECT new.id, new.title, COALESCE(new.resolution, ''),
           COALESCE((SELECT group_concat(note, char(10)) FROM ticket_worklog
                     WHERE ticket_id = new.id AND author <> 'system'), '')
    WHERE new.status IN ('resolved', 'closed');
END;

CREATE TRIGGER kb_note_added AFTER INSERT ON ticket_worklog
WHEN new.author <> 'system'
BEGIN
    DELETE FROM kb_fts WHERE rowid = new.ticket_id;
    INSERT INTO kb_fts (rowid, title, resolution, notes)
    SELECT t.id, t.title, COALESCE(t.resolution, ''),
           COALESCE((SELECT group_concat(note, char(10)) FROM ticket_worklog
                     WHERE ticket_id = t.id AND author <> 'system'), '')
    FROM tickets t WHERE t.id = new.ticket_id AND t.status IN ('resolved', 'closed');
END;

CREATE TRIGGER kb_ticket_deleted AFTER DELETE ON tickets
BEGIN
    DELETE FROM kb_fts WHERE rowid = old.id;
END;

-- Tickets resolved before this migration.
INSERT INTO kb_fts (rowid, title, resolution, notes)
SELECT t.id, t.title, COALESCE(t.resolution, ''),
       COALESCE((SELECT group_concat(note, char(10)) FROM ticket_worklog
                 WHERE ticket_id = t.id AND author <> 'system'), '')
FROM tickets t WHERE t.status IN ('resolved', 'closed');
