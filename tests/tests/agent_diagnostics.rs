//! The agent binary's own diagnostics allowlist: an id the catalog does not
//! have, in the config file or the environment, stops the agent with one
//! line and exit code 2 (D11) before it touches its state dir or the
//! network, so a typo never leaves a diagnostic silently on or off.

use std::io::Write;

use deskpulse_tests::Agent;

fn assert_config_error(out: &deskpulse_tests::Run, needle: &str) {
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
fn an_unknown_diagnostic_in_the_config_file_is_exit_2() {
    let agent = Agent::new();
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    writeln!(
        file,
        "[diagnostics]\nenable = [\"restart_service\", \"shell\"]"
    )
    .expect("write");
    let out = agent
        .command(&["run", "--config", file.path().to_str().expect("path")])
        .expect_code(2);
    assert_config_error(&out, "[diagnostics] enable: \"shell\" is not a diagnostic");
}

#[test]
fn an_unknown_diagnostic_in_the_environment_is_exit_2() {
    let agent = Agent::new();
    let out = deskpulse_tests::run(
        agent
            .cmd(&["run", "--once"])
            .env("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "ping,traceroot"),
    )
    .expect_code(2);
    assert_config_error(&out, "DESKPULSE_AGENT_DIAGNOSTICS_DISABLE: \"traceroot\"");
}

#[test]
fn a_diagnostic_both_enabled_and_disabled_is_exit_2() {
    let agent = Agent::new();
    let out = deskpulse_tests::run(
        agent
            .cmd(&["run"])
            .env("DESKPULSE_AGENT_DIAGNOSTICS_ENABLE", "flush_dns")
            .env("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "flush_dns"),
    )
    .expect_code(2);
    assert_config_error(&out, "flush_dns is both enabled and disabled");
}
