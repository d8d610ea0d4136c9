-- Issue 20: an enrollment re-links to an existing host only with an
-- admin's say. A re-link token names the one host it may re-link; an
-- ordinary token (NULL here) always makes a new host.
ALTER TABLE enrollment_tokens ADD COLUMN relink_host_id TEXT;
