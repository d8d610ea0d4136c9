//! Prometheus metrics on `serve --metrics-listen ADDR` (plain HTTP,
//! `GET /metrics`, the text exposition format). Counters and histograms are
//! recorded where things happen, through the `metrics` facade; the fleet's
//! state (open tickets by priority, jobs by state, the webhook outbox) is
//! read from the store at scrape time, so every replica reports the same.
//!
//! Names: `deskpulse_agents_connected`, `deskpulse_reports_total{kind}`,
//! `deskpulse_reports_rejected_total`, `deskpulse_ingest_latency_seconds`
//! (report received to acknowledged), `deskpulse_store_batch_seconds`,
//! `deskpulse_store_batch_reports`, `deskpulse_ingest_queue_depth`,
//! `deskpulse_tickets_open{priority}`, `deskpulse_jobs{state}`,
//! `deskpulse_webhook_outbox_pending`, `deskpulse_store_up`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::SharedStore;

/// Report received to acknowledged, seconds.
pub const INGEST_LATENCY: &str = "deskpulse_ingest_latency_seconds";
/// One store transaction of a batch of reports, seconds.
pub const STORE_BATCH: &str = "deskpulse_store_batch_seconds";
/// Reports per stored batch.
pub const STORE_BATCH_REPORTS: &str = "deskpulse_store_batch_reports";
/// Reports by payload kind.
pub const REPORTS: &str = "deskpulse_reports_total";
/// Reports refused as invalid.
pub const REJECTED: &str = "deskpulse_reports_rejected_total";
/// Agents holding a stream to this replica.
pub const AGENTS_CONNECTED: &str = "deskpulse_agents_connected";
/// Reports waiting for the ingest writer.
pub const QUEUE_DEPTH: &str = "deskpulse_ingest_queue_depth";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide recorder once and returns its handle. Later
/// calls (tests running several servers in one process) share it.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let seconds = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(STORE_BATCH_REPORTS.into()),
                &[1.0, 8.0, 32.0, 128.0, 512.0],
            )
        })
        .map_err(|e| format!("metrics buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Describes each metric once, for the HELP lines.
fn describe() {
    metrics::describe_gauge!(AGENTS_CONNECTED, "Agents holding a stream to this replica.");
    metrics::describe_counter!(REPORTS, "Reports received from agents, by payload kind.");
    metrics::describe_counter!(REJECTED, "Reports refused as invalid.");
    metrics::describe_histogram!(
        INGEST_LATENCY,
        metrics::Unit::Seconds,
        "From a report's arrival to its acknowledgement, after the commit."
    );
    metrics::describe_histogram!(
        STORE_BATCH,
        metrics::Unit::Seconds,
        "One store transaction of a batch of reports."
    );
    metrics::describe_histogram!(STORE_BATCH_REPORTS, "Reports per stored batch.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Reports waiting for the ingest writer.");
    metrics::describe_gauge!(
        "deskpulse_tickets_open",
        "Tickets not resolved or closed, by priority."
    );
    metrics::describe_gauge!("deskpulse_jobs", "Diagnostic jobs, by state.");
    metrics::describe_gauge!(
        "deskpulse_webhook_outbox_pending",
        "Webhook deliveries waiting to be delivered."
    );
    metrics::describe_gauge!(
        "deskpulse_store_up",
        "1 when the store answered the last scrape."
    );
}

/// Reads the fleet gauges from the store.
async fn refresh(store: &SharedStore) {
    match store.gauges().await {
        Ok(gauges) => {
            metrics::gauge!("deskpulse_store_up").set(1.0);
            for priority in ["P1", "P2", "P3", "P4"] {
                let open = gauges
                    .open_tickets
                    .iter()
                    .find(|(p, _)| p == priority)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("deskpulse_tickets_open", "priority" => priority).set(open as f64);
            }
            for (state, count) in &gauges.jobs {
                metrics::gauge!("deskpulse_jobs", "state" => state.clone()).set(*count as f64);
            }
            metrics::gauge!("deskpulse_webhook_outbox_pending").set(gauges.outbox_pending as f64);
        }
        Err(error) => {
            tracing::warn!(%error, "reading the fleet gauges for /metrics failed");
            metrics::gauge!("deskpulse_store_up").set(0.0);
        }
    }
}

/// Scrapes served at once: Prometheus holds one connection per target, so
/// a few are plenty, and more would let a flood of idle sockets take the
/// descriptors the agents' port needs (the admission cap counts on it).
const MAX_CONNECTIONS: usize = 8;
/// How long one metrics connection may stay open, request and answer
/// together: a scrape takes milliseconds.
const CONNECTION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds the metrics address; separate so a taken port fails at start.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    store: SharedStore,
    shutdown: CancellationToken,
) {
    describe();
    // `install_recorder` leaves upkeep to its caller: without it every
    // histogram sample (one per report) is kept until the next scrape,
    // which grows without bound when nothing scrapes.
    let upkeep = handle.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot is taken before accepting, so a flood of scrapers that never
        // send a request waits in the kernel's backlog, not in descriptors.
        let slot = tokio::select! {
            () = shutdown.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics accept failed");
                    continue;
                }
            },
        };
        let (handle, store) = (handle.clone(), store.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (handle, store) = (handle.clone(), store.clone());
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            refresh(&store).await;
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(handle.render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                        };
                        Ok::<_, Infallible>(response.unwrap_or_default())
                    }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
                Err(_) => tracing::debug!("metrics connection closed at its deadline"),
            }
        });
    }
}
