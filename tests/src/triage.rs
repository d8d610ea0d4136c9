//! Automatic triage end to end (issue 23), shared by the test
//! (`tests/tests/triage.rs`) and the benchmark (`tests/benches/triage.rs`):
//! a small ext4 filesystem in a file, loop-mounted under `/tmp` (one of the
//! agent's default `disk_usage` roots) so the agent reports it as a real
//! disk, a rule on it whose ticket runs `disk_usage` and `top_processes`,
//! and a fault injected by filling the filesystem. Mounting needs root.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Agent, AgentService, Collector, run, wait_for};

/// The rule the flow applies: fires on the small disk past 80 % for 2 s.
pub const RULE_FILE: &str = r#"
[[rule]]
name = "small-disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 80
recover = 60
for = "2s"
severity = "high"
triage = ["disk_usage path={subject}", "top_processes count=5"]
"#;

/// The rule's `for`.
pub const RULE_FOR: Duration = Duration::from_secs(2);

/// An ext4 filesystem in a file, loop-mounted; unmounted when dropped.
pub struct LoopDisk {
    dir: tempfile::TempDir,
    _image: tempfile::NamedTempFile,
}

impl LoopDisk {
    /// Makes and mounts one of `mib` MiB under `/tmp`; `None` without
    /// root, loop devices or `mkfs.ext4`.
    pub fn mount(mib: u64) -> Option<Self> {
        if run(Command::new("id").arg("-u")).stdout.trim() != "0" {
            return None;
        }
        let image = tempfile::NamedTempFile::new_in("/var/tmp").ok()?;
        image.as_file().set_len(mib << 20).ok()?;
        let made = run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image.path()));
        if made.code != 0 {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("deskpulse-disk-")
            .tempdir_in("/tmp")
            .ok()?;
        let mounted = run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image.path())
            .arg(dir.path()));
        (mounted.code == 0).then_some(Self { dir, _image: image })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes files into a directory of its own until the filesystem is
    /// about `percent` full (as `df` counts); returns the directory.
    pub fn fill_to(&self, percent: u64) -> PathBuf {
        let dir = self.path().join("downloads");
        std::fs::create_dir_all(&dir).expect("a directory on the disk");
        let chunk = vec![0x5au8; 256 * 1024];
        let mut file = std::fs::File::create(dir.join("big.iso")).expect("create");
        while used_percent(self.path()) < percent {
            if file.write_all(&chunk).is_err() {
                break;
            }
            let _ = file.sync_data();
        }
        dir
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg("-l").arg(self.dir.path()));
    }
}

/// `df`'s use percent of the filesystem holding `path`.
pub fn used_percent(path: &Path) -> u64 {
    let out = run(Command::new("df").arg("--output=pcent").arg(path));
    out.stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
        .unwrap_or(0)
}

/// A collector with the triage rule in force and an agent service
/// reporting health every second, connected.
pub struct Setup {
    /// The collector.
    pub collector: Collector,
    /// An admin API token.
    pub token: String,
    /// The agent's state dir.
    pub agent: Agent,
    /// The running service.
    pub service: AgentService,
}

impl Setup {
    /// Starts it all and applies [`RULE_FILE`].
    pub fn start() -> Self {
        let collector = Collector::start();
        let token = collector.admin_token();
        let rules = tempfile::NamedTempFile::new().expect("rules file");
        std::fs::write(rules.path(), RULE_FILE).expect("write rules");
        collector
            .cli(&token, &["rules", "apply", &rules.path().to_string_lossy()])
            .expect_code(0);
        let agent = Agent::new();
        agent
            .enroll(&collector, &collector.enrollment_token(1))
            .expect_code(0);
        let service = AgentService::start(&agent, &[]);
        agent.wait_service_connected();
        Self {
            collector,
            token,
            agent,
            service,
        }
    }

    /// The open ticket of the triage rule on `mount`, as `tickets --json`
    /// lists it.
    pub fn ticket_on(&self, mount: &Path) -> Option<serde_json::Value> {
        let list = self
            .collector
            .cli(&self.token, &["tickets", "--json"])
            .expect_code(0)
            .json();
        list.as_array()?
            .iter()
            .find(|t| {
                t["rule"] == "small-disk-full" && t["subject"] == mount.to_string_lossy().as_ref()
            })
            .cloned()
    }

    /// `ticket show ID --json`.
    pub fn ticket_show(&self, id: i64) -> serde_json::Value {
        self.collector
            .cli(&self.token, &["ticket", "show", &id.to_string(), "--json"])
            .expect_code(0)
            .json()
    }
}

/// The worklog notes of a `ticket show --json`.
pub fn notes(shown: &serde_json::Value) -> Vec<String> {
    shown["worklog"]
        .as_array()
        .map(|log| {
            log.iter()
                .filter_map(|e| e["note"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How long one injected fault took: to the ticket, and to the ticket
/// with both triage results attached.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From the fill's end to the ticket.
    pub to_ticket: Duration,
    /// From the fill's end to the ticket with both results attached.
    pub to_triage: Duration,
}

/// Fills `disk` past the rule's threshold and waits for the ticket and its
/// triage output; `None` when either does not come within a minute.
pub fn inject_and_wait(setup: &Setup, disk: &LoopDisk) -> Option<(i64, Timing)> {
    disk.fill_to(90);
    let filled = Instant::now();
    let ticket = wait_for(Duration::from_secs(60), || setup.ticket_on(disk.path()))?;
    let to_ticket = filled.elapsed();
    let id = ticket["id"].as_i64()?;
    wait_for(Duration::from_secs(60), || {
        let shown = setup.ticket_show(id);
        let done = notes(&shown)
            .iter()
            .filter(|n| n.starts_with("diagnostic job "))
            .count();
        (done >= 2).then_some(())
    })?;
    Some((
        id,
        Timing {
            to_ticket,
            to_triage: filled.elapsed(),
        },
    ))
}
