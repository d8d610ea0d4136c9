//! The PostgreSQL backend, for large fleets and several collector replicas
//! sharing one database (D2, D7, D21). Schema managed by migrations in
//! `collector/migrations/postgres/`, which mirror the SQLite ones table for
//! table, so the two backends stay line-for-line comparable.
//!
//! # Layout
//! What only PostgreSQL does; the SQL both backends share is
//! `store::sql`'s.
//! - this module: `SqlBackend`, the `Store` calls of its own (replica
//!   liveness, the per-report ingest path), the per-host evaluation lock
//!   and the policy cache that follows other replicas' applies.
//! - [`fleet`]: writing the normalised fleet-query tables as arrays.
//! - `inventory`: full inventories, deltas and the change log.
//! - `kb`: the knowledge base, `tsvector` search.
//! - `tickets`: its `BackendSql` (lists as arrays; hosts claimed with
//!   their evaluation lock).
//!
//! # Concurrency
//! SQLite serialises writers with `BEGIN IMMEDIATE`; here transactions run
//! at READ COMMITTED and serialise only what must be:
//! - evaluation for one host (D21) holds [`lock_host`], a transaction-scoped
//!   advisory lock, so two replicas storing reports of the same host (an
//!   agent that moved) take turns;
//! - enrollment holds one advisory lock, so two enrollments of the same
//!   hardware cannot both create a host, and the token row is locked so its
//!   last use is taken once;
//! - everything else is a single statement or relies on `ON CONFLICT`.
//!
//! # The policy cache
//! The parsed policy is cached, as on SQLite, but several replicas share
//! the database, so an apply elsewhere must reach this cache. `apply_policy`
//! sends `NOTIFY deskpulse_policy` in its transaction (delivered on commit),
//! and a task holding a [`PgListener`] reloads the newest policy on each
//! notification, and after every reconnect, because notifications sent
//! while the listener was away are lost. The cache only moves forward in
//! version. While the database is unreachable the last policy stays in
//! force.

pub mod fleet;
mod inventory;
mod kb;
mod tickets;

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use inventory::StoredInventory;
use prost::Message as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::KbHit;
use super::SqlBackend;
use super::engine;
use super::{
    IncomingReport, PolicyRecord, ReportOutcome, ReportPayload, Store, StoreError, StoreResult,
};
use crate::rules::policy::Policy;
use crate::store::sql::SendFuture;
use crate::store::sql::hosts::SoftwareTables;

/// The channel `apply_policy` notifies and every replica listens on.
const POLICY_CHANNEL: &str = "deskpulse_policy";

/// How long opening waits for a connection before reporting the server
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between attempts to get the policy listener back.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

type Cache = Arc<RwLock<Arc<PolicyRecord>>>;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The policy in force, parsed once per apply rather than per sample,
    /// and kept current by the policy listener task.
    policy: Cache,
    /// Stops the listener task when the last clone of the store goes.
    follower: Arc<PolicyFollower>,
}

/// Owns the policy listener task.
#[derive(Debug)]
struct PolicyFollower(tokio::task::AbortHandle);

impl Drop for PolicyFollower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PostgresStore {
    /// Connects to and migrates the database at `url` (`postgres://…` or
    /// `postgresql://…`), and starts following policy applies.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(format!("invalid PostgreSQL URL: {e}")))?;
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let unreachable = |e: sqlx::Error| {
            StoreError::Url(format!("cannot connect to PostgreSQL at {server}: {e}"))
        };
        // One direct connection first: a pool reports a refused or
        // misaddressed server only as a timeout, without the cause.
        tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
            .map_err(unreachable)?
            .close()
            .await
            .map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let chained =
            crate::store::sql::audit::chain_unchained(&pool, async { Ok(pool.begin().await?) })
                .await?;
        if chained > 0 {
            tracing::info!(
                rows = chained,
                "chained the audit entries written before 0008"
            );
        }
        // Listening before the first load: an apply committed in between
        // is then either in the load or notified.
        let listener = subscribe(&pool).await?;
        let policy: Cache = Arc::new(RwLock::new(Arc::new(
            crate::store::sql::policy::newest(&pool).await?,
        )));
        let task = tokio::spawn(follow_policy(pool.clone(), listener, policy.clone()));
        Ok(Self {
            pool,
            policy,
            follower: Arc::new(PolicyFollower(task.abort_handle())),
        })
    }

    /// Closes every connection: later calls fail as an unreachable
    /// database would.
    pub async fn close(&self) {
        self.follower.0.abort();
        self.pool.close().await;
    }
}

fn read_cache(cache: &Cache) -> Arc<PolicyRecord> {
    match cache.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Puts `record` in the cache unless the cache already holds a newer one: a
/// reload that read just before a local apply committed must not undo it.
fn advance_cache(cache: &Cache, record: Arc<PolicyRecord>) -> bool {
    let mut guard = match cache.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if record.version > guard.version {
        *guard = record;
        true
    } else {
        false
    }
}

/// A listener on the policy channel, on its own connection from the pool.
async fn subscribe(pool: &PgPool) -> StoreResult<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(POLICY_CHANNEL).await?;
    Ok(listener)
}

/// Reloads the cache on every notification and after every reconnect;
/// runs until the store is dropped or its pool closed.
async fn follow_policy(pool: PgPool, listener: PgListener, cache: Cache) {
    let mut listener = Some(listener);
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut current = match listener.take() {
            Some(listener) => listener,
            None => match subscribe(&pool).await {
                Ok(listener) => {
                    tracing::info!("policy listener reconnected");
                    backoff = Duration::from_secs(1);
                    reload_policy(&pool, &cache).await;
                    listener
                }
                Err(error) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(%error, retry_in = ?backoff, "policy listener cannot reconnect");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                    continue;
                }
            },
        };
        loop {
            match current.try_recv().await {
                Ok(Some(_)) => reload_policy(&pool, &cache).await,
                // Lost and already re-established (eager reconnect):
                // whatever was notified in between is gone, so reload.
                Ok(None) => {
                    tracing::info!("policy listener reconnected");
                    reload_policy(&pool, &cache).await;
                }
                Err(error) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(%error, "policy listener lost its connection");
                    break;
                }
            }
        }
    }
}

async fn reload_policy(pool: &PgPool, cache: &Cache) {
    match crate::store::sql::policy::newest(pool).await {
        Ok(record) => {
            let version = record.version;
            if advance_cache(cache, Arc::new(record)) {
                tracing::info!(version, "loaded the policy another replica applied");
            }
        }
        // The cached policy stays in force; the next notification or
        // reconnect tries again.
        Err(error) => tracing::warn!(%error, "cannot reload the fleet policy"),
    }
}

/// The advisory-lock key of host `$1`, one literal for both lock calls.
macro_rules! host_lock_key {
    () => {
        "hashtextextended('deskpulse.host:' || $1, 0)"
    };
}

/// Serialises evaluation for one host (D21) until `tx` ends: every
/// transaction that evaluates rules or moves rule state of a host takes
/// this first. Several hosts are locked in sorted order, so two batches
/// cannot deadlock. A hash collision only makes two hosts take turns.
pub(crate) async fn lock_host(
    tx: &mut Transaction<'static, Postgres>,
    host: &str,
) -> StoreResult<()> {
    sqlx::query(concat!(
        "SELECT pg_advisory_xact_lock(",
        host_lock_key!(),
        ")"
    ))
    .bind(host)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the host's evaluation lock if no other transaction holds it, and
/// says whether it did; held until the transaction ends. The lock of
/// [`lock_host`] without the wait, so a timer pass skips hosts that are
/// being evaluated or that another replica's pass has claimed.
pub(crate) async fn try_lock_host(conn: &mut PgConnection, host: &str) -> StoreResult<bool> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT pg_try_advisory_xact_lock(",
        host_lock_key!(),
        ")"
    ))
    .bind(host)
    .fetch_one(conn)
    .await?)
}

/// One attempt at `store_reports`: the whole batch in one transaction,
/// under the lock of every host in it.
async fn store_reports_once(
    pool: &PgPool,
    policy: &Policy,
    reports: &[IncomingReport],
    now_ms: i64,
) -> StoreResult<Vec<ReportOutcome>> {
    let mut hosts: Vec<&str> = reports.iter().map(|r| r.host_id.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut tx = pool.begin().await?;
    for host in &hosts {
        lock_host(&mut tx, host).await?;
    }
    let mut outcomes = Vec::with_capacity(reports.len());
    for report in reports {
        let fresh = sqlx::query(
            "INSERT INTO received_reports (host_id, spool_id, seq, received_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&report.host_id)
        .bind(&report.spool_id)
        .bind(seq_i64(report.seq)?)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            outcomes.push(ReportOutcome::Duplicate);
            continue;
        }
        let outcome = match &report.payload {
            ReportPayload::Inventory {
                inventory,
                hostname,
                os_name,
                os_version,
                facts,
            } => {
                let encoded = inventory.encode_to_vec();
                let stored = StoredInventory {
                    encoded: &encoded,
                    hostname,
                    os_name,
                    os_version,
                    facts,
                };
                inventory::store(&mut tx, policy, report, &stored, inventory, now_ms).await?;
                ReportOutcome::Stored
            }
            ReportPayload::InventoryDelta { delta } => {
                inventory::apply_delta(&mut tx, policy, report, delta, now_ms).await?
            }
            ReportPayload::DiagnosticResult(_) | ReportPayload::UserIssue { .. } => {
                crate::store::sql::tickets::store_event::<Postgres>(
                    &mut tx, policy, report, now_ms,
                )
                .await?;
                ReportOutcome::Stored
            }
            ReportPayload::Health {
                encoded,
                free,
                reading,
                readings,
            } => {
                sqlx::query(
                    "INSERT INTO health_samples (host_id, resolution_s, at_ms, samples, \
                     cpu_percent, cpu_max_percent, memory_used_percent, disk_used_max_percent, \
                     temperature_max_celsius) \
                     VALUES ($1, 0, $2, 1, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(&report.host_id)
                .bind(report.collected_at_ms)
                .bind(reading.cpu_percent)
                .bind(reading.cpu_percent)
                .bind(reading.memory_used_percent)
                .bind(reading.disk_used_max_percent)
                .bind(reading.temperature_max_celsius)
                .execute(&mut *tx)
                .await?;
                let sample = engine::tickets::Sample {
                    host: &report.host_id,
                    readings,
                    at_ms: report.collected_at_ms,
                };
                crate::store::sql::tickets::evaluate::<Postgres>(
                    &mut tx,
                    policy,
                    &[sample],
                    now_ms,
                )
                .await?;
                // The latest is the one received last, never the one
                // claiming the latest time (`crate::clockskew`).
                let applied = sqlx::query(
                    "UPDATE hosts SET last_health = $1, health_at_ms = $2, \
                     health_received_at_ms = $4 WHERE id = $3 \
                     AND (health_received_at_ms IS NULL OR health_received_at_ms <= $4)",
                )
                .bind(encoded)
                .bind(report.collected_at_ms)
                .bind(&report.host_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if applied {
                    fleet::replace_free(&mut tx, &report.host_id, free).await?;
                }
                ReportOutcome::Stored
            }
        };
        outcomes.push(outcome);
    }
    let forget = crate::store::forgettable_keys(reports);
    if !forget.is_empty() {
        let mut key_hosts = Vec::with_capacity(forget.len());
        let mut key_spools = Vec::with_capacity(forget.len());
        let mut below = Vec::with_capacity(forget.len());
        for (host, spool, seq) in forget {
            key_hosts.push(host);
            key_spools.push(spool);
            below.push(seq_i64(seq)?);
        }
        // After the claims above, so a resend in this batch is still caught:
        // the agents hold nothing below these, so those keys never come again.
        sqlx::query(
            "DELETE FROM received_reports AS r \
             USING UNNEST($1::text[], $2::text[], $3::bigint[]) AS k(host_id, spool_id, below) \
             WHERE r.host_id = k.host_id AND r.spool_id = k.spool_id AND r.seq < k.below",
        )
        .bind(&key_hosts)
        .bind(&key_spools)
        .bind(&below)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE hosts SET last_seen_at_ms = $1 WHERE id = ANY($2)")
        .bind(now_ms)
        .bind(&hosts)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Tries per batch of reports. Batches from several replicas can deadlock
/// when they intern the same new catalog rows in different host orders
/// (a fleet-wide update arriving everywhere at once); PostgreSQL then
/// aborts one of them, which simply runs again.
const STORE_ATTEMPTS: u32 = 3;

/// A deadlock or serialisation failure: the transaction lost a race and
/// may be run again as it was.
fn is_transient(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

fn seq_i64(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("sequence number {seq} too large")))
}

impl SqlBackend for PostgresStore {
    type Db = Postgres;
    const HOST_DETAIL_FROM: &'static str = "hosts";
    const SOFTWARE: SoftwareTables = SoftwareTables {
        from: "software_catalog c JOIN host_software hs ON hs.catalog_id = c.id",
        host: "hs.host_id",
    };

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    fn begin(&self) -> SendFuture<'_, Transaction<'static, Postgres>> {
        Box::pin(async { Ok(self.pool.begin().await?) })
    }

    fn current_policy(&self) -> Arc<PolicyRecord> {
        read_cache(&self.policy)
    }

    fn adopt_policy(&self, record: Arc<PolicyRecord>) {
        advance_cache(&self.policy, record);
    }

    fn announce_policy(conn: &mut PgConnection, version: i64) -> SendFuture<'_, ()> {
        Box::pin(async move {
            // Delivered to every listening replica when, and only if, the
            // insert commits. The payload is informational: listeners
            // reload the newest row rather than trust it.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(POLICY_CHANNEL)
                .bind(version.to_string())
                .execute(conn)
                .await?;
            Ok(())
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn replica_alive(
        &self,
        replica: &str,
        now_ms: i64,
        stale_after_ms: i64,
    ) -> StoreResult<u64> {
        sqlx::query(
            "INSERT INTO replicas (id, alive_at_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET alive_at_ms = EXCLUDED.alive_at_ms",
        )
        .bind(replica)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let cleared = sqlx::query(
            "UPDATE hosts SET session_replica = NULL WHERE session_replica IN \
             (SELECT id FROM replicas WHERE alive_at_ms < $1)",
        )
        .bind(now_ms.saturating_sub(stale_after_ms))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(cleared)
    }

    async fn store_reports(
        &self,
        reports: &[IncomingReport],
        now_ms: i64,
    ) -> StoreResult<Vec<ReportOutcome>> {
        let policy = self.current_policy();
        let mut attempt = 1;
        loop {
            match store_reports_once(&self.pool, &policy.policy, reports, now_ms).await {
                // The batch rolled back whole (idempotency keys included),
                // so running it again is safe.
                Err(error) if attempt < STORE_ATTEMPTS && is_transient(&error) => {
                    tracing::warn!(%error, attempt, "storing a batch of reports collided; retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn search_kb(
        &self,
        terms: &[String],
        limit: u32,
        include_auto: bool,
    ) -> StoreResult<Vec<KbHit>> {
        kb::search(&self.pool, terms, limit, include_auto).await
    }
}
