//! Getting diagnostic jobs to agents and their live output to technicians:
//! which host holds a stream on this replica, which job runs on which host,
//! and who watches a job's output. The durable state (jobs, results) is in
//! the store; this is only the live, best-effort part (D26): a lost chunk
//! is never a lost result. With several replicas, what happens on one
//! reaches the others through the [`Relay`], and [`Dispatch::follow`] acts
//! on what the others say.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use deskpulse_proto::v1::collector_message::Kind as Outgoing;
use deskpulse_proto::v1::{
    CancelDiagnostic, CollectorMessage, DiagnosticOutput, DiagnosticParams, RunDiagnostic,
};
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::relay::{Relay, RelayEvent};
use crate::clock::SharedClock;
use crate::store::{JobQuery, JobRow, Revoked, SharedStore, StoreResult};

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
    /// job id -> the job's host and live output, for jobs delivered from
    /// this replica.
    running: HashMap<String, LiveJob>,
    /// job id -> its watchers.
    watchers: HashMap<String, broadcast::Sender<JobEvent>>,
    next_session: u64,
}

/// A job delivered from this replica, as its live output is checked.
#[derive(Debug)]
struct LiveJob {
    host: String,
    /// The diagnostic's catalog output cap: live output past it is dropped.
    cap: usize,
    /// Live output bytes relayed so far.
    relayed: usize,
    /// True once the agent streamed past the cap.
    overflowed: bool,
}

/// The live side of jobs on this replica.
#[derive(Debug, Default)]
pub struct Dispatch {
    inner: Mutex<Inner>,
    /// The other replicas, when the store is shared.
    relay: Option<Arc<Relay>>,
    /// The sessions and streams here that a revocation ends (issue 20).
    pub cuts: Arc<super::revocation::Cuts>,
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
    /// The live side of a replica that shares its store through `relay`.
    pub fn with_relay(relay: Arc<Relay>) -> Self {
        Self {
            inner: Mutex::default(),
            relay: Some(relay),
            cuts: Arc::default(),
        }
    }

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
    /// it as sent. Returns whether it went out from here; otherwise the
    /// other replicas are told, and the one holding the host's stream
    /// delivers it.
    pub async fn deliver(
        &self,
        store: &SharedStore,
        job: &JobRow,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let Some(tx) = self.sender(&job.host_id) else {
            if let Some(relay) = &self.relay {
                relay.publish(RelayEvent::JobQueued {
                    job_id: job.id.clone(),
                    host_id: job.host_id.clone(),
                });
            }
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
        let cap = deskpulse_proto::catalog::spec(&job.diagnostic).map_or(0, |spec| spec.output_cap);
        self.lock().running.insert(
            job.id.clone(),
            LiveJob {
                host: job.host_id.clone(),
                cap,
                relayed: 0,
                overflowed: false,
            },
        );
        if tx.send(Ok(message)).await.is_err() {
            self.lock().running.remove(&job.id);
            return Ok(false);
        }
        store.job_sent(&job.id, now_ms).await?;
        Ok(true)
    }

    /// Asks the host's agent to stop a job. Returns whether the host is
    /// connected here; otherwise the other replicas are told.
    pub async fn cancel(&self, host: &str, job_id: &str) -> bool {
        let Some(tx) = self.sender(host) else {
            if let Some(relay) = &self.relay {
                relay.publish(RelayEvent::JobCancel {
                    job_id: job_id.to_owned(),
                    host_id: host.to_owned(),
                });
            }
            return false;
        };
        let message = CollectorMessage {
            kind: Some(Outgoing::CancelDiagnostic(CancelDiagnostic {
                job_id: job_id.to_owned(),
            })),
        };
        tx.send(Ok(message)).await.is_ok()
    }

    /// Sends `last` to the host's session on this replica and no more: the
    /// last item is an error that ends the agent's stream. Returns whether
    /// the host streams here.
    pub async fn end_session(&self, host: &str, last: Vec<Outbound>) -> bool {
        let Some(tx) = self.sender(host) else {
            return false;
        };
        for message in last {
            if tx.send(message).await.is_err() {
                return false;
            }
        }
        true
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
    /// another host's job. Live output stops at the diagnostic's catalog
    /// cap, as the agent's own does: an agent that streams more has the
    /// rest dropped, its watchers told once, and the job's stored result
    /// says so ([`Dispatch::live_overflowed`]).
    pub fn output(&self, host: &str, chunk: DiagnosticOutput) {
        let data = {
            let mut inner = self.lock();
            let Some(live) = inner.running.get_mut(&chunk.job_id) else {
                return;
            };
            if live.host != host {
                return;
            }
            let room = live.cap.saturating_sub(live.relayed);
            let mut data = chunk.data;
            let taken = data.len().min(room);
            live.relayed += taken;
            if taken < data.len() {
                data.truncate(taken);
                if !live.overflowed {
                    live.overflowed = true;
                    tracing::warn!(host, job = %chunk.job_id, cap = live.cap, "an agent streamed more live output than its diagnostic's cap; the rest is dropped");
                    data.extend_from_slice(
                        format!(
                            "\n[the collector cut the live output at the catalog cap of {} bytes]\n",
                            live.cap
                        )
                        .as_bytes(),
                    );
                }
            }
            if data.is_empty() {
                return;
            }
            if let Some(watchers) = inner.watchers.get(&chunk.job_id) {
                let _ = watchers.send(JobEvent::Output(data.clone()));
            }
            data
        };
        if let Some(relay) = &self.relay {
            relay.publish_output(&chunk.job_id, &data);
        }
    }

    /// True when the agent running `job_id` from here streamed more live
    /// output than the diagnostic's cap.
    pub fn live_overflowed(&self, job_id: &str) -> bool {
        self.lock()
            .running
            .get(job_id)
            .is_some_and(|live| live.overflowed)
    }

    /// A job's result is stored: tells its watchers, here and on the other
    /// replicas, and forgets it.
    pub fn finished(&self, job_id: &str) {
        self.finished_here(job_id);
        if let Some(relay) = &self.relay {
            relay.publish(RelayEvent::Finished {
                job_id: job_id.to_owned(),
            });
        }
    }

    fn finished_here(&self, job_id: &str) {
        let mut inner = self.lock();
        inner.running.remove(job_id);
        if let Some(watchers) = inner.watchers.remove(job_id) {
            let _ = watchers.send(JobEvent::Finished);
        }
    }

    fn output_here(&self, job_id: &str, data: Vec<u8>) {
        if let Some(watchers) = self.lock().watchers.get(job_id) {
            let _ = watchers.send(JobEvent::Output(data));
        }
    }

    /// Acts on what the other replicas say until `shutdown`: delivers and
    /// cancels jobs of hosts connected here, and relays output and finishes
    /// to the technicians watching here. Without a relay it returns at once.
    pub async fn follow(
        self: Arc<Self>,
        store: SharedStore,
        clock: SharedClock,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let Some(relay) = self.relay.clone() else {
            return;
        };
        let mut heard = relay.subscribe();
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = heard.recv() => event,
            };
            let result = match event {
                Ok(event) => self.act_on(&store, &clock, event).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the relay follower lagged; resyncing from the store"
                    );
                    self.act_on(&store, &clock, RelayEvent::Resync).await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(error) = result {
                tracing::warn!(%error, "acting on a relay event failed");
            }
        }
    }

    async fn act_on(
        &self,
        store: &SharedStore,
        clock: &SharedClock,
        event: RelayEvent,
    ) -> StoreResult<()> {
        match event {
            RelayEvent::JobQueued { job_id, host_id } => {
                if !self.connected(&host_id) {
                    return Ok(());
                }
                if let Some(job) = store.job(&job_id).await?
                    && job.state == "queued"
                {
                    self.deliver(store, &job, clock.now_ms()).await?;
                }
            }
            RelayEvent::JobCancel { job_id, host_id } => {
                if self.connected(&host_id) {
                    self.cancel(&host_id, &job_id).await;
                }
            }
            RelayEvent::Output { job_id, data } => match hex::decode(&data) {
                Ok(data) => self.output_here(&job_id, data),
                Err(_) => tracing::warn!(job = %job_id, "ignored unreadable relayed output"),
            },
            RelayEvent::Finished { job_id } => self.finished_here(&job_id),
            RelayEvent::HostRevoked { host_id } => {
                self.cuts.cut(&Revoked::Host(host_id));
            }
            RelayEvent::TokenRevoked { token_id } => {
                self.cuts.cut(&Revoked::ApiToken(token_id));
            }
            RelayEvent::Resync => {
                let queued = store
                    .list_jobs(&JobQuery {
                        host_id: None,
                        state: Some("queued".into()),
                        limit: 10_000,
                    })
                    .await?;
                let now = clock.now_ms();
                for job in queued.iter().filter(|job| self.connected(&job.host_id)) {
                    self.deliver(store, job, now).await?;
                }
            }
        }
        Ok(())
    }

    /// A revocation committed: ends what it holds here, and tells the other
    /// replicas. Returns whether anything here was cut.
    pub fn revoke(&self, revoked: &Revoked) -> bool {
        if let Some(relay) = &self.relay {
            relay.publish(match revoked {
                Revoked::Host(id) => RelayEvent::HostRevoked {
                    host_id: id.clone(),
                },
                Revoked::ApiToken(id) => RelayEvent::TokenRevoked {
                    token_id: id.clone(),
                },
            });
        }
        self.cuts.cut(revoked)
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
