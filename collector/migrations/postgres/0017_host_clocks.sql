-- Issue 20, clocks that lie: how far each host's clock is off the
-- collector's, as its sessions last measured it (the agent's send time
-- against the receive time), and the reports whose claimed time was
-- replaced by the receive time, with the last time claimed as evidence.
-- A host's latest health is the one received last
-- (health_received_at_ms), never the one claiming the latest time: one
-- sample dated 2100 used to freeze it for good.
ALTER TABLE hosts ADD COLUMN clock_offset_ms BIGINT;
ALTER TABLE hosts ADD COLUMN clock_measured_at_ms BIGINT;
ALTER TABLE hosts ADD COLUMN clock_clamped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN clock_claimed_at_ms BIGINT;
ALTER TABLE hosts ADD COLUMN health_received_at_ms BIGINT;
