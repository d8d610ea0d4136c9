-- Issue 23: the employee's side.
--
-- A technician may mark a worklog note public: the employee who reported
-- the ticket reads it with `deskpulse-agent my-tickets`. Every other note
-- stays private (the default), and never leaves the collector except to
-- technicians.
ALTER TABLE ticket_worklog ADD COLUMN is_public INTEGER NOT NULL DEFAULT 0;

-- The ticket an employee's report key raised or was counted on, so the
-- collector's Ack of the report tells the agent the ticket number (also
-- when the report is sent again). NULL for keys claimed before 0025.
ALTER TABLE user_report_keys ADD COLUMN ticket_id INTEGER;

-- Who reported each employee ticket from which host: the OS user the agent
-- named from the connection (never from text). `my-tickets` reads a
-- reporter's tickets on their own host from here. A repeat of the same
-- text by another user of the PC adds that user too.
CREATE TABLE ticket_reporters (
    ticket_id      INTEGER NOT NULL,
    host_id        TEXT NOT NULL,
    os_user        TEXT NOT NULL,
    reported_at_ms INTEGER NOT NULL,
    PRIMARY KEY (ticket_id, os_user)
) WITHOUT ROWID;
CREATE INDEX ticket_reporters_by_host_user ON ticket_reporters (host_id, os_user, ticket_id);
