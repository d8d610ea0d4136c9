//! The agent's work loop: collect on schedule, append to the durable spool,
//! keep a session with the collector, send what waits in the spool, and
//! drop what is acknowledged.
//!
//! The connection is an explicit state machine, Connected or
//! Disconnected(retry at), with capped exponential backoff and jitter, and a
//! log line on each change. Collection goes on while disconnected, and
//! never on the loop itself: inventories and health samples are taken on
//! tokio's blocking pool and come back to the loop to be spooled
//! ([`collection`]), so a slow probe holds up no acknowledgement,
//! diagnostic or local request.

mod collection;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Incoming;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, CollectorMessage, DiagnosticResult, Goodbye, GoodbyeReason, HealthSample, Hello,
    Inventory, RenewCertificate, SpoolCounters,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::codec::CompressionEncoding;
use tracing::{info, warn};

use self::collection::{Collected, Collection, collect_now};
use crate::collect::{HealthSampler, collect_inventory};
use crate::config::AgentConfig;
use crate::diagnostics::{self, Executor};
use crate::inventory_base::InventoryBase;
use crate::issue::{self, IssueRequest};
use crate::renew;
use crate::spool::{Dropped, Resolution, Spool, SpoolError};
use crate::state::{Credentials, StateDir, Status};
use crate::transport;

/// How long a closed session's final status is waited for.
const CLOSING_STATUS_WAIT: Duration = Duration::from_secs(5);

/// The largest message the agent accepts from the collector.
const MAX_INBOUND_MESSAGE: usize = 4 * 1024 * 1024;
/// Reports queued on the wire at once.
const SEND_QUEUE: usize = 256;
/// Reports read back from the spool at a time, so a long backlog is sent
/// without holding it all in memory.
const READ_BATCH: usize = 64;
/// The first retry delay and the cap of the exponential backoff.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long `run --once` waits for its acknowledgements.
const ONCE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the live status is written to disk at most, so `status` after a
/// crash is not far behind.
const STATUS_SAVE_EVERY: Duration = Duration::from_secs(300);

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the running service shares with the local socket.
#[derive(Debug, Default)]
pub struct LiveStatus {
    /// The status as `status` shows it.
    pub status: Status,
}

/// Shared handle to the live status.
pub type SharedStatus = Arc<Mutex<LiveStatus>>;

fn update(shared: &SharedStatus, change: impl FnOnce(&mut Status)) {
    if let Ok(mut live) = shared.lock() {
        change(&mut live.status);
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt: a random point in the upper half
    /// of the current step, so a fleet does not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        let half = step / 2;
        let jitter = rand::random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// An open session: the send side and the collector's replies.
struct Session {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<CollectorMessage>,
    /// The highest seq already written to this session.
    sent_up_to: u64,
    /// The inventory limits the collector opened the session with (none
    /// from a collector older than issue 20).
    limits: Option<deskpulse_proto::limits::Limits>,
    /// An inventory was refused on this session and collected again: a
    /// second refusal is not answered with a third collection.
    recollected: bool,
}

/// What can end a session attempt.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reaching the collector failed.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// The collector answered with an error.
    #[error("{0}")]
    Status(String),
    /// The stream ended.
    #[error("the collector closed the session")]
    Closed,
    /// The spool could not be opened or read.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The collector does not accept this host certificate.
    #[error("{0}")]
    Refused(String),
    /// The host certificate expired: only a new enrollment helps
    /// ([`renew::expired_line`]).
    #[error("{0}")]
    Expired(String),
    /// An admin revoked this host (issue 20): only a new enrollment with a
    /// fresh token helps.
    #[error("{0}")]
    Revoked(String),
}

fn status_error(status: &tonic::Status) -> SessionError {
    let line = deskpulse_proto::client::describe_status(status);
    if status.code() != tonic::Code::Unauthenticated {
        SessionError::Status(line)
    } else if status.message().contains("revoked") {
        SessionError::Revoked(line)
    } else if status.message().contains("expired") {
        SessionError::Expired(line)
    } else {
        SessionError::Refused(line)
    }
}

/// Opens a session with the renewed pair if one waits, making it current
/// once the collector accepts it, else with the current pair unless that
/// has expired by the agent's clock (the collector's TLS would refuse it
/// anyway, with a less useful alert).
async fn connect(
    state: &StateDir,
    creds: &mut Credentials,
    config: &AgentConfig,
) -> Result<Session, SessionError> {
    if let Some(next) = renew::pending(state, creds) {
        match open_session(&next, config).await {
            Ok(session) => {
                match renew::promote(state, &next) {
                    Ok(()) if next.enrollment.host_id != creds.enrollment.host_id => info!(
                        host = %next.enrollment.host_id,
                        "the collector accepted the re-linked host certificate; this agent is that host now"
                    ),
                    Ok(()) => info!(
                        "the collector accepted the renewed host certificate; it is the current one now"
                    ),
                    // The renewed pair stays waiting and is tried first
                    // again, so nothing is lost.
                    Err(error) => {
                        warn!(%error, "cannot make the renewed certificate current; will retry")
                    }
                }
                *creds = next;
                return Ok(session);
            }
            Err(SessionError::Refused(reason)) => {
                warn!(%reason, "the collector refused the renewed certificate; dropping it and keeping the current one");
                renew::discard(state);
            }
            Err(error) => {
                warn!(%error, "cannot connect with the renewed certificate; trying the current one");
            }
        }
    }
    if let Ok(validity) = renew::validity(&creds.cert_pem)
        && validity.expired(renew::now_ms())
    {
        return Err(SessionError::Expired(renew::expired_line(
            validity.not_after_ms,
            &creds.enrollment.host_id,
        )));
    }
    open_session(creds, config).await
}

fn hello(config: &AgentConfig) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Hello(Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            inventory_schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
            health_interval_secs: u32::try_from(config.health_interval.as_secs())
                .unwrap_or(u32::MAX),
            catalog_version: deskpulse_proto::catalog::CATALOG_VERSION,
            enabled_diagnostics: config
                .enabled_diagnostics
                .iter()
                .map(|id| (*id).to_owned())
                .collect(),
            // The collector measures this PC's clock from it.
            sent_at_unix_ms: now_ms(),
            // A few file lookups per diagnostic, so checked afresh on each
            // connect: a program installed since shows up without a restart.
            unavailable_diagnostics: crate::diagnostics::available::unavailable(
                &config.enabled_diagnostics,
                &config.system_root,
            ),
        })),
    }
}

async fn open_session(creds: &Credentials, config: &AgentConfig) -> Result<Session, SessionError> {
    let channel = transport::connect(
        &creds.enrollment.collector,
        &creds.ca_pem,
        Some((&creds.cert_pem, &creds.key_pem)),
    )
    .await?;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    tx.send(hello(config))
        .await
        .map_err(|_| SessionError::Closed)?;
    let mut client = AgentServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(MAX_INBOUND_MESSAGE);
    let response = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| status_error(&s))?;
    let limits = response
        .metadata()
        .get(deskpulse_proto::limits::HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| match text.parse() {
            Ok(limits) => Some(limits),
            Err(error) => {
                warn!(%error, "ignoring the collector's inventory limits");
                None
            }
        });
    Ok(Session {
        tx,
        inbound: response.into_inner(),
        sent_up_to: 0,
        limits,
        recollected: false,
    })
}

impl Session {
    /// Whether an inventory the collector refused should be collected
    /// again, now cut to the limits this session opened with: once per
    /// session, so an inventory that cannot be cut enough is not collected
    /// in a loop (the next one comes on the inventory interval).
    fn recollect_after_refusal(&mut self, handled: Handled) -> bool {
        if !handled.inventory_refused || self.recollected {
            return false;
        }
        self.recollected = true;
        info!("collecting the inventory again within the collector's limits");
        true
    }

    /// Sends one message.
    async fn send(&mut self, message: AgentMessage) -> Result<(), SessionError> {
        if self.tx.send(message).await.is_ok() {
            return Ok(());
        }
        Err(self.why_closed().await)
    }

    /// Why the collector ended the call, once our side of it was closed:
    /// the request side closes as soon as the collector's answer ends, often
    /// before this agent has read the status that says why (an `internal`
    /// from a failed session, a refusal). Messages still buffered before it
    /// are dropped: the session ends anyway, and their reports are resent.
    async fn why_closed(&mut self) -> SessionError {
        let status = async {
            loop {
                match self.inbound.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return SessionError::Closed,
                    Err(status) => return status_error(&status),
                }
            }
        };
        tokio::time::timeout(CLOSING_STATUS_WAIT, status)
            .await
            .unwrap_or(SessionError::Closed)
    }

    /// Writes every waiting report this session has not sent yet.
    async fn flush(&mut self, spool: &mut Spool) -> Result<(), SessionError> {
        loop {
            let reports = spool.read_after(self.sent_up_to, READ_BATCH)?;
            if reports.is_empty() {
                return Ok(());
            }
            for mut report in reports {
                let seq = report.seq;
                // Stamped now, not when spooled: the collector measures the
                // PC's clock against its own from it.
                report.sent_at_unix_ms = now_ms();
                for message in deskpulse_proto::parts::report_messages(report) {
                    self.send(message).await?;
                }
                self.sent_up_to = seq;
            }
        }
    }

    /// Says goodbye and waits briefly for the collector to close.
    async fn close(mut self, reason: GoodbyeReason) {
        let _ = self
            .tx
            .send(AgentMessage {
                kind: Some(Kind::Goodbye(Goodbye {
                    reason: reason as i32,
                })),
            })
            .await;
        drop(self.tx);
        let drain = async { while let Ok(Some(_)) = self.inbound.message().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }
}

/// What a collector message changed.
#[derive(Debug, Default, Clone, Copy)]
struct Handled {
    /// A report was acknowledged.
    acknowledged: bool,
    /// The collector wants a full inventory.
    resync: bool,
    /// The collector refused the report that carried the newest inventory.
    inventory_refused: bool,
}

/// Applies one collector message to the spool and the inventory base.
fn handle_incoming(
    message: CollectorMessage,
    spool: &mut Spool,
    base: &mut InventoryBase,
) -> Handled {
    let mut inventory_refused = false;
    let (spool_id, seq, why) = match message.kind {
        Some(Incoming::Ack(ack)) => (ack.spool_id, ack.seq, Resolution::Acknowledged),
        Some(Incoming::Rejected(rejected)) => {
            warn!(seq = rejected.seq, reason = %rejected.reason, "the collector rejected a report; dropping it");
            inventory_refused =
                rejected.spool_id == spool.spool_id() && base.is_pending(rejected.seq);
            (rejected.spool_id, rejected.seq, Resolution::Rejected)
        }
        Some(Incoming::ResyncInventory(resync)) => {
            info!(reason = %resync.reason, "the collector asks for a full inventory");
            base.forget();
            return Handled {
                resync: true,
                ..Handled::default()
            };
        }
        // The service loop hands diagnostics to its executor before this;
        // `run --once` runs none: the collector delivers them again on the
        // service's next connect.
        // Renewal is the service loop's; `run --once` asks for none.
        // So is following a CA rotation (`TrustedCas`).
        // So are employees' `my-tickets` answers.
        Some(
            Incoming::RunDiagnostic(_)
            | Incoming::CancelDiagnostic(_)
            | Incoming::CertificateRenewed(_)
            | Incoming::TrustedCas(_)
            | Incoming::MyTickets(_),
        )
        | None => {
            return Handled::default();
        }
    };
    let acknowledged = why == Resolution::Acknowledged;
    if acknowledged && spool_id == spool.spool_id() {
        base.acknowledged(seq);
    }
    match spool.remove(&spool_id, seq, why) {
        Ok(removed) => Handled {
            acknowledged: removed && acknowledged,
            resync: false,
            inventory_refused,
        },
        // The report stays on disk and is sent again after a restart; the
        // collector stores it once (D14).
        Err(error) => {
            warn!(%error, seq, "cannot record the acknowledgement in the spool");
            Handled {
                acknowledged,
                resync: false,
                inventory_refused,
            }
        }
    }
}

/// Spools a freshly collected inventory: a delta against the acknowledged
/// base, or the full snapshot. The delta is taken here, on the loop, against
/// the base as it stands now (an acknowledgement or a resync may have moved
/// it while the snapshot was collected); diffing costs milliseconds, next to
/// the collection's seconds.
fn push_inventory(spool: &mut Spool, base: &mut InventoryBase, mut snapshot: Inventory) -> bool {
    base.cut_to_limits(&mut snapshot);
    let spooled = match spool.push(base.payload_for(&snapshot), now_ms()) {
        Ok(seq) => {
            base.spooled(seq, &snapshot);
            true
        }
        Err(error) => {
            warn!(%error, "the inventory could not be spooled and is lost; it is counted as dropped");
            false
        }
    };
    drop(snapshot);
    crate::collect::release_freed_memory();
    spooled
}

/// The spool's drop counts as the collector receives them.
fn spool_counters(spool: &Spool) -> AgentMessage {
    let stats = spool.stats();
    let d = stats.dropped;
    AgentMessage {
        kind: Some(Kind::Spool(SpoolCounters {
            spool_id: spool.spool_id().to_owned(),
            health_thinned: d.health_thinned,
            health_dropped: d.health_dropped,
            inventory_superseded: d.inventory_superseded,
            results_refused: d.results_refused,
            unwritable: d.unwritable,
            waiting: spool.len() as u64,
        })),
    }
}

/// Appends a report, logging (not failing) when the disk refuses it.
fn spool_push(spool: &mut Spool, payload: Payload) -> bool {
    match spool.push(payload, now_ms()) {
        Ok(_) => true,
        Err(error) => {
            warn!(%error, "a report could not be spooled and is lost; it is counted as dropped");
            false
        }
    }
}

/// Spools an employee's report with its sample, durable before the reply
/// (D14), which says whether the service is connected. True when spooled.
fn spool_issue(
    spool: &mut Spool,
    request: IssueRequest,
    sample: HealthSample,
    connected: bool,
) -> bool {
    let reported_at = request.reported_at_unix_ms.unwrap_or_else(now_ms);
    let payload = issue::payload(
        request.text,
        request.os_user,
        sample,
        request.report_key,
        request.reporter_email,
    );
    let (spooled, answer) = match spool.push(payload, reported_at) {
        Ok(seq) => {
            info!(seq, "an employee reported an issue; spooled");
            (true, Ok(connected))
        }
        Err(error) => {
            warn!(%error, "an issue report could not be spooled");
            (
                false,
                Err(format!(
                    "the report could not be saved in the spool: {error}"
                )),
            )
        }
    };
    let _ = request.reply.send(answer);
    spooled
}

/// Spools a diagnostic's answer (D26: durable, acknowledged like any
/// report), records it in the executor's journal, and does the same for
/// any queued job that could not start in the slot it freed. True when
/// something was spooled.
fn answer(spool: &mut Spool, executor: &mut Executor, result: DiagnosticResult) -> bool {
    let mut spooled = false;
    let mut pending = vec![result];
    while let Some(result) = pending.pop() {
        spooled |= spool_push(spool, Payload::DiagnosticResult(result.clone()));
        pending.extend(executor.recorded(&result));
    }
    spooled
}

/// Spools a refusal's answer while the spool's unacknowledged results
/// fill less than half of their bound. The other half is kept for real
/// results and employees' reports: a collector that floods this PC with
/// requests and never acknowledges the answers cannot crowd them out. Only
/// such a collector finds its request unanswered (it expires there).
fn answer_refusal(
    spool: &mut Spool,
    limits: &crate::spool::Limits,
    executor: &mut Executor,
    refused: DiagnosticResult,
) -> bool {
    if spool.stats().results.bytes >= limits.results_bytes / 2 {
        warn!(job = %refused.job_id, "unacknowledged results fill half the spool's bound; a refused diagnostic request is not answered");
        return false;
    }
    answer(spool, executor, refused)
}

/// Opens the spool in the state dir and logs what recovery found.
fn open_spool(config: &AgentConfig, state: &StateDir) -> Result<Spool, SessionError> {
    let (spool, recovery) = Spool::open(&state.spool_dir(), config.spool_limits)?;
    Spool::log_recovery(&recovery);
    Ok(spool)
}

/// The outcome of `run --once`.
#[derive(Debug)]
pub struct OnceOutcome {
    /// The host id.
    pub host_id: String,
    /// Reports acknowledged.
    pub acknowledged: usize,
}

/// `run --once`: one inventory and one health sample, sent and
/// acknowledged, then goodbye.
pub async fn run_once(config: &AgentConfig, state: &StateDir) -> Result<OnceOutcome, SessionError> {
    let mut creds = state
        .usable_credentials()
        .map_err(|e| SessionError::Status(e.to_string()))?;
    let mut status = state.status().unwrap_or_default();
    let result = once(config, state, &mut creds).await;
    match &result {
        Ok(_) => status.last_success_unix_ms = Some(now_ms()),
        Err(error) => {
            status.last_error = Some(error.to_string());
            status.last_error_unix_ms = Some(now_ms());
        }
    }
    status.connected = false;
    if let Err(error) = state.save_status(&status) {
        warn!(%error, "cannot save the status");
    }
    result
}

async fn once(
    config: &AgentConfig,
    state: &StateDir,
    creds: &mut Credentials,
) -> Result<OnceOutcome, SessionError> {
    let mut spool = open_spool(config, state)?;
    let mut base = InventoryBase::open(&state.inventory_dir());
    // Reports spooled offline get their ticket numbers here too.
    let mut ledger = issue::ledger::Ledger::open(state.root());
    let mut snapshot = collect_inventory_now(config).await?;
    base.cut_to_limits(&mut snapshot);
    let seq = spool.push(base.payload_for(&snapshot), now_ms())?;
    base.spooled(seq, &snapshot);
    drop(snapshot);
    let (root, settings) = (config.system_root.clone(), config.health.clone());
    let sample = collect_now("health", move || {
        HealthSampler::with_settings(&root, settings).sample()
    })
    .await
    .map_err(SessionError::Status)?;
    spool.push(Payload::Health(sample), now_ms())?;
    // Whatever an earlier run left waiting goes too.
    let expected = spool.len();
    let mut session = connect(state, creds, config).await?;
    if let Some(limits) = session.limits {
        base.set_limits(limits);
    }
    session.send(spool_counters(&spool)).await?;
    session.flush(&mut spool).await?;
    let wait = async {
        while !spool.is_empty() {
            match session.inbound.message().await {
                Ok(Some(CollectorMessage {
                    kind: Some(Incoming::CertificateRenewed(handed)),
                })) => {
                    // Unasked: an admin approved this enrollment's re-link
                    // to an existing host (issue 20). Everything unsent is
                    // sent again, as that host.
                    let host = renew::take_relinked(
                        state,
                        creds,
                        &handed.certificate_pem,
                        &handed.ca_bundle_pem,
                    )
                    .map_err(SessionError::Status)?;
                    info!(%host, "an admin approved this enrollment's re-link to an existing host; reconnecting as that host");
                    session = connect(state, creds, config).await?;
                    session.send(spool_counters(&spool)).await?;
                    session.flush(&mut spool).await?;
                }
                Ok(Some(message)) => {
                    issue::tickets::record_reported(&mut ledger, &message);
                    let handled = handle_incoming(message, &mut spool, &mut base);
                    if handled.resync || session.recollect_after_refusal(handled) {
                        let snapshot = collect_inventory_now(config).await?;
                        push_inventory(&mut spool, &mut base, snapshot);
                        session.flush(&mut spool).await?;
                    }
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => return Err(status_error(&status)),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(ONCE_TIMEOUT, wait).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(SessionError::Status(format!(
                "{} of {expected} reports were not acknowledged within {}s; they stay in the spool",
                spool.len(),
                ONCE_TIMEOUT.as_secs()
            )));
        }
    }
    session.close(GoodbyeReason::ServiceStop).await;
    Ok(OnceOutcome {
        host_id: creds.enrollment.host_id.clone(),
        acknowledged: expected,
    })
}

/// `run --once`'s inventory, collected on the blocking pool.
async fn collect_inventory_now(config: &AgentConfig) -> Result<Inventory, SessionError> {
    let root = config.system_root.clone();
    collect_now("inventory", move || collect_inventory(&root))
        .await
        .map_err(SessionError::Status)
}

/// The service loop: runs until `shutdown` is cancelled. Employees'
/// reports arrive on `issues` from the local socket, their `my-tickets`
/// requests on `employees.asks`.
pub async fn run_service(
    config: &AgentConfig,
    state: &StateDir,
    live: SharedStatus,
    mut issues: mpsc::Receiver<IssueRequest>,
    mut employees: issue::tickets::Employees,
    shutdown: CancellationToken,
) -> Result<(), SessionError> {
    let mut creds = state
        .usable_credentials()
        .map_err(|e| SessionError::Status(e.to_string()))?;
    let mut spool = open_spool(config, state)?;
    let mut base = InventoryBase::open(&state.inventory_dir());
    collection::share_one_malloc_arena();
    // The renewal asked for on this session, and when one may be asked next.
    let mut renewal: Option<renew::Renewal> = None;
    let mut renew_not_before = Instant::now();
    let mut expired_said = false;
    let mut collection = Collection::new(config.system_root.clone(), config.health.clone());
    let (mut executor, interrupted) = Executor::open(
        &state.root().join("diagnostics"),
        diagnostics::Context {
            system_root: config.system_root.clone(),
            http_allow_loopback: config.http_check_allow_loopback,
            disk_usage_roots: config.disk_usage_roots.clone(),
        },
        config.enabled_diagnostics.clone(),
    );
    for result in interrupted {
        spool_push(&mut spool, Payload::DiagnosticResult(result));
    }
    let mut counters_sent: Option<Dropped> = None;
    let mut inventory_tick = tokio::time::interval(config.inventory_interval);
    let mut health_tick = tokio::time::interval(config.health_interval);
    // A missed tick (a sleeping laptop) means one sample now, not a burst.
    inventory_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::default();
    let mut session: Option<Session> = None;
    let mut retry_at = Instant::now();
    let mut last_saved = Instant::now();
    update(&live, |s| *s = state.status().unwrap_or_default());
    update(&live, |s| s.connected = false);
    info!(collector = %creds.enrollment.collector, host = %creds.enrollment.host_id, "agent service started");

    loop {
        let mut fresh = false;
        let mut failure: Option<SessionError> = None;
        tokio::select! {
            () = shutdown.cancelled() => break,
            // Each starts a job on the blocking pool, or leaves it to the
            // one under way (`collection`): the loop never collects.
            _ = inventory_tick.tick() => collection.start_inventory(),
            _ = health_tick.tick() => {
                collection.start_sample();
                if let Some(open) = session.as_mut()
                    && let Err(error) = maybe_renew(open, &creds, &mut renewal, &mut renew_not_before, false).await
                {
                    failure = Some(error);
                }
            }
            // A fresh sample: the cheap readings now, the slow probes from
            // their cache (D24).
            Some(request) = issues.recv() => collection.sample_for_issue(request),
            Some(ask) = employees.asks.recv() => match session.as_ref() {
                Some(open) => employees.pending.send(&open.tx, ask),
                None => {
                    let _ = ask.reply.send(Err(issue::tickets::NOT_CONNECTED.to_owned()));
                }
            },
            collected = collection.finished() => match collected {
                Collected::Inventory(snapshot) => {
                    fresh = push_inventory(&mut spool, &mut base, snapshot);
                }
                Collected::Health { sample, periodic, issues: reports } => {
                    for request in reports {
                        fresh |= spool_issue(&mut spool, request, sample.clone(), session.is_some());
                    }
                    if periodic {
                        fresh |= spool_push(&mut spool, Payload::Health(sample));
                    }
                }
            },
            event = executor.next_event() => match event {
                // Best effort (D26): a full send queue or no session drops
                // the chunk; the spooled result has the whole output.
                diagnostics::Event::Output(chunk) => {
                    if let Some(open) = session.as_ref() {
                        let _ = open.tx.try_send(AgentMessage {
                            kind: Some(Kind::DiagnosticOutput(chunk)),
                        });
                    }
                }
                diagnostics::Event::Done(result) => {
                    fresh = answer(&mut spool, &mut executor, result);
                }
            },
            () = tokio::time::sleep_until(retry_at), if session.is_none() => {
                match connect(state, &mut creds, config).await {
                    Ok(mut opened) => {
                        info!(collector = %creds.enrollment.collector, "connected");
                        if let Some(limits) = opened.limits
                            && base.set_limits(limits)
                        {
                            info!(%limits, "the collector's inventory limits");
                        }
                        backoff.reset();
                        expired_said = false;
                        update(&live, |s| s.connected = true);
                        renewal = None;
                        if let Err(error) = maybe_renew(&mut opened, &creds, &mut renewal, &mut renew_not_before, false).await {
                            failure = Some(error);
                        }
                        session = Some(opened);
                        counters_sent = None;
                        fresh = true;
                    }
                    Err(error) => failure = Some(error),
                }
            }
            message = async {
                match session.as_mut() {
                    Some(s) => s.inbound.message().await,
                    None => std::future::pending().await,
                }
            } => {
                match message {
                    // Diagnostics may arrive at any time, also right after
                    // the Hello for jobs queued while we were away.
                    Ok(Some(CollectorMessage { kind: Some(Incoming::RunDiagnostic(run)) })) => {
                        if let Some(refused) = executor.submit(run) {
                            fresh = answer_refusal(&mut spool, &config.spool_limits, &mut executor, refused);
                        }
                    }
                    Ok(Some(CollectorMessage { kind: Some(Incoming::CancelDiagnostic(cancel)) })) => {
                        if let Some(cancelled) = executor.cancel(&cancel.job_id) {
                            fresh = answer(&mut spool, &mut executor, cancelled);
                        }
                    }
                    Ok(Some(CollectorMessage { kind: Some(Incoming::CertificateRenewed(renewed)) })) => {
                        match renewal.take().map(|r| r.finish(state, &renewed.certificate_pem, &renewed.ca_bundle_pem)) {
                            Some(Ok(validity)) => {
                                info!(valid_until = %renew::format_ms(validity.not_after_ms), "received a renewed host certificate; reconnecting with it");
                                // The next connection presents it, which is
                                // the collector's proof that it is stored.
                                session = None;
                                retry_at = Instant::now();
                                update(&live, |s| s.connected = false);
                            }
                            Some(Err(error)) => warn!(%error, "the renewed host certificate is unusable; keeping the current one"),
                            // Unasked: an admin approved this enrollment's
                            // re-link to an existing host (issue 20).
                            None => match renew::take_relinked(state, &creds, &renewed.certificate_pem, &renewed.ca_bundle_pem) {
                                Ok(host) => {
                                    info!(%host, "an admin approved this enrollment's re-link to an existing host; reconnecting as that host");
                                    session = None;
                                    retry_at = Instant::now();
                                    update(&live, |s| s.connected = false);
                                }
                                Err(error) => warn!(%error, "the collector sent a certificate this agent cannot use; ignored"),
                            },
                        }
                    }
                    Ok(Some(CollectorMessage { kind: Some(Incoming::TrustedCas(trusted)) })) => {
                        match renew::adopt_bundle(state, &mut creds, &trusted.ca_bundle_pem) {
                            Ok(true) => info!("the collector's CA bundle changed (a CA rotation); trusting it from now on"),
                            Ok(false) => {}
                            Err(reason) => warn!(%reason, "kept the current CA bundle"),
                        }
                        if trusted.renew_now
                            && let Some(open) = session.as_mut()
                            && let Err(error) = maybe_renew(open, &creds, &mut renewal, &mut renew_not_before, true).await
                        {
                            failure = Some(error);
                        }
                    }
                    Ok(Some(CollectorMessage { kind: Some(Incoming::MyTickets(answer)) })) => {
                        employees.pending.answered(answer);
                    }
                    Ok(Some(message)) => {
                        employees.acknowledged(&message);
                        let handled = handle_incoming(message, &mut spool, &mut base);
                        if handled.acknowledged {
                            update(&live, |s| s.last_success_unix_ms = Some(now_ms()));
                        }
                        let recollect = session.as_mut().is_some_and(|s| s.recollect_after_refusal(handled));
                        if handled.resync || recollect {
                            collection.start_inventory();
                        }
                    }
                    Ok(None) => failure = Some(SessionError::Closed),
                    Err(status) => failure = Some(status_error(&status)),
                }
            }
        }
        if failure.is_none()
            && let Some(open) = session.as_mut()
        {
            let dropped = spool.stats().dropped;
            let mut sent = Ok(());
            if counters_sent != Some(dropped) {
                sent = open.send(spool_counters(&spool)).await;
                counters_sent = Some(dropped);
            }
            if sent.is_ok() && fresh {
                sent = open.flush(&mut spool).await;
            }
            if let Err(error) = sent {
                failure = Some(error);
            }
        }
        if let Some(SessionError::Expired(line) | SessionError::Revoked(line)) = &failure {
            // Nothing to retry until an admin enrolls again; collection
            // goes on into the spool meanwhile. Checked again now and then
            // (the collector's refusal may have come from its clock). A
            // revoked host is said once too, not retried in a loop.
            if !expired_said {
                tracing::error!("{line}");
                expired_said = true;
            }
            session = None;
            retry_at = Instant::now() + EXPIRED_RECHECK;
            update(&live, |s| {
                s.connected = false;
                s.last_error = Some(line.clone());
                s.last_error_unix_ms = Some(now_ms());
            });
            save_live(state, &live);
            failure = None;
        }
        if let Some(error) = failure {
            let delay = backoff.next_delay();
            if session.take().is_some() {
                warn!(%error, retry_in = ?delay, "disconnected");
            } else {
                warn!(%error, retry_in = ?delay, "cannot connect");
            }
            retry_at = Instant::now() + delay;
            update(&live, |s| {
                s.connected = false;
                s.last_error = Some(error.to_string());
                s.last_error_unix_ms = Some(now_ms());
            });
        }
        if session.is_none() {
            // No answer comes over a session that ended: each asker is
            // told at once.
            employees.pending.clear();
        }
        update(&live, |s| {
            s.unacknowledged = spool.len() as u64;
            s.spool = spool.stats();
        });
        if last_saved.elapsed() >= STATUS_SAVE_EVERY {
            save_live(state, &live);
            last_saved = Instant::now();
        }
    }
    // A collection under way is not waited for (`collection`): its result
    // would be spooled by nobody, and the next start collects afresh.
    // Reports waiting for its sample are told the service is stopping.
    drop(collection);
    // No diagnostic outlives the service: running ones are killed and
    // answered CANCELLED, and the answers go out if the session still is.
    for result in executor.shutdown().await {
        answer(&mut spool, &mut executor, result);
    }
    if let Some(mut open) = session.take() {
        let _ = open.flush(&mut spool).await;
        open.close(GoodbyeReason::ServiceStop).await;
    }
    update(&live, |s| s.connected = false);
    save_live(state, &live);
    info!(
        unacknowledged = spool.len(),
        "agent service stopped; unacknowledged reports stay in the spool"
    );
    Ok(())
}

/// How often an agent whose certificate expired looks again.
const EXPIRED_RECHECK: Duration = Duration::from_secs(3600);

/// Asks for a renewed certificate over `open` when two thirds of the
/// current one's lifetime have passed, or at once when the collector says
/// the certificate's CA is being rotated out (`rotation`), unless one was
/// asked for lately.
async fn maybe_renew(
    open: &mut Session,
    creds: &Credentials,
    renewal: &mut Option<renew::Renewal>,
    not_before: &mut Instant,
    rotation: bool,
) -> Result<(), SessionError> {
    if renewal.is_some() || Instant::now() < *not_before {
        return Ok(());
    }
    let due = match renew::validity(&creds.cert_pem) {
        Ok(validity) => rotation || validity.renewal_due(renew::now_ms()),
        Err(reason) => {
            warn!(%reason, "cannot read the host certificate's validity; not renewing");
            false
        }
    };
    if !due {
        return Ok(());
    }
    *not_before = Instant::now() + renew::RETRY_AFTER;
    let (started, csr_der) = match renew::Renewal::start() {
        Ok(started) => started,
        Err(error) => {
            warn!(%error, "cannot start a certificate renewal");
            return Ok(());
        }
    };
    if rotation {
        info!("the collector is rotating its CA; asking for a host certificate from the new one");
    } else {
        info!(
            "two thirds of the host certificate's lifetime have passed; asking for a renewed one"
        );
    }
    open.send(AgentMessage {
        kind: Some(Kind::RenewCertificate(RenewCertificate { csr_der })),
    })
    .await?;
    *renewal = Some(started);
    Ok(())
}

fn save_live(state: &StateDir, live: &SharedStatus) {
    let snapshot = live.lock().map(|l| l.status.clone()).unwrap_or_default();
    if let Err(error) = state.save_status(&snapshot) {
        warn!(%error, "cannot save the status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_reports_the_catalog_version_and_this_agents_allowlist() {
        let flags = crate::config::AgentFlags::default();
        let env: std::collections::HashMap<String, String> = [(
            "DESKPULSE_AGENT_DIAGNOSTICS_ENABLE".to_owned(),
            "flush_dns".to_owned(),
        )]
        .into();
        let config = crate::config::resolve(&flags, &env).expect("config");
        let Some(Kind::Hello(hello)) = hello(&config).kind else {
            panic!("a hello");
        };
        assert_eq!(
            hello.catalog_version,
            deskpulse_proto::catalog::CATALOG_VERSION
        );
        let mut expected: Vec<String> = deskpulse_proto::catalog::default_enabled()
            .into_iter()
            .map(str::to_owned)
            .collect();
        expected.push("flush_dns".into());
        assert_eq!(hello.enabled_diagnostics, expected);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first >= BACKOFF_START / 2 && first <= BACKOFF_START);
        let mut last = first;
        for _ in 0..20 {
            last = backoff.next_delay();
            assert!(last <= BACKOFF_CAP);
        }
        assert!(last >= BACKOFF_CAP / 2, "reaches the cap: {last:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_START);
    }
}
