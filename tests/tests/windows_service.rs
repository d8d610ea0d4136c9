//! The Windows agent as a Service Control Manager service, under Wine: the
//! `.exe` built for `x86_64-pc-windows-gnu` installs itself with `service
//! install`, runs as the SCM starts it (`run --windows-service`), reports
//! to the real Linux collector on loopback, stops with a goodbye when the
//! SCM says stop, upgrades in place from another folder keeping its config
//! and enrollment, and uninstalls, each step as `wine sc query` and the
//! collector see it.
//!
//! Wine runs every process as one administrator, so a non-elevated `service
//! install` (the SCM's access denied) cannot be tried here; Wine's SCM
//! also takes no "failure actions on error exits" flag, which `install`
//! then names as unsupported. `cargo xtask test` prepares Wine, builds the
//! `.exe` and exports the prefix in `DESKPULSE_WINE_PREFIX`; without it these
//! tests say SKIPPED, and fail under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use deskpulse_tests::wine::{self, agent_exe, windows_path, wine};
use deskpulse_tests::{Collector, Run, run, wait_for};

const SERVICE: &str = "deskpulse-agent";

/// `wine EXE ARGS`: one agent command.
fn agent(exe: &Path, args: &[&str]) -> Run {
    run(wine(&[exe.to_str().expect("utf-8 path")]).args(args))
}

/// `sc query deskpulse-agent`, as Wine's `sc` prints it.
fn sc_query() -> Run {
    run(&mut wine(&["sc", "query", SERVICE]))
}

fn sc_state() -> String {
    let out = sc_query().expect_code(0);
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("STATE"))
        .unwrap_or_else(|| panic!("no STATE in `sc query`: {}", out.stdout))
        .trim_start_matches([' ', ':'])
        .to_owned()
}

/// `args` and `--config CONFIG`.
fn with_config<'a>(args: &[&'a str], config: &'a str) -> Vec<&'a str> {
    [args, &["--config", config]].concat()
}

/// `service status --json`: the SCM's view and the enrollment.
fn service_status(exe: &Path, config: &str) -> serde_json::Value {
    Run::json(&agent(exe, &with_config(&["service", "status", "--json"], config)).expect_code(0))
}

/// `status --json`: the agent's own view.
fn agent_status(exe: &Path, config: &str) -> serde_json::Value {
    Run::json(&agent(exe, &with_config(&["status", "--json"], config)).expect_code(0))
}

/// The pid in a `service status` detail such as `RUNNING, pid 280`.
fn service_pid(status: &serde_json::Value) -> String {
    let detail = status["detail"].as_str().unwrap_or_default();
    detail
        .strip_prefix("RUNNING, pid ")
        .unwrap_or_else(|| panic!("not running with a pid: {status}"))
        .to_owned()
}

/// The host as the collector lists it: presence and hostname.
fn host_entry(collector: &Collector, token: &str, host: &str) -> Option<(String, String)> {
    let out = collector.cli(token, &["--json", "hosts"]);
    let hosts: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let entry = hosts
        .as_array()?
        .iter()
        .find(|h| h["host_id"] == host)?
        .clone();
    Some((
        entry["presence"].as_str()?.to_owned(),
        entry["hostname"].as_str()?.to_owned(),
    ))
}

fn wait_presence(collector: &Collector, token: &str, host: &str, presence: &str) -> String {
    wait_for(Duration::from_secs(60), || {
        let (now, hostname) = host_entry(collector, token, host)?;
        (now == presence).then_some(hostname)
    })
    .unwrap_or_else(|| {
        panic!(
            "the host never became {presence}: {:?}",
            host_entry(collector, token, host)
        )
    })
}

/// Uninstalls the service when the test ends, passed or not: the prefix
/// outlives the test, and its SCM would start the service again.
struct UninstallOnDrop(PathBuf);

impl Drop for UninstallOnDrop {
    fn drop(&mut self) {
        let _ = wine(&[self.0.to_str().unwrap_or_default(), "service", "uninstall"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The agent binary at another path, as a new release in another folder:
/// a hard link where the file system allows (the debug `.exe` is large).
fn second_release(exe: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("new-release-")
        .tempdir_in(exe.parent().expect("the exe's dir"))
        .expect("a dir beside the exe");
    let second = dir.path().join("deskpulse-agent.exe");
    if std::fs::hard_link(exe, &second).is_err() {
        std::fs::copy(exe, &second).expect("copy the agent exe");
    }
    (dir, second)
}

#[test]
fn the_windows_service_installs_runs_stops_upgrades_and_uninstalls_through_the_scm() {
    if !wine::ready(
        "the_windows_service_installs_runs_stops_upgrades_and_uninstalls_through_the_scm",
    ) {
        return;
    }
    let exe = agent_exe();
    let dir = tempfile::tempdir().expect("temp dir");
    let _uninstall = UninstallOnDrop(exe.clone());
    // A service left by an interrupted run goes first.
    let _ = agent(&exe, &["service", "uninstall"]);

    let state_dir = dir.path().join("state");
    let config_file = dir.path().join("agent.toml");
    let config_text = format!(
        "state_dir = '{}'\nhealth_interval = \"1s\"\n",
        windows_path(&state_dir)
    );
    std::fs::write(&config_file, &config_text).expect("write the config");
    let config = windows_path(&config_file);

    // Not enrolled yet: registered, but not started, and a start fails
    // with a line that says where the reason is.
    let out = agent(&exe, &with_config(&["service", "install"], &config)).expect_code(0);
    assert!(
        out.stdout.contains("installed the deskpulse-agent service")
            && out
                .stdout
                .contains("not started, because this agent is not enrolled"),
        "{}",
        out.stdout
    );
    assert!(sc_state().contains("STOPPED"), "{}", sc_query().stdout);
    let out = agent(&exe, &["service", "start"]).expect_code(1);
    assert!(
        out.error_line().contains("stopped as it started")
            && out.error_line().contains("service error 1"),
        "{}",
        out.stderr
    );
    let status = agent_status(&exe, &config);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("the service stopped: this agent is not enrolled"),
        "{status}"
    );

    // Enrolled, it starts and reports.
    let collector = Collector::start();
    let admin = collector.admin_token();
    let ca = windows_path(&collector.ca_file());
    let enrollment_token = collector.enrollment_token(1);
    agent(
        &exe,
        &with_config(
            &[
                "enroll",
                "--collector",
                &collector.url(),
                "--token",
                &enrollment_token,
                "--ca-file",
                &ca,
            ],
            &config,
        ),
    )
    .expect_code(0);
    let enrollment =
        std::fs::read_to_string(state_dir.join("enrollment.toml")).expect("enrollment.toml");
    let host = enrollment
        .lines()
        .find_map(|l| l.strip_prefix("host_id = "))
        .expect("host_id")
        .trim_matches('"')
        .to_owned();
    let out = agent(&exe, &["service", "start"]).expect_code(0);
    assert!(
        out.stdout
            .contains("started the deskpulse-agent service (RUNNING, pid "),
        "{}",
        out.stdout
    );
    assert!(sc_state().contains("RUNNING"), "{}", sc_query().stdout);
    wait_presence(&collector, &admin, &host, "online");
    let live = wait_for(Duration::from_secs(60), || {
        let status = agent_status(&exe, &config);
        (status["service_running"] == true
            && status["connected"] == true
            && status["last_success_unix_ms"].is_i64())
        .then_some(status)
    })
    .expect("the SCM's service answers `status` and gets its reports acknowledged");
    assert_eq!(live["host_id"], host.as_str());

    let service = service_status(&exe, &config);
    assert_eq!(service["installed"], true, "{service}");
    assert_eq!(service["running"], true, "{service}");
    assert_eq!(service["enrolled"], true, "{service}");
    assert_eq!(service["host_id"], host.as_str(), "{service}");
    let definition = service["definition"].as_str().unwrap_or_default();
    assert!(
        definition.starts_with("SCM service deskpulse-agent: ")
            && definition.contains(&windows_path(&exe))
            && definition.ends_with(&format!("run --windows-service --config {config}")),
        "{service}"
    );
    let first_pid = service_pid(&service);
    let text = agent(&exe, &with_config(&["service", "status"], &config)).expect_code(0);
    assert!(
        text.stdout.contains("service:   running (RUNNING, pid "),
        "{}",
        text.stdout
    );

    // The SCM's stop reaches the control handler: a goodbye, not a kill.
    let out = agent(&exe, &["service", "stop"]).expect_code(0);
    assert!(
        out.stdout.contains("stopped the deskpulse-agent service"),
        "{}",
        out.stdout
    );
    assert!(sc_state().contains("STOPPED"), "{}", sc_query().stdout);
    let hostname = wait_presence(&collector, &admin, &host, "offline");
    let show = Run::json(
        &collector
            .cli(&admin, &["--json", "host", "show", &hostname])
            .expect_code(0),
    );
    assert_eq!(show["goodbye_reason"], "service-stop", "{show}");
    let service = service_status(&exe, &config);
    assert_eq!(service["running"], false, "{service}");
    assert_eq!(service["detail"], "STOPPED", "a clean stop: {service}");
    let out = agent(&exe, &["service", "stop"]).expect_code(0);
    assert!(out.stdout.contains("was not running"), "{}", out.stdout);

    let out = agent(&exe, &["service", "start"]).expect_code(0);
    assert!(out.stdout.contains("started"), "{}", out.stdout);
    wait_presence(&collector, &admin, &host, "online");
    let service = service_status(&exe, &config);
    let restarted_pid = service_pid(&service);
    assert_ne!(restarted_pid, first_pid, "{service}");

    // A new release in another folder installs over the running service:
    // the SCM runs the new binary, with the same config and enrollment.
    let (_release_dir, second) = second_release(&exe);
    let out = agent(&second, &with_config(&["service", "install"], &config)).expect_code(0);
    assert!(
        out.stdout
            .contains("upgraded the deskpulse-agent service in place (kept")
            && out.stdout.contains("started it (RUNNING, pid "),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("wrote a default config"),
        "{}",
        out.stdout
    );
    let service = service_status(&exe, &config);
    assert_ne!(service_pid(&service), restarted_pid, "{service}");
    assert!(
        service["definition"]
            .as_str()
            .unwrap_or_default()
            .contains(&windows_path(&second)),
        "{service}"
    );
    assert_eq!(
        std::fs::read_to_string(&config_file).expect("config"),
        config_text
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("enrollment.toml")).expect("enrollment"),
        enrollment
    );
    wait_presence(&collector, &admin, &host, "online");
    let hosts = Run::json(&collector.cli(&admin, &["--json", "hosts"]).expect_code(0));
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");

    // Uninstalled: gone from the SCM and its registry key, state kept.
    let out = agent(&exe, &["service", "uninstall"]).expect_code(0);
    assert!(
        out.stdout
            .contains("stopped and removed the deskpulse-agent service"),
        "{}",
        out.stdout
    );
    // Windows' sc says "OpenService FAILED 1060"; Wine's prints nothing
    // and exits 1.
    let query = sc_query();
    assert_ne!(query.code, 0, "{}", query.stdout);
    assert!(!query.stdout.contains("STATE"), "{}", query.stdout);
    let key = format!(r"HKLM\System\CurrentControlSet\Services\{SERVICE}");
    assert_ne!(
        run(&mut wine(&["reg", "query", &key])).code,
        0,
        "{key} remains"
    );
    let service = service_status(&exe, &config);
    assert_eq!(service["installed"], false, "{service}");
    assert_eq!(
        service["enrolled"], true,
        "uninstall keeps the state: {service}"
    );
    assert!(config_file.exists(), "uninstall keeps the config");
    for action in ["uninstall", "start", "stop"] {
        let out = agent(&exe, &["service", action]).expect_code(1);
        assert!(
            out.error_line()
                .contains("the deskpulse-agent service is not installed"),
            "{action}: {}",
            out.stderr
        );
    }
}

#[test]
fn run_windows_service_outside_the_scm_says_to_use_run() {
    if !wine::ready("run_windows_service_outside_the_scm_says_to_use_run") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = agent(
        &agent_exe(),
        &[
            "run",
            "--windows-service",
            "--state-dir",
            &windows_path(dir.path()),
        ],
    )
    .expect_code(1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.error_line()
            .contains("`run --windows-service` is for the Windows Service Control Manager")
            && out.error_line().contains("use `deskpulse-agent run`"),
        "{}",
        out.stderr
    );
}
