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
