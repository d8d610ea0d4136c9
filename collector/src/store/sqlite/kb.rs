//! The knowledge base on SQLite: an FTS5 index (`kb_fts`) of resolved and
//! closed tickets' title, resolution and technician notes, kept in step by
//! triggers (migration 0006) inside the transactions that change tickets,
//! and ranked by bm25.
//!
//! Every query here reads the full-text index first, then each match's
//! ticket by its key: `kb_fts CROSS JOIN tickets`, an order SQLite never
//! changes. Given a plain join and a filter on the ticket's status, SQLite
//! 3.51 drove the join from `tickets_by_status` instead and ran the
//! full-text query once per resolved ticket: 0.4 s for one suggestion
//! lookup on a knowledge base of 1,000 tickets, against 2 ms this way.

use sqlx::SqlitePool;

use crate::store::rows::{KB_HIT_COLUMNS, kb_hit_row};
use crate::store::{AUTO_RESOLUTION, KbHit, StoreResult};

/// bm25 column weights for (title, resolution, notes): a word in the
/// resolution says most about what fixed it, the title next.
const RANK: &str = "bm25(kb_fts, 2.0, 4.0, 1.0)";

/// Builds an FTS5 query from plain words: each one a quoted phrase (an
/// embedded quote doubled), joined with OR, so FTS5 syntax in the input
/// (`NEAR`, `*`, `:`, `-`, parentheses) is only ever text, and bm25 ranks
/// tickets matching more of the words first.
pub fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The technician's search, its binds: the full-text query, whether to
/// include tickets that recovered by themselves, [`AUTO_RESOLUTION`], the
/// limit.
fn search_sql() -> String {
    format!(
        "SELECT {KB_HIT_COLUMNS}, {RANK} AS rank \
         FROM kb_fts CROSS JOIN tickets t ON t.id = kb_fts.rowid \
         JOIN hosts h ON h.id = t.host_id \
         WHERE kb_fts MATCH ? AND (? OR t.resolution IS NOT ?) \
         ORDER BY rank, t.id DESC LIMIT ?"
    )
}

/// Matches, best first; a ticket that only recovered by itself only when
/// `include_auto`. The index keeps every resolved ticket: what a search
/// leaves out is the search's choice.
pub async fn search(
    pool: &SqlitePool,
    terms: &[String],
    limit: u32,
    include_auto: bool,
) -> StoreResult<Vec<KbHit>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(search_sql()))
        .bind(fts_query(terms))
        .bind(include_auto)
        .bind(AUTO_RESOLUTION)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(kb_hit_row).collect()
}

impl crate::store::sql::suggestions::KbSql for sqlx::Sqlite {
    const NOTES: &'static str = "(SELECT group_concat(w.note, char(10)) FROM ticket_worklog w \
         WHERE w.ticket_id = t.id AND w.author <> 'system')";
    const TEXT_RANK: &'static str = RANK;

    fn push_text_match(query: &mut sqlx::QueryBuilder<sqlx::Sqlite>, terms: &[String]) {
        query.push(
            "FROM kb_fts CROSS JOIN tickets t ON t.id = kb_fts.rowid \
             JOIN hosts h ON h.id = t.host_id WHERE kb_fts MATCH ",
        );
        query.push_bind(fts_query(terms));
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqliteRow;
    use sqlx::{QueryBuilder, Row};

    use super::*;

    /// The first step of a plan, as `EXPLAIN QUERY PLAN` words it.
    fn first_step(plan: &[SqliteRow]) -> String {
        plan.first()
            .map(|r| r.get::<String, _>("detail"))
            .unwrap_or_default()
    }

    /// Both lookups start from the full-text index (see the module doc),
    /// which SQLite's planner did not choose by itself for the suggestion
    /// lookup, even on an empty store.
    #[tokio::test]
    async fn both_lookups_read_the_full_text_index_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::super::SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("open");
        let terms = vec!["disk".to_owned(), "full".to_owned()];

        let mut suggestion = QueryBuilder::new("EXPLAIN QUERY PLAN ");
        crate::store::sql::suggestions::push_text_matches(&mut suggestion, &terms, 30);
        let suggestion = suggestion
            .build()
            .fetch_all(&store.pool)
            .await
            .expect("suggestion plan");
        let search = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            search_sql()
        )))
        .bind(fts_query(&terms))
        .bind(false)
        .bind(AUTO_RESOLUTION)
        .bind(20_i64)
        .fetch_all(&store.pool)
        .await
        .expect("search plan");

        for (lookup, plan) in [("suggestion", suggestion), ("search", search)] {
            let first = first_step(&plan);
            assert!(
                first.starts_with("SCAN kb_fts"),
                "the {lookup} lookup starts with {first:?}"
            );
        }
    }
}
