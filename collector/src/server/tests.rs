//! The server's background tasks, in-process on real SQLite.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::*;
use crate::clock::SystemClock;
use crate::store::sqlite::SqliteStore;

#[tokio::test]
async fn the_health_service_says_not_serving_while_the_store_does_not_answer() {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .expect("open");
    let ca = crate::pki::CertificateAuthority::generate().expect("CA");
    let ca = crate::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).expect("load CA");
    let ctx = ServerContext {
        store: Arc::new(sqlite.clone()),
        clock: Arc::new(SystemClock),
        ca: Arc::new(crate::server::rotation::LiveCas::single(ca)),
        replica: "test".into(),
        shutdown: CancellationToken::new(),
        dispatch: Arc::default(),
        audit: Arc::new(crate::audit::AuditAnchor::load_or_create(dir.path()).expect("audit key")),
    };
    let (health, service) = tonic_health::server::health_reporter();
    health
        .set_service_status("deskpulse.v1.Technician", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned()),
    );
    tokio::spawn(watch_store(
        ctx.clone(),
        health,
        crate::ingest::WriteHealth::default(),
        Duration::from_millis(20),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let status = |client: &mut HealthClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        async move {
            client
                .check(HealthCheckRequest {
                    service: "deskpulse.v1.Technician".into(),
                })
                .await
                .expect("check")
                .into_inner()
                .status
        }
    };
    assert_eq!(status(&mut client).await, ServingStatus::Serving as i32);
    sqlite.close().await;
    let mut not_serving = false;
    for _ in 0..250 {
        if status(&mut client).await == ServingStatus::NotServing as i32 {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.shutdown.cancel();
    assert!(not_serving, "the health service never reported NOT_SERVING");
}

/// What a hostile or broken agent says it cannot run is cut to what the
/// catalog knows, once per id, one bounded line per reason.
#[test]
fn a_hellos_unavailable_diagnostics_are_checked() {
    use deskpulse_proto::v1::UnavailableDiagnostic;
    let entry = |id: &str, reason: &str| UnavailableDiagnostic {
        id: id.into(),
        reason: reason.into(),
    };
    let mut said = vec![
        entry("ping", "ping is not installed"),
        entry("rm -rf /", "not a diagnostic"),
        entry("ping", "said twice; the first stands"),
        entry(
            "traceroute",
            &format!("tracepath\nis\tnot installed{}", "x".repeat(10_000)),
        ),
        entry("smart_report", ""),
    ];
    said.extend((0..10_000).map(|i| entry(&format!("unknown{i}"), "flood")));
    let kept = agent::unavailable_diagnostics(&said);
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(kept[0], ("ping".into(), "ping is not installed".into()));
    assert_eq!(kept[1].0, "traceroute");
    assert!(kept[1].1.starts_with("tracepath is not installed"));
    assert_eq!(kept[1].1.chars().count(), 200);
    assert!(!kept[1].1.contains(['\n', '\t']));
    assert_eq!(kept[2], ("smart_report".into(), "unavailable".into()));
    // Past the first 76 entries nothing more is read, known or not.
    let mut late: Vec<UnavailableDiagnostic> = (0..100)
        .map(|i| entry(&format!("unknown{i}"), "x"))
        .collect();
    late.push(entry("ping", "too late"));
    assert_eq!(agent::unavailable_diagnostics(&late), []);
}
