//! `deskpulse-agent report-issue` with the real binary: bad text is a usage
//! error before anything else, an unenrolled agent says so, a report made
//! while the service is not running lands in the spool with the reporter's
//! name and a health sample, and a running service takes one over its
//! local socket.

use std::time::Duration;

use deskpulse_agent::spool::{Limits, Spool};
use deskpulse_agent::state::{Credentials, Enrollment, StateDir};
use deskpulse_proto::v1::UserIssue;
use deskpulse_proto::v1::report::Payload;
use deskpulse_tests::{Agent, AgentService, Collector, Run, bin, run, wait_for};

fn one_line(out: &Run, needle: &str) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {}", out.stderr);
    assert!(
        lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        lines[0]
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn bad_text_is_a_usage_error_and_an_unenrolled_agent_says_so() {
    let agent = Agent::new();
    for (text, needle) in [
        ("   ", "empty"),
        ("clear\u{1b}[2J", "control character"),
        (&"x".repeat(2001) as &str, "2001 characters"),
    ] {
        let out = agent.command(&["report-issue", text]).expect_code(2);
        one_line(&out, needle);
    }
    let out = agent
        .command(&["report-issue", "Outlook keeps crashing"])
        .expect_code(1);
    one_line(&out, "not enrolled");
    assert!(
        !agent.state_dir.path().join("spool").exists(),
        "nothing written for a refused report"
    );
}

#[test]
fn an_unsafe_watched_service_name_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[health]\nwatch_services = [\"../../etc/shadow\"]\n",
    )
    .expect("write");
    let out = run(std::process::Command::new(bin("deskpulse-agent"))
        .args(["health", "--config"])
        .arg(&config))
    .expect_code(2);
    one_line(&out, "not a service name");
}

/// An enrolled state dir (the collector named in it is never reached) and a
/// config whose system root has a passwd naming the current user.
fn enrolled_offline(agent: &Agent) -> std::path::PathBuf {
    let state = StateDir::new(agent.state_dir.path());
    state
        .save_enrollment(&Credentials {
            enrollment: Enrollment {
                collector: "https://127.0.0.1:1".into(),
                host_id: "00000000-0000-4000-8000-000000000002".into(),
                enrolled_at_unix_ms: 1,
            },
            cert_pem: "unused".into(),
            key_pem: "unused".into(),
            ca_pem: "unused".into(),
        })
        .expect("enrollment");
    let root = agent.state_dir.path().join("fixture-root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::create_dir_all(root.join("proc")).expect("mkdir");
    let uid = current_uid();
    std::fs::write(
        root.join("etc/passwd"),
        format!("employee:x:{uid}:{uid}:An Employee:/home/employee:/bin/sh\n"),
    )
    .expect("passwd");
    std::fs::write(root.join("proc/loadavg"), "3.25 2.00 1.00 1/100 7\n").expect("loadavg");
    let config = agent.state_dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("system_root = {:?}\n", root.to_str().expect("utf-8")),
    )
    .expect("config");
    config
}

/// The uid of this test process, as the agent's offline path sees it.
fn current_uid() -> u32 {
    let out = run(std::process::Command::new("id").arg("-u"));
    out.stdout.trim().parse().expect("id -u")
}

fn spooled_issues(agent: &Agent) -> Vec<UserIssue> {
    let (mut spool, _) =
        Spool::open(&agent.state_dir.path().join("spool"), Limits::default()).expect("spool");
    spool
        .read_after(0, 1000)
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.payload {
            Some(Payload::UserIssue(issue)) => Some(issue),
            _ => None,
        })
        .collect()
}

#[test]
fn without_the_service_the_report_is_spooled_for_the_next_run() {
    let agent = Agent::new();
    let config = enrolled_offline(&agent);
    let out = agent
        .command(&[
            "report-issue",
            "  The VPN drops every hour\n\tsince the update ",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .expect_code(0);
    assert!(
        out.stdout.starts_with("reported;") && out.stdout.contains("when the service next runs"),
        "{}",
        out.stdout
    );
    let issues = spooled_issues(&agent);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(
        issues[0].text,
        "The VPN drops every hour\n\tsince the update"
    );
    assert_eq!(issues[0].os_user, "employee");
    assert_eq!(issues[0].health.as_ref().map(|h| h.load_1m), Some(3.25));
    let stats = Spool::inspect(&agent.state_dir.path().join("spool")).expect("inspect");
    assert_eq!(stats.results.records, 1);
}

#[test]
fn a_running_service_takes_the_report_over_its_local_socket() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let _service = AgentService::start_ready(&agent, &collector);
    let out = agent
        .command(&["report-issue", "The printer on floor 3 eats paper"])
        .expect_code(0);
    // The collector's Ack names the ticket within the few seconds
    // `report-issue` waits for it (issue 23).
    assert!(
        out.stdout.trim().starts_with("Reported. Ticket #"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // The collector opens a ticket for this host naming the reporter, with
    // the fresh health sample copied in as evidence.
    let token = collector.admin_token();
    let ticket = wait_for(Duration::from_secs(30), || {
        let out = collector.cli(&token, &["--json", "tickets", "--status", "open"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["rule"] == "user-report")
            .cloned()
    })
    .expect("a user-report ticket");
    assert_eq!(ticket["host_id"], agent.host_id().as_str());
    let user = run(std::process::Command::new("id").arg("-un"));
    let reporter = user.stdout.trim();
    assert_eq!(
        ticket["title"],
        format!("reported by {reporter}: The printer on floor 3 eats paper").as_str()
    );
    assert_eq!(ticket["evidence"]["reported_by"], reporter);
    assert!(
        ticket["evidence"]["health"]["memory_used_percent"].as_f64() > Some(0.0),
        "{ticket}"
    );
}

/// An employee who may not open the service's key and spool reports while
/// the service is stopped: the report waits in the drop box, a flood is
/// refused, and the service sends the reports in the employee's name when
/// it runs again, then holds the employee to the same rate limit live.
/// Switching users needs root: as any other user this test says so and
/// checks nothing.
#[test]
fn an_employee_report_waits_in_the_drop_box_until_the_service_runs() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if current_uid() != 0 {
        eprintln!("SKIPPED: switching to another user needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    // The state dir of a real install is world-searchable; a temp dir is not.
    std::fs::set_permissions(
        agent.state_dir.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let as_employee = |text: &str| {
        let mut cmd = agent.cmd(&["report-issue", text]);
        cmd.uid(NOBODY).gid(NOBODY);
        run(&mut cmd)
    };
    let first = as_employee("My laptop will not print").expect_code(0);
    assert!(
        first
            .stdout
            .starts_with("queued: the agent service is not running"),
        "{}{}",
        first.stdout,
        first.stderr
    );
    for i in 2..=5 {
        as_employee(&format!("Still not printing ({i})")).expect_code(0);
    }
    let flood = as_employee("Still not printing (6)").expect_code(1);
    one_line(&flood, "already have 5 reports waiting");
    // Around the CLI: three more files written straight into the drop box
    // in the employee's name. The service keeps the CLI's cap too.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 60_000;
    for i in 0..3 {
        let path = agent
            .state_dir
            .path()
            .join("reports")
            .join(format!("{later}-direct{i}.report"));
        let body = serde_json::json!({
            "text": format!("Written around the CLI ({i})"),
            "reported_at_unix_ms": later,
        });
        std::fs::write(&path, body.to_string()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown");
    }

    let _service = AgentService::start(&agent, &[]);
    let token = collector.admin_token();
    let tickets = wait_for(Duration::from_secs(60), || {
        let out = collector.cli(&token, &["--json", "tickets", "--status", "open"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let ours: Vec<serde_json::Value> = list
            .as_array()?
            .iter()
            .filter(|t| t["rule"] == "user-report")
            .cloned()
            .collect();
        (!ours.is_empty()).then_some(ours)
    })
    .expect("a user-report ticket");
    let titles: Vec<&str> = tickets.iter().filter_map(|t| t["title"].as_str()).collect();
    assert!(
        titles.contains(&"reported by nobody: My laptop will not print"),
        "{titles:?}"
    );
    wait_for(Duration::from_secs(30), || {
        let left = std::fs::read_dir(agent.state_dir.path().join("reports"))
            .ok()?
            .count();
        (left == 0).then_some(())
    })
    .expect("the drop box is drained");
    let ours = wait_for(Duration::from_secs(30), || {
        let out = collector.cli(&token, &["--json", "tickets", "--status", "open"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let ours = list
            .as_array()?
            .iter()
            .filter(|t| {
                t["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("reported by nobody"))
            })
            .count();
        (ours >= 5).then_some(ours)
    })
    .expect("the five reports' tickets");
    assert_eq!(ours, 5, "the drop box took more than the CLI's cap");
    // The five drained reports count against the employee's hourly limit
    // of ten, kept by the service.
    for i in 1..=5 {
        as_employee(&format!("And now the screen flickers ({i})")).expect_code(0);
    }
    let live = as_employee("And the mouse is gone").expect_code(1);
    one_line(&live, "you have sent 10 reports in the last 60 minutes");
}
