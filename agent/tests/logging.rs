//! The agent binary's log lines: plain text when stderr is not a terminal,
//! one warning for a `RUST_LOG` that does not parse, and journald when
//! `JOURNAL_STREAM` says stderr is the journal (through a real datagram
//! socket where systemd's would be, in a mount namespace of the agent's
//! own).
//!
//! Each run is `run --once` on an empty state dir: it sets up logging,
//! warns about the bad `RUST_LOG`, then stops with "not enrolled".

use std::path::Path;
use std::process::{Command, Output, Stdio};

const AGENT: &str = env!("CARGO_BIN_EXE_deskpulse-agent");

/// `deskpulse-agent run --once` on an empty state dir, with `RUST_LOG` set
/// and no `JOURNAL_STREAM` of the test runner's own.
fn agent_once(state: &Path, rust_log: &str) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.args(["run", "--once", "--state-dir"])
        .arg(state)
        .env("RUST_LOG", rust_log)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null());
    cmd
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn piped_stderr_gets_no_colour_codes_and_a_bad_rust_log_one_warning() {
    let state = tempfile::tempdir().expect("temp dir");
    let output = agent_once(state.path(), "deskpulse_agent=loud")
        .output()
        .expect("runs");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("\x1b["), "colour codes in {stderr:?}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(r#"RUST_LOG="deskpulse_agent=loud" is not a log filter"#),
        "{stderr}"
    );
    assert!(
        stderr.contains("deskpulse-agent: error: this agent is not enrolled"),
        "{stderr}"
    );
}

#[test]
fn a_good_rust_log_gives_no_warning() {
    let state = tempfile::tempdir().expect("temp dir");
    let output = agent_once(state.path(), "warn,deskpulse_agent=debug")
        .output()
        .expect("runs");
    let stderr = stderr_of(&output);
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "colour codes in {stderr:?}");
}

/// stderr to a file, and `JOURNAL_STREAM` naming that file, as systemd
/// would set it; returns the command and the file's path.
#[cfg(target_os = "linux")]
fn with_journal_stream(mut cmd: Command, dir: &Path) -> (Command, std::path::PathBuf) {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join("stderr");
    let file = std::fs::File::create(&path).expect("stderr file");
    let meta = file.metadata().expect("stat");
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file);
    (cmd, path)
}

/// Where systemd's journald socket is not, stderr is kept, with one
/// warning saying why.
#[test]
#[cfg(target_os = "linux")]
fn without_journald_the_journal_stream_falls_back_to_stderr() {
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("SKIPPED: journald runs here, so its socket opens");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut cmd, stderr_path) =
        with_journal_stream(agent_once(dir.path(), "deskpulse_agent=loud"), dir.path());
    let status = cmd.status().expect("runs");
    let stderr = std::fs::read_to_string(stderr_path).expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains(
            "JOURNAL_STREAM says stderr is the journal, but the journald socket cannot be opened"
        ),
        "{stderr}"
    );
    assert!(warnings[1].contains("is not a log filter"), "{stderr}");
}

/// With a journald socket, log lines go there as journal entries and
/// stderr keeps only the error line. The socket is a datagram socket this
/// test binds in a temporary directory, which `unshare` mounts over `/run`
/// for the agent alone (root only; skipped, loudly, where that is refused).
#[test]
#[cfg(target_os = "linux")]
fn under_systemd_log_lines_go_to_the_journal() {
    use std::os::unix::net::UnixDatagram;

    let run = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(run.path().join("systemd/journal")).expect("mkdir");
    let journal = UnixDatagram::bind(run.path().join("systemd/journal/socket")).expect("bind");
    let state = tempfile::tempdir().expect("temp dir");
    let inner = agent_once(state.path(), "deskpulse_agent=loud");
    // unshare's own shell runs the agent: the same environment and stderr.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /run && shift && exec "$@""#)
        .arg("sh")
        .arg(run.path())
        .arg(inner.get_program())
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdin(Stdio::null());
    let (mut cmd, stderr_path) = with_journal_stream(cmd, state.path());
    let status = cmd.status().expect("runs");
    let stderr = std::fs::read_to_string(stderr_path).expect("stderr");
    if status.code() != Some(1) || !stderr.contains("deskpulse-agent: error:") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "unshare and mount are needed in CI: {status} {stderr}"
        );
        eprintln!("SKIPPED: no private mount namespace here ({status}: {stderr})");
        return;
    }
    assert!(!stderr.contains("WARN"), "log lines on stderr: {stderr}");
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    journal
        .set_nonblocking(true)
        .expect("nonblocking after the agent exited");
    while let Ok(n) = journal.recv(&mut buf) {
        entries.push(journal_fields(&buf[..n]));
    }
    let warning = entries
        .iter()
        .find(|e| field(e, "MESSAGE").contains("is not a log filter"))
        .unwrap_or_else(|| panic!("no journal entry for the warning in {entries:?}"));
    assert_eq!(field(warning, "PRIORITY"), "4", "{warning:?}");
    assert_eq!(
        field(warning, "SYSLOG_IDENTIFIER"),
        "deskpulse-agent",
        "{warning:?}"
    );
}

/// One datagram of journald's native protocol: `KEY=VALUE` lines, or `KEY`,
/// a newline, the value's length (u64, little-endian), the value and a
/// newline.
#[cfg(target_os = "linux")]
fn journal_fields(mut datagram: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while let Some(end) = datagram.iter().position(|b| *b == b'\n') {
        let line = &datagram[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            datagram = &datagram[end + 1..];
            continue;
        }
        let rest = &datagram[end + 1..];
        let len = u64::from_le_bytes(rest[..8].try_into().expect("length"));
        let len = usize::try_from(len).expect("length");
        fields.push((
            String::from_utf8_lossy(line).into_owned(),
            String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
        ));
        datagram = &rest[8 + len + 1..];
    }
    fields
}

#[cfg(target_os = "linux")]
fn field<'a>(entry: &'a [(String, String)], key: &str) -> &'a str {
    entry
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}
