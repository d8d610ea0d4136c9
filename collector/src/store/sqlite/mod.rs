//! The embedded SQLite backend: bundled SQLite in WAL mode, schema managed by
//! migrations in `collector/migrations/sqlite/`.
//!
//! # Layout
//! - this module: the `Store` implementation.
//! - [`fleet`]: the normalised fleet-query tables: writing them in batches
//!   and turning a host query into SQL.
//! - `webhooks`: webhook policy and the outbox ticket changes write into.
//! - `kb`: the knowledge base, an FTS5 index of resolved tickets.
//! - `audit`: the audit hash chain: the one append path and its head row.
//!
//! # Connections
//! Every write, a transaction or a single statement, goes through the one
//! [`Writer`] connection, which its pool hands out in the order asked;
//! reads go through the reader pool. Write functions take a `&Writer`, and
//! [`begin_write`] only begins on one: on a reader a write would wait in
//! SQLite's unfair busy handler instead of the writer's queue.

mod batch;
pub mod fleet;
mod inventory;
mod kb;
mod tickets;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::rules::policy::parse_policy;

use super::KbHit;
use super::SqlBackend;
use super::rows::{HOST_COLUMNS, host_row};
use super::{
    AuditEntry, EnrollOutcome, EnrollRequest, HostDetail, IncomingReport, IssueCert, PolicyRecord,
    ReportOutcome, Store, StoreError, StoreResult,
};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The readers.
    pool: SqlitePool,
    writer: Writer,
    /// The policy in force, parsed once per apply rather than per sample.
    /// One SQLite database has one collector, so the cache cannot go stale.
    policy: Arc<RwLock<Arc<PolicyRecord>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode keeps every commit atomic and durable against
            // process crashes; FULL adds an fsync per commit for power loss.
            // Acks promise durability, so pay for FULL: commits are batched.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // No mmap, whose mapped pages count in the RSS of every
            // connection that touches them while the kernel's page cache
            // serves the same reads.
            .pragma("mmap_size", "0");
        // Every write goes through one connection, in the order asked: the
        // pool hands it out first come, first served, where SQLite's own
        // busy handler polls with sleeps and lets a writer that begins again
        // at once (the ingest writer under load) starve the others until
        // their busy timeout (issue 8: an enrollment among 19,000 connecting
        // agents did). The busy timeout is left for other processes, such
        // as `deskpulse-collector ca import`.
        //
        // Each connection has its own page cache, and a cache fills up to
        // its size once the fleet tables reach millions of rows. The writer,
        // which dirties pages all over them, keeps 32 MiB; the readers keep
        // 8 MiB each, with the kernel's page cache behind them. Eight 32 MiB
        // caches that every connection wrote through came to about 175 MiB
        // of the collector's memory at 19,000 agents (against the same run
        // on PostgreSQL; issue 8: under 1.5 GB). A process-wide
        // `soft_heap_limit` of 64 MiB was tried: the writer's cache thrashed
        // (19,000 first inventories took 410 s instead of 337 s) and the
        // peak RSS rose.
        let writer = Writer(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone().pragma("cache_size", "-32768"))
                .await?,
        );
        // WAL readers never wait for the writer: enough of them that the
        // technicians' queries and the sessions' certificate checks do not
        // wait for each other.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.pragma("cache_size", "-8192"))
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(writer.pool())
            .await?;
        let chained =
            crate::store::sql::audit::chain_unchained(writer.pool(), begin_write(&writer)).await?;
        if chained > 0 {
            tracing::info!(
                rows = chained,
                "chained the audit entries written before 0008"
            );
        }
        let policy = Arc::new(RwLock::new(Arc::new(
            crate::store::sql::policy::newest(&pool).await?,
        )));
        Ok(Self {
            pool,
            writer,
            policy,
        })
    }

    /// Closes every connection: later calls fail as an unreachable
    /// database would (the health service's test uses it).
    pub async fn close(&self) {
        self.writer.0.close().await;
        self.pool.close().await;
    }
}

/// Begins a transaction that will write. IMMEDIATE takes the write lock
/// up front (waiting out the busy timeout): begun deferred, a transaction
/// that reads and then writes is refused at once ("database is locked",
/// no busy wait) when another connection committed a write in between,
/// which concurrent agents, technicians and timers make likely.
pub(crate) async fn begin_write(writer: &Writer) -> StoreResult<Transaction<'static, Sqlite>> {
    Ok(writer.0.begin_with("BEGIN IMMEDIATE").await?)
}

/// The one connection every write goes through (see [`SqliteStore::open`]),
/// a type of its own so that a write path cannot be handed a reader.
#[derive(Debug, Clone)]
pub(crate) struct Writer(SqlitePool);

impl Writer {
    /// For a single-statement write.
    fn pool(&self) -> &SqlitePool {
        &self.0
    }
}

fn seq_i64(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("sequence number {seq} too large")))
}

impl SqlBackend for SqliteStore {
    type Db = Sqlite;
    // Hosts with equal package lists share them through host_keys.
    const SOFTWARE_HOSTS: &'static str = "SELECT k.host_id FROM software_catalog c \
         JOIN host_software hs ON hs.catalog_id = c.id JOIN host_keys k ON k.key = hs.host_key \
         WHERE c.name = ";

    fn reads(&self) -> &SqlitePool {
        &self.pool
    }

    fn writes(&self) -> &SqlitePool {
        self.writer.pool()
    }

    fn begin(&self) -> crate::store::sql::SendFuture<'_, Transaction<'static, Sqlite>> {
        Box::pin(begin_write(&self.writer))
    }

    fn current_policy(&self) -> Arc<PolicyRecord> {
        match self.policy.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enroll(
        &self,
        request: &EnrollRequest,
        now_ms: i64,
        issue: IssueCert<'_>,
    ) -> StoreResult<EnrollOutcome> {
        // BEGIN IMMEDIATE takes the write lock up front, so two enrollments
        // racing for the last use of a token cannot both read uses_left = 1.
        let mut tx = begin_write(&self.writer).await?;
        let outcome =
            crate::store::sql::enroll::enroll_in_tx::<Sqlite>(&mut tx, request, now_ms, issue)
                .await?;
        if matches!(outcome, EnrollOutcome::Enrolled { .. }) {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn replica_alive(&self, _replica: &str, _now_ms: i64, _stale: i64) -> StoreResult<u64> {
        // One SQLite database has one collector, which clears its own
        // markers at start: there is no other replica to outlive.
        Ok(0)
    }

    async fn store_reports(
        &self,
        reports: &[IncomingReport],
        now_ms: i64,
    ) -> StoreResult<Vec<ReportOutcome>> {
        let policy = self.current_policy();
        let mut tx = begin_write(&self.writer).await?;
        let outcomes = batch::store_reports(&mut tx, &policy.policy, reports, now_ms).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn apply_policy(
        &self,
        text: &str,
        applied_by: &str,
        now_ms: i64,
    ) -> StoreResult<Result<Arc<PolicyRecord>, String>> {
        let policy = match parse_policy(text) {
            Ok(policy) => policy,
            Err(line) => return Ok(Err(line)),
        };
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO fleet_policy (text, applied_by, applied_at_ms) VALUES (?, ?, ?) \
             RETURNING version",
        )
        .bind(text)
        .bind(applied_by)
        .bind(now_ms)
        .fetch_one(self.writer.pool())
        .await?;
        let record = Arc::new(PolicyRecord {
            version,
            text: text.to_owned(),
            applied_by: applied_by.to_owned(),
            applied_at_ms: now_ms,
            policy,
        });
        match self.policy.write() {
            Ok(mut guard) => *guard = record.clone(),
            Err(poisoned) => *poisoned.into_inner() = record.clone(),
        }
        Ok(Ok(record))
    }

    async fn downsample_health(
        &self,
        raw_before_ms: i64,
        keep_after_ms: i64,
    ) -> StoreResult<(u64, u64)> {
        let mut tx = begin_write(&self.writer).await?;
        // Hours are folded whole: only hours that ended before the cut.
        let cut = raw_before_ms - raw_before_ms.rem_euclid(3_600_000);
        sqlx::query(
            "INSERT INTO health_samples (host_id, resolution_s, at_ms, samples, cpu_percent, \
             cpu_max_percent, memory_used_percent, disk_used_max_percent) \
             SELECT host_id, 3600, (at_ms / 3600000) * 3600000, COUNT(*), AVG(cpu_percent), \
             MAX(cpu_max_percent), AVG(memory_used_percent), MAX(disk_used_max_percent) \
             FROM health_samples WHERE resolution_s = 0 AND at_ms < ? \
             GROUP BY host_id, at_ms / 3600000 \
             ON CONFLICT (host_id, resolution_s, at_ms) DO UPDATE SET \
             cpu_percent = (cpu_percent * samples + excluded.cpu_percent * excluded.samples) / (samples + excluded.samples), \
             memory_used_percent = (memory_used_percent * samples + excluded.memory_used_percent * excluded.samples) / (samples + excluded.samples), \
             cpu_max_percent = MAX(cpu_max_percent, excluded.cpu_max_percent), \
             disk_used_max_percent = MAX(disk_used_max_percent, excluded.disk_used_max_percent), \
             samples = samples + excluded.samples",
        )
        .bind(cut)
        .execute(&mut *tx)
        .await?;
        let folded = sqlx::query("DELETE FROM health_samples WHERE resolution_s = 0 AND at_ms < ?")
            .bind(cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let purged = sqlx::query("DELETE FROM health_samples WHERE at_ms < ?")
            .bind(keep_after_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((folded, purged))
    }

    async fn host_detail(&self, host_id: &str) -> StoreResult<Option<HostDetail>> {
        let sql = format!(
            "SELECT {HOST_COLUMNS}, i.inventory, i.inventory_at_ms, last_health, health_at_ms, \
             spool_counters, spool_counters_at_ms FROM hosts \
             LEFT JOIN host_inventories i ON i.host_id = hosts.id WHERE hosts.id = ?"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(host_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let inventory: Option<Vec<u8>> = row.try_get("inventory")?;
        let inventory_at: Option<i64> = row.try_get("inventory_at_ms")?;
        let health: Option<Vec<u8>> = row.try_get("last_health")?;
        let health_at: Option<i64> = row.try_get("health_at_ms")?;
        let spool: Option<Vec<u8>> = row.try_get("spool_counters")?;
        let spool_at: Option<i64> = row.try_get("spool_counters_at_ms")?;
        Ok(Some(HostDetail {
            row: host_row(&row)?,
            inventory: inventory.zip(inventory_at),
            health: health.zip(health_at),
            spool_counters: spool.zip(spool_at),
        }))
    }

    async fn append_audit(&self, entry: &AuditEntry, now_ms: i64) -> StoreResult<()> {
        let mut tx = begin_write(&self.writer).await?;
        crate::store::sql::audit::append::<Sqlite>(&mut tx, entry, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn search_kb(&self, terms: &[String], limit: u32) -> StoreResult<Vec<KbHit>> {
        kb::search(&self.pool, terms, limit).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::SharedQueries;

    /// Writes queue for the one writer in the order asked, so a writer that
    /// begins again at once (the ingest writer under load) cannot starve a
    /// write that waited before it, as SQLite's busy handler let it.
    #[tokio::test]
    async fn a_write_asked_while_the_writer_is_busy_goes_before_one_asked_later() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("open");
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = begin_write(&store.writer).await.expect("begin");

        let first = tokio::spawn({
            let (store, order) = (store.clone(), order.clone());
            async move {
                store.record_fleet_ca("ab").await.expect("write");
                order.lock().expect("order").push("asked first");
            }
        });
        // Each yield lets the spawned task run until it waits for the writer.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let later = tokio::spawn({
            let (store, order) = (store.clone(), order.clone());
            async move {
                let tx = begin_write(&store.writer).await.expect("begin later");
                order.lock().expect("order").push("asked later");
                tx.commit().await.expect("commit later");
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        busy.commit().await.expect("commit");
        first.await.expect("first");
        later.await.expect("later");
        assert_eq!(
            *order.lock().expect("order"),
            ["asked first", "asked later"]
        );
    }
}
