//! Admission on the TLS port: which sockets the server takes, and how long
//! a socket may take to become an HTTP/2 connection.
//!
//! The collector does its own TLS accept (rustls, the same settings tonic's
//! `ServerTlsConfig` used) so that one deadline covers the TCP accept, the
//! TLS handshake and the client's HTTP/2 preface: hyper's HTTP/2 server has
//! no deadline for the preface, so a client that finished TLS and then said
//! nothing held its socket forever. Only a connection that sent the preface
//! in time is handed to tonic, with the preface replayed.
//!
//! Every socket holds a slot from the moment it is accepted until it closes;
//! at most [`ConnectionLimits::max_connections`] are open, a number kept
//! below the process's open-file limit with [`RESERVED_DESCRIPTORS`] left
//! for the store, the audit anchor file, webhooks, metrics and the relay.
//! Sockets still in their handshake ("pending") are bounded apart, and a
//! new socket arriving when either bound is reached pushes out the oldest
//! pending one: a flood of silent clients churns among itself, while a real
//! client (the CLI, an agent) finishes its handshake in milliseconds and
//! gets through. Only when every slot holds an established connection is a
//! new socket closed at once.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tracing::{debug, info, warn};

use crate::pki::KeyAndCert;

/// How long a socket has, from accept, to finish TLS and send the HTTP/2
/// preface. An agent on a slow link needs two or three round trips.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Descriptors kept out of the connection cap: the store's pools (SQLite's
/// nine connections hold three files each; a PostgreSQL pool a socket per
/// connection), the audit key and anchor file, webhook deliveries, the
/// metrics listener, the replica relay, logs.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The most sockets in their handshake at once; beyond it the oldest is
/// pushed out. A handshake is a few milliseconds of CPU, so this also caps
/// the handshake work a flood can queue.
const MAX_PENDING: usize = 1024;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// TCP keepalive: the first probe after a minute of silence, then every
/// 10 s; a peer that answers none of 3 is dropped by the kernel. HTTP/2
/// pings (set on tonic's builder) cover a peer whose kernel still answers.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// How often, at most, the admission warnings are logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The bounds on the TLS port's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Sockets open at once, pending or established.
    pub max_connections: usize,
    /// Sockets in their TLS handshake or waiting for the preface.
    pub max_pending: usize,
    /// See [`HANDSHAKE_DEADLINE`].
    pub handshake_deadline: Duration,
}

impl ConnectionLimits {
    /// The limits for a process that may open `open_files` descriptors:
    /// `configured` when given and it fits, else all but
    /// [`RESERVED_DESCRIPTORS`].
    pub fn for_open_file_limit(open_files: u64, configured: Option<usize>) -> Result<Self, String> {
        let room = open_files.saturating_sub(RESERVED_DESCRIPTORS);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if room < 16 {
            return Err(format!(
                "the open-file limit ({open_files}) is too low to serve: the collector keeps \
                 {RESERVED_DESCRIPTORS} descriptors for its store and files and needs room for \
                 connections; raise it (LimitNOFILE= in the unit, ulimit -n)"
            ));
        }
        let max_connections = match configured {
            Some(0) => return Err("max_connections must be at least 1".into()),
            Some(wanted) if wanted > room => {
                return Err(format!(
                    "max_connections {wanted} does not fit the open-file limit ({open_files}, \
                     of which {RESERVED_DESCRIPTORS} are kept for the store and files): at most \
                     {room}; raise the limit (LimitNOFILE= in the unit, ulimit -n) or lower \
                     max_connections"
                ));
            }
            Some(wanted) => wanted,
            None => room,
        };
        Ok(Self {
            max_connections,
            max_pending: (max_connections / 4).clamp(1, MAX_PENDING),
            handshake_deadline: HANDSHAKE_DEADLINE,
        })
    }

    /// The limits for this process, from its soft `RLIMIT_NOFILE`, which is
    /// handed back too (for the log line).
    pub fn for_this_process(configured: Option<usize>) -> Result<(Self, u64), String> {
        let open_files = open_file_limit();
        Ok((
            Self::for_open_file_limit(open_files, configured)?,
            open_files,
        ))
    }
}

/// The soft limit on open descriptors; "unlimited" counts as `u64::MAX`.
#[cfg(unix)]
fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Elsewhere no descriptor limit applies in the same way; Windows' own
/// default handle limit is in the millions.
#[cfg(not(unix))]
fn open_file_limit() -> u64 {
    1 << 20
}

/// The server's TLS: its certificate, ALPN `h2`, and client certificates
/// verified against the fleet CA when present. Enrollment and the
/// technician API have none; the agent service checks for one itself (D1).
pub fn tls_acceptor(identity: &KeyAndCert, client_ca_pem: &str) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the fleet CA certificate is unreadable: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the fleet CA certificate is not usable: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("cannot verify client certificates: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the server certificate is unreadable: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| format!("the server key is unreadable: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts sockets on `listener` until `shutdown`, and yields those that
/// became HTTP/2 connections within the deadline, for
/// `Server::serve_with_incoming_shutdown`.
pub fn admit(
    listener: TcpListener,
    tls: tokio::sync::watch::Receiver<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<Admitted>> {
    let (sender, receiver) = mpsc::channel(64);
    let gate = Arc::new(Gate {
        limits,
        state: Mutex::new(GateState::default()),
    });
    tokio::spawn(accept_loop(listener, tls, gate, sender, shutdown));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: tokio::sync::watch::Receiver<TlsAcceptor>,
    gate: Arc<Gate>,
    sender: mpsc::Sender<io::Result<Admitted>>,
    shutdown: CancellationToken,
) {
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (or the peer gave up before accept):
                // pause rather than spin on an accept that fails at once.
                if last_accept_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warn!(%error, "accepting a connection failed");
                    last_accept_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((slot, evicted)) = gate.take_slot() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_TIME)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(TCP_KEEPALIVE_RETRIES);
        if let Err(error) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            debug!(%error, %peer, "cannot set TCP keepalive");
        }
        tokio::spawn(handshake(
            tcp,
            // The settings in force now: a CA rotation swaps them.
            tls.borrow().clone(),
            slot,
            evicted,
            gate.limits.handshake_deadline,
            sender.clone(),
        ));
    }
}

/// Brings one socket to an HTTP/2 connection, or drops it at its deadline
/// or when pushed out.
async fn handshake(
    tcp: TcpStream,
    tls: TlsAcceptor,
    mut slot: Slot,
    evicted: CancellationToken,
    deadline: Duration,
    sender: mpsc::Sender<io::Result<Admitted>>,
) {
    let peer = tcp.peer_addr().ok();
    let steps = async {
        let mut stream = tls.accept(tcp).await?;
        let mut preface = [0u8; HTTP2_PREFACE.len()];
        stream.read_exact(&mut preface).await?;
        if &preface != HTTP2_PREFACE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client did not speak HTTP/2",
            ));
        }
        Ok(stream)
    };
    let outcome = tokio::select! {
        () = evicted.cancelled() => {
            debug!(?peer, "pushed out a connection still in its handshake");
            return;
        }
        outcome = tokio::time::timeout(deadline, steps) => outcome,
    };
    let stream = match outcome {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            debug!(?peer, %error, "a connection failed its TLS handshake or HTTP/2 preface");
            return;
        }
        Err(_) => {
            slot.gate.note(|s| s.timed_out += 1);
            debug!(
                ?peer,
                ?deadline,
                "dropped a connection that did not finish TLS and the HTTP/2 preface in time"
            );
            return;
        }
    };
    if !slot.establish() {
        return;
    }
    let _ = sender
        .send(Ok(Admitted {
            stream,
            replayed: 0,
            _slot: slot,
        }))
        .await;
}

struct Gate {
    limits: ConnectionLimits,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Sockets in their handshake, oldest first, each with what pushes it
    /// out.
    pending: BTreeMap<u64, CancellationToken>,
    /// Sockets handed to the server and still open.
    established: usize,
    next_id: u64,
    /// Since the last warning: sockets closed at once, pushed out, and out
    /// of time.
    refused: u64,
    evicted: u64,
    timed_out: u64,
    last_warning: Option<Instant>,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state holds plain counters: a panic elsewhere while holding
        // the lock cannot leave them half-changed in a way worth refusing
        // all connections for.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new socket, pushing out the oldest pending one when a
    /// bound is reached; `None` when every slot is an established
    /// connection.
    fn take_slot(self: &Arc<Self>) -> Option<(Slot, CancellationToken)> {
        let mut state = self.lock();
        let open = state.pending.len() + state.established;
        if open >= self.limits.max_connections || state.pending.len() >= self.limits.max_pending {
            match state.pending.pop_first() {
                Some((_, oldest)) => {
                    oldest.cancel();
                    state.evicted += 1;
                }
                None => {
                    state.refused += 1;
                    self.warn_if_due(&mut state);
                    return None;
                }
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.pending.insert(id, evicted.clone());
        self.warn_if_due(&mut state);
        drop(state);
        Some((
            Slot {
                gate: self.clone(),
                id,
                established: false,
            },
            evicted,
        ))
    }

    fn note(&self, change: impl FnOnce(&mut GateState)) {
        let mut state = self.lock();
        change(&mut state);
        self.warn_if_due(&mut state);
    }

    fn warn_if_due(&self, state: &mut GateState) {
        if state.refused + state.evicted + state.timed_out == 0
            || state
                .last_warning
                .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return;
        }
        warn!(
            refused = state.refused,
            pushed_out = state.evicted,
            timed_out = state.timed_out,
            established = state.established,
            pending = state.pending.len(),
            max_connections = self.limits.max_connections,
            "connections dropped at admission (refused at the cap, pushed out while pending, \
             or silent past the handshake deadline)"
        );
        state.refused = 0;
        state.evicted = 0;
        state.timed_out = 0;
        state.last_warning = Some(Instant::now());
    }
}

/// A socket's place under the cap, given back when it is dropped.
struct Slot {
    gate: Arc<Gate>,
    id: u64,
    established: bool,
}

impl Slot {
    /// Moves the socket from pending to established; false when it was
    /// pushed out meanwhile.
    fn establish(&mut self) -> bool {
        let mut state = self.gate.lock();
        if state.pending.remove(&self.id).is_none() {
            return false;
        }
        state.established += 1;
        self.established = true;
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        if self.established {
            state.established = state.established.saturating_sub(1);
        } else {
            state.pending.remove(&self.id);
        }
    }
}

/// A connection that finished TLS and sent the HTTP/2 preface, which it
/// gives back to the server's first reads.
pub struct Admitted {
    stream: TlsStream<TcpStream>,
    /// How much of the preface the server has read again.
    replayed: usize,
    _slot: Slot,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").finish_non_exhaustive()
    }
}

impl Connected for Admitted {
    // The same as tonic's own TLS streams, so `peer_certs` and
    // `remote_addr` work unchanged in the services.
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = HTTP2_PREFACE.get(this.replayed..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Logs the limits the server runs with, once at start.
pub fn log_limits(limits: &ConnectionLimits, open_files: u64) {
    info!(
        max_connections = limits.max_connections,
        max_pending = limits.max_pending,
        handshake_deadline = ?limits.handshake_deadline,
        open_file_limit = open_files,
        reserved = RESERVED_DESCRIPTORS,
        "connection limits"
    );
}

#[cfg(test)]
mod tests;
