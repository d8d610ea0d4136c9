//! A full disk (issue 20), with the real collector and a real agent: the
//! collector's data dir sits on a small tmpfs that is filled up while the
//! agent reports, then grown again. The collector must say NOT_SERVING
//! (and `/healthz` 503) while it cannot write, recover by itself once there is room (no
//! restart, and no agent's write needed to notice), and every report the agent spooled meanwhile must arrive.
//! Needs root (it mounts a tmpfs); without root it says so and passes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, SpoolView, run, wait_for};

/// A tmpfs mounted on a temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("mount point");
        let mounted = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()));
        (mounted.code == 0).then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path()))
        .expect_code(0);
    }

    /// Writes a file until the file system refuses more.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Single pages may still fit after the last whole chunk did not.
        while file.write_all(&chunk[..512]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg("-l").arg(self.dir.path()));
    }
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.trim() == "0"
}

/// The status the collector's gRPC health service gives the agent service.
fn agent_service_status(collector: &Collector, runtime: &tokio::runtime::Runtime) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    runtime.block_on(async {
        let channel = collector.channel(None).await;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "deskpulse.v1.AgentService".into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status
    })
}

const SERVING: i32 = tonic_health::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::ServingStatus::NotServing as i32;

#[test]
fn a_full_disk_fails_writes_and_the_collector_recovers_once_there_is_room() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let disk = Tmpfs::mount("48m").expect("mount a tmpfs");
    let data_dir = tempfile::tempdir_in(disk.path()).expect("data dir on the tmpfs");
    let collector = Collector::start_in(data_dir, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = collector.metrics_addr();
    let healthz = || deskpulse_tests::http_get(&metrics, "/healthz");
    assert!(healthz().0.starts_with("HTTP/1.1 200"), "{:?}", healthz());
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    // The session is up and its first inventory stored before the disk
    // fills, so the reports that find it full reach the ingest writer.
    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(60), || {
        collector.logs().contains("agent connected").then_some(())
    })
    .expect("the agent connects");
    wait_for(Duration::from_secs(60), || {
        let history = deskpulse_tests::health_history_ms(collector.data_dir.path(), &host);
        (history.len() >= 2).then_some(())
    })
    .expect("health samples are stored before the disk fills");

    let filler = disk.fill();
    // Findings are gathered rather than asserted one by one, so that one
    // run shows each promise kept or broken.
    let mut broken = Vec::new();
    let failing = wait_for(Duration::from_secs(60), || {
        collector
            .logs()
            .contains("database or disk is full")
            .then_some(())
    });
    if failing.is_none() {
        broken.push("no write failed on the full disk".to_owned());
    }
    let not_serving = wait_for(Duration::from_secs(30), || {
        (agent_service_status(&collector, &runtime) == NOT_SERVING).then_some(())
    });
    if not_serving.is_none() {
        broken.push("health said SERVING while writes failed".to_owned());
    }
    let (head, body) = healthz();
    if !head.starts_with("HTTP/1.1 503") || !body.contains("cannot write") {
        broken.push(format!(
            "/healthz said {head:?} {body:?} while writes failed"
        ));
    }
    assert_eq!(service.stop(), Some(0), "the agent stops on SIGTERM");
    let waiting = SpoolView::read(agent.state_dir.path());
    assert!(
        !waiting.records.is_empty(),
        "the reports the full disk refused wait in the spool"
    );

    disk.resize("512m");
    // With no agent connected nothing else writes: the collector must find
    // out by itself that it can write again.
    let serving_alone = wait_for(Duration::from_secs(30), || {
        (agent_service_status(&collector, &runtime) == SERVING).then_some(())
    });
    if serving_alone.is_none() {
        broken.push(
            "health did not say SERVING again after the disk was grown, with no agent writing"
                .to_owned(),
        );
    }
    let (head, body) = healthz();
    if !head.starts_with("HTTP/1.1 200") {
        broken.push(format!(
            "/healthz said {head:?} {body:?} once writes worked again"
        ));
    }
    let service = AgentService::start(&agent, &[]);
    let arrived = wait_for(Duration::from_secs(120), || {
        (waiting.stored(collector.data_dir.path(), &host) == waiting.waiting()).then_some(())
    });
    if arrived.is_none() {
        broken.push(format!(
            "after the disk was grown, only {:?} of the spooled {:?} arrived",
            waiting.stored(collector.data_dir.path(), &host),
            waiting.waiting()
        ));
    }
    let serving = wait_for(Duration::from_secs(30), || {
        (agent_service_status(&collector, &runtime) == SERVING).then_some(())
    });
    if serving.is_none() {
        broken.push("health did not say SERVING again once writes succeeded".to_owned());
    }
    assert_eq!(service.stop(), Some(0), "the agent stops on SIGTERM");
    let logs = collector.logs();
    let stuck = logs.matches("non-zero transaction depth").count();
    if stuck > 0 {
        broken.push(format!(
            "{stuck} writes failed on a transaction left open by a failed one"
        ));
    }
    eprintln!(
        "{} store errors logged while the disk was full",
        logs.matches("database or disk is full").count()
    );
    drop(collector);
    let _ = std::fs::remove_file(filler);
    assert!(broken.is_empty(), "{broken:#?}\ncollector log:\n{logs}");
}
