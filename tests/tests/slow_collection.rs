//! The agent stays responsive while it collects (issue 17): the real
//! service whose inventory and health sample are both stuck reading a file
//! under its system root (a FIFO the test holds open, standing in for a
//! slow `smartctl` or WMI call) still connects, answers `status`, runs a
//! technician's diagnostic and handles the acknowledgement of its result.
//! Once the files give way, the inventory and the sample arrive; and a
//! service stopped while a collection is stuck still exits, cleanly.
//!
//! "Stuck" is not a duration: the test sees the agent holding each FIFO
//! open (`/proc/PID/fd`) before it asks for anything, and the collections
//! cannot end until the test writes to the FIFOs, so everything asserted in
//! between happened while they were under way.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, wait_for};

/// A FIFO at a path the agent reads, held open for writing so the agent's
/// open succeeds and its read waits for data.
struct StuckFile {
    path: PathBuf,
    writer: File,
}

impl StuckFile {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        let made = Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        // Read and write: opening a FIFO so never blocks on Linux, and a
        // writer being there makes the agent block in read, not in open.
        let writer = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the FIFO");
        Self { path, writer }
    }

    /// True when process `pid` has the FIFO open.
    fn held_by(&self, pid: u32) -> bool {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == self.path))
        })
    }

    /// Lets the reader finish with `content`; later reads find a plain file
    /// with the same content.
    fn release(mut self, content: &str) {
        let mut plain = self.path.clone().into_os_string();
        plain.push(".plain");
        std::fs::write(&plain, content).expect("write");
        std::fs::rename(&plain, &self.path).expect("rename over the FIFO");
        self.writer
            .write_all(content.as_bytes())
            .expect("write to the FIFO");
        // Dropping the only writer ends the reader's read.
    }
}

fn status(agent: &Agent) -> Option<serde_json::Value> {
    let out = agent.command(&["status", "--json"]);
    serde_json::from_str(&out.stdout).ok()
}

#[test]
fn a_stuck_collection_holds_up_no_diagnostic_and_no_acknowledgement() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let root_dir = tempfile::tempdir().expect("temp root");
    let root = root_dir.path().canonicalize().expect("canonical root");
    // A file each collection reads early on, before anything else can stall.
    let os_release = StuckFile::new(root.join("etc/os-release"));
    let loadavg = StuckFile::new(root.join("proc/loadavg"));

    let service = AgentService::start(
        &agent,
        &["--system-root", root.to_str().expect("utf-8 path")],
    );
    let pid = service.pid();
    wait_for(Duration::from_secs(30), || {
        (os_release.held_by(pid) || loadavg.held_by(pid)).then_some(())
    })
    .expect("a collection starts at once and waits on its file");
    wait_for(Duration::from_secs(30), || {
        let s = status(&agent)?;
        (s["service_running"] == true && s["connected"] == true).then_some(())
    })
    .expect("the service connects and answers status while it collects");
    let both_stuck = || os_release.held_by(pid) && loadavg.held_by(pid);
    wait_for(Duration::from_secs(30), || both_stuck().then_some(()))
        .expect("the inventory and the health sample are both under way");

    let port = collector.addr.port().to_string();
    let out = collector
        .cli(
            &alice,
            &[
                "--json",
                "run",
                &host,
                "tcp_connect",
                "--param",
                "host=127.0.0.1",
                "--param",
                &format!("port={port}"),
            ],
        )
        .expect_code(0);
    let job: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(job["state"], "completed", "{job}");
    assert!(
        job["output"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{port}")),
        "{job}"
    );
    // The result was the only report: its acknowledgement empties the spool.
    let acknowledged = wait_for(Duration::from_secs(30), || {
        let s = status(&agent)?;
        (s["last_success_unix_ms"].is_i64() && s["unacknowledged"] == 0).then_some(s)
    });
    assert!(
        acknowledged.is_some(),
        "the agent handles the acknowledgement of its diagnostic result: {:?}",
        status(&agent)
    );
    assert!(
        both_stuck(),
        "all of the above happened while both collections were under way"
    );
    let shown = collector
        .cli(&alice, &["--json", "host", "show", &host])
        .expect_code(0);
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert!(
        shown["inventory"]["os"]["name"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "no inventory yet: {shown}"
    );

    os_release.release("NAME=\"Slowpoke Linux\"\nVERSION_ID=\"1\"\n");
    loadavg.release("3.25 2.50 1.75 1/100 4242\n");
    let shown = wait_for(Duration::from_secs(60), || {
        let out = collector
            .cli(&alice, &["--json", "host", "show", &host])
            .expect_code(0);
        let shown: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (shown["inventory"]["os"]["name"] == "Slowpoke Linux"
            && shown["health"]["load_1m"].as_f64() == Some(3.25))
        .then_some(shown)
    });
    assert!(
        shown.is_some(),
        "the inventory and the health sample arrive once their files give way"
    );
    assert_eq!(service.stop(), Some(0), "the service stops cleanly");
}

#[test]
fn a_stuck_collection_does_not_hold_up_the_service_stop() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let root_dir = tempfile::tempdir().expect("temp root");
    let root = root_dir.path().canonicalize().expect("canonical root");
    let os_release = StuckFile::new(root.join("etc/os-release"));
    let service = AgentService::start(
        &agent,
        &["--system-root", root.to_str().expect("utf-8 path")],
    );
    let pid = service.pid();
    wait_for(Duration::from_secs(30), || {
        os_release.held_by(pid).then_some(())
    })
    .expect("the inventory waits on etc/os-release");
    assert_eq!(
        service.stop(),
        Some(0),
        "SIGTERM stops the service cleanly with the inventory still stuck"
    );
    let after = status(&agent).expect("status --json");
    assert_eq!(after["service_running"], false);
}
