//! A flood of silent clients on the TLS port, against a collector whose
//! open-file limit is lowered to 1,024: sockets that finish TLS and never
//! send the HTTP/2 preface (and a few that send nothing at all) must not
//! take the descriptors the CLI, the store and audit anchoring need. The
//! CLI's calls and their latencies are printed (`docs/scale.md`).

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deskpulse_tests::Collector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The collector's open-file limit in this test.
const OPEN_FILES: u64 = 1024;
/// Silent sockets opened in all, more than the collector has descriptors.
const FLOOD: usize = 1500;
/// The flood stops after this long whatever it reached.
const FLOOD_TIME: Duration = Duration::from_secs(90);
/// CLI calls timed under the flood.
const CLI_CALLS: usize = 20;

fn client_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA pem")).expect("CA root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A socket that completes TLS (every sixteenth one not even that) and
/// then says nothing, kept open by the caller.
fn silent_socket(
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    index: usize,
) -> Option<(TcpStream, Option<rustls::ClientConnection>)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    if index % 16 == 15 {
        return Some((tcp, None));
    }
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(tls.clone(), name).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    tcp.flush().ok()?;
    Some((tcp, Some(conn)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[test]
fn the_cli_answers_while_silent_clients_flood_a_collector_with_1024_descriptors() {
    let collector = Collector::start_with_open_file_limit(OPEN_FILES, &[]);
    let token = collector.admin_token();
    collector.cli(&token, &["whoami"]).expect_code(0);
    let tls = client_config(&std::fs::read(collector.ca_file()).expect("ca.pem"));
    let addr = collector.addr;

    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (opened, stop) = (opened.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut held = Vec::with_capacity(FLOOD);
            for index in 0..FLOOD {
                if stop.load(Ordering::Relaxed) || started.elapsed() > FLOOD_TIME {
                    break;
                }
                if let Some(socket) = silent_socket(addr, &tls, index) {
                    held.push(socket);
                }
                opened.fetch_add(1, Ordering::Relaxed);
            }
            // Held until the CLI calls are done.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_TIME {
                std::thread::sleep(Duration::from_millis(50));
            }
            held.len()
        })
    };
    // The CLI goes in once the whole flood, more silent TLS sockets than
    // the collector has descriptors, is open and held. Not while it still
    // grows: the collector keeps the newest of the connections still in
    // their handshake, so a slow CLI process could lose its place to the
    // next few hundred of a flood, which is what that eviction is for.
    let waited = Instant::now();
    while opened.load(Ordering::Relaxed) < FLOOD && waited.elapsed() < FLOOD_TIME {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latencies = Vec::with_capacity(CLI_CALLS);
    let mut failures = Vec::new();
    for _ in 0..CLI_CALLS {
        let started = Instant::now();
        let run = collector.cli(&token, &["whoami"]);
        latencies.push(started.elapsed());
        if run.code != 0 {
            failures.push(run.stderr.trim().to_owned());
        }
    }
    let opened_at_end = opened.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let held = flood.join().expect("flood thread");
    latencies.sort();
    println!(
        "CLI whoami under a flood of {opened_at_end} silent sockets ({held} completed their \
         side; collector open-file limit {OPEN_FILES}): {CLI_CALLS} calls, p50 {:.0} ms, p90 \
         {:.0} ms, max {:.0} ms, {} failed",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.9).as_secs_f64() * 1000.0,
        percentile(&latencies, 1.0).as_secs_f64() * 1000.0,
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "CLI calls failed under the flood: {failures:?}"
    );
    assert!(
        opened_at_end >= OPEN_FILES as usize,
        "the flood opened only {opened_at_end} sockets"
    );
    let logs = collector.logs();
    assert!(
        logs.contains("connection limits") && logs.contains("max_connections=768"),
        "the cap is not logged:\n{logs}"
    );
    assert!(
        !logs.contains("Too many open files"),
        "the collector ran out of descriptors:\n{logs}"
    );
    // And it serves normally once the flood is gone.
    collector.cli(&token, &["whoami"]).expect_code(0);
}

/// How long the collector may keep a peer that stopped answering: its
/// HTTP/2 keepalive pings every 30 s and gives up 20 s after an unanswered
/// ping, with room for a loaded machine.
const DEAD_PEER_DROPPED_WITHIN: Duration = Duration::from_secs(120);

#[test]
fn a_peer_that_stops_answering_keepalive_pings_is_dropped() {
    let collector = Collector::start();
    let tls = client_config(&std::fs::read(collector.ca_file()).expect("ca.pem"));
    let tcp = TcpStream::connect_timeout(&collector.addr, Duration::from_secs(5)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(tls, name).expect("TLS client");
    let mut peer = rustls::StreamOwned::new(conn, tcp);
    // The HTTP/2 preface and an empty SETTINGS frame: a live connection,
    // past the admission deadline. After that the peer reads what comes but
    // never answers, as a PC that froze or lost its route would.
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("HTTP/2 preface");
    peer.flush().expect("flush");
    let started = Instant::now();
    let mut received = 0usize;
    let mut buffer = [0u8; 4096];
    let dropped = loop {
        if started.elapsed() > DEAD_PEER_DROPPED_WITHIN {
            break None;
        }
        match std::io::Read::read(&mut peer, &mut buffer) {
            Ok(0) => break Some(started.elapsed()),
            Ok(n) => received += n,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break Some(started.elapsed()),
        }
    };
    let dropped = dropped.unwrap_or_else(|| {
        panic!(
            "a peer that never answered a ping was still connected after {:?} ({received} bytes \
             received):\n{}",
            DEAD_PEER_DROPPED_WITHIN,
            collector.logs()
        )
    });
    println!(
        "a silent HTTP/2 peer was dropped after {:.0} s ({received} bytes received)",
        dropped.as_secs_f64()
    );
    collector
        .cli(&collector.admin_token(), &["whoami"])
        .expect_code(0);
}
