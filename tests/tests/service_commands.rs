//! `deskpulse-agent service …` with the real binary: installing without
//! root is a one-line error that says what to run, `service print` gives
//! the unit and the plist that `install` writes, and `service status` tells
//! an unenrolled agent apart. (The packages' install tests, `cargo xtask
//! dist`, install the unit for real and check it with `systemd-analyze`.)

use std::os::unix::process::CommandExt;

use deskpulse_tests::{Agent, bin, run};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    run(std::process::Command::new("id").arg("-u"))
        .stdout
        .trim()
        == "0"
}

#[test]
fn managing_the_service_without_root_says_what_to_run() {
    if !is_root() {
        // Not root already: the command is refused just the same.
        let out = run(std::process::Command::new(bin("deskpulse-agent")).args(["service", "stop"]))
            .expect_code(1);
        assert!(
            out.stderr.contains("sudo deskpulse-agent service stop"),
            "{}",
            out.stderr
        );
        return;
    }
    for action in ["install", "uninstall", "start", "stop"] {
        let mut cmd = std::process::Command::new(bin("deskpulse-agent"));
        cmd.args(["service", action]).uid(NOBODY).gid(NOBODY);
        let out = run(&mut cmd).expect_code(1);
        assert_eq!(
            out.stderr.trim(),
            format!(
                "deskpulse-agent: error: `service {action}` needs root: run `sudo deskpulse-agent service {action}`"
            ),
            "{action}"
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
}

#[test]
fn print_gives_the_unit_and_the_plist_that_install_writes() {
    let agent = Agent::new();
    let config = agent.state_dir.path().join("agent.toml");
    let config = config.to_str().expect("utf-8");
    let unit = agent
        .command(&[
            "service",
            "print",
            "systemd",
            "--binary",
            "/usr/bin/deskpulse-agent",
            "--config",
            config,
        ])
        .expect_code(0);
    let state_dir = agent.state_dir.path().display().to_string();
    assert!(
        unit.stdout.contains(&format!(
            "ExecStart=/usr/bin/deskpulse-agent run --config {config}\n"
        )),
        "{}",
        unit.stdout
    );
    assert!(
        unit.stdout
            .contains(&format!("ReadWritePaths={state_dir} -/tmp -/var/tmp\n")),
        "{}",
        unit.stdout
    );
    let plist = agent
        .command(&["service", "print", "launchd", "--config", config])
        .expect_code(0);
    assert!(plist.stdout.starts_with("<?xml"), "{}", plist.stdout);
    assert!(
        plist.stdout.contains("<key>ProgramArguments</key>"),
        "{}",
        plist.stdout
    );
    // Printing writes nothing: not the config, not the state dir's files.
    assert!(!std::path::Path::new(config).exists());
}

#[test]
fn status_of_an_unenrolled_agent_without_a_service_says_both() {
    let agent = Agent::new();
    let out = agent.command(&["service", "status"]).expect_code(0);
    assert!(
        out.stdout
            .contains("enrolled:  no (run `deskpulse-agent enroll`"),
        "{}",
        out.stdout
    );
    let json = agent
        .command(&["service", "status", "--json"])
        .expect_code(0);
    let view: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(view["enrolled"], false);
    assert_eq!(view["running"], false);
}

#[test]
fn enrolling_from_a_broken_file_is_one_line_and_touches_nothing() {
    let agent = Agent::new();
    let file = agent.state_dir.path().join("enroll.toml");
    for (text, needle) in [
        (
            "collector = \"https://c:7443\"\n",
            "missing field `ca_sha256`",
        ),
        (
            "collector = \"http://c:7443\"\ntoken = \"t\"\nca_sha256 = \"00\"\n",
            "collector",
        ),
        (
            &format!(
                "collector = \"https://c:7443\"\ntoken = \"t\"\nca_sha256 = \"{}\"\nextra = 1\n",
                "ab".repeat(32)
            ) as &str,
            "unknown field `extra`",
        ),
        (
            &format!(
                "collector = \"https://c:7443\"\nca_sha256 = \"{}\"\n",
                "ab".repeat(32)
            ) as &str,
            "holds no token",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        let out = agent
            .command(&["enroll", "--from-file", file.to_str().expect("utf-8")])
            .expect_code(2);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(lines[0].contains(needle), "{needle}: {}", lines[0]);
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            text,
            "left as it was"
        );
    }
    let missing = agent
        .command(&["enroll", "--from-file", "/nonexistent/enroll.toml"])
        .expect_code(2);
    assert!(
        missing
            .stderr
            .contains("cannot read /nonexistent/enroll.toml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_state_dir_that_the_config_file_contradicts_is_refused() {
    let agent = Agent::new();
    let config = agent.state_dir.path().join("agent.toml");
    std::fs::write(&config, "state_dir = \"/var/lib/elsewhere\"\n").expect("config");
    // `Agent::command` passes --state-dir, which the file contradicts.
    let out = agent
        .command(&[
            "service",
            "print",
            "systemd",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .expect_code(2);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("names the state dir /var/lib/elsewhere, which the service would use"),
        "{}",
        lines[0]
    );
}
