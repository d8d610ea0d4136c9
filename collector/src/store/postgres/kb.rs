//! The knowledge base on PostgreSQL full-text search: `kb_fts` holds one
//! weighted `tsvector` per resolved or closed ticket (title, resolution and
//! technician notes, as SQLite's FTS5 table), kept in step by the triggers
//! of migration 0006 inside the transactions that change tickets, searched
//! through its GIN index and ranked by `ts_rank`.

use sqlx::PgPool;

use crate::store::rows::{KB_HIT_COLUMNS, kb_hit_row};
use crate::store::{AUTO_RESOLUTION, KbHit, StoreResult};

/// `ts_rank` weights for the {D, C, B, A} labels; C is the notes, B the
/// title, A the resolution: 1 : 2 : 4, the proportions of SQLite's bm25
/// column weights.
const RANK: &str = "ts_rank('{0.1, 0.25, 0.5, 1.0}', k.document, q.query)";

/// Builds a `websearch_to_tsquery` input from plain words: each one a
/// quoted phrase (a quote inside dropped), joined with `or`, so search
/// syntax in the input (`-`, `or`, quotes) is only ever text, and tickets
/// matching more of the words rank first, as on SQLite.
/// `websearch_to_tsquery` never fails on its input, whatever it holds.
pub fn ts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', " ")))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Matches, best first; a ticket that only recovered by itself only when
/// `include_auto`. `rank` is the negated `ts_rank`, so that, as on SQLite,
/// a lower rank is a better match.
pub async fn search(
    pool: &PgPool,
    terms: &[String],
    limit: u32,
    include_auto: bool,
) -> StoreResult<Vec<KbHit>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {KB_HIT_COLUMNS}, -{RANK}::float8 AS rank \
         FROM (SELECT websearch_to_tsquery('english', $1) AS query) q \
         JOIN kb_fts k ON k.document @@ q.query \
         JOIN tickets t ON t.id = k.ticket_id JOIN hosts h ON h.id = t.host_id \
         WHERE $3 OR t.resolution IS DISTINCT FROM $4 \
         ORDER BY rank, t.id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ts_query(terms))
        .bind(i64::from(limit))
        .bind(include_auto)
        .bind(AUTO_RESOLUTION)
        .fetch_all(pool)
        .await?;
    rows.iter().map(kb_hit_row).collect()
}

impl crate::store::sql::suggestions::KbSql for sqlx::Postgres {
    const NOTES: &'static str = "(SELECT string_agg(w.note, E'\\n' ORDER BY w.id) \
         FROM ticket_worklog w WHERE w.ticket_id = t.id AND w.author <> 'system')";
    const TEXT_RANK: &'static str =
        "-ts_rank('{0.1, 0.25, 0.5, 1.0}', k.document, q.query)::float8";

    fn push_text_match(query: &mut sqlx::QueryBuilder<sqlx::Postgres>, terms: &[String]) {
        query.push("FROM (SELECT websearch_to_tsquery('english', ");
        query.push_bind(ts_query(terms));
        query.push(
            ") AS query) q JOIN kb_fts k ON k.document @@ q.query \
             JOIN tickets t ON t.id = k.ticket_id JOIN hosts h ON h.id = t.host_id WHERE TRUE",
        );
    }
}
