//! The knowledge base on SQLite: an FTS5 index (`kb_fts`) of resolved and
//! closed tickets' title, resolution and technician notes, kept in step by
//! triggers (migration 0006) inside the transactions that change tickets,
//! and ranked by bm25.

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
    let sql = format!(
        "SELECT {KB_HIT_COLUMNS}, {RANK} AS rank \
         FROM kb_fts JOIN tickets t ON t.id = kb_fts.rowid JOIN hosts h ON h.id = t.host_id \
         WHERE kb_fts MATCH ? AND (? OR t.resolution IS NOT ?) \
         ORDER BY rank, t.id DESC LIMIT ?"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
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
            "FROM kb_fts JOIN tickets t ON t.id = kb_fts.rowid JOIN hosts h ON h.id = t.host_id \
             WHERE kb_fts MATCH ",
        );
        query.push_bind(fts_query(terms));
    }
}
