//! The web console's server time (issue 22): the queue, a ticket, the
//! fleet page and a host page rendered in-process through the console's
//! router (session check, store reads, templates), on SQLite with 10,000
//! enrolled hosts and 1,000 open tickets. The hosts have tickets but no
//! inventory or health history, so the host page's figure is its reads and
//! frame, not a large inventory's text. Prints the median and the 99th
//! percentile of each. Target: p99 under 50 ms.
//!
//! `cargo bench -p deskpulse-collector --bench web_pages`
//! Sizes: DESKPULSE_BENCH_HOSTS (default 10000), DESKPULSE_BENCH_TICKETS
//! (default 1000), DESKPULSE_BENCH_RUNS (default 100).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use deskpulse_collector::clock::SystemClock;
use deskpulse_collector::server::ServerContext;
use deskpulse_collector::store::{self, AuditEntry, NewApiToken, Role, SharedStore};
use deskpulse_collector::web::{Console, router};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

mod support;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Enrolls `hosts` hosts and opens `tickets` tickets spread over them; the
/// tickets' ids, and the host of the middle one.
async fn load(store: &SharedStore, hosts: usize, tickets: usize) -> (Vec<i64>, String) {
    let ids = support::enroll_hosts(store, hosts).await;
    let now = deskpulse_collector::clock::Clock::now_ms(&SystemClock);
    let mut opened = Vec::with_capacity(tickets);
    for i in 0..tickets {
        let host = &ids[(i * 7919) % ids.len()];
        let ticket = store
            .create_ticket(
                host,
                &format!("printer {i} jams"),
                None,
                "bench",
                &deskpulse_collector::store::AuditEntry::system("bench", "", ""),
                now,
            )
            .await
            .expect("ticket");
        opened.push(ticket.id);
    }
    let middle_host = ids[(tickets / 2 * 7919) % ids.len()].clone();
    (opened, middle_host)
}

async fn get(app: &axum::Router, path: &str, cookie: &str) -> Duration {
    let request = Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request");
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let _ = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    started.elapsed()
}

/// Signs in with `token` through the sign-in form; the session cookie.
async fn sign_in(app: &axum::Router, token: &str) -> String {
    let page = app
        .clone()
        .oneshot(
            Request::get("/sign-in")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let nonce = page
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Host-deskpulse-signin="))
        .and_then(|v| v.split(';').next())
        .expect("a nonce")
        .to_owned();
    let signed = app
        .clone()
        .oneshot(
            Request::post("/sign-in")
                .header(header::COOKIE, format!("__Host-deskpulse-signin={nonce}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "nonce={nonce}&method=token&token={token}"
                )))
                .expect("request"),
        )
        .await
        .expect("infallible");
    signed
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-deskpulse="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hosts = env("DESKPULSE_BENCH_HOSTS", 10_000);
    let tickets = env("DESKPULSE_BENCH_TICKETS", 1_000);
    let runs = env("DESKPULSE_BENCH_RUNS", 100).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = store::backend::open(&url).await.expect("open store");
    let started = Instant::now();
    let (opened, host) = load(&store, hosts, tickets).await;
    println!(
        "loaded {hosts} hosts and {tickets} open tickets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
        .create_api_token(
            &NewApiToken {
                technician_name: "bench".into(),
                role: Role::Admin,
                token_id: "bench-token".into(),
                token_sha256: deskpulse_collector::secrets::token_hash("bench-secret"),
                expires_at_ms: None,
            },
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("API token");
    let ca = deskpulse_collector::pki::CertificateAuthority::generate().expect("CA");
    let ca = deskpulse_collector::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem)
        .expect("load CA");
    let ctx = ServerContext {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        ca: Arc::new(deskpulse_collector::server::rotation::LiveCas::single(ca)),
        replica: "bench".into(),
        shutdown: CancellationToken::new(),
        dispatch: Arc::default(),
        audit: Arc::new(
            deskpulse_collector::audit::AuditAnchor::load_or_create(dir.path()).expect("audit key"),
        ),
    };
    let app = router(Console::new(ctx));
    let cookie = sign_in(&app, "bench-secret").await;
    let ticket = format!("/tickets/{}", opened[opened.len() / 2]);
    let host_page = format!("/hosts/{host}");
    let host_health = format!("/hosts/{host}/health?range=7d");
    let pages = [
        ("queue (open tickets)", "/"),
        ("queue rows (htmx poll)", "/queue/rows"),
        ("ticket", ticket.as_str()),
        ("fleet (first 100 hosts)", "/fleet"),
        ("host (no inventory)", host_page.as_str()),
        ("host chart data (7 d)", host_health.as_str()),
    ];
    println!(
        "\n{:<28} {:>6} {:>10} {:>10}",
        "page", "runs", "p50 ms", "p99 ms"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(get(&app, path, &cookie).await);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            let i = ((times.len() as f64 - 1.0) * q).round();
            times[i as usize]
        };
        println!(
            "{name:<28} {runs:>6} {:>10.1} {:>10.1}",
            ms(at(0.5)),
            ms(at(0.99))
        );
    }
}
