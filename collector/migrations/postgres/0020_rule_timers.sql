-- Issue 21, timers fire on time: when each waiting rule state's timer
-- started, in columns the timer task can take the earliest of through an
-- index (the state's JSON says the same). recovering_since_ms is set while
-- the state is recovering (the quiet period runs from it), resolved_at_ms
-- while it is resolved (the reopen window runs from it); NULL otherwise.
-- The policy's quiet period and reopen window are added when read, so a
-- changed policy needs no rewrite.
ALTER TABLE rule_states ADD COLUMN recovering_since_ms BIGINT;
ALTER TABLE rule_states ADD COLUMN resolved_at_ms BIGINT;
UPDATE rule_states SET recovering_since_ms = (state::json ->> 'since_ms')::BIGINT
    WHERE state LIKE '{"phase":"recovering"%';
UPDATE rule_states SET resolved_at_ms = (state::json ->> 'resolved_at_ms')::BIGINT
    WHERE state LIKE '{"phase":"resolved"%';
CREATE INDEX rule_states_by_recovering ON rule_states (recovering_since_ms)
    WHERE recovering_since_ms IS NOT NULL;
CREATE INDEX rule_states_by_resolved ON rule_states (resolved_at_ms)
    WHERE resolved_at_ms IS NOT NULL;
-- Whether a host with an open offline ticket streams again is asked
-- every 2 s: by rule, not by reading every state.
CREATE INDEX rule_states_by_rule ON rule_states (rule);
