//! The audit log as a hash chain (D28) on PostgreSQL: the one append path,
//! the head row whose lock serialises appends across replicas, chaining
//! the rows written before migration 0008, and the reads that listing and
//! verification need. Hashes come from `audit::chain`, as on SQLite, so
//! `audit --verify` checks either backend's chain the same way.

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};

use crate::audit::chain::{self, Link};
use crate::store::{AuditEntry, AuditHead, AuditQuery, AuditRecord, StoreError, StoreResult};

/// Locks the chain head row until the transaction on `conn` ends, and
/// returns it. Every append goes through here, so appends from all
/// replicas queue on this one row and each extends the head it read. A
/// transaction that will append and also lock other rows may call it
/// first, to take the head before them.
pub(super) async fn lock_head(conn: &mut PgConnection) -> StoreResult<AuditHead> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
    Ok(AuditHead {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
    })
}

/// Appends one entry on `conn`, which must be inside a transaction: the
/// head row is locked and moved on and the row inserted with its hash, so
/// the entry, the head and the caller's action commit or roll back
/// together.
pub(super) async fn append(
    conn: &mut PgConnection,
    entry: &AuditEntry,
    now_ms: i64,
) -> StoreResult<()> {
    let head = lock_head(conn).await?;
    let seq = head.seq + 1;
    let prev_hash = head.hash;
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
         detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The fleet_meta key set once the pre-0008 rows are chained.
const LEGACY_CHAINED: &str = "audit_legacy_chained";

/// Chains the rows written before migration 0008 (they have no hash), in id
/// order, after whatever is chained already. Done on open rather than in
/// the migration so the hash is computed by the same Rust code as every
/// append. It happens once: the
/// marker in fleet_meta makes later opens leave an unchained row alone, so
/// a row inserted by hand is reported by verify instead of being adopted.
pub(super) async fn chain_unchained(pool: &PgPool) -> StoreResult<u64> {
    let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = $1")
        .bind(LEGACY_CHAINED)
        .fetch_optional(pool)
        .await?;
    if done.is_some() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    // Checked again under the head's lock: two replicas may open at once.
    let head = lock_head(&mut tx).await?;
    let done: Option<String> = sqlx::query_scalar("SELECT value FROM fleet_meta WHERE key = $1")
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
    let mut seq = head.seq;
    let mut prev = head.hash;
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
        sqlx::query("UPDATE audit_log SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4")
            .bind(seq)
            .bind(&prev)
            .bind(&hash)
            .bind(row.try_get::<i64, _>("id")?)
            .execute(&mut *tx)
            .await?;
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO fleet_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
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

fn record(row: &sqlx::postgres::PgRow) -> StoreResult<AuditRecord> {
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
pub(super) async fn list(pool: &PgPool, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} WHERE a.at_ms >= "));
    sql.push_bind(query.since_ms);
    if let Some(before) = query.before_id {
        sql.push(" AND a.id < ").push_bind(before);
    }
    if let Some(text) = &query.subject_contains {
        sql.push(" AND strpos(a.subject, ")
            .push_bind(text.clone())
            .push(") > 0");
    }
    if let Some(name) = &query.technician {
        sql.push(" AND t.name = ").push_bind(name.clone());
    }
    if let Some(prefix) = &query.action_prefix {
        // starts_with, not LIKE: a prefix with % or _ means those characters.
        sql.push(" AND starts_with(a.action, ")
            .push_bind(prefix.clone())
            .push(")");
    }
    sql.push(" ORDER BY a.id DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(record).collect()
}

/// Chained entries after `after_seq`, in chain order.
pub(super) async fn chain_page(
    pool: &PgPool,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let sql = format!("SELECT {COLUMNS} WHERE a.seq > $1 ORDER BY a.seq LIMIT $2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(record).collect()
}

/// The head row.
pub(super) async fn head(pool: &PgPool) -> StoreResult<AuditHead> {
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
pub(super) async fn first_unchained(pool: &PgPool) -> StoreResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(id) FROM audit_log WHERE seq IS NULL OR hash IS NULL")
            .fetch_one(pool)
            .await?,
    )
}
