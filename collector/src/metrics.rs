//! Prometheus metrics on `serve --metrics-listen ADDR` (plain HTTP,
//! `GET /metrics`, the text exposition format), and `GET /healthz` for load
//! balancers (200 while the store answers and writes, 503 otherwise).
//! Counters and histograms are recorded where things happen, through the
//! `metrics` facade, and registered at 0 when serving starts, so each one
//! exists before its first event; the fleet's state (open tickets by
//! priority, jobs by state, the webhook outbox) is read from the store at
//! scrape time, every label value written each time (0 for none), so every
//! replica reports the same and a state that emptied reads 0.
//!
//! Names: `deskpulse_agents_connected`, `deskpulse_reports_total{kind}`,
//! `deskpulse_reports_rejected_total`, `deskpulse_ingest_latency_seconds`
//! (report received to acknowledged), `deskpulse_store_batch_seconds`,
//! `deskpulse_store_batch_reports`, `deskpulse_ingest_queue_depth`,
//! `deskpulse_tickets_open{priority}`, `deskpulse_jobs{state}`,
//! `deskpulse_webhook_outbox_pending`, `deskpulse_store_up`,
//! `deskpulse_build_info{version}`, and the `metrics-process` crate's
//! `process_*` (resident memory, CPU seconds, open files, start time).

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

use crate::ingest::WriteHealth;
use crate::model::JOB_STATES;
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
/// 1, labelled with the collector's version.
pub const BUILD_INFO: &str = "deskpulse_build_info";
/// Open tickets by priority, read at scrape time.
const TICKETS_OPEN: &str = "deskpulse_tickets_open";
/// Diagnostic jobs by state, read at scrape time.
const JOBS: &str = "deskpulse_jobs";
/// Webhook deliveries waiting, read at scrape time.
const OUTBOX_PENDING: &str = "deskpulse_webhook_outbox_pending";
/// Whether the store answered the last scrape.
const STORE_UP: &str = "deskpulse_store_up";
/// The ticket priorities `deskpulse_tickets_open` is labelled with.
const PRIORITIES: [&str; 4] = ["P1", "P2", "P3", "P4"];

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
    metrics::describe_gauge!(TICKETS_OPEN, "Tickets not resolved or closed, by priority.");
    metrics::describe_gauge!(JOBS, "Diagnostic jobs, by state.");
    metrics::describe_gauge!(
        OUTBOX_PENDING,
        "Webhook deliveries waiting to be delivered."
    );
    metrics::describe_gauge!(STORE_UP, "1 when the store answered the last scrape.");
    metrics::describe_gauge!(BUILD_INFO, "1, labelled with the collector's version.");
}

/// Registers every metric at 0 (an increment of 0 leaves one another task
/// moved already as it is), so each exists from start-up: a rate or an
/// alert over a series that appears only with its first event sees
/// nothing before it.
fn register() {
    for kind in crate::store::REPORT_KINDS {
        metrics::counter!(REPORTS, "kind" => kind).increment(0);
    }
    metrics::counter!(REJECTED).increment(0);
    metrics::gauge!(AGENTS_CONNECTED).increment(0.0);
    metrics::gauge!(QUEUE_DEPTH).increment(0.0);
    for histogram in [INGEST_LATENCY, STORE_BATCH, STORE_BATCH_REPORTS] {
        // A histogram is rendered once registered, samples or not.
        let _ = metrics::histogram!(histogram);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    write_fleet_gauges(&crate::model::StoreGauges::default());
}

/// Sets every label value of each fleet gauge: a state the store has no
/// rows in reads 0, not the count it had when it last had some.
fn write_fleet_gauges(gauges: &crate::model::StoreGauges) {
    let count = |counts: &[(String, u64)], label: &str| {
        counts
            .iter()
            .find(|(l, _)| l == label)
            .map_or(0, |(_, n)| *n) as f64
    };
    for priority in PRIORITIES {
        metrics::gauge!(TICKETS_OPEN, "priority" => priority)
            .set(count(&gauges.open_tickets, priority));
    }
    for state in JOB_STATES {
        metrics::gauge!(JOBS, "state" => state).set(count(&gauges.jobs, state));
    }
    metrics::gauge!(OUTBOX_PENDING).set(gauges.outbox_pending as f64);
}

/// Reads the fleet gauges from the store, and the process's own figures.
async fn refresh(store: &SharedStore, process: &metrics_process::Collector) {
    process.collect();
    match store.gauges().await {
        Ok(gauges) => {
            metrics::gauge!(STORE_UP).set(1.0);
            write_fleet_gauges(&gauges);
        }
        Err(error) => {
            tracing::warn!(%error, "reading the fleet gauges for /metrics failed");
            metrics::gauge!(STORE_UP).set(0.0);
        }
    }
}

/// `GET /healthz`: 200 while the store answers and the writer can write,
/// 503 with the reason otherwise; the same judgement as gRPC health, for
/// load balancers that speak only HTTP.
async fn healthz(store: &SharedStore, writes: &WriteHealth) -> (StatusCode, &'static str) {
    if writes.failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable: the store cannot write; reports are not stored\n",
        );
    }
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable: the store does not answer\n",
        ),
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

/// Serves `GET /metrics` and `GET /healthz` until `shutdown`; `writes`
/// says whether the ingest writer can store reports.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    store: SharedStore,
    writes: WriteHealth,
    shutdown: CancellationToken,
) {
    describe();
    register();
    let process = std::sync::Arc::new(metrics_process::Collector::default());
    process.describe();
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
        let (handle, store, writes, process) = (
            handle.clone(),
            store.clone(),
            writes.clone(),
            process.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (handle, store, writes, process) = (
                        handle.clone(),
                        store.clone(),
                        writes.clone(),
                        process.clone(),
                    );
                    async move {
                        let response = match request.uri().path() {
                            "/metrics" => {
                                refresh(&store, &process).await;
                                Response::builder()
                                    .header("content-type", "text/plain; version=0.0.4")
                                    .body(Full::new(Bytes::from(handle.render())))
                            }
                            "/healthz" => {
                                let (status, text) = healthz(&store, &writes).await;
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "text/plain")
                                    .body(Full::new(Bytes::from_static(text.as_bytes())))
                            }
                            _ => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"try /metrics or /healthz\n"))),
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
