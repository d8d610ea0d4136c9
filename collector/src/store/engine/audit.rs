//! The audit log's one append path and the one-time chaining of the rows
//! written before migration 0008 (D28), written once against [`AuditTx`],
//! a transaction of either backend. Hashes come from `audit::chain`, so
//! `audit --verify` checks either backend's chain the same way.

use crate::audit::chain::{self, Link};
use crate::store::{AuditEntry, AuditHead, StoreResult};

/// An audit row written before migration 0008, without its place in the
/// chain.
#[derive(Debug, Clone)]
pub struct UnchainedRow {
    /// Its row id.
    pub id: i64,
    /// When it was written.
    pub at_ms: i64,
    /// The acting technician, if any.
    pub technician_id: Option<String>,
    /// The API token used, if any.
    pub token_id: Option<String>,
    /// What was done.
    pub action: String,
    /// To what.
    pub subject: String,
    /// The details.
    pub detail: String,
}

/// One open transaction of a backend, as the audit log uses it: each
/// method is SQL and decides nothing.
pub trait AuditTx: Send {
    /// The chain head, held until the transaction ends, so no other
    /// writer reads the same head and forks the chain.
    async fn hold_head(&mut self) -> StoreResult<AuditHead>;
    /// Inserts an entry at its place in the chain, with its hash.
    async fn insert_entry(&mut self, link: &Link<'_>, hash: &str) -> StoreResult<()>;
    /// Moves the head on.
    async fn move_head(&mut self, seq: i64, hash: &str) -> StoreResult<()>;
    /// Whether the rows written before migration 0008 are chained already.
    async fn legacy_chained(&mut self) -> StoreResult<bool>;
    /// The rows without a hash, in id order.
    async fn unchained(&mut self) -> StoreResult<Vec<UnchainedRow>>;
    /// Gives a row its place and hash in the chain.
    async fn set_link(&mut self, id: i64, seq: i64, prev_hash: &str, hash: &str)
    -> StoreResult<()>;
    /// Records that the pre-0008 rows are chained, and how many there were.
    async fn mark_legacy_chained(&mut self, rows: usize) -> StoreResult<()>;
}

/// Appends one entry in the caller's transaction: the head is held and
/// moved on and the row inserted with its hash, so the entry, the head and
/// the caller's action commit or roll back together.
pub async fn append(tx: &mut impl AuditTx, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
    let head = tx.hold_head().await?;
    let link = Link {
        seq: head.seq + 1,
        at_ms: now_ms,
        technician_id: entry.technician_id.as_deref(),
        token_id: entry.token_id.as_deref(),
        action: &entry.action,
        subject: &entry.subject,
        detail: &entry.detail,
        prev_hash: &head.hash,
    };
    let hash = chain::entry_hash(&link);
    tx.insert_entry(&link, &hash).await?;
    tx.move_head(link.seq, &hash).await
}

/// Chains the rows written before migration 0008, in id order, after
/// whatever is chained already; how many. It happens once: the marker it
/// leaves makes later calls leave an unchained row alone, so a row
/// inserted by hand is reported by verify instead of being adopted.
pub async fn chain_unchained(tx: &mut impl AuditTx) -> StoreResult<u64> {
    // The head first: under its hold, the marker is read again, as two
    // processes or replicas may open at once.
    let head = tx.hold_head().await?;
    if tx.legacy_chained().await? {
        return Ok(0);
    }
    let rows = tx.unchained().await?;
    let mut seq = head.seq;
    let mut prev = head.hash;
    for row in &rows {
        seq += 1;
        let hash = chain::entry_hash(&Link {
            seq,
            at_ms: row.at_ms,
            technician_id: row.technician_id.as_deref(),
            token_id: row.token_id.as_deref(),
            action: &row.action,
            subject: &row.subject,
            detail: &row.detail,
            prev_hash: &prev,
        });
        tx.set_link(row.id, seq, &prev, &hash).await?;
        prev = hash;
    }
    tx.move_head(seq, &prev).await?;
    tx.mark_legacy_chained(rows.len()).await?;
    Ok(rows.len() as u64)
}
