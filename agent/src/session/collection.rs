//! Collection off the session loop. An inventory or a health sample takes
//! from milliseconds to many seconds (a `smartctl` per disk, WMI on a busy
//! PC, a slow disk under the package databases), and meanwhile the loop
//! must go on reading acknowledgements, diagnostics and the local socket,
//! and relaying live diagnostic output. So every collection runs as a job
//! on tokio's blocking pool, and its result comes back to the loop through
//! the job's `JoinHandle` ([`Collection::finished`]); the loop spools it
//! (durable before it is sent, D14) and sends it.
//!
//! Why the blocking pool, not a thread of our own: diagnostics use it
//! already, a pool thread exists only while a job runs and for tokio's
//! keep-alive (10 s) after, so the idle agent holds no extra thread or
//! stack (D36 measures its resident memory); and nothing polls: the loop
//! sleeps in `select!` until a job is done.
//!
//! At most one job of each kind runs at a time, so a collection slower than
//! its interval never piles up:
//! - inventory: a tick or a resync request while one runs starts nothing.
//!   The one under way is the newest snapshot anyway, and the loop takes
//!   its delta against the base as it stands when the snapshot arrives, so
//!   a resync meanwhile makes it a full snapshot.
//! - health: the sampler keeps the CPU counters and the slow probes' cache,
//!   so there is one, away on the pool while it samples. A tick or an
//!   employee's report while a sample is being taken joins that sample,
//!   which was started moments before and which a second sample would have
//!   to wait for anyway.
//!
//! Nothing waits for a job at shutdown: a dropped `JoinHandle` detaches it,
//! each probe has its own deadline (`collect::spawn`), and the process may
//! exit before it ends; the next start collects afresh.

use std::path::PathBuf;

use deskpulse_proto::v1::{HealthSample, Inventory, Unavailable, UnavailableReason};
use tokio::task::{JoinError, JoinHandle};
use tracing::{debug, warn};

use crate::collect::{HealthSampler, HealthSettings, collect_inventory};
use crate::issue::IssueRequest;

/// A finished collection, for the loop to spool.
// One value at a time, moved once from the job to the loop: boxing the
// larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Collected {
    /// A fresh, canonical inventory snapshot.
    Inventory(Inventory),
    /// A health sample: spooled as a health report when `periodic`, and
    /// with each of `issues` (employees' reports waiting for it).
    Health {
        /// The sample.
        sample: HealthSample,
        /// A health tick asked for it.
        periodic: bool,
        /// Reports that asked for it.
        issues: Vec<IssueRequest>,
    },
}

/// A health sample under way, and who waits for it.
#[derive(Debug)]
struct Sampling {
    job: JoinHandle<(HealthSampler, HealthSample)>,
    periodic: bool,
    issues: Vec<IssueRequest>,
}

/// The inventory and health jobs of the service loop: at most one of each.
#[derive(Debug)]
pub(super) struct Collection {
    system_root: PathBuf,
    health_settings: HealthSettings,
    inventory: Option<JoinHandle<Inventory>>,
    /// Here while no sample is being taken; with the job while one is.
    sampler: Option<HealthSampler>,
    sampling: Option<Sampling>,
}

impl Collection {
    /// Nothing running yet.
    pub(super) fn new(system_root: PathBuf, health_settings: HealthSettings) -> Self {
        let sampler = HealthSampler::with_settings(&system_root, health_settings.clone());
        Self {
            system_root,
            health_settings,
            inventory: None,
            sampler: Some(sampler),
            sampling: None,
        }
    }

    /// Starts collecting the inventory, unless that is under way already.
    pub(super) fn start_inventory(&mut self) {
        if self.inventory.is_some() {
            debug!("an inventory is still being collected; no second one is started");
            return;
        }
        let root = self.system_root.clone();
        self.inventory = Some(tokio::task::spawn_blocking(move || {
            collect_inventory(&root)
        }));
    }

    /// A periodic health sample: starts one, or joins the one under way.
    pub(super) fn start_sample(&mut self) {
        match self.sampling.as_mut() {
            Some(sampling) => {
                debug!("a health sample is still being taken; this tick shares it");
                sampling.periodic = true;
            }
            None => self.spawn_sample(true, Vec::new()),
        }
    }

    /// An employee's report waits for a fresh sample: a new one, or the
    /// one under way.
    pub(super) fn sample_for_issue(&mut self, request: IssueRequest) {
        match self.sampling.as_mut() {
            Some(sampling) => sampling.issues.push(request),
            None => self.spawn_sample(false, vec![request]),
        }
    }

    fn spawn_sample(&mut self, periodic: bool, issues: Vec<IssueRequest>) {
        let mut sampler = self.sampler.take().unwrap_or_else(|| {
            HealthSampler::with_settings(&self.system_root, self.health_settings.clone())
        });
        let job = tokio::task::spawn_blocking(move || {
            let sample = sampler.sample();
            (sampler, sample)
        });
        self.sampling = Some(Sampling {
            job,
            periodic,
            issues,
        });
    }

    /// The next finished collection; never ready while nothing runs. Safe
    /// to drop unfinished in a `select!`: a job's state changes only once
    /// it has finished.
    pub(super) async fn finished(&mut self) -> Collected {
        loop {
            let inventory = async {
                match self.inventory.as_mut() {
                    Some(job) => job.await,
                    None => std::future::pending().await,
                }
            };
            let sample = async {
                match self.sampling.as_mut() {
                    Some(sampling) => (&mut sampling.job).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                joined = inventory => {
                    self.inventory = None;
                    match joined {
                        Ok(snapshot) => return Collected::Inventory(snapshot),
                        // Nothing to spool; the next tick collects again.
                        Err(error) => warn!(%error, "the inventory collection failed"),
                    }
                }
                joined = sample => {
                    let Some(Sampling { periodic, issues, .. }) = self.sampling.take() else {
                        continue;
                    };
                    match joined {
                        Ok((sampler, sample)) => {
                            self.sampler = Some(sampler);
                            return Collected::Health { sample, periodic, issues };
                        }
                        Err(error) => {
                            // The sampler went with the job; the next
                            // sample starts a fresh one.
                            warn!(%error, "the health sample failed");
                            if !issues.is_empty() {
                                return Collected::Health {
                                    sample: failed_sample(&error),
                                    periodic: false,
                                    issues,
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A sample saying only that sampling failed: an employee's report still
/// goes out with it; a periodic one is not sent (its zeros would read as
/// real values).
fn failed_sample(error: &JoinError) -> HealthSample {
    HealthSample {
        unavailable: vec![Unavailable {
            field: "health".to_owned(),
            reason: UnavailableReason::Failed as i32,
            detail: format!("the health sample failed: {error}"),
        }],
        ..HealthSample::default()
    }
}

/// Makes every thread allocate from glibc's main heap. By default each new
/// thread gets a heap (arena) of its own, and the free memory a pool job
/// leaves in one stays resident after the thread is gone: measured on the
/// idle service, about 400 KiB more private memory than collecting on the
/// loop did, and under 100 KiB more with one arena. The agent's threads
/// rarely allocate at once, so sharing one heap costs it nothing; call this
/// before the first job.
pub(super) fn share_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // mallopt(3) has no safe wrapper; M_ARENA_MAX only caps how many heaps
    // glibc makes from now on
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Runs one collection on the blocking pool and waits for it: `run
/// --once` has nothing else to do meanwhile, but its collections run where
/// the service's do. The error is one line naming `what`.
pub(super) async fn collect_now<T: Send + 'static>(
    what: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|error| format!("the {what} collection failed: {error}"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
