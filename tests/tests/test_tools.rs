//! A test whose program is missing (issue 21): outside CI it says
//! `SKIPPED` with the program and how to install it, and passes; under
//! `CI=true` it fails. The run checked is this test binary's own probe,
//! started again with a `PATH` that holds no such program.

use std::process::Command;

use deskpulse_tests::{Run, require_tool, run};

/// Names the program the probe needs; unset, the probe does nothing.
const PROBE_VAR: &str = "DESKPULSE_TEST_TOOL_PROBE";

#[test]
fn probe_needs_a_tool() {
    let Ok(program) = std::env::var(PROBE_VAR) else {
        return;
    };
    if !require_tool(&program, "probe_needs_a_tool") {
        return;
    }
    println!("RAN with {program}");
}

/// The probe, needing `ping`, with `path` as PATH and CI as given.
fn probe(path: &std::path::Path, ci: Option<&str>) -> Run {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--exact", "probe_needs_a_tool", "--nocapture"])
        .env(PROBE_VAR, "ping")
        .env("PATH", path)
        .env_remove("CI");
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    run(&mut cmd)
}

#[test]
fn a_test_whose_program_is_missing_skips_with_its_reason_unless_in_ci() {
    let empty = tempfile::tempdir().expect("temp dir");

    let skipped = probe(empty.path(), None).expect_code(0);
    assert!(
        skipped.stderr.contains(
            "SKIPPED probe_needs_a_tool: ping is not installed (`cargo xtask provision` installs it"
        ),
        "{}",
        skipped.stderr
    );
    assert!(!skipped.stdout.contains("RAN"), "{}", skipped.stdout);
    // CI=false is not CI.
    probe(empty.path(), Some("false")).expect_code(0);

    let failed = probe(empty.path(), Some("true"));
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(
        failed
            .stdout
            .contains("ping is not installed, and CI runs every test")
            || failed
                .stderr
                .contains("ping is not installed, and CI runs every test"),
        "{}\n{}",
        failed.stdout,
        failed.stderr
    );

    // With the program on PATH the test runs.
    let with_ping = tempfile::tempdir().expect("temp dir");
    std::fs::write(with_ping.path().join("ping"), "").expect("write");
    let ran = probe(with_ping.path(), Some("true")).expect_code(0);
    assert!(ran.stdout.contains("RAN with ping"), "{}", ran.stdout);
}
