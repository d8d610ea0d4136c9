//! This machine's bare ceilings, measured in the same run as the load so the
//! summary can say what share of them the collector reaches (the machine is
//! shared, so figures from another day do not compare).
//!
//! - **mTLS unary echo**: a tonic server in this process with the collector's
//!   own certificate setup (the fleet CA, a server certificate from it, client
//!   certificates optional at the TLS layer, a host certificate on every
//!   client), answering an empty message to every request and doing nothing
//!   else. 16 client connections with 4 calls in flight each, 100-byte and
//!   4 KiB requests, 4 s each → requests/s.
//! - **SQLite inserts**: sqlx in WAL mode in a temporary database,
//!   multi-row `INSERT … VALUES (…),(…)` of 500 package-like rows per
//!   statement, each statement its own transaction, for 4 s → rows/s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deskpulse_collector::pki::CertificateAuthority;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

const CONNECTIONS: usize = 16;
const IN_FLIGHT_PER_CONNECTION: usize = 4;
const ECHO_TIME: Duration = Duration::from_secs(4);
const SQLITE_TIME: Duration = Duration::from_secs(4);
const ROWS_PER_STATEMENT: usize = 500;

/// The echo request and reply: one opaque field, so decoding costs what a
/// small report costs, not what many small repeated items do.
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
}

const ECHO_PATH: &str = "/loadgen.Echo/Echo";

/// The echo service, written against tonic's server primitives the way the
/// generated code is, since there is no .proto for it.
#[derive(Clone)]
struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "loadgen.Echo";
}

struct EchoMethod;

impl tonic::server::UnaryService<Echo> for EchoMethod {
    type Response = Echo;
    type Future = std::future::Ready<Result<tonic::Response<Echo>, tonic::Status>>;
    fn call(&mut self, _request: tonic::Request<Echo>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(Echo::default())))
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for EchoServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() != ECHO_PATH {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(EchoMethod, request)
                .await)
        })
    }
}

/// Certificates as the collector makes them: a fleet CA, a server
/// certificate for 127.0.0.1 and one host certificate from a CSR.
struct Certs {
    ca_pem: String,
    server: Identity,
    client: Identity,
}

fn certs() -> Result<Certs> {
    let ca = CertificateAuthority::generate()?;
    let authority = CertificateAuthority::load(&ca.cert_pem, &ca.key_pem)?;
    let server = authority.issue_server_cert(&["127.0.0.1".to_owned()])?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    let terms = deskpulse_collector::pki::HostCertTerms {
        now_ms: deskpulse_collector::clock::Clock::now_ms(&deskpulse_collector::clock::SystemClock),
        lifetime: deskpulse_collector::rules::policy::DEFAULT_HOST_CERT_LIFETIME,
    };
    let host = authority.sign_host_csr(csr.der(), &uuid::Uuid::new_v4().to_string(), terms)?;
    Ok(Certs {
        ca_pem: ca.cert_pem,
        server: Identity::from_pem(server.cert_pem, server.key_pem),
        client: Identity::from_pem(host.cert_pem, key.serialize_pem()),
    })
}

/// Requests/s of the echo at one request size.
async fn echo_rate(url: &str, certs: &Certs, size: usize) -> Result<f64> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&certs.ca_pem))
            .identity(certs.client.clone());
        let channel = Endpoint::from_shared(url.to_owned())?
            .tls_config(tls)?
            .connect()
            .await
            .with_context(|| format!("connecting to the echo server at {url}"))?;
        channels.push(channel);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..IN_FLIGHT_PER_CONNECTION {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            let (stop, done) = (stop.clone(), done.clone());
            let payload = vec![0x5a_u8; size];
            tasks.spawn(async move {
                let path = http::uri::PathAndQuery::from_static(ECHO_PATH);
                while !stop.load(Ordering::Relaxed) {
                    grpc.ready()
                        .await
                        .map_err(|e| anyhow::anyhow!("echo channel: {e}"))?;
                    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
                    let request = tonic::Request::new(Echo {
                        payload: payload.clone(),
                    });
                    grpc.unary(request, path.clone(), codec)
                        .await
                        .map_err(|s| anyhow::anyhow!("echo: {}", s.message()))?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            });
        }
    }
    // A short warm-up, so connection set-up is not in the figure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(ECHO_TIME).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let rate = count as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(rate)
}

async fn echo_rates() -> Result<(f64, f64)> {
    let certs = certs()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tls = ServerTlsConfig::new()
        .identity(certs.server.clone())
        .client_ca_root(Certificate::from_pem(&certs.ca_pem))
        .client_auth_optional(true);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = Server::builder()
        .tls_config(tls)?
        .add_service(EchoServer)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.clone().cancelled_owned(),
        );
    let server = tokio::spawn(server);
    let url = format!("https://{addr}");
    let small = echo_rate(&url, &certs, 100).await;
    let large = echo_rate(&url, &certs, 4096).await;
    shutdown.cancel();
    let _ = server.await;
    Ok((small?, large?))
}

/// Rows/s of multi-row inserts into a temporary SQLite database.
async fn sqlite_rows() -> Result<f64> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("anchor.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("opening the anchor SQLite database")?;
    sqlx::query(
        "CREATE TABLE package (host INTEGER NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, \
         arch TEXT NOT NULL, publisher TEXT NOT NULL, PRIMARY KEY (host, name, arch))",
    )
    .execute(&pool)
    .await?;
    let start = Instant::now();
    let mut rows = 0u64;
    let mut host = 0i64;
    while start.elapsed() < SQLITE_TIME {
        host += 1;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO package (host, name, version, arch, publisher) ",
        );
        insert.push_values(0..ROWS_PER_STATEMENT, |mut row, k| {
            row.push_bind(host)
                .push_bind(format!("libfoo{k}"))
                .push_bind(format!("{}.{}.{}-1", 1 + k % 5, k % 13, k % 7))
                .push_bind("amd64")
                .push_bind("Debian");
        });
        insert.build().execute(&pool).await?;
        rows += ROWS_PER_STATEMENT as u64;
    }
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// Measures the anchors.
pub async fn measure() -> Result<serde_json::Value> {
    let (small, large) = echo_rates().await.context("the mTLS echo anchor")?;
    let rows = sqlite_rows().await.context("the SQLite insert anchor")?;
    Ok(serde_json::json!({
        "echo_100b_per_s": small,
        "echo_4k_per_s": large,
        "sqlite_rows_per_s": rows,
        "connections": CONNECTIONS,
        "in_flight_per_connection": IN_FLIGHT_PER_CONNECTION,
        "rows_per_statement": ROWS_PER_STATEMENT,
    }))
}

/// The anchors with ours as a fraction of them: steady reports acknowledged
/// per second against the small echo (a health report is a few hundred
/// bytes), and the ramp's package rows per second (every first inventory's
/// packages over the ramp's length) against the bare inserts.
pub fn fractions(summary: &serde_json::Value, mut anchors: serde_json::Value) -> serde_json::Value {
    let ratio = |ours: &serde_json::Value, theirs: &serde_json::Value| match (
        ours.as_f64(),
        theirs.as_f64(),
    ) {
        (Some(a), Some(b)) if b > 0.0 => serde_json::Value::from(a / b),
        _ => serde_json::Value::Null,
    };
    anchors["steady_acked_vs_echo_100b"] = ratio(
        &summary["steady"]["acked_per_s"],
        &anchors["echo_100b_per_s"],
    );
    anchors["ramp_package_rows_vs_sqlite"] = ratio(
        &summary["ramp"]["package_rows_per_s"],
        &anchors["sqlite_rows_per_s"],
    );
    anchors
}

/// `pg_database_size` of the database a PostgreSQL URL names.
pub async fn pg_database_size(url: &str) -> Result<u64> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(u64::try_from(size).unwrap_or(0))
}
