//! Failed authentication is limited by source address, and a bad
//! enrollment token costs the collector one read: no CSR parsed or signed,
//! no wait for the store's write lock. Loopback has many addresses: the
//! guesser is 127.0.0.1, the honest caller 127.0.0.2.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use deskpulse_proto::v1::enrollment_client::EnrollmentClient;
use deskpulse_proto::v1::technician_client::TechnicianClient;
use deskpulse_proto::v1::{EnrollRequest, WhoAmIRequest};
use deskpulse_tests::Collector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Bad-token enrollments in one wave.
const FLOOD: usize = 300;

async fn channel_from(collector: &Collector, source: &str) -> Channel {
    let ca = std::fs::read_to_string(collector.ca_file()).expect("ca.pem");
    Endpoint::from_shared(collector.url())
        .expect("url")
        .local_address(Some(source.parse::<IpAddr>().expect("ip")))
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

fn csr_der() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .der()
        .to_vec()
}

fn enroll_request(token: &str, index: usize) -> EnrollRequest {
    EnrollRequest {
        token: token.to_owned(),
        csr_der: csr_der(),
        hostname: format!("pc-{index}"),
        hardware_uuid: uuid::Uuid::new_v4().to_string(),
        hardware_serial: String::new(),
    }
}

/// Sends `requests` at once over `channel`; the status codes, or `None`
/// when not all answered within `limit`.
async fn wave(
    channel: &Channel,
    requests: Vec<EnrollRequest>,
    limit: Duration,
) -> Option<Vec<tonic::Status>> {
    let mut set = tokio::task::JoinSet::new();
    for request in requests {
        let mut client = EnrollmentClient::new(channel.clone());
        set.spawn(async move { client.enroll(request).await });
    }
    tokio::time::timeout(limit, async move {
        let mut statuses = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined.expect("task") {
                Ok(_) => panic!("a bad token enrolled"),
                Err(status) => statuses.push(status),
            }
        }
        statuses
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_enrollment_flood_neither_waits_for_the_writer_nor_blocks_a_good_one() {
    let collector = Collector::start();
    let token = collector.enrollment_token(1);
    let guesser = channel_from(&collector, "127.0.0.1").await;
    // CSRs are made before the clock starts: key generation is the test's
    // cost, not the collector's.
    let requests: Vec<_> = (0..FLOOD)
        .map(|i| enroll_request(&format!("guess-{i}"), i))
        .collect();

    // Another process holds SQLite's write lock, as a long write would.
    let db = rusqlite::Connection::open(collector.data_dir.path().join("deskpulse.db"))
        .expect("open the store");
    db.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let started = Instant::now();
    let statuses = wave(&guesser, requests, Duration::from_secs(8)).await;
    let took = started.elapsed();
    db.execute_batch("ROLLBACK")
        .expect("release the write lock");
    let statuses = statuses.unwrap_or_else(|| {
        panic!("bad-token enrollments did not all answer within 8 s while the write lock was held")
    });
    println!(
        "{FLOOD} bad-token enrollments answered in {:.0} ms with the write lock held elsewhere",
        took.as_secs_f64() * 1000.0
    );
    let unknown = statuses
        .iter()
        .filter(|s| s.code() == tonic::Code::Unauthenticated)
        .count();
    let limited: Vec<_> = statuses
        .iter()
        .filter(|s| s.code() == tonic::Code::ResourceExhausted)
        .collect();
    assert_eq!(
        unknown + limited.len(),
        FLOOD,
        "other answers: {:?}",
        statuses
            .iter()
            .filter(|s| !matches!(
                s.code(),
                tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted
            ))
            .collect::<Vec<_>>()
    );
    // Each lookup reserves its attempt before it starts, so however the
    // calls are scheduled, exactly the limit's worth are looked up and not
    // one races past it.
    println!("{unknown} of {FLOOD} guesses were looked up before the limit cut in");
    assert_eq!(
        unknown,
        10,
        "guesses looked up past the limit of 10: {}",
        unknown.saturating_sub(10)
    );
    let message = limited.first().expect("some were limited").message();
    assert!(
        message.starts_with("too many failed attempts from 127.0.0.1, retry in ")
            && message.ends_with(" s"),
        "{message}"
    );

    // The guesser goes on; an honest agent elsewhere enrolls meanwhile.
    let more: Vec<_> = (0..FLOOD)
        .map(|i| enroll_request(&format!("again-{i}"), i))
        .collect();
    let mut honest = EnrollmentClient::new(channel_from(&collector, "127.0.0.2").await);
    let started = Instant::now();
    let (flood, enrolled) = tokio::join!(
        wave(&guesser, more, Duration::from_secs(20)),
        honest.enroll(enroll_request(&token, 0)),
    );
    let enrolled = enrolled.expect("the honest enrollment");
    println!(
        "an honest enrollment beside {FLOOD} more bad-token ones took {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(!enrolled.into_inner().host_id.is_empty());
    let flood = flood.expect("the second wave answered");
    assert!(
        flood
            .iter()
            .all(|s| s.code() == tonic::Code::ResourceExhausted)
    );
    assert!(
        collector
            .logs()
            .contains("an address used up its failed attempts"),
        "{}",
        collector.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_api_tokens_are_limited_by_source_address() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    for i in 0..10 {
        let run = collector.cli(&format!("guess-{i}"), &["whoami"]);
        assert!(
            run.stderr.contains("unknown or revoked"),
            "guess {i}: {}",
            run.stderr
        );
    }
    // The 11th attempt from 127.0.0.1 is refused before any lookup, even
    // with the right token.
    let run = collector.cli(&admin, &["whoami"]).expect_code(1);
    assert!(
        run.error_line()
            .contains("too many failed attempts from 127.0.0.1, retry in "),
        "{}",
        run.stderr
    );
    // Another address is not held back.
    let mut elsewhere = TechnicianClient::new(channel_from(&collector, "127.0.0.2").await);
    let mut request = tonic::Request::new(WhoAmIRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin}").parse().expect("header"),
    );
    elsewhere
        .who_am_i(request)
        .await
        .expect("whoami from 127.0.0.2");
}
