//! The web console in a real browser (issue 22): Debian's Chromium, driven
//! by playwright-core (`tests/web/*.mjs`), against a real collector with
//! `--web-listen` and real agents on loopback.
//!
//! The scene: an agent service reporting health every second, whose
//! employee reports a problem in text full of markup; a second agent whose
//! inventory (a dpkg status file under its `--system-root`) gains a package
//! named with markup before its employee reports a problem too; a
//! technician with a local account (`user create`), another for the
//! session that expires, and a viewer with an API token. The flows: work a
//! ticket to its resolution and find it in the KB; hostile text stays text;
//! a viewer sees no action and a forged POST is refused; a form without its
//! CSRF token is refused; an ended session goes back to sign-in; the host
//! page's chart and a live `tcp_connect` (skipped while the page is not
//! built). `DESKPULSE_SCREENSHOTS=docs/screenshots` keeps the pages'
//! screenshots for the README.

use std::path::Path;
use std::time::Duration;

use deskpulse_tests::browser::{driver_ready, expect_flow, spawn_flow};
use deskpulse_tests::{Agent, AgentService, Collector, health_history_ms, open_database, wait_for};

/// What an employee could type that a browser would run if a page wrote
/// it unescaped.
const REPORT_PAYLOAD: &str =
    "printer <script>alert('report')</script><img src=x onerror=alert('img')> jams";

/// A package name a PC could report that would run if written unescaped.
const PACKAGE_PAYLOAD: &str = "evil<img src=x onerror=alert('pkg')><script>alert('pkg')</script>";

/// How the technician resolves the employee's ticket; "spooler" finds it
/// in the knowledge base.
const RESOLUTION: &str = "cleared the paper path and restarted the spooler";

/// The id of the open `user-report` ticket of `host`, once it exists.
fn user_report_ticket(collector: &Collector, admin: &str, host: &str) -> i64 {
    wait_for(Duration::from_secs(30), || {
        let out = collector.cli(admin, &["--json", "tickets", "--status", "open"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["rule"] == "user-report" && t["host_id"] == host)
            .and_then(|t| t["id"].as_i64())
    })
    .unwrap_or_else(|| panic!("no user-report ticket for {host}"))
}

/// A system root whose dpkg status lists `packages` (name, version).
fn write_dpkg_status(root: &Path, packages: &[(&str, &str)]) {
    let status = root.join("var/lib/dpkg/status");
    std::fs::create_dir_all(status.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n",
    )
    .expect("os-release");
    let text: String = packages
        .iter()
        .map(|(name, version)| {
            format!(
                "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\nMaintainer: Debian <x@lists.debian.org>\n\n"
            )
        })
        .collect();
    std::fs::write(status, text).expect("dpkg status");
}

#[test]
fn the_console_works_in_a_real_browser() {
    if !driver_ready("the_console_works_in_a_real_browser") {
        return;
    }
    let collector = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--web-listen", "127.0.0.1:0"],
    );
    let web_addr = collector.web_addr.expect("the console's address");
    let admin = collector.admin_token();

    // The employee's PC: a real agent service, health every second.
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let _service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    agent
        .command(&["report-issue", REPORT_PAYLOAD])
        .expect_code(0);
    let host = agent.host_id();
    let ticket = user_report_ticket(&collector, &admin, &host);

    // A PC whose inventory gains a package with markup in its name: the
    // change is recorded, and its ticket shows the changes before it.
    let planted = Agent::new();
    let root = tempfile::tempdir().expect("system root");
    let root_arg = root.path().to_str().expect("utf-8 path");
    write_dpkg_status(root.path(), &[("bash", "5.2.15-2+b7")]);
    planted
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    planted
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);
    write_dpkg_status(
        root.path(),
        &[("bash", "5.2.15-2+b7"), (PACKAGE_PAYLOAD, "6.6.6")],
    );
    planted
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);
    // The service is not running: the report is queued, and the next run
    // delivers it.
    planted
        .command(&["report-issue", "the keyboard stopped working"])
        .expect_code(0);
    planted
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);
    let planted_ticket = user_report_ticket(&collector, &admin, &planted.host_id());

    collector.create_user("wes", "technician", "a long enough password");
    collector.create_user("ezra", "technician", "another long password");
    let viewer_token = collector.api_token("val", "viewer");

    let base = vec![
        ("DESKPULSE_URL", format!("https://{web_addr}")),
        (
            "DESKPULSE_CA_FILE",
            collector.ca_file().to_string_lossy().into_owned(),
        ),
        ("DESKPULSE_TECH_NAME", "wes".to_owned()),
        (
            "DESKPULSE_TECH_PASSWORD",
            "a long enough password".to_owned(),
        ),
        ("DESKPULSE_TICKET", ticket.to_string()),
    ];
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        base.iter().cloned().chain(extra.iter().cloned()).collect()
    };

    expect_flow(
        "hostile_text",
        &with(&[
            ("DESKPULSE_REPORT_PAYLOAD", REPORT_PAYLOAD.to_owned()),
            ("DESKPULSE_PLANTED_TICKET", planted_ticket.to_string()),
            ("DESKPULSE_PACKAGE_PAYLOAD", PACKAGE_PAYLOAD.to_owned()),
        ]),
    );
    expect_flow("viewer", &with(&[("DESKPULSE_VIEWER_TOKEN", viewer_token)]));
    expect_flow("csrf", &base);
    expect_flow(
        "work_a_ticket",
        &with(&[("DESKPULSE_RESOLUTION", RESOLUTION.to_owned())]),
    );
    // The API sees what the browser did, done by wes.
    let shown = collector.cli(&admin, &["--json", "ticket", "show", &ticket.to_string()]);
    assert!(shown.stdout.contains(RESOLUTION), "{}", shown.stdout);
    assert!(shown.stdout.contains("wes"), "{}", shown.stdout);

    // An ended session: ezra signs in and leaves the queue open; then an
    // hour idle (the session's last use moved back past the console's idle
    // timeout in the store, which the collector reads on each request).
    let state = tempfile::tempdir().expect("browser state dir");
    let ready = state.path().join("signed-in");
    // `with` puts these after wes's, and the last value of a variable wins.
    let running = spawn_flow(
        "expired_session",
        &with(&[
            ("DESKPULSE_TECH_NAME", "ezra".to_owned()),
            (
                "DESKPULSE_TECH_PASSWORD",
                "another long password".to_owned(),
            ),
            ("DESKPULSE_READY_FILE", ready.to_string_lossy().into_owned()),
        ]),
    );
    if wait_for(Duration::from_secs(60), || ready.exists().then_some(())).is_none() {
        running.expect_success();
        panic!("expired_session.mjs ended without signing in");
    }
    let idle_ms = deskpulse_collector::web::auth::IDLE_TIMEOUT_MS + 60_000;
    let aged = open_database(collector.data_dir.path())
        .execute(
            "UPDATE web_sessions SET last_seen_at_ms = last_seen_at_ms - ?1 \
             WHERE technician_id = (SELECT id FROM technicians WHERE name = 'ezra')",
            [idle_ms],
        )
        .expect("age ezra's session");
    assert_eq!(aged, 1, "ezra has one session");
    running.expect_success();

    // The host page: a chart from real health history, and tcp_connect to
    // the collector's own port, which accepts connections.
    wait_for(Duration::from_secs(30), || {
        (health_history_ms(collector.data_dir.path(), &host).len() >= 3).then_some(())
    })
    .expect("health history for the chart");
    expect_flow(
        "host_page",
        &with(&[
            ("DESKPULSE_HOST_ID", host.clone()),
            ("DESKPULSE_TCP_HOST", collector.addr.ip().to_string()),
            ("DESKPULSE_TCP_PORT", collector.addr.port().to_string()),
        ]),
    );
}
