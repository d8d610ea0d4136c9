//! Tickets on SQLite: what its ticket SQL does differently from
//! PostgreSQL's ([`BackendSql`]; the rest is `store::sql::tickets`). SQLite
//! has one writer, so nothing here claims a host or a ticket, and lists
//! and rows go in as one JSON text bind, unpacked by `json_each`.

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::store::StoreResult;
use crate::store::engine::tickets::{StateKey, StoredState, state_text, timer_columns};
use crate::store::rows::json_rows;
use crate::store::sql::SendFuture;
use crate::store::sql::tickets::BackendSql;

impl BackendSql for Sqlite {
    fn push_in(query: &mut QueryBuilder<Sqlite>, values: &[&str]) -> StoreResult<()> {
        // One statement text however long the list, so it is prepared once.
        query.push(" IN (SELECT value FROM json_each(");
        query.push_bind(json_rows(&values)?);
        query.push("))");
        Ok(())
    }

    fn claim_hosts(
        _conn: &mut SqliteConnection,
        hosts: Vec<String>,
    ) -> SendFuture<'_, Vec<String>> {
        // The write transaction holds the one write lock: every host is ours.
        Box::pin(async move { Ok(hosts) })
    }

    fn save_states<'a>(
        conn: &'a mut SqliteConnection,
        states: &'a [(&'a StateKey, StoredState)],
    ) -> SendFuture<'a, ()> {
        Box::pin(async move {
            let mut gone = Vec::new();
            let mut kept = Vec::new();
            for ((host, rule, subject), (state, ticket)) in states {
                if *state == crate::rules::RuleState::Ok {
                    gone.push((host, rule, subject));
                } else {
                    let (recovering_since_ms, resolved_at_ms) = timer_columns(state);
                    kept.push((
                        host,
                        rule,
                        subject,
                        state_text(state)?,
                        *ticket,
                        recovering_since_ms,
                        resolved_at_ms,
                    ));
                }
            }
            if !gone.is_empty() {
                sqlx::query(
                    "DELETE FROM rule_states WHERE (host_id, rule, subject) IN \
                     (SELECT value->>0, value->>1, value->>2 FROM json_each(?1))",
                )
                .bind(json_rows(&gone)?)
                .execute(&mut *conn)
                .await?;
            }
            if !kept.is_empty() {
                // `WHERE true` lets SQLite parse the upsert after a SELECT.
                sqlx::query(
                    "INSERT INTO rule_states (host_id, rule, subject, state, ticket_id, \
                     recovering_since_ms, resolved_at_ms) \
                     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
                     value->>6 FROM json_each(?1) \
                     WHERE true ON CONFLICT (host_id, rule, subject) DO UPDATE SET \
                     state = excluded.state, ticket_id = excluded.ticket_id, \
                     recovering_since_ms = excluded.recovering_since_ms, \
                     resolved_at_ms = excluded.resolved_at_ms",
                )
                .bind(json_rows(&kept)?)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        })
    }
}
