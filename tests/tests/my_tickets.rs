//! The employee's side of a ticket (issue 23) with the real binaries over
//! loopback: `report-issue` prints the ticket number once the collector
//! has it (and "already sent" names it), a technician adds a public and a
//! private note and resolves it, and `deskpulse-agent my-tickets` (text and
//! JSON) shows the employee the public note and the resolution and never
//! the private note; another OS user of the PC sees none of it. Bad input:
//! a junk `--email`, an oversized request on the local socket, the service
//! stopped.

use std::io::{Read, Write};
use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, Run, run, wait_for};

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

fn is_root() -> bool {
    run(std::process::Command::new("id").arg("-u"))
        .stdout
        .trim()
        == "0"
}

#[test]
fn an_employee_follows_their_ticket_and_sees_only_public_notes_and_the_resolution() {
    let collector = Collector::start();
    let token = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);

    // Bad input, before anything runs.
    let junk = agent
        .command(&[
            "report-issue",
            "Outlook crashes",
            "--email",
            "ana at example",
        ])
        .expect_code(2);
    one_line(&junk, "is not an e-mail address");
    let stopped = agent.command(&["my-tickets"]).expect_code(1);
    one_line(&stopped, "the agent service is not running");

    let service = AgentService::start_ready(&agent, &collector);
    let reported = agent
        .command(&[
            "report-issue",
            "Outlook crashes when I open the calendar",
            "--email",
            "Ana.Lopez@example.com",
        ])
        .expect_code(0);
    let id = reported.reported_ticket();
    let again = agent
        .command(&["report-issue", "Outlook crashes when I open the calendar"])
        .expect_code(0);
    assert!(
        again.stdout.starts_with("already sent: ")
            && again.stdout.contains(&format!("(ticket #{id}, reference ")),
        "{}",
        again.stdout
    );

    // The technician's side.
    collector
        .cli(
            &token,
            &[
                "ticket",
                "note",
                &id,
                "--public",
                "We are reinstalling Outlook",
            ],
        )
        .expect_code(0);
    collector
        .cli(
            &token,
            &["ticket", "note", &id, "private: her password is hunter2"],
        )
        .expect_code(0);
    collector
        .cli(
            &token,
            &[
                "ticket",
                "resolve",
                &id,
                "--resolution",
                "Outlook reinstalled",
            ],
        )
        .expect_code(0);
    let shown = collector
        .cli(&token, &["--json", "ticket", "show", &id])
        .expect_code(0)
        .json();
    assert_eq!(
        shown["ticket"]["evidence"]["reporter_email"],
        "Ana.Lopez@example.com"
    );
    let public: Vec<(String, bool)> = shown["worklog"]
        .as_array()
        .expect("worklog")
        .iter()
        .map(|w| {
            (
                w["note"].as_str().unwrap_or_default().to_owned(),
                w["public"].as_bool().unwrap_or_default(),
            )
        })
        .filter(|(note, _)| note.starts_with("We are") || note.starts_with("private"))
        .collect();
    assert_eq!(
        public,
        [
            ("We are reinstalling Outlook".to_owned(), true),
            ("private: her password is hunter2".to_owned(), false)
        ]
    );
    let text = collector
        .cli(&token, &["ticket", "show", &id])
        .expect_code(0);
    assert!(
        text.stdout
            .contains("(public): We are reinstalling Outlook"),
        "{}",
        text.stdout
    );

    // The employee's side, as text and as JSON.
    let mine = agent.command(&["my-tickets"]).expect_code(0);
    assert!(
        mine.stdout
            .starts_with(&format!("Ticket #{id} [resolved, P")),
        "{}",
        mine.stdout
    );
    for expected in [
        "you wrote: Outlook crashes when I open the calendar",
        "We are reinstalling Outlook",
        "resolution: Outlook reinstalled",
        ", resolved ",
    ] {
        assert!(
            mine.stdout.contains(expected),
            "{expected}: {}",
            mine.stdout
        );
    }
    assert!(!mine.stdout.contains("hunter2"), "{}", mine.stdout);
    let json = agent
        .command(&["my-tickets", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(json["connected"], true);
    let tickets = json["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 1, "{json}");
    assert_eq!(tickets[0]["id"].to_string(), id);
    assert_eq!(tickets[0]["status"], "resolved");
    assert_eq!(tickets[0]["resolution"], "Outlook reinstalled");
    let notes = tickets[0]["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "{json}");
    assert_eq!(notes[0]["note"], "We are reinstalling Outlook");
    assert!(!json.to_string().contains("hunter2"), "{json}");

    // Another OS user of the same PC: none of the first user's tickets.
    if is_root() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        std::fs::set_permissions(
            agent.state_dir.path(),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let mut cmd = agent.cmd(&["my-tickets", "--json"]);
        cmd.uid(NOBODY).gid(NOBODY);
        let theirs = run(&mut cmd).expect_code(0).json();
        assert_eq!(theirs["os_user"], "nobody");
        assert_eq!(theirs["tickets"], serde_json::json!([]), "{theirs}");
        let mut cmd = agent.cmd(&["my-tickets"]);
        cmd.uid(NOBODY).gid(NOBODY);
        let text = run(&mut cmd).expect_code(0);
        assert_eq!(text.stdout.trim(), "You have no tickets from this PC.");
    } else {
        eprintln!("SKIPPED (second user): switching to another user needs root");
    }

    // A request over the local socket's bound is refused in one reply, and
    // the service goes on answering.
    let mut socket =
        std::os::unix::net::UnixStream::connect(agent.state_dir.path().join("agent.sock"))
            .expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut huge = br#"{"request":"my-tickets","pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend_from_slice(b"\"}\n");
    let _ = socket.write_all(&huge);
    let mut reply = String::new();
    let _ = socket.read_to_string(&mut reply);
    assert!(reply.contains("longer than 65536 bytes"), "{reply}");
    agent.command(&["my-tickets"]).expect_code(0);

    // Stopped: one line, nothing else.
    service.stop();
    let stopped = agent.command(&["my-tickets"]).expect_code(1);
    one_line(&stopped, "the agent service is not running");
}

/// Offline, the number is not known yet: `report-issue` says the report is
/// saved and will be sent, and `my-tickets` shows its reference; once the
/// collector is back, the number arrives with the report's Ack.
#[test]
fn offline_the_report_is_saved_and_my_tickets_shows_its_number_once_it_is_known() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let listen = collector.url().trim_start_matches("https://").to_owned();
    let data_dir = collector.into_data_dir();
    let _service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(30), || {
        let out = agent.command(&["status", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (s["service_running"] == true).then_some(())
    })
    .expect("the service runs");
    let saved = agent
        .command(&["report-issue", "The VPN drops every hour"])
        .expect_code(0);
    assert!(
        saved
            .stdout
            .contains("saved on this PC and it will be sent")
            && saved.stdout.contains("deskpulse-agent my-tickets"),
        "{}",
        saved.stdout
    );
    let offline = agent.command(&["my-tickets"]).expect_code(0);
    assert!(
        offline
            .stdout
            .starts_with("the agent is not connected to the help desk")
            && offline.stdout.contains("ticket number not known yet"),
        "{}",
        offline.stdout
    );
    let json = agent
        .command(&["my-tickets", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(json["connected"], false);
    assert_eq!(json["known"].as_array().map(Vec::len), Some(1), "{json}");

    // The collector comes back on the same port: the Ack names the ticket.
    let _collector = Collector::start_on(data_dir, &listen, &[]);
    let known = wait_for(Duration::from_secs(90), || {
        let json = agent.command(&["my-tickets", "--json"]).json();
        (json["connected"] == true && !json["tickets"].as_array()?.is_empty()).then_some(json)
    })
    .expect("the ticket after reconnecting");
    assert_eq!(known["tickets"][0]["text"], "The VPN drops every hour");
}
