-- Issue 21, the catalog tells the truth: the diagnostics a host's agent
-- enables but cannot run there (a program not installed), as its last
-- Hello said, one "id<TAB>reason" line each; empty when it can run them
-- all or did not say (agents older than issue 21).
ALTER TABLE hosts ADD COLUMN unavailable_diagnostics TEXT NOT NULL DEFAULT '';
