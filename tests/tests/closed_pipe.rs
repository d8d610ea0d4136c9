//! Every command exits quietly when its reader goes away (issue 21):
//! `deskpulse hosts | head -1` and friends. Each command class of the CLI
//! (tables, a host with its health trend, rules, tickets, JSON, a
//! diagnostic's live output), of the collector's admin commands (a token,
//! the CA certificate) and of the agent (`status`, `inventory`,
//! text and JSON) runs with stdout on a pipe whose read end is already
//! closed, and again on one that is read for a few bytes and then closed.
//! None may panic (exit 134 or 101, "panicked" on stderr): a closed pipe
//! ends the process with exit code 141, as `SIGPIPE` ends a Unix tool, and
//! nothing on stderr.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, bin, wait_for};

/// The code a closed pipe ends a command with (`deskpulse_proto::output`).
const CLOSED_PIPE: i32 = 141;

struct Ended {
    code: Option<i32>,
    stderr: String,
}

/// Runs `cmd` with stdout on a pipe whose reader reads `read_first` bytes
/// (none: closed before the command starts), then closes it.
fn with_closed_stdout(cmd: &mut Command, read_first: usize) -> Ended {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut reader = (read_first > 0).then_some(reader);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .expect("spawn");
    // The parent's copy of the write end went with `cmd`'s stdout.
    cmd.stdout(Stdio::null());
    if let Some(reader) = reader.as_mut() {
        let mut first = vec![0; read_first];
        let _ = reader.read_exact(&mut first);
    }
    drop(reader);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = wait_for(Duration::from_secs(60), || child.try_wait().expect("wait"))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("{cmd:?} still runs 60 s after its reader went away")
        });
    Ended {
        code: status.code(),
        stderr,
    }
}

fn assert_quiet(what: &str, ended: &Ended, read_first: usize) {
    assert!(
        !ended.stderr.contains("panicked"),
        "{what}: {}",
        ended.stderr
    );
    assert!(
        !matches!(ended.code, Some(134 | 101) | None),
        "{what}: exit {:?}, {}",
        ended.code,
        ended.stderr
    );
    if read_first == 0 {
        // Nothing could be written: the command ends at its first write.
        assert_eq!(ended.code, Some(CLOSED_PIPE), "{what}: {}", ended.stderr);
        assert_eq!(ended.stderr, "", "{what}");
    } else {
        // Some of the output fitted in the pipe: done, or ended at 141.
        assert!(
            matches!(ended.code, Some(0 | CLOSED_PIPE)),
            "{what}: exit {:?}, {}",
            ended.code,
            ended.stderr
        );
    }
}

#[test]
fn every_command_exits_quietly_when_its_reader_goes_away() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let admin = collector.admin_token();
    collector
        .cli(
            &admin,
            &["ticket", "new", &host, "--title", "the printer jams"],
        )
        .expect_code(0);
    let _service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(30), || {
        let shown = collector.cli(&admin, &["--json", "inventory", &host]);
        (shown.code == 0 && shown.stdout.contains("\"os\"")).then_some(())
    })
    .expect("the agent's first inventory is stored");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = format!("port={}", listener.local_addr().expect("addr").port());

    let cli: Vec<(&str, Vec<&str>)> = vec![
        ("hosts", vec!["hosts"]),
        (
            "host show --health",
            vec!["host", "show", &host, "--health", "1h"],
        ),
        ("rules", vec!["rules"]),
        ("tickets", vec!["tickets"]),
        ("inventory --json", vec!["--json", "inventory", &host]),
        (
            "run (live output)",
            vec![
                "run",
                &host,
                "tcp_connect",
                "--param",
                "host=127.0.0.1",
                "--param",
                &port,
            ],
        ),
    ];
    for read_first in [0, 8] {
        for (what, args) in &cli {
            let ended = with_closed_stdout(&mut collector.cli_command(&admin, args), read_first);
            assert_quiet(&format!("deskpulse {what}"), &ended, read_first);
        }
        // The collector's admin commands, which print a secret or a
        // certificate on stdout.
        for args in [
            &["ca", "export"][..],
            &["token", "create", "--name", "pipe", "--role", "viewer"],
            &["enroll-token", "create"],
        ] {
            let ended = with_closed_stdout(&mut collector.admin_command(args), read_first);
            assert_quiet(
                &format!("deskpulse-collector {}", args.join(" ")),
                &ended,
                read_first,
            );
        }
        let ended = with_closed_stdout(&mut agent.cmd(&["status"]), read_first);
        assert_quiet("deskpulse-agent status", &ended, read_first);
        for args in [&["inventory"][..], &["inventory", "--json"]] {
            let mut inventory = Command::new(bin("deskpulse-agent"));
            inventory.args(args).env_remove("DESKPULSE_AGENT_CONFIG");
            let ended = with_closed_stdout(&mut inventory, read_first);
            assert_quiet(
                &format!("deskpulse-agent {}", args.join(" ")),
                &ended,
                read_first,
            );
        }
    }
}
