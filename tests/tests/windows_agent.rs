//! The Windows agent end to end, under Wine: the `.exe` built for
//! `x86_64-pc-windows-gnu` enrolls against the real Linux collector on
//! loopback over mutual TLS, reports an inventory whose OS, hardware (WMI)
//! and software (a registry Uninstall entry the test plants) are Windows',
//! raises a ticket with `report-issue`, runs a `tcp_connect` diagnostic as
//! a service, and loses nothing when it is killed with records in its
//! spool.
//!
//! Wine's values are partly synthetic (manufacturer "The Wine Project",
//! BIOS serial "0"), so the assertions are on shape and on what the test
//! planted. `cargo xtask test` prepares Wine (`xtask/src/wine.rs`), builds
//! the `.exe` and exports the prefix in `DESKPULSE_WINE_PREFIX`; without it
//! these tests say SKIPPED, and fail under `CI=true`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deskpulse_tests::wine::{self, agent_exe, windows_path, wine};
use deskpulse_tests::{Collector, Run, SpoolView, run, wait_for};

/// A Windows agent whose state dir is a Linux temp dir.
struct WindowsAgent {
    state_dir: tempfile::TempDir,
}

impl WindowsAgent {
    fn new() -> Self {
        Self {
            state_dir: tempfile::tempdir().expect("temp state dir"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let exe = agent_exe();
        let mut cmd = wine(&[exe.to_str().expect("utf-8 path")]);
        cmd.args(args)
            .arg("--state-dir")
            .arg(windows_path(self.state_dir.path()));
        cmd
    }

    fn command(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    fn enroll(&self, collector: &Collector) {
        let ca = windows_path(&collector.ca_file());
        let token = collector.enrollment_token(1);
        self.command(&[
            "enroll",
            "--collector",
            &collector.url(),
            "--token",
            &token,
            "--ca-file",
            &ca,
        ])
        .expect_code(0);
    }

    fn host_id(&self) -> String {
        let text = std::fs::read_to_string(self.state_dir.path().join("enrollment.toml"))
            .expect("enrollment.toml");
        text.lines()
            .find_map(|l| l.strip_prefix("host_id = "))
            .expect("host_id line")
            .trim_matches('"')
            .to_owned()
    }

    /// `run` as a service, its health every second; its log goes to a
    /// file that a failing test prints.
    fn start_service(&self) -> Service {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = self
            .cmd(&["run", "--health-interval", "1s"])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .expect("start the Windows agent service under Wine");
        Service { child, log }
    }
}

/// The agent service under Wine and its log; killed (SIGKILL, as `kill
/// -9`) when dropped.
struct Service {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Service {
    fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has ended, and how.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the Windows agent's log ---\n{}", self.log());
        }
    }
}

/// An Uninstall entry planted in the prefix's registry for one test, and
/// removed after it.
struct PlantedProgram {
    key: String,
    name: String,
    version: String,
}

impl PlantedProgram {
    fn plant() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let planted = Self {
            key: format!(
                r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\DeskpulseWineTest-{id}"
            ),
            name: format!("Deskpulse Wine Test {}", &id[..8]),
            version: "4.2.17".into(),
        };
        for (value, data) in [
            ("DisplayName", planted.name.as_str()),
            ("DisplayVersion", planted.version.as_str()),
            ("Publisher", "Deskpulse Test Vendor"),
        ] {
            run(&mut wine(&[
                "reg",
                "add",
                &planted.key,
                "/v",
                value,
                "/t",
                "REG_SZ",
                "/d",
                data,
                "/f",
            ]))
            .expect_code(0);
        }
        planted
    }
}

impl Drop for PlantedProgram {
    fn drop(&mut self) {
        let _ = wine(&["reg", "delete", &self.key, "/f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_windows_agent_enrolls_reports_its_inventory_and_raises_a_ticket() {
    if !wine::ready("a_windows_agent_enrolls_reports_its_inventory_and_raises_a_ticket") {
        return;
    }
    let collector = Collector::start();
    let agent = WindowsAgent::new();
    agent.enroll(&collector);
    let planted = PlantedProgram::plant();

    // An employee reports while no service runs: the report waits in the
    // spool and goes with the next report.
    let out = agent
        .command(&["report-issue", "The Wine printer jams on page two"])
        .expect_code(0);
    assert!(
        out.stdout.contains("when the service next runs"),
        "{}",
        out.stdout
    );
    agent.command(&["run", "--once"]).expect_code(0);

    let token = collector.admin_token();
    let host = agent.host_id();
    let inventory = Run::json(
        &collector
            .cli(&token, &["--json", "inventory", &host])
            .expect_code(0),
    );
    let sections = &inventory["sections"];
    let os = &sections["os"];
    assert!(
        os["name"].as_str().unwrap_or("").contains("Windows"),
        "{os}"
    );
    assert!(!os["build"].as_str().unwrap_or("").is_empty(), "{os}");
    // Hardware from WMI, in its shape: Wine's values are its own.
    let system = &sections["system"];
    assert!(
        !system["vendor"].as_str().unwrap_or("").is_empty(),
        "{system}"
    );
    assert!(
        sections["cpu"]["logical_cores"].as_u64() > Some(0),
        "{sections}"
    );
    assert!(
        sections["memory"]["total_bytes"].as_u64() > Some(0),
        "{sections}"
    );
    let disks = sections["storage"]["disks"].as_array().expect("disks");
    assert!(
        disks.iter().all(|d| d["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("PhysicalDrive")),
        "{disks:?}"
    );
    let services = sections["services"]["services"]
        .as_array()
        .expect("services");
    assert!(
        services.iter().any(|s| s["name"] == "RpcSs"),
        "{services:?}"
    );
    // Software from the registry: the entry planted above, as Apps &
    // features would list it.
    let packages = sections["software"]["packages"]
        .as_array()
        .expect("packages");
    let program = packages
        .iter()
        .find(|p| p["name"] == planted.name.as_str())
        .unwrap_or_else(|| panic!("{} not in {packages:?}", planted.name));
    assert_eq!(program["version"], planted.version.as_str());
    assert_eq!(program["ecosystem"], "windows");
    assert_eq!(program["publisher"], "Deskpulse Test Vendor");
    assert_eq!(program["source"], "registry-hklm-64");
    // What Wine lacks is named, never a failed inventory.
    let unavailable = inventory["unavailable"].as_array().expect("unavailable");
    assert!(
        unavailable
            .iter()
            .any(|u| u["field"] == "security.antivirus"),
        "{unavailable:?}"
    );
    // The pending-update count comes from the Windows Update Agent's
    // search, which Wine's stub cannot run: absent with its reason and
    // HRESULT, never a false 0.
    let why_no_count = unavailable
        .iter()
        .find(|u| u["field"] == "security.pending_updates");
    eprintln!(
        "pending updates: {} / {why_no_count:?}",
        sections["security"]["pending_updates"]
    );
    match sections["security"]["pending_updates"].as_u64() {
        Some(_) => assert!(why_no_count.is_none(), "{why_no_count:?}"),
        None => {
            let why = why_no_count.expect("the missing count is explained");
            assert_eq!(why["reason"], "not_supported", "{why}");
            let detail = why["detail"].as_str().expect("detail");
            assert!(detail.contains("HRESULT 0x80004001"), "{detail}");
        }
    }

    let ticket = wait_for(Duration::from_secs(30), || {
        let out = collector.cli(&token, &["--json", "tickets", "--status", "open"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["rule"] == "user-report")
            .cloned()
    })
    .expect("a user-report ticket");
    assert_eq!(ticket["host_id"], host.as_str());
    assert!(
        ticket["title"]
            .as_str()
            .unwrap_or("")
            .ends_with(": The Wine printer jams on page two"),
        "{ticket}"
    );
}

#[test]
fn a_windows_service_runs_a_diagnostic_and_loses_nothing_when_killed() {
    if !wine::ready("a_windows_service_runs_a_diagnostic_and_loses_nothing_when_killed") {
        return;
    }
    let collector = Collector::start();
    let agent = WindowsAgent::new();
    agent.enroll(&collector);
    let host = agent.host_id();
    let alice = collector.api_token("alice", "technician");
    let service = agent.start_service();
    wait_for(Duration::from_secs(60), || {
        let out = collector.cli(&alice, &["--json", "hosts"]);
        let hosts: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        hosts
            .as_array()?
            .iter()
            .any(|h| h["host_id"] == host.as_str() && h["presence"] == "online")
            .then_some(())
    })
    .expect("the Windows service connects");

    let port = collector.addr.port().to_string();
    let out = collector
        .cli(
            &alice,
            &[
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
    assert!(
        out.stdout.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("completed, exit status 0"),
        "{}",
        out.stdout
    );

    // The collector goes away; health samples pile up in the spool; the
    // agent is killed outright with them waiting.
    let addr = collector.addr.to_string();
    let data_dir = collector.kill_9();
    wait_for(Duration::from_secs(60), || {
        let status = Run::json(&agent.command(&["status", "--json"]).expect_code(0));
        (status["spool"]["health"]["records"].as_u64() >= Some(3)).then_some(())
    })
    .expect("health samples pile up while the collector is down");
    service.kill_9();
    let spool = SpoolView::read(agent.state_dir.path());
    let waiting = spool.health();
    assert!(
        waiting.len() >= 2,
        "health samples wait in the spool: {waiting:?}"
    );

    let collector = Collector::start_on(data_dir, &addr, &[]);
    let mut service = agent.start_service();
    let mut earlier_logs = String::new();
    let mut restarts = 0;
    wait_for(Duration::from_secs(90), || {
        // Started again if it ended, as the SCM's recovery action does: the
        // wineserver frees a killed process's state lock a moment after
        // the kill, and a start in that moment finds the state dir busy.
        if restarts < 3
            && let Some(status) = service.exited()
        {
            earlier_logs.push_str(&format!(
                "--- a start that ended ({status}) ---\n{}",
                service.log()
            ));
            restarts += 1;
            service = agent.start_service();
        }
        waiting
            .is_subset(&spool.stored(collector.data_dir.path(), &host))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "every waiting sample arrives: {waiting:?}; received {:?}\n{earlier_logs}--- the collector's log ---\n{}",
            spool.stored(collector.data_dir.path(), &host),
            collector.logs()
        )
    });
    if !earlier_logs.is_empty() {
        eprintln!("the restarted agent was started again:\n{earlier_logs}");
    }
}
