//! Getting diagnostic jobs to agents and their live output to technicians,
//! within one replica: which host holds a stream here, which job runs on
//! which host, and who watches a job's output. The durable state (jobs,
//! results) is in the store; this is only the live, best-effort part
//! (D26): a lost chunk is never a lost result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use deskpulse_proto::v1::collector_message::Kind as Outgoing;
use deskpulse_proto::v1::{
    CancelDiagnostic, CollectorMessage, DiagnosticOutput, DiagnosticParams, RunDiagnostic,
};
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::store::{JobRow, SharedStore, StoreResult};

/// What the session sends the agent.
pub type Outbound = Result<CollectorMessage, Status>;

/// What a technician watching a job hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// A chunk of live output.
    Output(Vec<u8>),
    /// The job's result is stored; read it from the store.
    Finished,
}

/// Chunks a slow watcher may lag behind before it misses some.
const WATCH_BUFFER: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    /// host id -> (session number, the session's outbound queue).
    sessions: HashMap<String, (u64, mpsc::Sender<Outbound>)>,
    /// job id -> host id, for jobs delivered from this replica.
    running: HashMap<String, String>,
    /// job id -> its watchers.
    watchers: HashMap<String, broadcast::Sender<JobEvent>>,
    next_session: u64,
}

/// The live side of jobs on this replica.
#[derive(Debug, Default)]
pub struct Dispatch {
    inner: Mutex<Inner>,
}

/// Unregisters a session when it ends, unless a newer session of the same
/// host took its place.
#[derive(Debug)]
pub struct SessionGuard {
    dispatch: Arc<Dispatch>,
    host: String,
    number: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut inner = self.dispatch.lock();
        if inner
            .sessions
            .get(&self.host)
            .is_some_and(|(n, _)| *n == self.number)
        {
            inner.sessions.remove(&self.host);
        }
    }
}

impl Dispatch {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves maps that are still
        // consistent (each update is one insert or remove).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a host's session; it stays registered while the guard
    /// lives.
    pub fn register(self: &Arc<Self>, host: &str, tx: mpsc::Sender<Outbound>) -> SessionGuard {
        let mut inner = self.lock();
        inner.next_session += 1;
        let number = inner.next_session;
        inner.sessions.insert(host.to_owned(), (number, tx));
        SessionGuard {
            dispatch: self.clone(),
            host: host.to_owned(),
            number,
        }
    }

    /// True while the host holds a stream on this replica.
    pub fn connected(&self, host: &str) -> bool {
        self.lock().sessions.contains_key(host)
    }

    fn sender(&self, host: &str) -> Option<mpsc::Sender<Outbound>> {
        self.lock().sessions.get(host).map(|(_, tx)| tx.clone())
    }

    /// Sends a job to its host if the host is connected here, and records
    /// it as sent. Returns whether it went out.
    pub async fn deliver(
        &self,
        store: &SharedStore,
        job: &JobRow,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let Some(tx) = self.sender(&job.host_id) else {
            return Ok(false);
        };
        let Ok(params) = DiagnosticParams::decode(job.params.as_slice()) else {
            return Err(crate::store::StoreError::Corrupt(format!(
                "job {} has undecodable parameters",
                job.id
            )));
        };
        let message = CollectorMessage {
            kind: Some(Outgoing::RunDiagnostic(RunDiagnostic {
                job_id: job.id.clone(),
                params: Some(params),
                expires_at_unix_ms: job.expires_at_ms,
            })),
        };
        self.lock()
            .running
            .insert(job.id.clone(), job.host_id.clone());
        if tx.send(Ok(message)).await.is_err() {
            self.lock().running.remove(&job.id);
            return Ok(false);
        }
        store.job_sent(&job.id, now_ms).await?;
        Ok(true)
    }

    /// Asks the host's agent to stop a job, if the host is connected here.
    pub async fn cancel(&self, host: &str, job_id: &str) -> bool {
        let Some(tx) = self.sender(host) else {
            return false;
        };
        let message = CollectorMessage {
            kind: Some(Outgoing::CancelDiagnostic(CancelDiagnostic {
                job_id: job_id.to_owned(),
            })),
        };
        tx.send(Ok(message)).await.is_ok()
    }

    /// Subscribes to a job's live output and its finish.
    pub fn watch(&self, job_id: &str) -> broadcast::Receiver<JobEvent> {
        self.lock()
            .watchers
            .entry(job_id.to_owned())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }

    /// Relays a chunk of live output from `host`; chunks for jobs that
    /// host does not run are dropped, so an agent cannot write into
    /// another host's job.
    pub fn output(&self, host: &str, chunk: DiagnosticOutput) {
        let inner = self.lock();
        if inner.running.get(&chunk.job_id).map(String::as_str) != Some(host) {
            return;
        }
        if let Some(watchers) = inner.watchers.get(&chunk.job_id) {
            let _ = watchers.send(JobEvent::Output(chunk.data));
        }
    }

    /// A job's result is stored: tells its watchers and forgets it.
    pub fn finished(&self, job_id: &str) {
        let mut inner = self.lock();
        inner.running.remove(job_id);
        if let Some(watchers) = inner.watchers.remove(job_id) {
            let _ = watchers.send(JobEvent::Finished);
        }
    }

    /// Drops a watcher entry nobody listens to any more.
    pub fn unwatch(&self, job_id: &str) {
        let mut inner = self.lock();
        if inner
            .watchers
            .get(job_id)
            .is_some_and(|w| w.receiver_count() == 0)
        {
            inner.watchers.remove(job_id);
        }
    }
}
