//! The running service's local endpoint (D12): `status`, `report-issue`
//! and `my-tickets` ask the service through it. One JSON request line, one JSON reply line.
//!
//! The transport is a Unix socket in the state dir on Linux and macOS
//! (`unix`) and a named pipe on Windows (`windows`), whose name is derived
//! from the state dir ([`pipe_name`]) so two agents with different state
//! dirs do not meet. Both are open to every local user, so employees can
//! reach them, and both name the caller from the connection itself (the
//! socket's peer credentials, the token the pipe client connected with),
//! never from anything the caller says.
//!
//! The protocol and the request handling are shared: a transport accepts a
//! connection and hands it to [`answer`] with a way to name the caller; a
//! client connects and calls [`exchange`]. A request line is bounded in
//! length and in time, so a client that sends garbage gets an `Error`
//! reply and one that sends nothing is dropped; neither stops the service.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::issue::{self, IssueRequest, SharedLedger};
use crate::session::SharedStatus;
use crate::state::{StateDir, Status};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as transport;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as transport;
#[cfg(windows)]
pub use windows::{current_user, file_owner, protect_state_dir};

/// The longest request line accepted, newline included. A report is at
/// most 2,000 characters, so anything near this is not a real request.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request line before it is
/// dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a report may take: a health sample whose slow probes are
/// due runs `smartctl` once per disk.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest reply line a client reads: a status with its spool figures
/// is a few KB.
const MAX_REPLY: usize = 1024 * 1024;

/// A request to the running service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum LocalRequest {
    /// The service's live status.
    Status,
    /// An employee's problem report; the service adds who sent it (from
    /// the connection) and a health sample.
    ReportIssue {
        /// What is wrong.
        text: String,
        /// The reporter's e-mail address, if they gave one (checked again
        /// by the service).
        #[serde(default)]
        email: Option<String>,
    },
    /// The asking employee's own tickets from this PC (issue 23).
    MyTickets,
}

/// A reply from the running service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum LocalReply {
    /// The live status.
    Status(Status),
    /// The report is in the spool.
    Reported {
        /// True when the service is connected, so it is sent at once;
        /// false when it waits for the collector.
        connected: bool,
        /// Who the service recorded as the reporter.
        os_user: String,
        /// The ticket number, when the collector said it within
        /// [`issue::tickets::TICKET_WAIT`].
        #[serde(default)]
        ticket: Option<i64>,
        /// The report's reference (its key's first block).
        #[serde(default)]
        reference: String,
    },
    /// The same text from the same user is already on its way; nothing
    /// new was spooled.
    AlreadySent {
        /// What to tell the employee, one line.
        message: String,
        /// The earlier report's reference.
        reference: String,
        /// The earlier report's ticket, when the collector said it.
        #[serde(default)]
        ticket: Option<i64>,
    },
    /// The asking employee's tickets, or what this PC knows of them.
    MyTickets(issue::tickets::MyTicketsView),
    /// The request was not understood or could not be carried out.
    Error {
        /// Why, one line.
        message: String,
    },
}

/// Where the running service listens for a state dir: the socket file
/// `agent.sock` inside it on Unix, the named pipe [`pipe_name`] gives it on
/// Windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    address: PathBuf,
}

impl Endpoint {
    /// The endpoint of the service that runs with `state` as its state dir.
    pub fn of(state: &StateDir) -> Self {
        #[cfg(unix)]
        let address = state.socket_path();
        #[cfg(windows)]
        let address = PathBuf::from(pipe_name(&windows::state_dir_key(state.root())));
        Self { address }
    }

    /// The socket path or pipe name.
    pub fn address(&self) -> &Path {
        &self.address
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.address.display().fmt(f)
    }
}

/// The Windows pipe name for a state dir, given as its canonical path:
/// `\\.\pipe\deskpulse-agent-` and 16 hex digits of the path's SHA-256.
/// Windows paths are compared without case and without the verbatim `\\?\`
/// prefix, so two spellings of one directory give one name.
pub fn pipe_name(canonical_state_dir: &str) -> String {
    let key = canonical_state_dir
        .strip_prefix(r"\\?\UNC\")
        .map(|share| format!(r"\\{share}"))
        .or_else(|| canonical_state_dir.strip_prefix(r"\\?\").map(str::to_owned))
        .unwrap_or_else(|| canonical_state_dir.to_owned())
        .trim_end_matches('\\')
        .to_lowercase();
    let digest = Sha256::digest(key.as_bytes());
    format!(r"\\.\pipe\deskpulse-agent-{}", hex::encode(&digest[..8]))
}

/// What the endpoint hands on: the live status, the service loop's report
/// queue, and what the transports need to name callers.
#[derive(Debug, Clone)]
pub struct Service {
    /// The live status.
    pub live: SharedStatus,
    /// Where reports go.
    pub issues: mpsc::Sender<IssueRequest>,
    /// The system root (D13), whose `etc/passwd` names Unix callers.
    pub system_root: PathBuf,
    /// How long a client may take to send its request.
    pub request_timeout: Duration,
    /// Reports per user, shared with the drop box drain and kept in the
    /// state dir ([`issue::ledger`]).
    pub ledger: SharedLedger,
    /// Woken when the service loop records a report's ticket number in
    /// the ledger.
    pub tickets_recorded: Arc<tokio::sync::Notify>,
    /// Where `my-tickets` requests go (the service loop, which owns the
    /// session); none answers that the service cannot ask.
    pub my_tickets: Option<mpsc::Sender<issue::tickets::TicketsAsk>>,
    /// The config's `reporter_email_domain`.
    pub reporter_email_domain: Option<String>,
}

impl Service {
    /// A service with the standard [`REQUEST_TIMEOUT`].
    pub fn new(
        live: SharedStatus,
        issues: mpsc::Sender<IssueRequest>,
        system_root: PathBuf,
    ) -> Self {
        Self {
            live,
            issues,
            system_root,
            request_timeout: REQUEST_TIMEOUT,
            ledger: Arc::new(std::sync::Mutex::new(issue::ledger::Ledger::in_memory())),
            tickets_recorded: Arc::new(tokio::sync::Notify::new()),
            my_tickets: None,
            reporter_email_domain: None,
        }
    }
}

/// Serves the endpoint until `shutdown`. The caller holds the state dir
/// lock. An error means the endpoint could not be opened at all; a
/// client's failure is logged and never ends the service.
pub async fn serve(
    endpoint: &Endpoint,
    service: Service,
    shutdown: CancellationToken,
) -> io::Result<()> {
    transport::serve(endpoint, service, shutdown).await
}

/// Sends one request to the service at `endpoint` and waits up to
/// `timeout` for the reply. `Ok(None)` when no service listens there.
pub async fn ask(
    endpoint: &Endpoint,
    request: &LocalRequest,
    timeout: Duration,
) -> io::Result<Option<LocalReply>> {
    let Some(stream) = transport::connect(endpoint, timeout).await? else {
        return Ok(None);
    };
    exchange(stream, request, timeout).await.map(Some)
}

/// The client's side of one exchange on a connected stream: writes the
/// request line and reads the reply line, all within `timeout`.
pub async fn exchange<S>(
    mut stream: S,
    request: &LocalRequest,
    timeout: Duration,
) -> io::Result<LocalReply>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut text = serde_json::to_vec(request).map_err(io::Error::other)?;
    text.push(b'\n');
    let line = tokio::time::timeout(timeout, async {
        stream.write_all(&text).await?;
        stream.flush().await?;
        let mut line = Vec::new();
        BufReader::new((&mut stream).take(MAX_REPLY as u64))
            .read_until(b'\n', &mut line)
            .await?;
        Ok::<_, io::Error>(line)
    })
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the agent service did not answer in time",
        )
    })??;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the agent service closed the connection without answering",
        ));
    }
    serde_json::from_slice(&line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the agent service gave an unreadable answer: {e}"),
        )
    })
}

/// The service's side of one connection: reads one request line (at most
/// [`MAX_REQUEST`] bytes, within the service's request timeout), carries it
/// out and writes one reply line. A request that is not valid gets an
/// `Error` reply; a client that sends nothing in time gets a `TimedOut`
/// error and no reply, and the caller drops it.
///
/// `caller` names the asking user from the connection. It is called only
/// for a report or `my-tickets`, and only after the request is read: a
/// named pipe can tell who its client is only once it has read from it.
pub async fn answer<S>(
    stream: &mut S,
    service: &Service,
    caller: impl FnOnce(&S) -> Option<String>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = match read_request(stream, service.request_timeout).await? {
        Err(message) => LocalReply::Error { message },
        Ok(LocalRequest::Status) => {
            debug!("status asked on the local endpoint");
            let status = service
                .live
                .lock()
                .map(|live| live.status.clone())
                .unwrap_or_default();
            LocalReply::Status(status)
        }
        Ok(LocalRequest::ReportIssue { text, email }) => {
            report(service, text, email, caller(stream)).await
        }
        Ok(LocalRequest::MyTickets) => my_tickets(service, caller(stream)).await,
    };
    let mut text = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    text.push(b'\n');
    stream.write_all(&text).await?;
    stream.shutdown().await
}

/// Reads the request line: `Err` from the outer result when the client
/// failed or stayed silent, `Err` from the inner one (a one-line reason)
/// when what it sent is not a request.
async fn read_request<S>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<Result<LocalRequest, String>>
where
    S: AsyncRead + Unpin,
{
    let mut line = Vec::new();
    // One byte over the bound tells a line at the bound from a longer one.
    let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64 + 1));
    tokio::time::timeout(timeout, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client sent no request within {}",
                    humantime::format_duration(timeout)
                ),
            )
        })??;
    if line.len() > MAX_REQUEST {
        return Ok(Err(format!(
            "the request is longer than {MAX_REQUEST} bytes; refused"
        )));
    }
    Ok(serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}")))
}

/// Checks a report (the client's check is not trusted), names the reporter
/// and waits until the service loop has spooled it.
async fn report(
    service: &Service,
    text: String,
    email: Option<String>,
    os_user: Option<String>,
) -> LocalReply {
    let error = |message: String| LocalReply::Error { message };
    let text = match issue::validate_text(&text) {
        Ok(text) => text,
        Err(message) => return error(message),
    };
    let Some(os_user) = os_user.filter(|user| !user.is_empty()) else {
        return error("the service cannot tell which user is asking".into());
    };
    let reporter_email = match issue::reporter_email(
        email.as_deref(),
        &os_user,
        service.reporter_email_domain.as_deref(),
    ) {
        Ok(address) => address,
        Err(message) => return error(message),
    };
    let now = crate::session::now_ms();
    let admitted =
        issue::lock(&service.ledger).admit(&os_user, &text, &issue::new_report_key(), now);
    let reference = match admitted {
        issue::ledger::Admission::Admitted { reference } => reference,
        issue::ledger::Admission::AlreadySent {
            reference,
            at_ms,
            ticket,
        } => {
            debug!(user = %os_user, "a report already sent, answered with its reference");
            return LocalReply::AlreadySent {
                message: issue::ledger::already_sent_line(&reference, at_ms, now, ticket),
                reference,
                ticket,
            };
        }
        issue::ledger::Admission::Limited(line) => {
            debug!(user = %os_user, "a report over the user's limit, refused");
            return error(line);
        }
    };
    // Not spooled after all: it counts for nothing, and the employee is
    // told and may send it again.
    let withdraw = |message: String| {
        issue::lock(&service.ledger).withdraw(&os_user, &reference);
        error(message)
    };
    let (reply, answer) = oneshot::channel();
    let request = IssueRequest {
        text,
        os_user: os_user.clone(),
        reported_at_unix_ms: None,
        report_key: reference.clone(),
        reporter_email,
        reply,
    };
    if service.issues.send(request).await.is_err() {
        return withdraw("the agent service is stopping; try again".into());
    }
    match tokio::time::timeout(REPORT_TIMEOUT, answer).await {
        Ok(Ok(Ok(connected))) => {
            debug!(user = %os_user, "issue reported on the local endpoint");
            // Sent at once when connected: the collector's Ack names the
            // ticket within moments, or `my-tickets` shows it later.
            let ticket = if connected {
                ticket_number(service, &reference, issue::tickets::TICKET_WAIT).await
            } else {
                None
            };
            LocalReply::Reported {
                connected,
                os_user,
                ticket,
                reference: issue::ledger::short_reference(&reference).to_owned(),
            }
        }
        Ok(Ok(Err(message))) => withdraw(message),
        Ok(Err(_)) => withdraw("the agent service is stopping; try again".into()),
        // It may still be spooled: it keeps its place in the ledger.
        Err(_) => error("the agent service did not take the report in time".into()),
    }
}

/// Waits up to `wait` for the ledger to hold the ticket of `reference`.
async fn ticket_number(service: &Service, reference: &str, wait: Duration) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the ledger is read, so a number recorded in
        // between still wakes this wait.
        let recorded = service.tickets_recorded.notified();
        tokio::pin!(recorded);
        recorded.as_mut().enable();
        if let Some(ticket) = issue::lock(&service.ledger).ticket_of(reference) {
            return Some(ticket);
        }
        if tokio::time::timeout_at(deadline, recorded).await.is_err() {
            return None;
        }
    }
}

/// `my-tickets`: asks the collector through the service loop for the
/// caller's tickets; without an answer, what the ledger knows.
async fn my_tickets(service: &Service, os_user: Option<String>) -> LocalReply {
    let Some(os_user) = os_user.filter(|user| !user.is_empty()) else {
        return LocalReply::Error {
            message: "the service cannot tell which user is asking".into(),
        };
    };
    let asked = match &service.my_tickets {
        None => Err(issue::tickets::NOT_CONNECTED.to_owned()),
        Some(asks) => {
            let (reply, answer) = oneshot::channel();
            let ask = issue::tickets::TicketsAsk {
                os_user: os_user.clone(),
                reply,
            };
            if asks.send(ask).await.is_err() {
                Err("the agent service is stopping; try again".to_owned())
            } else {
                match tokio::time::timeout(issue::tickets::ANSWER_TIMEOUT, answer).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(_)) => Err(
                        "the connection to the help desk was lost before it answered; showing what this PC knows".to_owned(),
                    ),
                    Err(_) => Err(
                        "the help desk did not answer in time; showing what this PC knows".to_owned(),
                    ),
                }
            }
        }
    };
    match asked {
        Ok(answer) if !answer.error.is_empty() => LocalReply::Error {
            message: format!(
                "the help desk refused: {}",
                issue::tickets::printable(&answer.error)
            ),
        },
        Ok(answer) => {
            debug!(user = %os_user, tickets = answer.tickets.len(), "my-tickets answered");
            LocalReply::MyTickets(issue::tickets::MyTicketsView::answered(os_user, answer))
        }
        Err(why) => {
            let known = issue::lock(&service.ledger).known(&os_user, crate::session::now_ms());
            LocalReply::MyTickets(issue::tickets::MyTicketsView::offline(os_user, why, known))
        }
    }
}

#[cfg(test)]
mod tests;
