//! The gRPC server: one TLS port (D1) serving enrollment, the agent service,
//! the technician API, gRPC health and reflection.
//!
//! # Layout
//! - [`admission`]: the TLS accept, its deadline and the connection cap.
//! - [`limits`]: failed authentications counted by source address.
//! - [`enrollment`]: turns enrollment tokens and CSRs into host certificates.
//! - [`agent`]: the agents' long-lived sessions, and the certificate check
//!   that guards them.
//! - [`my_tickets`]: an employee report's ticket number in its `Ack`, and
//!   `my-tickets` answered for the session's own host (issue 23).
//! - [`dispatch`]: the live side of diagnostic jobs on this replica:
//!   delivering them to connected agents, relaying their output.
//! - [`renewal`]: which host certificates open a session, and their
//!   renewal over it.
//! - [`revocation`]: revoked hosts' sessions and revoked or expired API
//!   tokens' streams cut at once, on every replica (issue 20).
//! - [`rotation`]: the fleet CAs in force, followed from the store
//!   (docs/ca-rotation.md).
//! - [`relay`]: the live link between replicas sharing a PostgreSQL store
//!   (LISTEN/NOTIFY), which `dispatch` publishes to and follows.
//! - [`facts`]: what fleet queries search, taken from wire inventories.
//! - [`technician`]: the technician API, with token authentication and
//!   role checks.

pub mod admission;
pub mod agent;
pub mod dispatch;
pub mod enrollment;
pub mod limits;
pub mod my_tickets;
pub mod relay;
pub mod renewal;
pub mod revocation;
pub mod rotation;
pub mod technician;
pub mod triage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deskpulse_proto::v1::agent_service_server::AgentServiceServer;
use deskpulse_proto::v1::enrollment_server::EnrollmentServer;
use deskpulse_proto::v1::technician_server::TechnicianServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

use crate::clock::SharedClock;
use crate::ingest::Ingest;
use crate::pki::KeyAndCert;
use crate::store::SharedStore;

/// The largest report an agent may send, joined from its parts: the
/// ceiling of the policy's `inventory.max_bytes` (a full inventory of a PC
/// with thousands of packages is well under 1 MiB).
pub const MAX_AGENT_MESSAGE: usize = crate::rules::policy::MAX_INVENTORY_BYTES as usize;
/// The largest single message on an agent's stream, which tonic refuses
/// before decoding: reports larger than a part go in 4 KiB parts
/// (`deskpulse_proto::parts`), and live diagnostic output comes in chunks
/// under the largest catalog cap (128 KiB). A hostile agent's 3.5 MB
/// inventory in one message ends its stream unread.
pub const MAX_AGENT_FRAME: usize = 256 * 1024;
/// The largest technician API request.
pub const MAX_TECHNICIAN_MESSAGE: usize = 1024 * 1024;
/// The largest enrollment request (a CSR and a few names).
pub const MAX_ENROLL_MESSAGE: usize = 64 * 1024;

/// What the server needs to run.
#[derive(Clone)]
pub struct ServerContext {
    /// The store.
    pub store: SharedStore,
    /// The clock.
    pub clock: SharedClock,
    /// The fleet CAs in force: the active one issues host certificates
    /// (enrollment, renewal); all of them say whose certificate is whose.
    pub ca: Arc<rotation::LiveCas>,
    /// This replica's id, for presence.
    pub replica: String,
    /// Cancelled on shutdown; sessions end when it fires.
    pub shutdown: CancellationToken,
    /// Diagnostic jobs in flight on this replica.
    pub dispatch: Arc<dispatch::Dispatch>,
    /// The audit key and anchor file (D28).
    pub audit: Arc<crate::audit::AuditAnchor>,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// What can stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS setup or the transport failed.
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server's TLS could not be set up.
    #[error("{0}")]
    Tls(String),
    /// Reflection could not be set up.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The store failed at start.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Binds the listen address. Separate from [`serve`] so the caller can
/// report the bound address (D10) and fail early on a taken port.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Hourly until shutdown: folds old health samples into hourly points and
/// deletes history past its retention.
pub async fn maintain_history(ctx: ServerContext, retention: crate::config::Retention) {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = ctx.clock.now_ms();
        match ctx
            .store
            .purge_changes(now.saturating_sub(ms(retention.changes)))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "change-log entries past their retention deleted"),
            Err(error) => tracing::warn!(%error, "purging old change-log entries failed"),
        }
        let raw_before = now.saturating_sub(ms(retention.health_raw));
        let keep_after = now.saturating_sub(ms(retention.health));
        match ctx.store.downsample_health(raw_before, keep_after).await {
            Ok((0, 0)) => {}
            Ok((folded, purged)) => tracing::info!(folded, purged, "health history downsampled"),
            Err(error) => tracing::warn!(%error, "downsampling health history failed"),
        }
    }
}

/// How often the timer task asks the store when the next timer falls due:
/// beside the pass itself, the most a timer fires late. The question is one
/// statement of indexed minimums (no lock, no write), so each replica asks
/// it on its own and needs no word from the others about their writes.
const TIMER_POLL: Duration = Duration::from_secs(2);
/// How often the timer task sweeps every offline host, due or not: silence
/// is counted in whole minutes (D18), so a finer sweep would find nothing
/// new.
const TIMER_SWEEP: Duration = Duration::from_secs(60);

/// Until shutdown: advances rule timers, so a recovered condition
/// auto-resolves its ticket when its quiet period ends even when no sample
/// arrives, escalates tickets whose SLA targets passed, and expires
/// diagnostic requests past their TTL, each within [`TIMER_POLL`] of its
/// due time; and once a [`TIMER_SWEEP`] evaluates the offline rules on
/// every silent host.
pub async fn advance_rule_timers(ctx: ServerContext) {
    let mut poll = tokio::time::interval(TIMER_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = poll.tick() => {}
        }
        let now_ms = ctx.clock.now_ms();
        let sweep = tokio::time::Instant::now() >= next_sweep;
        if sweep {
            next_sweep = tokio::time::Instant::now() + TIMER_SWEEP;
        } else {
            match ctx.store.next_timer_due(now_ms).await {
                Ok(Some(due_ms)) if due_ms <= now_ms => {}
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "reading the next timer failed");
                    continue;
                }
            }
        }
        advance_timers_once(&ctx, now_ms, sweep).await;
    }
}

/// One pass of the timer task at `now_ms`.
async fn advance_timers_once(ctx: &ServerContext, now_ms: i64, sweep: bool) {
    let advanced = if sweep {
        ctx.store.advance_rule_timers(now_ms).await
    } else {
        ctx.store.advance_due_rule_timers(now_ms).await
    };
    match advanced {
        Ok(0) => {}
        Ok(actions) => tracing::info!(actions, "rule timers advanced"),
        Err(error) => tracing::warn!(%error, "advancing rule timers failed"),
    }
    match ctx.store.advance_sla(now_ms).await {
        Ok(0) => {}
        Ok(changed) => tracing::info!(changed, "tickets escalated or closed on their SLA"),
        Err(error) => tracing::warn!(%error, "advancing ticket SLAs failed"),
    }
    match ctx.store.expire_jobs(now_ms).await {
        Ok(expired) => {
            for job in expired {
                tracing::info!(job = %job.id, host = %job.host_id, diagnostic = %job.diagnostic, "diagnostic request expired");
                ctx.dispatch.finished(&job.id);
            }
        }
        Err(error) => tracing::warn!(%error, "expiring diagnostic jobs failed"),
    }
}

/// The HTTP/2 flow-control window per stream. hyper, h2 and tonic each
/// keep a read buffer per connection or stream that grows to the largest
/// frame received and never shrinks; with a window this small the agents
/// send frames of at most 4 KiB, so those buffers stay within 8 KiB
/// (16 KiB each with 16 KiB frames, ~25 KB more per agent: 470 MB at
/// 19,000 agents). It also bounds what an unread upload holds in memory.
/// An agent's upload then runs at 4 KiB per round trip: 100 KB/s at 40 ms,
/// enough for reports of tens of KB.
const STREAM_WINDOW: u32 = 4 * 1024;
/// The HTTP/2 flow-control window per connection (the protocol's default;
/// an agent's connection carries one stream).
const CONNECTION_WINDOW: u32 = 64 * 1024;

/// How often the store is pinged for the gRPC health service.
const STORE_CHECK: Duration = Duration::from_secs(5);

/// Keeps the gRPC health service honest: every service reports NOT_SERVING
/// while the store does not answer or reports cannot be stored (a full
/// disk: `writes`), and SERVING again once both work: while writes fail,
/// each check also tries a small write of its own.
async fn watch_store(
    ctx: ServerContext,
    health: tonic_health::server::HealthReporter,
    writes: crate::ingest::WriteHealth,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    let mut up = true;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let answered = match ctx.store.ping().await {
            Err(error) => Err(format!("the store does not answer: {error}")),
            // Agents back off while health says NOT_SERVING, so a commit of
            // theirs may never come to show that writes work again: probe.
            Ok(()) if writes.failing() => match ctx.store.probe_write(ctx.clock.now_ms()).await {
                Ok(()) => {
                    writes.record_recovery();
                    Ok(())
                }
                Err(error) => Err(format!(
                    "the store cannot write ({error}): reports are not stored"
                )),
            },
            Ok(()) => Ok(()),
        };
        if answered.is_ok() == up {
            continue;
        }
        up = answered.is_ok();
        let status = match answered {
            Ok(()) => {
                tracing::info!("the store answers and writes again; serving");
                tonic_health::ServingStatus::Serving
            }
            Err(problem) => {
                tracing::error!("{problem}; reporting NOT_SERVING");
                tonic_health::ServingStatus::NotServing
            }
        };
        for service in [
            "",
            "deskpulse.v1.AgentService",
            "deskpulse.v1.Enrollment",
            "deskpulse.v1.Technician",
        ] {
            health.set_service_status(service, status).await;
        }
    }
}

/// How often a replica says it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(15);
/// How long a replica may stay silent before the others clear its stream
/// markers: four missed beats, so a slow store round does not count.
const REPLICA_STALE_AFTER: Duration = Duration::from_secs(60);

/// Says this replica is alive every [`ALIVE_EVERY`], and clears the stream
/// markers of replicas that stopped saying so (D18: a host is online while
/// it holds a stream to a replica that is itself alive).
async fn keep_replica_alive(ctx: ServerContext) {
    let stale_after_ms = i64::try_from(REPLICA_STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(ALIVE_EVERY);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match ctx
            .store
            .replica_alive(&ctx.replica, ctx.clock.now_ms(), stale_after_ms)
            .await
        {
            Ok(0) => {}
            Ok(cleared) => {
                tracing::warn!(
                    cleared,
                    "cleared the streams of replicas that stopped answering"
                );
            }
            Err(error) => tracing::warn!(%error, "recording this replica as alive failed"),
        }
    }
}

/// Serves until `ctx.shutdown` is cancelled, then drains for at most
/// `grace`, taking sockets within `limits`; the ingest writer keeps
/// `writes` (which `/healthz` reads too). The web console is served on the
/// TLS port beside gRPC, and on `web_listener` too when given.
#[allow(clippy::too_many_arguments)] // each is one of serve's distinct inputs, named at its one caller
pub async fn serve(
    ctx: ServerContext,
    writes: crate::ingest::WriteHealth,
    listener: TcpListener,
    web_listener: Option<TcpListener>,
    identity: &KeyAndCert,
    follow: rotation::CaFollow,
    limits: admission::ConnectionLimits,
    grace: Duration,
) -> Result<(), ServeError> {
    ctx.store.clear_replica_sessions(&ctx.replica).await?;
    tokio::spawn(crate::panics::critical(
        "replica liveness",
        keep_replica_alive(ctx.clone()),
    ));
    tokio::spawn(crate::panics::critical(
        "revocation poll",
        revocation::poll(ctx.clone()),
    ));
    tokio::spawn(crate::panics::critical(
        "triage delivery",
        triage::deliver(ctx.clone()),
    ));
    let tls = admission::tls_acceptor(identity, &ctx.ca.get().client_roots_pem())
        .map_err(ServeError::Tls)?;
    let (tls_updates, tls) = tokio::sync::watch::channel(tls);
    tokio::spawn(crate::panics::critical(
        "fleet CA follower",
        rotation::follow(ctx.clone(), follow, tls_updates),
    ));

    let (ingest, writer) = Ingest::spawn(ctx.store.clone(), ctx.clock.clone(), writes);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AgentServiceServer<agent::AgentSessions>>()
        .await;
    health
        .set_serving::<EnrollmentServer<enrollment::EnrollmentService>>()
        .await;
    health
        .set_serving::<TechnicianServer<technician::TechnicianApi>>()
        .await;
    tokio::spawn(crate::panics::critical(
        "store health",
        watch_store(ctx.clone(), health.clone(), ingest.health(), STORE_CHECK),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(deskpulse_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl, Postman and older clients still ask v1alpha only.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(deskpulse_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Agents send zstd; the collector answers uncompressed. Its messages
    // are Acks of a few dozen bytes and small job requests, which zstd
    // cannot shrink, and tonic builds a fresh compressor (over a MB of
    // tables to allocate and clear) for every message it sends.
    let agents = AgentServiceServer::new(agent::AgentSessions::new(ctx.clone(), ingest))
        .max_decoding_message_size(MAX_AGENT_FRAME)
        .accept_compressed(CompressionEncoding::Zstd);
    let agents = tonic::service::interceptor::InterceptedService::new(
        agents,
        agent::require_host_certificate,
    );
    let enroll = EnrollmentServer::new(enrollment::EnrollmentService::new(ctx.clone()))
        .max_decoding_message_size(MAX_ENROLL_MESSAGE);
    let technicians = TechnicianServer::new(technician::TechnicianApi::new(ctx.clone()))
        .max_decoding_message_size(MAX_TECHNICIAN_MESSAGE)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd);

    let shutdown = ctx.shutdown.clone();
    let console = crate::web::Console::new(ctx.clone());
    if let Some(web_listener) = web_listener {
        tokio::spawn(crate::panics::critical(
            "web console listener",
            crate::web::listener::serve(
                web_listener,
                tls.clone(),
                crate::web::router(console.clone()),
                shutdown.clone(),
            ),
        ));
    }
    // One router for the port: gRPC by its content type to tonic's routes,
    // everything else to the web console.
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(enroll)
        .add_service(agents)
        .add_service(technicians)
        .prepare()
        .into_axum_router();
    let routes =
        tonic::service::Routes::from(crate::web::beside_grpc(grpc, crate::web::router(console)));
    let incoming = admission::admit(listener, tls, limits, shutdown.clone());
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // hyper's default windows are 1 MiB per stream and per connection:
        // that much of an unread upload may sit in memory per agent (sessions
        // waiting for an intake permit do not read).
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::panics::grpc_internal,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

    // The block drops the server, and with it the services' ingest
    // handles, so the writer below can finish.
    let result = {
        tokio::pin!(server);
        tokio::select! {
        result = &mut server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "shutdown grace period ended; dropping the remaining connections");
            Ok(())
        }
        }
    };
    drop(ctx);
    // The writer ends once every session has dropped its ingest handle and
    // the queue is empty; give it the rest of the grace period.
    match tokio::time::timeout(grace, writer).await {
        Ok(_) => tracing::info!("ingest drained"),
        Err(_) => tracing::warn!(
            ?grace,
            "shutdown grace period ended before the ingest queue drained"
        ),
    }
    result.map_err(ServeError::from)
}

#[cfg(test)]
mod tests;
