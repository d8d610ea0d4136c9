//! Remote diagnostics on the agent (issue 7, D25, D26): the executor that
//! takes a `RunDiagnostic` from the session, decides for itself whether to
//! run it, runs it with the catalog's timeout and output cap, streams the
//! output live and hands back the final result for the spool.
//!
//! The agent trusts nothing the collector says about a request. Before
//! anything runs, [`Executor::submit`] refuses a request that is malformed,
//! unknown to the catalog, disabled in this agent's own config, fails
//! `catalog::check`, or has expired; a refusal is a result with outcome
//! REFUSED and a one-line reason, and nothing is spawned.
//!
//! # Layout
//! - this file: the executor (admission, queue, at most [`MAX_RUNNING`]
//!   jobs at once, cancel, timeout) and the capped output [`Sink`].
//! - [`available`]: which enabled diagnostics this PC can run (programs
//!   installed), for the `Hello`.
//! - [`journal`]: the job ids already started or answered, on disk, so a
//!   request the collector delivers again after a reconnect or a restart is
//!   not run twice.
//! - [`plan`]: what each diagnostic runs, per platform, as argv lists or
//!   native steps; plain functions, tested on Linux for all three.
//! - [`run`]: carries out a plan: programs through `collect::spawn::stream`,
//!   native steps in Rust.
//! - [`native`], [`dns`], [`http`]: the diagnostics done in Rust (sockets,
//!   `/proc`, file walks).
//! - [`parse`]: plain parsers of `/proc` tables and program output
//!   (journal, `systemctl status`, `timedatectl`, `chronyc`).

pub mod available;
pub mod dns;
pub mod http;
pub mod journal;
pub mod native;
pub mod parse;
pub mod plan;
pub mod run;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deskpulse_proto::catalog::{self, Spec};
use deskpulse_proto::v1::{DiagnosticOutcome, DiagnosticOutput, DiagnosticResult, RunDiagnostic};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::session::now_ms;

/// Diagnostics running at once; more wait in the queue. Two keeps a burst
/// of queued jobs (delivered right after Hello) from loading the PC.
pub const MAX_RUNNING: usize = 2;
/// Requests waiting for a slot; past this they are refused.
pub const MAX_QUEUED: usize = 16;
/// Live output messages buffered towards the session; past this chunks are
/// dropped (the final result carries the whole capped output anyway).
const OUTPUT_QUEUE: usize = 64;
/// Refusals logged with their reason per hour. Past this a refusal is
/// still answered, with a short fixed reason and no log line of its own,
/// so a flood of bad requests neither floods the log nor leaves
/// `deskpulse run` waiting for an answer that never comes. What keeps such
/// a flood from filling the spool's results class (which also carries
/// employees' issue reports) is the session's reserve: it spools a refusal
/// only while unacknowledged results fill less than half of their bound.
pub const REFUSALS_PER_HOUR: u32 = 120;
/// How long a job that was stopped (timeout, cancel) gets to return what it
/// wrote after its process tree was killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the executor hands to the session loop.
#[derive(Debug)]
pub enum Event {
    /// A live output chunk, best effort (D26).
    Output(DiagnosticOutput),
    /// A finished job's result, to be spooled (D26); call
    /// [`Executor::recorded`] once it is.
    Done(DiagnosticResult),
}

/// The capped output of one job, shared between the job's thread and its
/// async wrapper, which still reads it after a timeout.
#[derive(Debug)]
pub struct Sink {
    job_id: String,
    cap: usize,
    output: Vec<u8>,
    truncated: bool,
    seq: u32,
    live: Option<mpsc::Sender<DiagnosticOutput>>,
}

impl Sink {
    /// An empty sink for `job_id`, keeping at most `cap` bytes, copying each
    /// write to `live` when given.
    pub fn new(job_id: &str, cap: usize, live: Option<mpsc::Sender<DiagnosticOutput>>) -> Self {
        Self {
            job_id: job_id.to_owned(),
            cap,
            output: Vec::new(),
            truncated: false,
            seq: 0,
            live,
        }
    }

    /// Appends what fits under the cap; the rest is dropped and the output
    /// marked truncated.
    pub fn write(&mut self, data: &[u8]) {
        let room = self.room();
        let take = data.len().min(room);
        if take < data.len() {
            self.truncated = true;
        }
        if take == 0 {
            return;
        }
        self.output.extend_from_slice(&data[..take]);
        if let Some(live) = &self.live {
            self.seq += 1;
            // Never wait for the session: a full queue drops the chunk.
            let _ = live.try_send(DiagnosticOutput {
                job_id: self.job_id.clone(),
                seq: self.seq,
                data: data[..take].to_vec(),
            });
        }
    }

    /// Bytes that still fit.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.output.len())
    }

    /// Marks the output cut at the cap.
    pub fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    /// The output so far.
    pub fn output(&self) -> &[u8] {
        &self.output
    }
}

/// A handle the job's code writes through.
#[derive(Debug, Clone)]
pub struct Out(pub Arc<Mutex<Sink>>);

impl Out {
    /// A sink of its own, not streamed: for tests and tools.
    pub fn detached(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(Sink::new("", cap, None))))
    }

    /// Writes bytes.
    pub fn write(&self, data: &[u8]) {
        if let Ok(mut sink) = self.0.lock() {
            sink.write(data);
        }
    }

    /// Writes one line.
    pub fn line(&self, text: impl AsRef<str>) {
        let mut bytes = text.as_ref().as_bytes().to_vec();
        bytes.push(b'\n');
        self.write(&bytes);
    }

    /// Bytes that still fit.
    pub fn room(&self) -> usize {
        self.0.lock().map(|s| s.room()).unwrap_or(0)
    }

    /// Marks the output cut at the cap.
    pub fn mark_truncated(&self) {
        if let Ok(mut sink) = self.0.lock() {
            sink.mark_truncated();
        }
    }

    /// The output so far, as text.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|s| String::from_utf8_lossy(s.output()).into_owned())
            .unwrap_or_default()
    }

    fn take(&self) -> (Vec<u8>, bool) {
        self.0
            .lock()
            .map(|s| (s.output.clone(), s.truncated))
            .unwrap_or_default()
    }
}

/// How a job's own code ended, short of a clean exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It could not run (a program is missing, a file unreadable).
    Failed(String),
    /// Its deadline passed.
    TimedOut,
    /// It was cancelled.
    Cancelled,
}

/// What the executor needs to run a job: where the system is (D13).
#[derive(Debug, Clone)]
pub struct Context {
    /// The system root file-based diagnostics read under.
    pub system_root: PathBuf,
    /// Whether `http_check` may connect to loopback addresses
    /// (`http_check_allow_loopback` in `[diagnostics]`).
    pub http_allow_loopback: bool,
    /// Where `disk_usage` may look (`disk_usage_roots` in `[diagnostics]`).
    pub disk_usage_roots: Vec<String>,
}

/// A job id the agent will echo: 1-64 characters of `[A-Za-z0-9_-]` (the
/// collector sends UUIDs), so it is safe in logs and in the journal.
pub fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn result(job_id: &str, diagnostic: &str, outcome: DiagnosticOutcome) -> DiagnosticResult {
    let now = now_ms();
    DiagnosticResult {
        job_id: job_id.to_owned(),
        diagnostic: diagnostic.to_owned(),
        outcome: outcome as i32,
        started_at_unix_ms: now,
        finished_at_unix_ms: now,
        ..DiagnosticResult::default()
    }
}

fn refusal(job_id: &str, diagnostic: &str, reason: String) -> DiagnosticResult {
    DiagnosticResult {
        reason,
        ..result(job_id, diagnostic, DiagnosticOutcome::Refused)
    }
}

/// The agent's diagnostics executor, owned by the session loop.
#[derive(Debug)]
pub struct Executor {
    context: Context,
    enabled: Vec<&'static str>,
    journal: journal::Journal,
    running: HashMap<String, CancellationToken>,
    queue: VecDeque<RunDiagnostic>,
    done_tx: mpsc::UnboundedSender<DiagnosticResult>,
    done_rx: mpsc::UnboundedReceiver<DiagnosticResult>,
    output_tx: mpsc::Sender<DiagnosticOutput>,
    output_rx: mpsc::Receiver<DiagnosticOutput>,
    started: Arc<AtomicUsize>,
    /// Refusals left in this hour, and when the hour began.
    refusals: (u32, std::time::Instant),
}

impl Executor {
    /// Opens the executor with its journal in `dir`. Jobs the journal shows
    /// started but never answered (the agent stopped while they ran) come
    /// back as FAILED results for the spool: they are answered, not re-run.
    pub fn open(
        dir: &Path,
        context: Context,
        enabled: Vec<&'static str>,
    ) -> (Self, Vec<DiagnosticResult>) {
        let (journal, interrupted) = journal::Journal::open(dir);
        let answers = interrupted
            .into_iter()
            .map(|(job_id, diagnostic)| {
                warn!(job = %job_id, %diagnostic, "a diagnostic was running when the agent stopped; answering it as failed");
                DiagnosticResult {
                    reason: "the agent stopped while this diagnostic ran; it is not run again"
                        .into(),
                    ..result(&job_id, &diagnostic, DiagnosticOutcome::Failed)
                }
            })
            .collect();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (output_tx, output_rx) = mpsc::channel(OUTPUT_QUEUE);
        (
            Self {
                context,
                enabled,
                journal,
                running: HashMap::new(),
                queue: VecDeque::new(),
                done_tx,
                done_rx,
                output_tx,
                output_rx,
                started: Arc::new(AtomicUsize::new(0)),
                refusals: (REFUSALS_PER_HOUR, std::time::Instant::now()),
            },
            answers,
        )
    }

    /// How many jobs have started running since the executor opened; a
    /// refused request never counts.
    pub fn started_count(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// Jobs running now.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Jobs waiting for a slot.
    pub fn queued_count(&self) -> usize {
        self.queue.len()
    }

    /// Why this agent will not run `run`, if it will not.
    fn refuse_reason(&self, run: &RunDiagnostic) -> Option<(String, String)> {
        let Some(params) = run.params.as_ref() else {
            return Some((String::new(), "no diagnostic given".into()));
        };
        let id = catalog::id_of(params);
        if id.is_empty() {
            return Some((
                String::new(),
                "no diagnostic given, or one this agent's catalog does not know".into(),
            ));
        }
        if !self.enabled.contains(&id) {
            return Some((
                id.to_owned(),
                format!("{id} is disabled in this agent's config ([diagnostics])"),
            ));
        }
        if let Err(error) = catalog::check(params) {
            return Some((id.to_owned(), format!("parameters refused: {error}")));
        }
        if run.expires_at_unix_ms <= 0 {
            return Some((id.to_owned(), "the request carries no expiry".into()));
        }
        let now = now_ms();
        if run.expires_at_unix_ms <= now {
            return Some((
                id.to_owned(),
                format!(
                    "the request expired {}s ago",
                    (now - run.expires_at_unix_ms) / 1000
                ),
            ));
        }
        None
    }

    /// Takes a request from the collector. Returns the answer to spool at
    /// once when it is refused; otherwise it runs now or waits for a slot,
    /// and its result arrives as [`Event::Done`]. A job id already running,
    /// queued or in the journal is not run again (the collector may deliver
    /// a request again after a reconnect; its first answer stands).
    pub fn submit(&mut self, run: RunDiagnostic) -> Option<DiagnosticResult> {
        if !valid_job_id(&run.job_id) {
            warn!("a diagnostic request with a malformed job id was ignored");
            return None;
        }
        if self.running.contains_key(&run.job_id)
            || self.queue.iter().any(|q| q.job_id == run.job_id)
            || self.journal.contains(&run.job_id)
        {
            info!(job = %run.job_id, "a diagnostic delivered again is not run twice");
            return None;
        }
        if let Some((id, reason)) = self.refuse_reason(&run) {
            return self.answer_refusal(refusal(&run.job_id, &id, reason));
        }
        if self.running.len() >= MAX_RUNNING {
            if self.queue.len() >= MAX_QUEUED {
                let id = run.params.as_ref().map(catalog::id_of).unwrap_or("");
                return self.answer_refusal(refusal(
                    &run.job_id,
                    id,
                    format!("{MAX_QUEUED} diagnostics are already waiting on this PC"),
                ));
            }
            self.queue.push_back(run);
            return None;
        }
        self.start(run)
    }

    /// A refusal's answer: in full while this hour's budget lasts, then
    /// with a short fixed reason (the first past the budget says so in the
    /// log, the rest quietly).
    fn answer_refusal(&mut self, answer: DiagnosticResult) -> Option<DiagnosticResult> {
        let (left, since) = &mut self.refusals;
        if since.elapsed() >= Duration::from_secs(3600) {
            *left = REFUSALS_PER_HOUR;
            *since = std::time::Instant::now();
        }
        if *left == 0 {
            return Some(DiagnosticResult {
                reason: format!(
                    "refused: this PC has refused more than {REFUSALS_PER_HOUR} diagnostic requests this hour"
                ),
                ..answer
            });
        }
        *left -= 1;
        info!(job = %answer.job_id, diagnostic = %answer.diagnostic, reason = %answer.reason, "diagnostic refused");
        if *left == 0 {
            warn!(
                "{REFUSALS_PER_HOUR} diagnostic requests refused this hour; further refusals are answered briefly and not logged"
            );
        }
        Some(answer)
    }

    /// Starts a job that passed admission. The journal records it first,
    /// so a crash mid-run is answered, never re-run.
    fn start(&mut self, run: RunDiagnostic) -> Option<DiagnosticResult> {
        // Checked again: a queued request may have expired while it waited.
        if let Some((id, reason)) = self.refuse_reason(&run) {
            return Some(refusal(&run.job_id, &id, reason));
        }
        let Some(params) = run.params.clone() else {
            return Some(refusal(&run.job_id, "", "no diagnostic given".into()));
        };
        let id = catalog::id_of(&params);
        let Some(spec) = catalog::spec(id) else {
            return Some(refusal(&run.job_id, id, "unknown diagnostic".into()));
        };
        if let Err(error) = self.journal.started(&run.job_id, id) {
            return Some(DiagnosticResult {
                reason: format!("cannot record the job in the state dir: {error}"),
                ..result(&run.job_id, id, DiagnosticOutcome::Failed)
            });
        }
        info!(job = %run.job_id, diagnostic = id, params = %catalog::describe(&params), "diagnostic started");
        self.started.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.running.insert(run.job_id.clone(), token.clone());
        let job = Job {
            job_id: run.job_id,
            params,
            spec,
            context: self.context.clone(),
            token,
            live: Some(self.output_tx.clone()),
        };
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = job.run().await;
            let _ = done.send(result);
        });
        None
    }

    /// Stops a running job (its result comes as CANCELLED) or drops a
    /// queued one (answered CANCELLED at once, nothing ran). An unknown job
    /// id is ignored.
    pub fn cancel(&mut self, job_id: &str) -> Option<DiagnosticResult> {
        if let Some(token) = self.running.get(job_id) {
            info!(job = %job_id, "cancelling a running diagnostic");
            token.cancel();
            return None;
        }
        if let Some(at) = self.queue.iter().position(|q| q.job_id == job_id) {
            let run = self.queue.remove(at)?;
            let id = run.params.as_ref().map(catalog::id_of).unwrap_or("");
            return Some(DiagnosticResult {
                reason: "cancelled before it started".into(),
                ..result(job_id, id, DiagnosticOutcome::Cancelled)
            });
        }
        None
    }

    /// The next live chunk or finished result. Chunks come first: a job
    /// writes its output before it sends its result, so a result is never
    /// seen ahead of its job's buffered chunks.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            biased;
            Some(chunk) = self.output_rx.recv() => Event::Output(chunk),
            Some(done) = self.done_rx.recv() => {
                self.running.remove(&done.job_id);
                Event::Done(done)
            }
        }
    }

    /// Records that `result` is answered (spooled): its job id goes into the
    /// journal, and a queued job takes the free slot. Returns the answers of
    /// queued jobs that could not start (expired while waiting).
    pub fn recorded(&mut self, result: &DiagnosticResult) -> Vec<DiagnosticResult> {
        if let Err(error) = self.journal.finished(&result.job_id) {
            warn!(%error, job = %result.job_id, "cannot record a finished diagnostic in the journal");
        }
        let mut answers = Vec::new();
        while self.running.len() < MAX_RUNNING {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            if let Some(answer) = self.start(next) {
                answers.push(answer);
            }
        }
        answers
    }

    /// Cancels every running job and waits briefly for their results, so
    /// the service stops with no diagnostic process left behind.
    pub async fn shutdown(&mut self) -> Vec<DiagnosticResult> {
        self.queue.clear();
        for token in self.running.values() {
            token.cancel();
        }
        let mut results = Vec::new();
        let wait = async {
            while !self.running.is_empty() {
                match self.done_rx.recv().await {
                    Some(done) => {
                        self.running.remove(&done.job_id);
                        results.push(done);
                    }
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(STOP_GRACE * 2, wait).await;
        results
    }
}

/// One admitted job.
struct Job {
    job_id: String,
    params: deskpulse_proto::v1::DiagnosticParams,
    spec: &'static Spec,
    context: Context,
    token: CancellationToken,
    live: Option<mpsc::Sender<DiagnosticOutput>>,
}

impl Job {
    /// Runs the plan on a blocking thread, racing its timeout and cancel.
    /// On either, the stop flag is raised (programs' process trees are
    /// killed within 10 ms) and the job gets [`STOP_GRACE`] to return.
    async fn run(self) -> DiagnosticResult {
        let started_at = now_ms();
        let out = Out(Arc::new(Mutex::new(Sink::new(
            &self.job_id,
            self.spec.output_cap,
            self.live.clone(),
        ))));
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = std::time::Instant::now() + self.spec.timeout;
        let mut work = tokio::task::spawn_blocking({
            let (params, context, out, stop) = (
                self.params.clone(),
                self.context.clone(),
                out.clone(),
                stop.clone(),
            );
            move || run::execute(&params, &context, deadline, &stop, &out)
        });
        let finished = tokio::select! {
            joined = &mut work => Some(joined),
            () = tokio::time::sleep(self.spec.timeout) => None,
            () = self.token.cancelled() => None,
        };
        let outcome = match finished {
            Some(Ok(ended)) => ended,
            Some(Err(join)) => Err(Stop::Failed(format!("the diagnostic crashed: {join}"))),
            None => {
                let why = if self.token.is_cancelled() {
                    Stop::Cancelled
                } else {
                    Stop::TimedOut
                };
                stop.store(true, Ordering::Relaxed);
                let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
                Err(why)
            }
        };
        let (output, truncated) = out.take();
        let mut done = DiagnosticResult {
            job_id: self.job_id.clone(),
            diagnostic: self.spec.id.to_owned(),
            output,
            truncated,
            started_at_unix_ms: started_at,
            finished_at_unix_ms: now_ms(),
            ..DiagnosticResult::default()
        };
        let (outcome, code, reason) = match outcome {
            Ok(code) => (DiagnosticOutcome::Completed, code, String::new()),
            Err(Stop::Failed(reason)) => (DiagnosticOutcome::Failed, 1, reason),
            Err(Stop::TimedOut) => (
                DiagnosticOutcome::TimedOut,
                -1,
                format!(
                    "ran past its timeout of {}s; its processes were killed",
                    self.spec.timeout.as_secs()
                ),
            ),
            Err(Stop::Cancelled) => (
                DiagnosticOutcome::Cancelled,
                -1,
                "cancelled; its processes were killed".to_owned(),
            ),
        };
        done.outcome = outcome as i32;
        done.exit_code = code;
        if done.reason.is_empty() {
            done.reason = reason;
        }
        if truncated && done.reason.is_empty() {
            done.reason = format!("output cut at the cap of {} bytes", self.spec.output_cap);
        }
        info!(job = %self.job_id, diagnostic = self.spec.id, outcome = ?outcome, exit_code = code, bytes = done.output.len(), "diagnostic finished");
        done
    }
}

#[cfg(test)]
mod tests;
