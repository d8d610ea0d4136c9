//! The embedded SQLite backend: bundled SQLite in WAL mode, schema managed by
//! migrations in `collector/migrations/sqlite/`.
//!
//! # Layout
//! What only SQLite does; the SQL both backends share is `store::sql`'s.
//! - this module: the connections, `SqlBackend` and the `Store` calls of
//!   its own (ingest, KB search, replica liveness).
//! - `batch`: the ingest write path, a batch in a fixed number of
//!   set-based statements.
//! - `inventory`: full inventories, deltas and the change log.
//! - [`fleet`]: writing the normalised fleet-query tables in batches.
//! - `kb`: the knowledge base, an FTS5 index of resolved tickets.
//! - `tickets`: its `BackendSql` (lists as one JSON text; no host claims).
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
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::KbHit;
use super::SqlBackend;
use super::{IncomingReport, PolicyRecord, ReportOutcome, Store, StoreError, StoreResult};
use crate::store::sql::SendFuture;
use crate::store::sql::hosts::SoftwareTables;

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
                .after_release(|conn, _| Box::pin(reusable(conn)))
                .connect_with(options.clone().pragma("cache_size", "-32768"))
                .await?,
        );
        // WAL readers never wait for the writer: enough of them that the
        // technicians' queries and the sessions' certificate checks do not
        // wait for each other.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .after_release(|conn, _| Box::pin(reusable(conn)))
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

/// Whether a connection going back to its pool may be handed out again.
///
/// SQLite rolls a transaction back by itself when a statement or the
/// commit fails with SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY or SQLITE_NOMEM
/// (<https://sqlite.org/lang_transaction.html>, "Response To Errors Within
/// A Transaction"). The ROLLBACK sqlx then sends for the dropped
/// transaction fails ("no transaction is active"), and sqlx 0.9 lowers its
/// transaction depth only when ROLLBACK succeeds: the connection stays
/// "in a transaction" for good and every later `BEGIN IMMEDIATE` is refused
/// ("attempted to call begin_with at non-zero transaction depth"). With one
/// writer connection that wedged every write until a restart (issue 20).
/// Such a connection is closed here instead, and the pool opens a fresh
/// one for the next write.
async fn reusable(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // The rollback of a dropped transaction is queued to the connection's
    // worker, not awaited; a ping queued behind it returns once it ran.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "a failed transaction could not be rolled back on its connection; opening a new one"
        );
        return Ok(false);
    }
    Ok(true)
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
    const HOST_DETAIL_FROM: &'static str =
        "hosts LEFT JOIN host_inventories i ON i.host_id = hosts.id";
    // Hosts with equal package lists share them through host_keys.
    const SOFTWARE: SoftwareTables = SoftwareTables {
        from: "software_catalog c JOIN host_software hs ON hs.catalog_id = c.id \
               JOIN host_keys k ON k.key = hs.host_key",
        host: "k.host_id",
    };

    fn reads(&self) -> &SqlitePool {
        &self.pool
    }

    fn writes(&self) -> &SqlitePool {
        self.writer.pool()
    }

    fn begin(&self) -> SendFuture<'_, Transaction<'static, Sqlite>> {
        Box::pin(begin_write(&self.writer))
    }

    fn current_policy(&self) -> Arc<PolicyRecord> {
        match self.policy.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn adopt_policy(&self, record: Arc<PolicyRecord>) {
        // One SQLite database has one collector, so what it applied is in
        // force.
        match self.policy.write() {
            Ok(mut guard) => *guard = record,
            Err(poisoned) => *poisoned.into_inner() = record,
        }
    }

    fn announce_policy(_conn: &mut sqlx::SqliteConnection, _version: i64) -> SendFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[async_trait]
impl Store for SqliteStore {
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

    async fn search_kb(
        &self,
        terms: &[String],
        limit: u32,
        include_auto: bool,
    ) -> StoreResult<Vec<KbHit>> {
        kb::search(&self.pool, terms, limit, include_auto).await
    }

    async fn backup_to(&self, path: &Path) -> StoreResult<()> {
        let path = path.to_str().ok_or_else(|| {
            StoreError::Conflict(format!("the backup path {} is not UTF-8", path.display()))
        })?;
        // On a reader: VACUUM INTO copies one read snapshot, and WAL
        // readers hold up neither the writer nor the checkpoints.
        sqlx::query("VACUUM INTO ?1")
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(())
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

    /// SQLite rolls a transaction back by itself when a write finds the
    /// disk full (SQLITE_FULL), so the rollback sqlx sends when the failed
    /// transaction is dropped fails too, and sqlx went on counting the
    /// connection as in a transaction: every later write failed with
    /// "attempted to call begin_with at non-zero transaction depth" until
    /// a restart. `max_page_count` makes the disk full for the writer's
    /// connection only; a fresh connection has room again.
    #[tokio::test]
    async fn the_writer_writes_again_after_a_write_found_the_disk_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"))
            .await
            .expect("open");
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(store.writer.pool())
            .await
            .expect("create");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(store.writer.pool())
            .await
            .expect("page count");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 4
        )))
        .execute(store.writer.pool())
        .await
        .expect("cap the pages");

        let mut tx = begin_write(&store.writer).await.expect("begin");
        let mut full = None;
        for _ in 0..64 {
            let insert = sqlx::query("INSERT INTO filler VALUES (zeroblob(3000))")
                .execute(&mut *tx)
                .await;
            if let Err(error) = insert {
                full = Some(error.to_string());
                break;
            }
        }
        let full = full.expect("the capped database fills up");
        assert!(full.contains("full"), "{full}");
        assert!(
            tx.commit().await.is_err(),
            "nothing of the full write commits"
        );

        let mut tx = begin_write(&store.writer)
            .await
            .expect("the writer begins again");
        sqlx::query("INSERT INTO filler VALUES (zeroblob(3000))")
            .execute(&mut *tx)
            .await
            .expect("insert with room");
        tx.commit().await.expect("commit with room");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM filler")
            .fetch_one(&store.pool)
            .await
            .expect("count");
        assert_eq!(rows, 1, "only the write made with room is stored");
    }
}
