//! The audit log as a hash chain (D28): the one append path, the head row
//! that serialises appends, chaining the rows written before migration
//! 0008, and the reads that listing and verification need.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::audit::chain::{self, Link};
use crate::store::{AuditEntry, AuditHead, AuditQuery, AuditRecord, StoreError, StoreResult};

/// Appends one entry on `conn`, which must be inside a transaction: the
/// head row is moved on and the row inserted with its hash, so the entry,
/// the head and the caller's action commit or roll back together.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    entry: &AuditEntry,
    now_ms: i64,
) -> StoreResult<()> {
    // The UPDATE comes first so the write lock is taken before the head is
    // read: no other writer can read the same head and fork the chain. On
    // PostgreSQL this is `SELECT seq, hash FROM audit_head WHERE id = 1 FOR
    // UPDATE` followed by the same statements.
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("hash")?;
    let hash = chain::entry_hash(&Link {
        seq,
        at_ms: now_ms,
        technician_id: entry.technician_id.as_deref(),
        token_id: entry.token_id.as_deref(),
        action: &entry.action,
        subject: &entry.subject,
        detail: &entry.detail,
        prev_hash: &prev_hash,
    });
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor_technician_id, actor_token_id, action, subject, \
         detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(now_ms)
    .bind(&entry.technician_id)
    .bind(&entry.token_id)
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = ? WHERE id = 1")
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The fleet_meta key set once the pre-0008 rows are chained.
const LEGACY_CHAINED: &str = "audit_legacy_chained";

/// Chains the rows written before migration 0008 (they have no hash), in id
/// order, after whatever is chained already. Done on open rather than in
/// the migration because SQLite's SQL has no SHA-256. It happens once: the
/// marker in fleet_meta makes later opens leave an unchained row alone, so
/// a row inserted by hand is reported by verify instead of being adopted.
pub(super) async fn chain_unchained(writer: &super::Writer) -> StoreResult<u64> {
    let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = ?")
        .bind(LEGACY_CHAINED)
        .fetch_optional(writer.pool())
        .await?;
    if done.is_some() {
        return Ok(0);
    }
    let mut tx = super::begin_write(writer).await?;
    // Checked again under the write lock: two processes may open at once.
    let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = ?")
        .bind(LEGACY_CHAINED)
        .fetch_optional(&mut *tx)
        .await?;
    if done.is_some() {
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT id, at_ms, actor_technician_id, actor_token_id, action, subject, detail \
         FROM audit_log WHERE hash IS NULL ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev: String = head.try_get("hash")?;
    for row in &rows {
        seq += 1;
        let technician_id: Option<String> = row.try_get("actor_technician_id")?;
        let token_id: Option<String> = row.try_get("actor_token_id")?;
        let action: String = row.try_get("action")?;
        let subject: String = row.try_get("subject")?;
        let detail: String = row.try_get("detail")?;
        let hash = chain::entry_hash(&Link {
            seq,
            at_ms: row.try_get("at_ms")?,
            technician_id: technician_id.as_deref(),
            token_id: token_id.as_deref(),
            action: &action,
            subject: &subject,
            detail: &detail,
            prev_hash: &prev,
        });
        sqlx::query("UPDATE audit_log SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?")
            .bind(seq)
            .bind(&prev)
            .bind(&hash)
            .bind(row.try_get::<i64, _>("id")?)
            .execute(&mut *tx)
            .await?;
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO fleet_meta (key, value) VALUES (?, ?)")
        .bind(LEGACY_CHAINED)
        .bind(rows.len().to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

const COLUMNS: &str = "a.id, a.seq, a.at_ms, a.actor_technician_id, t.name AS technician_name, \
     a.actor_token_id, a.action, a.subject, a.detail, a.prev_hash, a.hash \
     FROM audit_log a LEFT JOIN technicians t ON t.id = a.actor_technician_id";

fn record(row: &sqlx::sqlite::SqliteRow) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        technician_id: row.try_get("actor_technician_id")?,
        technician_name: row.try_get("technician_name")?,
        token_id: row.try_get("actor_token_id")?,
        action: row.try_get("action")?,
        subject: row.try_get("subject")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Entries matching `query`, newest first.
pub(super) async fn list(pool: &SqlitePool, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    let mut sql = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} WHERE a.at_ms >= "));
    sql.push_bind(query.since_ms);
    if let Some(before) = query.before_id {
        sql.push(" AND a.id < ").push_bind(before);
    }
    if let Some(text) = &query.subject_contains {
        sql.push(" AND instr(a.subject, ")
            .push_bind(text.clone())
            .push(") > 0");
    }
    if let Some(name) = &query.technician {
        sql.push(" AND t.name = ").push_bind(name.clone());
    }
    if let Some(prefix) = &query.action_prefix {
        // substr, not LIKE: a prefix with % or _ means those characters.
        sql.push(" AND substr(a.action, 1, ")
            .push_bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
            .push(") = ")
            .push_bind(prefix.clone());
    }
    sql.push(" ORDER BY a.id DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(record).collect()
}

/// Chained entries after `after_seq`, in chain order.
pub(super) async fn chain_page(
    pool: &SqlitePool,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let sql = format!("SELECT {COLUMNS} WHERE a.seq > ? ORDER BY a.seq LIMIT ?");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(record).collect()
}

/// The head row.
pub(super) async fn head(pool: &SqlitePool) -> StoreResult<AuditHead> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
    Ok(AuditHead {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
    })
}

/// The smallest id of a row outside the chain (no seq or no hash), if any.
pub(super) async fn first_unchained(pool: &SqlitePool) -> StoreResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(id) FROM audit_log WHERE seq IS NULL OR hash IS NULL")
            .fetch_one(pool)
            .await?,
    )
}
