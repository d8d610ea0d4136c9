-- Issue 23: notifications. A webhook has a format (generic signed JSON,
-- slack, teams, or email through the collector's SMTP server) and may be
-- limited to some priorities or to the tickets of one assignee. An e-mail
-- is an outbox row like any delivery, with the address it goes to.

-- generic, slack, teams or email.
ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'generic';
-- Priorities, comma-separated (P1,P2); empty for every priority.
ALTER TABLE webhooks ADD COLUMN priorities TEXT NOT NULL DEFAULT '';
-- Only tickets assigned to this technician; NULL for any ticket.
ALTER TABLE webhooks ADD COLUMN assignee TEXT;

-- The e-mail address of an e-mail delivery, resolved when the event was
-- queued (a fixed address, or the employee who reported); NULL otherwise.
ALTER TABLE webhook_outbox ADD COLUMN recipient TEXT;
