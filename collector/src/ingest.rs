//! The ingest writer: one task that takes validated reports from every agent
//! session through a bounded queue and stores them in batched transactions.
//! Each report's submitter learns when its transaction has committed, and
//! only then acknowledges it to the agent (promise 1).
//!
//! Batching turns many small per-report transactions into a few large ones,
//! which is what lets one store keep up with a large fleet; the bounded queue
//! pushes back on sessions instead of growing without limit.
//!
//! The writer also says whether the store can write ([`WriteHealth`]): a
//! batch that fails because the database cannot write (a full disk) marks
//! it failing, and the next batch that commits (or the health watch's own
//! probe write) clears it, so the gRPC
//! health service reports NOT_SERVING exactly while reports cannot be
//! stored. Nothing is lost meanwhile: an uncommitted report is never
//! acknowledged, and the agent resends it from its spool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::store::{IncomingReport, ReportOutcome, ReportPayload, SharedStore, StoreError};

/// How many reports may wait for the writer before sessions wait too: two
/// full batches, so the next batch is queued while one commits.
const QUEUE_DEPTH: usize = 2 * MAX_BATCH;
/// The most reports stored in one transaction. Large, because a commit's
/// cost is mostly the b-tree pages it dirties, and the tables keyed by host
/// (health history, idempotency keys, hosts) dirty about one page per host
/// in the batch: a batch that holds a host several times writes its pages
/// once (the ingest bench: 9,646 health reports/s in batches of 512 against
/// 22,986 in batches of 4,096, 2,000 hosts). Under light load a batch holds
/// only what queued during the previous commit, so this costs no latency.
pub const MAX_BATCH: usize = 4096;
/// The most reports in a batch that holds a full inventory. An inventory's
/// rows make the commit long, and while it runs every other writer (an
/// enrolling agent, a technician) waits for the write lock: in one run of
/// 19,000 connecting agents with batches of 4,096 behind inventories, an
/// enrollment waited out the busy timeout.
const MAX_BATCH_WITH_INVENTORIES: usize = 512;
/// The most full inventories stored in one transaction (the ingest bench
/// stores first inventories in batches of this size).
pub const INVENTORIES_PER_BATCH: usize = 32;
/// The most inventory items (packages, services, accounts, in full
/// inventories and deltas) one transaction takes, as a batch of 32 desktop
/// inventories holds. While a transaction runs every other writer (a
/// technician's tag, an enrollment) waits for the write lock, so a batch
/// stops before an inventory that would take it past this; a single
/// inventory at the policy's limits still goes alone (issue 20).
pub const MAX_ITEMS_PER_BATCH: usize = 40_000;

/// The outcome of one report once its transaction committed, or the
/// store's error.
pub type Committed = Result<ReportOutcome, String>;

struct Job {
    report: IncomingReport,
    done: oneshot::Sender<Committed>,
}

/// The handle sessions submit reports through. Cloning is cheap; the writer
/// stops once every handle is dropped and the queue is drained.
#[derive(Clone, Debug)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
    health: WriteHealth,
}

/// Whether the writer's last batch failed for want of a writable store.
/// Holding one does not keep the writer running.
#[derive(Clone, Debug, Default)]
pub struct WriteHealth(Arc<AtomicBool>);

impl WriteHealth {
    /// True while storing fails because the database cannot write.
    pub fn failing(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Marks the store failing when `error` says it cannot write: a write
    /// outside the writer (an agent's session opening) found the disk full.
    /// The writer's next commit clears it.
    pub fn record_failure(&self, error: &StoreError) {
        if error.is_storage_failure() {
            self.set_failing(true);
        }
    }

    /// Clears the mark: a write outside the writer (the health watch's
    /// probe) committed, so the store can write again.
    pub fn record_recovery(&self) {
        self.set_failing(false);
    }

    fn set_failing(&self, failing: bool) {
        self.0.store(failing, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("seq", &self.report.seq)
            .finish_non_exhaustive()
    }
}

/// The writer is gone (shutdown); the report was not stored.
#[derive(Debug, thiserror::Error)]
#[error("the collector is shutting down")]
pub struct IngestClosed;

impl Ingest {
    /// Starts the writer task, which keeps `health` (shared with gRPC
    /// health and `/healthz`).
    pub fn spawn(
        store: SharedStore,
        clock: SharedClock,
        health: WriteHealth,
    ) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = tokio::spawn(crate::panics::critical(
            "ingest writer",
            write_batches(rx, store, clock, health.clone()),
        ));
        (Self { queue, health }, writer)
    }

    /// The writer's health, for the gRPC health service.
    pub fn health(&self) -> WriteHealth {
        self.health.clone()
    }

    /// Queues a report. The returned receiver resolves once it is committed.
    pub async fn submit(
        &self,
        report: IncomingReport,
    ) -> Result<oneshot::Receiver<Committed>, IngestClosed> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Job { report, done })
            .await
            .map_err(|_| IngestClosed)?;
        Ok(committed)
    }
}

async fn write_batches(
    mut rx: mpsc::Receiver<Job>,
    store: SharedStore,
    clock: SharedClock,
    health: WriteHealth,
) {
    let mut jobs = Vec::new();
    // A job taken from the queue that did not fit the batch before: the
    // next batch starts with it.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let mut inventories = usize::from(is_inventory(&first.report));
        let mut items = inventory_items(&first.report);
        jobs.push(first);
        // Take what is queued, up to the caps: a batch of many full
        // inventories would hold up the health reports queued behind it.
        while jobs.len() < batch_limit(inventories) && inventories < INVENTORIES_PER_BATCH {
            let Ok(job) = rx.try_recv() else { break };
            let more = inventory_items(&job.report);
            if items + more > MAX_ITEMS_PER_BATCH {
                held = Some(job);
                break;
            }
            items += more;
            inventories += usize::from(is_inventory(&job.report));
            jobs.push(job);
        }
        let (reports, waiters): (Vec<_>, Vec<_>) =
            jobs.drain(..).map(|job| (job.report, job.done)).unzip();
        metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(rx.len() as f64);
        metrics::histogram!(crate::metrics::STORE_BATCH_REPORTS).record(reports.len() as f64);
        let started = std::time::Instant::now();
        let stored = store.store_reports(&reports, clock.now_ms()).await;
        metrics::histogram!(crate::metrics::STORE_BATCH).record(started.elapsed().as_secs_f64());
        match stored {
            Ok(outcomes) => {
                health.set_failing(false);
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    // A session that went away no longer needs its answer.
                    let _ = waiter.send(Ok(outcome));
                }
            }
            Err(error) if reports.len() > 1 => {
                // The batch rolled back whole. Store each report on its own,
                // so one bad report fails alone and the others commit.
                tracing::warn!(%error, reports = reports.len(), "storing a batch failed; storing its reports one by one");
                let mut committed = false;
                let mut cannot_write = error.is_storage_failure();
                for (report, waiter) in reports.iter().zip(waiters) {
                    let stored = store
                        .store_reports(std::slice::from_ref(report), clock.now_ms())
                        .await;
                    let answer = match stored {
                        Ok(mut outcomes) => {
                            committed = true;
                            outcomes
                                .pop()
                                .ok_or_else(|| "the store returned no outcome".to_owned())
                        }
                        Err(error) => {
                            cannot_write |= error.is_storage_failure();
                            tracing::error!(%error, host = %report.host_id, seq = report.seq, kind = report.payload.kind(), "storing a report failed");
                            Err(error.to_string())
                        }
                    };
                    let _ = waiter.send(answer);
                }
                health.set_failing(cannot_write && !committed);
            }
            Err(error) => {
                health.set_failing(error.is_storage_failure());
                tracing::error!(%error, reports = reports.len(), "storing a batch of reports failed");
                for waiter in waiters {
                    let _ = waiter.send(Err(error.to_string()));
                }
            }
        }
    }
    tracing::debug!("ingest writer drained and stopped");
}

/// The most reports a batch holding `inventories` full inventories takes.
fn batch_limit(inventories: usize) -> usize {
    if inventories == 0 {
        MAX_BATCH
    } else {
        MAX_BATCH_WITH_INVENTORIES
    }
}

fn is_inventory(report: &IncomingReport) -> bool {
    matches!(report.payload, ReportPayload::Inventory { .. })
}

/// The inventory items a report writes: what its transaction's length
/// grows with.
fn inventory_items(report: &IncomingReport) -> usize {
    let counts = match &report.payload {
        ReportPayload::Inventory { inventory, .. } => {
            deskpulse_proto::limits::count_inventory(inventory)
        }
        ReportPayload::InventoryDelta { delta } => {
            let mut counts = delta
                .replaced
                .as_ref()
                .map(deskpulse_proto::limits::count_inventory)
                .unwrap_or_default();
            counts.packages += delta.packages_upserted.len() as u64;
            counts.services += delta.services_upserted.len() as u64;
            counts
        }
        _ => return 0,
    };
    usize::try_from(counts.packages + counts.services + counts.users + counts.sessions)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
