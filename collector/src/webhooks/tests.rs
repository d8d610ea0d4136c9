//! Webhook delivery against a real receiver on loopback, real SQLite and a
//! manual clock (D30): signatures verify, a dead receiver is retried with
//! backoff and reached later, and a receiver that never recovers is given up
//! after a day. Also the technician API's checks, roles and audit entries
//! for webhooks, and the knowledge base.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use deskpulse_proto::v1::technician_server::Technician;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::model::TicketEvent;
use crate::store::{
    AuditEntry, EnrollOutcome, EnrollRequest, HostCert, NewApiToken, NewEnrollmentToken, Role,
    TicketChange,
};

const SECRET: &str = "whsec-test-0123456789";
/// 2026-11-24T10:00:00Z: a clock far from zero, so ages and windows are real.
const T0: i64 = 1_795_514_400_000;

/// What the receiver saw of one request.
#[derive(Debug)]
struct Received {
    event: String,
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

/// A tiny HTTP/1 receiver on `listener` that answers every request with the
/// status in `status` and reports what it got.
fn receiver(listener: TcpListener, status: Arc<AtomicU16>) -> mpsc::UnboundedReceiver<Received> {
    serve_receiver(listener, None, status)
}

/// The same, over TLS with `tls` when given.
fn serve_receiver(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    status: Arc<AtomicU16>,
) -> mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let status = status.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, tx, status).await;
                        }
                    }
                    None => serve_connection(stream, tx, status).await,
                }
            });
        }
    });
    rx
}

async fn serve_connection<S>(stream: S, tx: mpsc::UnboundedSender<Received>, status: Arc<AtomicU16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let tx = tx.clone();
        let status = status.clone();
        async move {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (event, delivery, signature) = (
                header("x-deskpulse-event"),
                header("x-deskpulse-delivery"),
                header("x-deskpulse-signature"),
            );
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let _ = tx.send(Received {
                event,
                delivery,
                signature,
                body,
            });
            let mut response = hyper::Response::new(Full::new(Bytes::from("ok")));
            *response.status_mut() = hyper::StatusCode::from_u16(status.load(Ordering::SeqCst))
                .unwrap_or(hyper::StatusCode::OK);
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn store() -> (tempfile::TempDir, SharedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = crate::store::backend::open(&url).await.expect("open store");
    (dir, store)
}

async fn host(store: &SharedStore) -> String {
    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                id: "t".into(),
                token_sha256: crate::secrets::token_hash("tok"),
                expires_at_ms: i64::MAX,
                uses: 1,
                created_by: "test".into(),
                relink_host: None,
            },
            &crate::store::AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("token");
    let issue = |id: &str| -> Result<HostCert, String> {
        Ok(HostCert {
            cert_pem: String::new(),
            serial_hex: "01".into(),
            sha256_hex: format!("sha-{id}"),
            ca_sha256: "ca-1".into(),
        })
    };
    let outcome = store
        .enroll(
            &EnrollRequest {
                token_sha256: crate::secrets::token_hash("tok"),
                hostname: "pc-0142".into(),
                hardware_uuid: String::new(),
                hardware_serial: String::new(),
                source_addr: String::new(),
                csr_der: Vec::new(),
            },
            0,
            &issue,
        )
        .await
        .expect("enroll");
    match outcome {
        EnrollOutcome::Enrolled { host_id, .. } => host_id,
        other => panic!("not enrolled: {other:?}"),
    }
}

async fn add_hook(store: &SharedStore, url: &str, events: &[TicketEvent]) -> i64 {
    store
        .add_webhook(
            &NewWebhook {
                url: url.into(),
                events: events.to_vec(),
                secret: SECRET.into(),
                created_by: "admin".into(),
                route: crate::model::WebhookRoute::default(),
            },
            &|_: &i64| crate::store::AuditEntry::system("test", "", ""),
            T0,
        )
        .await
        .expect("add webhook")
}

use crate::store::NewWebhook;

async fn status_of(store: &SharedStore, id: i64) -> crate::store::WebhookStatus {
    store
        .list_webhooks()
        .await
        .expect("list")
        .into_iter()
        .find(|w| w.id == id)
        .expect("listed")
}

#[tokio::test]
async fn a_delivered_ticket_opened_event_carries_a_signature_the_receiver_verifies() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new(T0);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/hooks/deskpulse",
        listener.local_addr().expect("addr")
    );
    let mut got = receiver(listener, Arc::new(AtomicU16::new(200)));
    let hook = add_hook(&store, &url, &TicketEvent::ALL).await;
    let host = host(&store).await;
    let ticket = store
        .create_ticket(
            &host,
            "Print spooler crashes",
            Some(crate::rules::priority::Priority::P2),
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");

    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()));
    let run = deliverer.deliver_due().await.expect("deliver");
    assert_eq!(
        run,
        DeliveryRun {
            delivered: 1,
            ..DeliveryRun::default()
        }
    );
    let request = got.recv().await.expect("the receiver got a request");
    assert_eq!(request.event, "ticket.opened");
    let signed_at = verify(
        SECRET,
        &request.signature,
        &request.body,
        clock.now_ms() / 1000,
        300,
    )
    .expect("the signature verifies");
    assert_eq!(signed_at, T0 / 1000);
    // Checked independently of `verify`: what a receiver's own code does.
    let mut expected = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    expected.update(format!("{}.", T0 / 1000).as_bytes());
    expected.update(&request.body);
    assert_eq!(
        request.signature,
        format!(
            "t={},sha256={}",
            T0 / 1000,
            hex::encode(expected.finalize().into_bytes())
        )
    );
    assert!(
        verify(
            "another-secret",
            &request.signature,
            &request.body,
            T0 / 1000,
            300
        )
        .is_err(),
        "a wrong secret must not verify"
    );
    let mut tampered = request.body.clone();
    tampered[0] = b' ';
    assert!(verify(SECRET, &request.signature, &tampered, T0 / 1000, 300).is_err());

    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(body["event"], "ticket.opened");
    assert_eq!(body["delivery_id"], request.delivery.as_str());
    assert_eq!(body["occurred_at"], "2026-11-24T10:00:00.000Z");
    assert_eq!(body["ticket"]["id"], ticket.id);
    assert_eq!(body["ticket"]["title"], "Print spooler crashes");
    assert_eq!(body["ticket"]["hostname"], "pc-0142");
    assert_eq!(body["ticket"]["host_id"], host.as_str());
    assert_eq!(body["ticket"]["priority"], "P2");
    assert_eq!(body["ticket"]["status"], "new");
    assert_eq!(body["ticket"]["occurrences"], 1);
    assert!(body["ticket"]["assignee"].is_null());

    let status = status_of(&store, hook).await;
    assert_eq!((status.pending, status.delivered, status.failed), (0, 1, 0));
    assert_eq!(status.last_attempt_at_ms, Some(T0));
    assert_eq!(status.last_error, None);
    let hook_debug = format!(
        "{:?}",
        NewWebhook {
            url: url.clone(),
            events: vec![],
            secret: SECRET.into(),
            created_by: String::new(),
            route: crate::model::WebhookRoute::default(),
        }
    );
    assert!(!hook_debug.contains(SECRET), "{hook_debug}");
    // Delivered once: nothing is due any more.
    assert_eq!(
        deliverer.deliver_due().await.expect("deliver"),
        DeliveryRun::default()
    );
}

#[tokio::test]
async fn a_down_receiver_is_retried_with_backoff_and_reached_once_it_is_up() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new(T0);
    // A port nobody listens on: bound, then closed.
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        probe.local_addr().expect("addr")
    };
    let hook = add_hook(&store, &format!("http://{addr}/"), &[TicketEvent::Opened]).await;
    let host = host(&store).await;
    store
        .create_ticket(
            &host,
            "VPN drops",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");
    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()));

    let first = deliverer.deliver_due().await.expect("deliver");
    assert_eq!(
        first,
        DeliveryRun {
            retrying: 1,
            ..DeliveryRun::default()
        }
    );
    let status = status_of(&store, hook).await;
    assert_eq!((status.pending, status.delivered, status.failed), (1, 0, 0));
    assert_eq!(status.last_attempt_at_ms, Some(T0));
    assert!(
        status.last_error.as_deref().is_some_and(|e| !e.is_empty()),
        "{status:?}"
    );

    // The first retry waits 30 s less jitter: nothing is due 20 s on.
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        deliverer.deliver_due().await.expect("deliver"),
        DeliveryRun::default()
    );

    // The receiver comes up on that port; 40 s after the failure the retry
    // is due, and it lands.
    let listener = TcpListener::bind(addr).await.expect("rebind the port");
    let mut got = receiver(listener, Arc::new(AtomicU16::new(204)));
    clock.advance(Duration::from_secs(20));
    let later = deliverer.deliver_due().await.expect("deliver");
    assert_eq!(
        later,
        DeliveryRun {
            delivered: 1,
            ..DeliveryRun::default()
        }
    );
    let request = got.recv().await.expect("delivered");
    assert_eq!(request.event, "ticket.opened");
    // Signed at the time of this attempt, not of the event.
    assert_eq!(
        verify(
            SECRET,
            &request.signature,
            &request.body,
            clock.now_ms() / 1000,
            0
        ),
        Ok((T0 + 40_000) / 1000)
    );
    let status = status_of(&store, hook).await;
    assert_eq!((status.pending, status.delivered, status.failed), (0, 1, 0));
    assert_eq!(status.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_is_timed_out_while_ingest_goes_on() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new(T0);
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let (held_tx, mut held) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = held_tx.send(stream);
        }
    });
    let hook = add_hook(&store, &url, &TicketEvent::ALL).await;
    let host = host(&store).await;
    store
        .create_ticket(
            &host,
            "Slow receiver",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");
    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()))
        .with_timeout(Duration::from_secs(10));
    let pass = tokio::spawn({
        let deliverer = deliverer.clone();
        async move { deliverer.deliver_due().await }
    });
    // While the request hangs, health samples are stored and evaluated.
    let _stream = held.recv().await.expect("the receiver was reached");
    for m in 0..12 {
        let at = T0 + m * 60_000;
        store
            .store_reports(&[disk_sample(&host, m as u64 + 1, at, 95.0)], at)
            .await
            .expect("ingest is not held up");
    }
    assert!(!pass.is_finished(), "the request should still hang");
    let run = pass.await.expect("join").expect("deliver");
    assert_eq!(
        run,
        DeliveryRun {
            retrying: 1,
            ..DeliveryRun::default()
        }
    );
    let status = status_of(&store, hook).await;
    assert_eq!(status.last_error.as_deref(), Some("no response within 10s"));
    // The ticket the samples opened is queued behind it.
    assert_eq!(status.pending, 2);
}

#[tokio::test]
async fn https_receivers_are_reached_over_rustls_and_their_certificate_is_checked() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (_dir, store) = store().await;
    let clock = ManualClock::new(T0);
    // A private CA and a server certificate for localhost.
    let ca = crate::pki::CertificateAuthority::generate().expect("CA");
    let ca_der = crate::pki::first_cert_der(&ca.cert_pem).expect("CA DER");
    let ca = crate::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).expect("load");
    let server = ca
        .issue_server_cert(&["localhost".into()])
        .expect("server cert");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut got = serve_receiver(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        Arc::new(AtomicU16::new(200)),
    );
    let hook = add_hook(
        &store,
        &format!("https://localhost:{port}/hook"),
        &TicketEvent::ALL,
    )
    .await;
    let host = host(&store).await;
    store
        .create_ticket(
            &host,
            "Over TLS",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");

    // Without the private CA among its roots the collector refuses the
    // receiver's certificate: TLS is checked, not merely used.
    let untrusting = Deliverer::new(store.clone(), Arc::new(clock.clone()));
    assert_eq!(untrusting.deliver_due().await.expect("deliver").retrying, 1);
    let error = status_of(&store, hook).await.last_error.unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    clock.advance(Duration::from_secs(40));
    let trusting = Deliverer::trusting(store.clone(), Arc::new(clock.clone()), &[ca_der]);
    assert_eq!(trusting.deliver_due().await.expect("deliver").delivered, 1);
    let request = got.recv().await.expect("delivered over TLS");
    assert_eq!(request.event, "ticket.opened");
    verify(
        SECRET,
        &request.signature,
        &request.body,
        clock.now_ms() / 1000,
        0,
    )
    .expect("signed");
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_after_a_day() {
    let (_dir, store) = store().await;
    let clock = ManualClock::new(T0);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let mut got = receiver(listener, Arc::new(AtomicU16::new(503)));
    let hook = add_hook(&store, &url, &TicketEvent::ALL).await;
    let host = host(&store).await;
    store
        .create_ticket(
            &host,
            "Outlook keeps crashing",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");
    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()));
    let mut attempts = 0;
    let mut waits = Vec::new();
    let mut last = clock.now_ms();
    loop {
        let run = deliverer.deliver_due().await.expect("deliver");
        if run != DeliveryRun::default() {
            attempts += 1;
            waits.push(clock.now_ms() - last);
            last = clock.now_ms();
            got.recv().await.expect("the receiver was asked");
        }
        if run.gave_up == 1 {
            break;
        }
        assert!(clock.now_ms() - T0 < 26 * 3_600_000, "never gave up");
        clock.advance(Duration::from_secs(15));
    }
    // Backoff doubles from about 30 s and is capped at an hour, so a day of
    // failures is a few dozen attempts, not thousands.
    assert!((25..=40).contains(&attempts), "{attempts} attempts");
    assert!(
        waits.iter().skip(2).all(|w| *w >= 45_000),
        "retries must back off: {waits:?}"
    );
    assert!(
        waits.iter().all(|w| *w <= 3_600_000 * 6 / 5 + 15_000),
        "no wait beyond the cap: {waits:?}"
    );
    let status = status_of(&store, hook).await;
    assert_eq!((status.pending, status.delivered, status.failed), (0, 0, 1));
    assert_eq!(
        status.last_error.as_deref(),
        Some("the receiver answered HTTP 503 Service Unavailable")
    );
}

#[tokio::test]
async fn every_ticket_change_queues_its_event_for_the_webhooks_that_want_it() {
    let (_dir, store) = store().await;
    let all = add_hook(&store, "https://all.example.com/", &TicketEvent::ALL).await;
    let resolved_only = add_hook(
        &store,
        "https://resolved.example.com/",
        &[TicketEvent::Resolved],
    )
    .await;
    let host = host(&store).await;
    api_token(&store, "alice", Role::Technician).await;
    let t = store
        .create_ticket(
            &host,
            "Spooler",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");
    for change in [
        TicketChange::Assign("alice".into()),
        TicketChange::Note("restarted the spooler".into()),
        TicketChange::Escalate,
        TicketChange::Resolve("cleared the stuck job".into()),
        TicketChange::Reopen,
    ] {
        store
            .update_ticket(
                t.id,
                &change,
                "alice",
                &crate::store::AuditEntry::system("test", "", ""),
                T0 + 1000,
            )
            .await
            .expect("update")
            .expect("applies");
    }
    // A refused change queues nothing.
    let refused = store
        .update_ticket(
            t.id,
            &TicketChange::Reopen,
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            T0 + 2000,
        )
        .await
        .expect("update");
    assert!(refused.is_err());

    // Each pass claims only the oldest pending event of a (webhook,
    // ticket), so a receiver sees a ticket's events in order.
    let now = T0 + 5000;
    let mut claimed: Vec<Delivery> = Vec::new();
    loop {
        let pass = store
            .claim_deliveries(now, 60_000, 100)
            .await
            .expect("claim");
        if pass.is_empty() {
            break;
        }
        assert!(pass.len() <= 2, "one per webhook and ticket: {pass:?}");
        // Leased: the same rows are not claimed again meanwhile.
        assert!(
            store
                .claim_deliveries(now, 60_000, 100)
                .await
                .expect("claim")
                .is_empty()
        );
        for d in &pass {
            store
                .record_delivery(d.id, &DeliveryOutcome::Delivered(200), now)
                .await
                .expect("record");
        }
        claimed.extend(pass);
    }
    let events = |url: &str| -> Vec<&str> {
        claimed
            .iter()
            .filter(|d| d.url == url)
            .map(|d| d.event.as_str())
            .collect()
    };
    assert_eq!(
        events("https://all.example.com/"),
        [
            "ticket.opened",
            "ticket.updated",
            "ticket.updated",
            "ticket.escalated",
            "ticket.resolved",
            "ticket.opened"
        ]
    );
    assert_eq!(events("https://resolved.example.com/"), ["ticket.resolved"]);
    assert!(
        !format!("{claimed:?}").contains(SECRET),
        "Debug leaks the secret"
    );
    // The body shows the ticket as that change left it.
    let resolved = claimed
        .iter()
        .find(|d| d.event == "ticket.resolved")
        .expect("resolved event");
    let body: serde_json::Value = serde_json::from_str(&resolved.body).expect("JSON");
    assert_eq!(body["ticket"]["status"], "resolved");
    assert_eq!(body["ticket"]["resolution"], "cleared the stuck job");
    assert_eq!(body["ticket"]["assignee"], "alice");
    assert_eq!(body["ticket"]["escalation"], 1);
    assert_eq!(status_of(&store, all).await.delivered, 6);

    // Finished deliveries are purged after their retention.
    assert_eq!(store.purge_deliveries(now + 1).await.expect("purge"), 7);
    assert_eq!(status_of(&store, all).await.delivered, 0);

    // A new event for each webhook, then removal.
    store
        .update_ticket(
            t.id,
            &TicketChange::Resolve("again".into()),
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            now,
        )
        .await
        .expect("update")
        .expect("resolved");
    // Removing a webhook drops its queue; the other keeps its own.
    assert!(
        store
            .remove_webhook(all, &crate::store::AuditEntry::system("test", "", ""), T0)
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_webhook(all, &crate::store::AuditEntry::system("test", "", ""), T0)
            .await
            .expect("remove again")
    );
    let left = store.list_webhooks().await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].id, left[0].pending), (resolved_only, 1));
}

fn disk_sample(host: &str, seq: u64, at_ms: i64, used: f32) -> crate::store::IncomingReport {
    crate::store::IncomingReport {
        host_id: host.to_owned(),
        spool_id: "hooks".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: crate::store::ReportPayload::Health {
            encoded: Vec::new(),
            free: vec![("/".into(), 100.0 - used)],
            reading: crate::store::HealthReading {
                cpu_percent: 5.0,
                memory_used_percent: 40.0,
                disk_used_max_percent: used,
                temperature_max_celsius: None,
            },
            readings: vec![(
                crate::rules::model::Metric::DiskUsedPercent,
                "/".into(),
                f64::from(used),
            )],
        },
    }
}

#[tokio::test]
async fn rule_tickets_queue_opened_resolved_and_escalated_in_the_ingest_and_timer_paths() {
    let (_dir, store) = store().await;
    add_hook(&store, "http://receiver.example.com/", &TicketEvent::ALL).await;
    let host = host(&store).await;
    let min = 60_000;
    // A full disk for 12 minutes opens a disk-full ticket.
    for m in 0..12 {
        let at = T0 + m * min;
        store
            .store_reports(&[disk_sample(&host, m as u64 + 1, at, 95.0)], at)
            .await
            .expect("store");
    }
    assert_eq!(drain(&store, T0 + 12 * min).await, ["ticket.opened"]);
    // The SLA targets pass: escalated.
    store.advance_sla(T0 + 48 * 3_600_000).await.expect("sla");
    // Recovered, and quiet for longer than the quiet period: resolved.
    let back = T0 + 13 * min;
    store
        .store_reports(&[disk_sample(&host, 20, back, 50.0)], back)
        .await
        .expect("store");
    store
        .advance_rule_timers(back + 60 * min)
        .await
        .expect("timers");
    let later = drain(&store, T0 + 1_000 * 24 * 3_600_000).await;
    assert_eq!(
        later.first().map(String::as_str),
        Some("ticket.escalated"),
        "{later:?}"
    );
    assert_eq!(
        later.last().map(String::as_str),
        Some("ticket.resolved"),
        "{later:?}"
    );
}

/// Claims and marks delivered everything due at `now`, in claim order.
async fn drain(store: &SharedStore, now: i64) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        let pass = store.claim_deliveries(now, 0, 100).await.expect("claim");
        if pass.is_empty() {
            return events;
        }
        for d in pass {
            store
                .record_delivery(d.id, &DeliveryOutcome::Delivered(200), now)
                .await
                .expect("record");
            events.push(d.event);
        }
    }
}

#[tokio::test]
async fn webhook_input_is_checked_before_anything_is_stored() {
    assert!(check_url("https://hooks.example.com/deskpulse?x=1").is_ok());
    assert!(check_url("http://10.1.2.3:8080/hook").is_ok());
    for bad in [
        "",
        "hooks.example.com/x",
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "https:///path",
        "http://exa mple.com/",
    ] {
        assert!(check_url(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(check_secret("s3cret\n"), Ok("s3cret".to_owned()));
    assert!(check_secret("").is_err());
    assert!(check_secret("  \n").is_err());
    assert!(check_secret("two\nlines").is_err());
    assert_eq!(parse_events::<&str>(&[]), Ok(TicketEvent::ALL.to_vec()));
    assert_eq!(
        parse_events(&["ticket.resolved", "ticket.resolved"]),
        Ok(vec![TicketEvent::Resolved])
    );
    assert!(parse_events(&["ticket.closed"]).is_err());
}

#[test]
fn backoff_doubles_from_thirty_seconds_to_an_hour_with_jitter() {
    assert_eq!(backoff(1, 1.0), Duration::from_secs(30));
    assert_eq!(backoff(2, 1.0), Duration::from_secs(60));
    assert_eq!(backoff(5, 1.0), Duration::from_secs(480));
    assert_eq!(backoff(8, 1.0), Duration::from_secs(3600));
    assert_eq!(backoff(40, 1.0), Duration::from_secs(3600));
    assert_eq!(backoff(1, 0.8), Duration::from_secs(24));
    assert_eq!(backoff(1, 5.0), Duration::from_secs(36));
}

/// The technician API over a real store, called in-process.
async fn api(
    dir: &std::path::Path,
    store: &SharedStore,
    clock: &ManualClock,
) -> crate::server::technician::TechnicianApi {
    let ca = crate::pki::CertificateAuthority::generate().expect("CA");
    let ca = crate::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).expect("load CA");
    crate::server::technician::TechnicianApi::new(crate::server::ServerContext {
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        ca: Arc::new(crate::server::rotation::LiveCas::single(ca)),
        replica: "test".into(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        dispatch: Arc::default(),
        audit: Arc::new(crate::audit::AuditAnchor::load_or_create(dir).expect("audit key")),
    })
}

async fn api_token(store: &SharedStore, name: &str, role: Role) -> String {
    let token = format!("dpt_{name}");
    store
        .create_api_token(
            &NewApiToken {
                technician_name: name.into(),
                role,
                token_id: format!("id-{name}"),
                token_sha256: crate::secrets::token_hash(&token),
                expires_at_ms: None,
            },
            &|_: &String| crate::store::AuditEntry::system("test", "", ""),
            T0,
        )
        .await
        .expect("token");
    token
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

#[tokio::test]
async fn the_api_refuses_bad_webhooks_lets_only_admins_change_them_and_audits_each_change() {
    use deskpulse_proto::v1::{
        AddWebhookRequest, ListWebhooksRequest, RemoveWebhookRequest, SetWebhookEnabledRequest,
    };
    let (dir, store) = store().await;
    let clock = ManualClock::new(T0);
    let api = api(dir.path(), &store, &clock).await;
    let admin = api_token(&store, "root", Role::Admin).await;
    let tech = api_token(&store, "bob", Role::Technician).await;
    let add = |url: &str, events: &[&str], secret: &str| AddWebhookRequest {
        url: url.into(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: secret.into(),
        ..AddWebhookRequest::default()
    };

    let refused = api
        .add_webhook(authed(&tech, add("https://h.example.com/", &[], "s")))
        .await
        .expect_err("technician");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    for (bad, why) in [
        (add("gopher://h.example.com/", &[], "s"), "http"),
        (
            add("https://h.example.com/", &["ticket.closed"], "s"),
            "unknown event",
        ),
        (add("https://h.example.com/", &[], ""), "empty"),
        (
            AddWebhookRequest {
                format: "slack".into(),
                ..add("https://h.example.com/", &[], "s")
            },
            "its URL is the secret",
        ),
        (add("mailto:someone", &[], ""), "not an e-mail address"),
        (
            AddWebhookRequest {
                format: "fax".into(),
                ..add("https://h.example.com/", &[], "s")
            },
            "unknown format",
        ),
        (
            AddWebhookRequest {
                priorities: vec!["P0".into()],
                ..add("https://h.example.com/", &[], "s")
            },
            "unknown priority",
        ),
    ] {
        let status = api
            .add_webhook(authed(&admin, bad))
            .await
            .expect_err("bad input");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(why), "{}", status.message());
        assert!(!status.message().contains('\n'));
    }
    assert!(store.list_webhooks().await.expect("list").is_empty());

    let added = api
        .add_webhook(authed(
            &admin,
            add("https://h.example.com/hook", &["ticket.opened"], SECRET),
        ))
        .await
        .expect("added")
        .into_inner();
    assert_eq!(added.events, ["ticket.opened"]);
    assert_eq!(added.created_by, "root");
    // Anyone may list; nothing in the answer carries the secret.
    let listed = api
        .list_webhooks(authed(&tech, ListWebhooksRequest {}))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.webhooks.len(), 1);
    assert!(!format!("{listed:?}").contains(SECRET));

    // Paused, a webhook gets no events and its queue waits; resumed, the
    // waiting delivery goes out.
    let host = host(&store).await;
    store
        .create_ticket(
            &host,
            "queued before the pause",
            None,
            "bob",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");
    let pause = |enabled| SetWebhookEnabledRequest {
        id: added.id,
        enabled,
    };
    let refused = api
        .set_webhook_enabled(authed(&tech, pause(false)))
        .await
        .expect_err("technician");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let paused = api
        .set_webhook_enabled(authed(&admin, pause(false)))
        .await
        .expect("paused")
        .into_inner();
    assert!(!paused.enabled);
    store
        .create_ticket(
            &host,
            "while paused",
            None,
            "bob",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("ticket");
    assert_eq!(status_of(&store, added.id).await.pending, 1);
    assert!(
        store
            .claim_deliveries(T0, 0, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    api.set_webhook_enabled(authed(&admin, pause(true)))
        .await
        .expect("resumed");
    assert_eq!(
        store
            .claim_deliveries(T0, 0, 10)
            .await
            .expect("claim")
            .len(),
        1
    );

    let refused = api
        .remove_webhook(authed(&tech, RemoveWebhookRequest { id: added.id }))
        .await
        .expect_err("technician");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    api.remove_webhook(authed(&admin, RemoveWebhookRequest { id: added.id }))
        .await
        .expect("removed");
    let missing = api
        .remove_webhook(authed(&admin, RemoveWebhookRequest { id: added.id }))
        .await
        .expect_err("gone");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("test.db").display()
    ))
    .await
    .expect("open");
    let audit: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, subject, detail FROM audit_log WHERE action LIKE 'webhook.%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    assert_eq!(
        audit,
        [
            (
                "webhook.add".to_owned(),
                added.id.to_string(),
                "https://h.example.com/hook; events ticket.opened".to_owned()
            ),
            (
                "webhook.disable".to_owned(),
                added.id.to_string(),
                "https://h.example.com/hook".to_owned()
            ),
            (
                "webhook.enable".to_owned(),
                added.id.to_string(),
                "https://h.example.com/hook".to_owned()
            ),
            (
                "webhook.remove".to_owned(),
                added.id.to_string(),
                "https://h.example.com/hook".to_owned()
            ),
        ]
    );
    let secret_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE detail LIKE '%' || ? || '%'")
            .bind(SECRET)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(secret_rows, 0, "the secret must not reach the audit log");
}

#[tokio::test]
async fn the_knowledge_base_finds_past_resolutions_best_first() {
    use deskpulse_proto::v1::SearchKbRequest;
    let (dir, store) = store().await;
    let clock = ManualClock::new(T0);
    let host = host(&store).await;
    let resolve = |title: &'static str, resolution: &'static str| {
        let store = store.clone();
        let host = host.clone();
        async move {
            let t = store
                .create_ticket(
                    &host,
                    title,
                    None,
                    "alice",
                    &AuditEntry::system("", "", ""),
                    T0,
                )
                .await
                .expect("ticket");
            store
                .update_ticket(
                    t.id,
                    &TicketChange::Resolve(resolution.into()),
                    "alice",
                    &crate::store::AuditEntry::system("test", "", ""),
                    T0 + 1,
                )
                .await
                .expect("update")
                .expect("resolved");
            t.id
        }
    };
    let spooler = resolve(
        "Printing stops on pc-0142",
        "Print spooler crashed on a corrupt driver; removed the HP driver and restarted the spooler",
    )
    .await;
    let vpn = resolve("VPN drops every hour", "Renewed the VPN certificate").await;
    let _disk = resolve(
        "Disk almost full",
        "Cleared the temp folder and old crash dumps",
    )
    .await;
    // An open ticket is not a past resolution, whatever it says.
    store
        .create_ticket(
            &host,
            "Spooler crash again",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            T0,
        )
        .await
        .expect("open ticket");

    let api = api(dir.path(), &store, &clock).await;
    let viewer = api_token(&store, "vera", Role::Viewer).await;
    let search = |query: &str| SearchKbRequest {
        query: query.into(),
        limit: 0,
        include_auto: false,
    };
    let found = api
        .search_kb(authed(&viewer, search("spooler crash")))
        .await
        .expect("search")
        .into_inner()
        .matches;
    // Both words (stemmed: "crashed") beat one ("crash dumps").
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].ticket_id, spooler);
    assert_eq!(found[0].hostname, "pc-0142");
    assert!(found[0].resolution.contains("HP driver"));
    assert_eq!(found[0].resolved_at_unix_ms, T0 + 1);
    assert!(found[0].rank < found[1].rank);

    // A single word of a resolution finds its ticket.
    let by_word = api
        .search_kb(authed(&viewer, search("certificate")))
        .await
        .expect("search")
        .into_inner()
        .matches;
    assert_eq!(
        by_word.iter().map(|m| m.ticket_id).collect::<Vec<_>>(),
        [vpn]
    );

    // FTS5 syntax is only text: no error, no injection.
    for query in [
        "\"unbalanced",
        "spooler NOT vpn",
        "title:vpn",
        "NEAR(spooler crash)",
        "vpn* OR",
        "-- ; DROP TABLE tickets",
        "^",
    ] {
        api.search_kb(authed(&viewer, search(query)))
            .await
            .unwrap_or_else(|e| panic!("{query:?}: {e}"));
    }
    let empty = api
        .search_kb(authed(&viewer, search("  ")))
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    // Reopening takes a ticket out of the knowledge base; resolving again
    // puts it back with the new resolution.
    store
        .update_ticket(
            vpn,
            &TicketChange::Reopen,
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            T0 + 2,
        )
        .await
        .expect("update")
        .expect("reopened");
    assert!(
        store
            .search_kb(&["certificate".into()], 10, false)
            .await
            .expect("search")
            .is_empty()
    );
    store
        .update_ticket(
            vpn,
            &TicketChange::Note("the token expired".into()),
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            T0 + 3,
        )
        .await
        .expect("update")
        .expect("noted");
    store
        .update_ticket(
            vpn,
            &TicketChange::Resolve("Reissued the VPN profile".into()),
            "alice",
            &crate::store::AuditEntry::system("test", "", ""),
            T0 + 4,
        )
        .await
        .expect("update")
        .expect("resolved");
    let noted = store
        .search_kb(&["token".into()], 10, false)
        .await
        .expect("search");
    assert_eq!(noted.iter().map(|h| h.ticket_id).collect::<Vec<_>>(), [vpn]);
    assert_eq!(noted[0].resolution, "Reissued the VPN profile");
}

/// Issue 21: `job show` and `job cancel` take a unique start of a job id,
/// as host ids are taken; too short, not hex, unknown or ambiguous starts
/// are refused in one line.
#[tokio::test]
async fn a_job_is_named_by_a_unique_start_of_its_id() {
    use deskpulse_proto::v1::GetJobRequest;
    let (dir, store) = store().await;
    let clock = ManualClock::new(T0);
    let host = host(&store).await;
    let ping = deskpulse_proto::catalog::parse("ping", &[("host".into(), "127.0.0.1".into())])
        .expect("valid");
    for id in [
        "3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60",
        "3f2a0000-0b7d-4c1a-9e2f-1d2c3b4a5f61",
        "7c000000-0000-4000-8000-000000000001",
    ] {
        store
            .create_job(
                &crate::store::NewJob {
                    id: id.into(),
                    host_id: host.clone(),
                    diagnostic: "ping".into(),
                    params: prost::Message::encode_to_vec(&ping),
                    params_text: deskpulse_proto::catalog::describe(&ping),
                    risk: "read-only".into(),
                    requester: crate::store::JobRequester::Technician(crate::store::Caller {
                        technician_id: "t1".into(),
                        name: "alice".into(),
                        role: Role::Technician,
                        token_id: "k1".into(),
                        expires_at_ms: None,
                        last_used_at_ms: None,
                    }),
                    ticket_id: None,
                    expires_at_ms: T0 + 3_600_000,
                },
                T0,
            )
            .await
            .expect("job");
    }
    let api = api(dir.path(), &store, &clock).await;
    let viewer = api_token(&store, "vera", Role::Viewer).await;
    let show = |id: &str| api.get_job(authed(&viewer, GetJobRequest { id: id.to_owned() }));
    for (asked, found) in [
        ("7c00", "7c000000-0000-4000-8000-000000000001"),
        ("7C00", "7c000000-0000-4000-8000-000000000001"),
        ("3f2a9", "3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60"),
        (
            "3F2A9C1E-0B7D-4C1A-9E2F-1D2C3B4A5F60",
            "3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60",
        ),
    ] {
        let job = show(asked).await.expect(asked).into_inner();
        assert_eq!(job.id, found, "{asked}");
    }
    for (asked, code, needle) in [
        (
            "3f2a",
            tonic::Code::InvalidArgument,
            "\"3f2a\" matches 2 jobs; give more of the id: \
             3f2a0000-0b7d-4c1a-9e2f-1d2c3b4a5f61, 3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60",
        ),
        ("7c0", tonic::Code::InvalidArgument, "too short"),
        ("7c0%", tonic::Code::InvalidArgument, "not a job id"),
        ("", tonic::Code::InvalidArgument, "empty"),
        ("abcd", tonic::Code::NotFound, "no job matches \"abcd\""),
    ] {
        let status = show(asked).await.expect_err(asked);
        assert_eq!(status.code(), code, "{asked}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{asked}: {}",
            status.message()
        );
        assert!(!status.message().contains('\n'), "one line");
    }
}

/// Issue 23: the `ticket.opened` payload, built in the opening transaction,
/// carries the fixes suggested from earlier resolved tickets; one that
/// recovered by itself is never among them.
#[tokio::test]
async fn a_ticket_opened_payload_carries_its_suggested_fixes() {
    let (_dir, store) = store().await;
    let host = host(&store).await;
    let by = AuditEntry::system("test", "", "");
    let earlier = store
        .create_ticket(
            &host,
            "Print spooler crashes on start",
            None,
            "alice",
            &by,
            T0,
        )
        .await
        .expect("ticket");
    store
        .update_ticket(
            earlier.id,
            &TicketChange::Resolve("Reinstalled the printer driver".into()),
            "alice",
            &by,
            T0 + 1,
        )
        .await
        .expect("update")
        .expect("resolved");
    add_hook(&store, "http://127.0.0.1:9/hook", &[TicketEvent::Opened]).await;
    let new = store
        .create_ticket(&host, "Spooler crashes again", None, "bob", &by, T0 + 2)
        .await
        .expect("ticket");
    let deliveries = store.claim_deliveries(T0 + 3, 0, 10).await.expect("claim");
    assert_eq!(deliveries.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&deliveries[0].body).expect("JSON");
    assert_eq!(body["ticket"]["id"], new.id);
    let suggestions = body["ticket"]["suggestions"].as_array().expect("a list");
    assert_eq!(suggestions.len(), 1, "{body}");
    let s = &suggestions[0];
    assert_eq!(s["ticket_id"], earlier.id);
    assert_eq!(s["resolution"], "Reinstalled the printer driver");
    assert_eq!(s["title"], "Print spooler crashes on start");
    assert_eq!(s["hostname"], "pc-0142");
    assert_eq!(s["reason"], "similar text");
    assert!(s["score"].as_f64().expect("a score") > 0.0);
    assert_eq!(s["resolved_at"], "2026-11-24T10:00:00.001Z");
}

async fn add_route(store: &SharedStore, url: &str, route: crate::model::WebhookRoute) -> i64 {
    store
        .add_webhook(
            &NewWebhook {
                url: url.into(),
                events: TicketEvent::ALL.to_vec(),
                secret: String::new(),
                created_by: "admin".into(),
                route,
            },
            &|_: &i64| crate::store::AuditEntry::system("test", "", ""),
            T0,
        )
        .await
        .expect("add webhook")
}

/// Issue 23: priority and reporter filters decide in the ticket's
/// transaction which channels get a delivery; a Slack channel gets an
/// unsigned chat message; an e-mail without an SMTP server fails, is
/// retried and says why.
#[tokio::test]
async fn routes_pick_their_tickets_and_email_without_smtp_is_retried_with_its_reason() {
    use crate::model::{WebhookFormat, WebhookRoute};
    let (_dir, store) = store().await;
    let clock = ManualClock::new(T0);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/services/T/B/x",
        listener.local_addr().expect("addr")
    );
    let mut got = receiver(listener, Arc::new(AtomicU16::new(200)));
    let slack = add_route(
        &store,
        &url,
        WebhookRoute {
            format: WebhookFormat::Slack,
            priorities: vec!["P1".into()],
            assignee: None,
        },
    )
    .await;
    let group = add_route(
        &store,
        "mailto:oncall@example.com",
        WebhookRoute {
            format: WebhookFormat::Email,
            ..WebhookRoute::default()
        },
    )
    .await;
    let reporter = add_route(
        &store,
        crate::webhooks::route::REPORTER_TARGET,
        WebhookRoute {
            format: WebhookFormat::Email,
            ..WebhookRoute::default()
        },
    )
    .await;
    let host = host(&store).await;
    for (title, priority) in [
        ("Spooler crashes", crate::rules::priority::Priority::P3),
        ("VPN is down", crate::rules::priority::Priority::P1),
    ] {
        store
            .create_ticket(
                &host,
                title,
                Some(priority),
                "alice",
                &AuditEntry::system("", "", ""),
                T0,
            )
            .await
            .expect("ticket");
    }

    let deliverer = Deliverer::new(store.clone(), Arc::new(clock.clone()));
    let run = deliverer.deliver_due().await.expect("deliver");
    assert_eq!((run.delivered, run.retrying), (1, 2), "{run:?}");
    let request = got.recv().await.expect("the Slack message");
    assert!(
        request.signature.is_empty(),
        "unsigned: {}",
        request.signature
    );
    let message: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
    assert!(
        message["text"]
            .as_str()
            .is_some_and(|t| t.contains("VPN is down")),
        "only the P1 ticket: {message}"
    );
    let slack_status = status_of(&store, slack).await;
    assert_eq!(slack_status.route.priorities, vec!["P1"]);
    assert_eq!(slack_status.delivered, 1);
    // Both tickets reach the group address; the reporter channel skips
    // tickets without a reporter's address.
    let group_status = status_of(&store, group).await;
    assert_eq!(group_status.pending, 2);
    assert_eq!(group_status.last_attempts, 1);
    assert!(
        group_status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no SMTP server is configured")),
        "{group_status:?}"
    );
    assert!(group_status.next_attempt_at_ms.is_some_and(|at| at > T0));
    let reporter_status = status_of(&store, reporter).await;
    assert_eq!((reporter_status.pending, reporter_status.delivered), (0, 0));
}
