//! Tickets on PostgreSQL: what its ticket SQL does differently from
//! SQLite's ([`BackendSql`]; the rest, and the locking it takes, is
//! `store::sql::tickets`): lists bind as arrays, and a timer pass claims
//! each host with its evaluation lock, never waiting for one (D21).

use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::try_lock_host;
use crate::store::StoreResult;
use crate::store::engine::tickets::{StateKey, StoredState, state_text, timer_columns};
use crate::store::sql::SendFuture;
use crate::store::sql::tickets::BackendSql;

impl BackendSql for Postgres {
    fn push_in(query: &mut QueryBuilder<Postgres>, values: &[&str]) -> StoreResult<()> {
        query.push(" = ANY(");
        query.push_bind(values);
        query.push(")");
        Ok(())
    }

    fn claim_hosts(conn: &mut PgConnection, hosts: Vec<String>) -> SendFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut claimed = Vec::with_capacity(hosts.len());
            for host in hosts {
                // A host being evaluated, or claimed by another replica's
                // pass, is left to that one.
                if try_lock_host(conn, &host).await? {
                    claimed.push(host);
                }
            }
            Ok(claimed)
        })
    }

    fn save_states<'a>(
        conn: &'a mut PgConnection,
        states: &'a [(&'a StateKey, StoredState)],
    ) -> SendFuture<'a, ()> {
        Box::pin(async move {
            for ((host, rule, subject), (state, ticket)) in states {
                if *state == crate::rules::RuleState::Ok {
                    sqlx::query(
                        "DELETE FROM rule_states WHERE host_id = $1 AND rule = $2 AND subject = $3",
                    )
                    .bind(host)
                    .bind(rule)
                    .bind(subject)
                    .execute(&mut *conn)
                    .await?;
                    continue;
                }
                let (recovering_since_ms, resolved_at_ms) = timer_columns(state);
                sqlx::query(
                    "INSERT INTO rule_states (host_id, rule, subject, state, ticket_id, \
                     recovering_since_ms, resolved_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (host_id, rule, subject) DO UPDATE \
                     SET state = excluded.state, ticket_id = excluded.ticket_id, \
                     recovering_since_ms = excluded.recovering_since_ms, \
                     resolved_at_ms = excluded.resolved_at_ms",
                )
                .bind(host)
                .bind(rule)
                .bind(subject)
                .bind(state_text(state)?)
                .bind(*ticket)
                .bind(recovering_since_ms)
                .bind(resolved_at_ms)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        })
    }
}
