//! Bad input gets one line naming the problem, the exit codes of D11 (2 for
//! usage and config, 1 for the rest), and never a panic or backtrace.

use std::io::Write;

use deskpulse_tests::{Agent, Collector, Run, bin, run};

fn collector(args: &[&str]) -> Run {
    run(std::process::Command::new(bin("deskpulse-collector")).args(args))
}

fn assert_one_line(out: &Run, needle: &str) {
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
fn an_unknown_config_key_is_a_config_error() {
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    writeln!(file, "listen = \"127.0.0.1:0\"\nlisten_port = 1").expect("write");
    let out = collector(&["serve", "--config", file.path().to_str().expect("path")]).expect_code(2);
    assert_one_line(&out, "unknown field `listen_port`");

    let agent_file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(agent_file.path(), "colector = 1\n").expect("write");
    let out = Agent::new()
        .command(&[
            "run",
            "--once",
            "--config",
            agent_file.path().to_str().expect("path"),
        ])
        .expect_code(2);
    assert_one_line(&out, "unknown field `colector`");
}

#[test]
fn an_unusable_data_dir_is_named() {
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = collector(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().expect("path"),
    ])
    .expect_code(1);
    assert_one_line(&out, "cannot create data dir");
}

#[test]
fn a_port_in_use_is_named() {
    let first = Collector::start();
    let addr = first.addr.to_string();
    let dir = tempfile::tempdir().expect("temp");
    let out = collector(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().to_str().expect("path"),
    ])
    .expect_code(1);
    assert!(
        out.error_line()
            .contains(&format!("cannot listen on {addr}")),
        "{}",
        out.stderr
    );
    assert!(out.error_line().contains("in use"), "{}", out.stderr);
}

#[test]
fn bad_urls_and_listen_addresses_are_usage_errors() {
    let out = collector(&["serve", "--listen", "localhost"]).expect_code(2);
    assert_one_line(&out, "is not IP:PORT");

    let agent = Agent::new();
    let out = agent
        .command(&[
            "enroll",
            "--collector",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--ca-sha256",
            &"a".repeat(64),
        ])
        .expect_code(2);
    assert_one_line(&out, "must use https");

    let out = run(std::process::Command::new(bin("deskpulse"))
        .env("HOME", "/nonexistent")
        .args([
            "--collector",
            "127.0.0.1:7443",
            "--token",
            "t",
            "--ca-file",
            "x",
            "hosts",
        ]))
    .expect_code(2);
    assert_one_line(&out, "expected https://HOST:PORT");

    let out = run(std::process::Command::new(bin("deskpulse"))
        .env("HOME", "/nonexistent")
        .env_remove("DESKPULSE_URL")
        .args(["hosts"]))
    .expect_code(2);
    assert_one_line(&out, "no collector URL");
}

#[test]
fn missing_certificates_are_named() {
    let collector = Collector::start();
    let agent = Agent::new();
    let out = agent.command(&["run", "--once"]).expect_code(1);
    assert_one_line(&out, "not enrolled");

    let out = agent
        .command(&[
            "enroll",
            "--collector",
            &collector.url(),
            "--token",
            "t",
            "--ca-file",
            "/nonexistent/ca.pem",
        ])
        .expect_code(1);
    assert_one_line(&out, "/nonexistent/ca.pem");

    let url = collector.url();
    let out = run(std::process::Command::new(bin("deskpulse"))
        .env("HOME", "/nonexistent")
        .args([
            "--collector",
            &url,
            "--token",
            "t",
            "--ca-file",
            "/nonexistent/ca.pem",
            "hosts",
        ]))
    .expect_code(1);
    assert_one_line(&out, "cannot read CA file /nonexistent/ca.pem");
}

#[test]
fn the_collector_drains_and_exits_cleanly_on_sigterm() {
    let mut collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
    assert_eq!(collector.terminate(), Some(0), "{}", collector.logs());
    assert!(
        collector.logs().contains("collector stopped"),
        "{}",
        collector.logs()
    );
    // Its stderr is a pipe, as under systemd: plain text, no colour codes.
    assert!(
        !collector.logs().contains("\x1b["),
        "{:?}",
        collector.logs()
    );
}
