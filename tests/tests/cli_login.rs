//! `deskpulse login` against a real collector (issue 21): the token piped
//! on stdin is checked with `whoami` over TLS, then saved with the
//! collector and the CA file's absolute path in `cli.toml` (0600, in a
//! 0700 dir), so later commands need no token on the command line or in
//! the environment. A refused token, a wrong URL or an unreadable CA file
//! is one line, and nothing is written; `logout` removes the token.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use deskpulse_tests::{Collector, Run, bin};

/// `deskpulse ARGS` with `home` as its home (and nothing else to find a
/// token in), `stdin` piped in.
fn deskpulse(home: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(bin("deskpulse"))
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DESKPULSE_URL")
        .env_remove("DESKPULSE_TOKEN")
        .env_remove("DESKPULSE_CA_FILE")
        .env_remove("RUST_BACKTRACE")
        .current_dir(home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deskpulse");
    let mut input = child.stdin.take().expect("stdin");
    // A command refused before it reads stdin (a missing CA file) may
    // already have closed the pipe: that is its answer, not a test failure.
    match input.write_all(stdin.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            panic!("write stdin: {error}")
        }
        _ => {}
    }
    drop(input);
    Run::from(child.wait_with_output().expect("deskpulse runs"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn login_saves_a_checked_token_privately_and_later_commands_use_it() {
    let collector = Collector::start();
    let alice = collector.api_token("alice", "technician");
    let home = tempfile::tempdir().expect("temp home");
    let config = home.path().join(".config/deskpulse/cli.toml");
    // The CA file given relative to the working dir, as a technician would.
    std::fs::copy(collector.ca_file(), home.path().join("ca.pem")).expect("copy CA");
    let url = collector.url();
    let login = ["login", "--collector", url.as_str(), "--ca-file", "ca.pem"];

    // Refused token, wrong URL, unreadable CA: one line each, nothing saved.
    let refused = deskpulse(home.path(), &login, "dpt_not-a-real-token\n").expect_code(1);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused.error_line().contains("refused the token"),
        "{}",
        refused.stderr
    );
    let nowhere = deskpulse(
        home.path(),
        &[
            "login",
            "--collector",
            "https://127.0.0.1:1",
            "--ca-file",
            "ca.pem",
        ],
        &format!("{alice}\n"),
    )
    .expect_code(1);
    assert_eq!(nowhere.stderr.lines().count(), 1, "{}", nowhere.stderr);
    assert!(
        nowhere.error_line().contains("cannot reach the collector"),
        "{}",
        nowhere.stderr
    );
    let no_ca = deskpulse(
        home.path(),
        &[
            "login",
            "--collector",
            url.as_str(),
            "--ca-file",
            "missing.pem",
        ],
        &format!("{alice}\n"),
    )
    .expect_code(2);
    assert!(
        no_ca
            .error_line()
            .contains("cannot read CA file missing.pem"),
        "{}",
        no_ca.stderr
    );
    let on_the_command_line = deskpulse(
        home.path(),
        &[&login[..], &["--token", alice.as_str()]].concat(),
        "",
    )
    .expect_code(2);
    assert!(
        on_the_command_line
            .error_line()
            .contains("leave out --token"),
        "{}",
        on_the_command_line.stderr
    );
    assert!(
        !config.exists(),
        "a failed login wrote {}",
        config.display()
    );

    // Without a saved token, a command says where a token may come from.
    let before = deskpulse(home.path(), &["hosts"], "").expect_code(2);
    assert!(
        before.error_line().contains("no collector URL"),
        "{}",
        before.stderr
    );

    let logged_in = deskpulse(home.path(), &login, &format!("{alice}\n")).expect_code(0);
    assert!(
        logged_in.stdout.contains("logged in to") && logged_in.stdout.contains("as alice"),
        "{}",
        logged_in.stdout
    );
    assert!(
        !logged_in.stdout.contains(&alice),
        "the token is never printed"
    );
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(config.parent().expect("dir")), 0o700);
    let saved: toml::Table = std::fs::read_to_string(&config)
        .expect("read")
        .parse()
        .expect("TOML");
    assert_eq!(saved["token"].as_str(), Some(alice.as_str()));
    let ca = saved["ca_file"].as_str().expect("ca_file");
    assert!(Path::new(ca).is_absolute(), "{ca}");

    // From anywhere, with no token flag or variable.
    let elsewhere = tempfile::tempdir().expect("another dir");
    let mut hosts = Command::new(bin("deskpulse"));
    hosts
        .args(["--json", "hosts"])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DESKPULSE_URL")
        .env_remove("DESKPULSE_TOKEN")
        .env_remove("DESKPULSE_CA_FILE")
        .current_dir(elsewhere.path());
    let listed = deskpulse_tests::run(&mut hosts).expect_code(0);
    assert!(listed.json().is_array(), "{}", listed.stdout);
    let me = deskpulse(home.path(), &["whoami"], "").expect_code(0);
    assert!(me.stdout.starts_with("alice (technician)"), "{}", me.stdout);

    // A later refused login leaves the saved token as it was.
    deskpulse(home.path(), &["login"], "dpt_wrong\n").expect_code(1);
    let kept: toml::Table = std::fs::read_to_string(&config)
        .expect("read")
        .parse()
        .expect("TOML");
    assert_eq!(kept["token"].as_str(), Some(alice.as_str()));

    // Logout removes the token and keeps where the collector is.
    deskpulse(home.path(), &["logout"], "").expect_code(0);
    let left: toml::Table = std::fs::read_to_string(&config)
        .expect("read")
        .parse()
        .expect("TOML");
    assert!(!left.contains_key("token"), "{left}");
    assert_eq!(left["collector"].as_str(), Some(url.as_str()));
    let after = deskpulse(home.path(), &["hosts"], "").expect_code(2);
    assert!(
        after.error_line().contains("no API token"),
        "{}",
        after.stderr
    );
}
