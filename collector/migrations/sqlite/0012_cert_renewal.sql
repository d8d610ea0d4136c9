-- Issue 20: host certificates renew over the agent's session. A renewed
-- certificate waits here until the agent connects with it (proof that it
-- stored the new pair); then it becomes the host's current certificate and
-- the old one stops working. Until then the old one keeps working, so an
-- agent that crashes mid-renewal still has a pair the collector accepts.
ALTER TABLE hosts ADD COLUMN next_cert_serial TEXT;
ALTER TABLE hosts ADD COLUMN next_cert_sha256 TEXT;
