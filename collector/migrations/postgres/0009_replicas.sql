-- Replicas sharing this database and when each last said it was alive:
-- the stream markers (hosts.session_replica) of a replica that stopped
-- saying so are cleared by the others, so a crashed replica's hosts do not
-- look online forever.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    alive_at_ms BIGINT NOT NULL
);
