//! Proactive tickets (issue 6, groundwork), through the real ingest path:
//! health samples sent on an agent's own mutual-TLS session open exactly one
//! ticket once the disk has been full for the rule's duration, with the
//! priority the impact x urgency matrix gives, and `deskpulse tickets`
//! lists it. Sample times, not the wall clock, drive the durations (D30).
//! A technician then works the ticket through the CLI, and an admin applies
//! a policy file that changes the rules in force.

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{AgentMessage, FilesystemUsage, HealthSample, Report};
use deskpulse_tests::{Agent, Collector, test_hello};

/// A sample `minute` minutes after an hour ago: recent enough that the
/// collector's clock window (90 days back) believes its time.
fn sample(seq: u64, minute: i64, used: f32) -> AgentMessage {
    sample_at(seq, now_ms() - 3_600_000 + minute * 60_000, used)
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

fn sample_at(seq: u64, at_ms: i64, used: f32) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            sent_at_unix_ms: 0,
            spool_id: "tickets-test".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: at_ms,
            payload: Some(Payload::Health(HealthSample {
                cpu_percent: 3.0,
                memory_used_percent: 30.0,
                filesystems: vec![
                    FilesystemUsage {
                        mount_point: "/".into(),
                        used_percent: used,
                        available_bytes: 1 << 30,
                    },
                    FilesystemUsage {
                        mount_point: "/data".into(),
                        used_percent: 20.0,
                        available_bytes: 100 << 30,
                    },
                ],
                ..HealthSample::default()
            })),
        })),
    }
}

/// Sends `reports` on one session of `agent` and waits for every Ack.
async fn send(collector: &Collector, agent: &Agent, reports: Vec<AgentMessage>) {
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let mut messages = vec![test_hello()];
    let expected = reports.len();
    messages.extend(reports);
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages))
        .await
        .expect("session")
        .into_inner();
    let mut acked = 0;
    while acked < expected {
        let reply = replies.message().await.expect("reply").expect("some");
        match reply.kind {
            Some(Reply::Ack(_)) => acked += 1,
            // A ticket these reports open may send its rule's triage here.
            Some(Reply::RunDiagnostic(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

fn json(run: &deskpulse_tests::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).expect("json on stdout")
}

#[tokio::test]
async fn a_full_disk_for_the_rules_duration_opens_one_prioritised_ticket() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let token = collector.admin_token();
    let host = agent.host_id();
    collector
        .cli(&token, &["host", "tag", &host, "criticality=low"])
        .expect_code(0);
    // Fifteen minutes at 95 % on "/": the disk-full rule (> 90 % for 10 min)
    // fires once; "/data" stays at 20 %.
    let samples = (0..15).map(|m| sample(m + 1, i64::try_from(m).expect("small"), 95.0));
    send(&collector, &agent, samples.collect()).await;

    let out = collector
        .cli(&token, &["--json", "tickets", "--status", "open"])
        .expect_code(0);
    let tickets: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let tickets = tickets.as_array().expect("array");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let ticket = &tickets[0];
    assert_eq!(ticket["rule"], "disk-full");
    assert_eq!(ticket["subject"], "/");
    assert_eq!(ticket["priority"], "P3", "low impact x high severity");
    assert_eq!(ticket["status"], "new");
    assert_eq!(ticket["occurrences"], 1);
    assert_eq!(ticket["evidence"]["value"], 95.0);
    assert_eq!(ticket["host_id"], host.as_str());

    let text = collector.cli(&token, &["tickets"]).expect_code(0);
    assert!(
        text.stdout.contains("disk-full: / is 95% full"),
        "{}",
        text.stdout
    );
    let none = collector
        .cli(&token, &["tickets", "--priority", "P1"])
        .expect_code(0);
    assert!(none.stdout.contains("no tickets match"), "{}", none.stdout);
    let bad = collector.cli(&token, &["tickets", "--status", "done"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(
        bad.error_line().contains("unknown status \"done\""),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn a_technician_works_a_ticket_and_an_admin_changes_the_rules() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let admin = collector.admin_token();
    let alice = collector.api_token("alice", "technician");
    let viewer = collector.api_token("vic", "viewer");

    // A policy that fires at 50 % at once, applied by the admin; a
    // technician may not apply one, and a bad file is refused whole.
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"disk-full\"\nmetric = \"disk_used_percent\"\nop = \">\"\n\
         threshold = 50\nrecover = 40\nseverity = \"critical\"\n\n[[rule]]\n\
         name = \"cpu-saturated\"\nenabled = false\n",
    )
    .expect("write");
    let path = rules.to_str().expect("utf-8");
    let refused = collector.cli(&alice, &["rules", "apply", path]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.error_line().contains("needs the admin role"),
        "{}",
        refused.stderr
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nname = \"x\"\nmetric = \"fan_speed\"\n").expect("write");
    let refused = collector.cli(&admin, &["rules", "apply", bad.to_str().expect("utf-8")]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .error_line()
            .contains("unknown metric \"fan_speed\""),
        "{}",
        refused.stderr
    );
    let missing = collector.cli(&admin, &["rules", "apply", "/nonexistent/rules.toml"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    let applied = json(
        &collector
            .cli(&admin, &["--json", "rules", "apply", path])
            .expect_code(0),
    );
    assert_eq!(applied["version"], 1);
    let in_force = json(&collector.cli(&viewer, &["--json", "rules"]).expect_code(0));
    // A switched-off default stays listed, as disabled (issue 21).
    let names: Vec<&str> = in_force["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["enabled"] == true)
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"disk-full") && !names.contains(&"cpu-saturated"),
        "{names:?}"
    );
    let text = collector.cli(&viewer, &["rules"]).expect_code(0);
    assert!(
        text.stdout.contains("version 1 applied by admin"),
        "{}",
        text.stdout
    );

    send(
        &collector,
        &agent,
        vec![sample_at(1, now_ms() - 60_000, 60.0)],
    )
    .await;
    let list = json(
        &collector
            .cli(&alice, &["--json", "tickets", "--status", "open"])
            .expect_code(0),
    );
    let id = list[0]["id"].as_i64().expect("a ticket");
    assert_eq!(list[0]["priority"], "P1", "medium impact x critical");
    let id_arg = id.to_string();

    collector
        .cli(&viewer, &["ticket", "assign", &id_arg, "me"])
        .expect_code(1);
    collector
        .cli(&alice, &["ticket", "assign", &id_arg, "me"])
        .expect_code(0);
    collector
        .cli(
            &alice,
            &[
                "ticket",
                "note",
                &id_arg,
                "asked the user to empty Downloads",
            ],
        )
        .expect_code(0);
    collector
        .cli(&alice, &["ticket", "status", &id_arg, "waiting"])
        .expect_code(0);
    let usage = collector.cli(&alice, &["ticket", "status", &id_arg, "done"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let mine = json(
        &collector
            .cli(&alice, &["--json", "tickets", "--assignee", "me"])
            .expect_code(0),
    );
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    assert_eq!(mine[0]["status"], "waiting");
    assert!(
        mine[0]["responded_at"].is_string(),
        "the first action meets the response target"
    );
    collector
        .cli(
            &alice,
            &[
                "ticket",
                "resolve",
                &id_arg,
                "--resolution",
                "cleared 40 GB of old installers",
            ],
        )
        .expect_code(0);
    let again = collector.cli(
        &alice,
        &["ticket", "resolve", &id_arg, "--resolution", "twice"],
    );
    assert_eq!(again.code, 1);
    assert!(
        again.error_line().contains("already resolved"),
        "{}",
        again.stderr
    );

    let shown = json(
        &collector
            .cli(&viewer, &["--json", "ticket", "show", &id_arg])
            .expect_code(0),
    );
    assert_eq!(shown["ticket"]["status"], "resolved");
    assert_eq!(
        shown["ticket"]["resolution"],
        "cleared 40 GB of old installers"
    );
    assert_eq!(shown["host"]["host_id"], agent.host_id().as_str());
    assert_eq!(shown["recent_health"].as_array().map(Vec::len), Some(1));
    let notes: Vec<&str> = shown["worklog"]
        .as_array()
        .expect("worklog")
        .iter()
        .filter_map(|w| w["note"].as_str())
        .collect();
    assert_eq!(notes.len(), 5, "{notes:?}");
    assert!(notes[1].starts_with("assigned to alice"), "{notes:?}");
    let text = collector
        .cli(&alice, &["ticket", "show", &id_arg])
        .expect_code(0);
    assert!(
        text.stdout.contains("disk_used_percent > 50"),
        "{}",
        text.stdout
    );

    // A manual ticket on the same host lists the earlier one as related.
    let host = agent.host_id();
    let new = json(
        &collector
            .cli(
                &alice,
                &[
                    "--json",
                    "ticket",
                    "new",
                    &host,
                    "--title",
                    "disk filling again",
                    "--priority",
                    "p2",
                ],
            )
            .expect_code(0),
    );
    assert_eq!(new["ticket"]["priority"], "P2");
    assert_eq!(new["related"][0]["id"], id);
    let none = collector.cli(&alice, &["ticket", "show", "99999"]);
    assert_eq!(none.code, 1);
    assert!(
        none.error_line().contains("no ticket 99999"),
        "{}",
        none.stderr
    );
}

/// Issue 21: the ticket table shows the assignee and the escalation level;
/// a ticket goes only to a technician who exists; a ticket that recovered
/// by itself stays out of `kb search` unless asked; a reopen takes the
/// latest value into its title, and a reopened ticket has no resolution.
#[tokio::test]
async fn tickets_show_who_has_them_and_reopen_without_their_old_resolution() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    collector.api_token("vic", "viewer");
    // 95 % for 15 minutes fires disk-full; back to 50 % for longer than the
    // quiet period (15 min) resolves it by itself.
    let mut samples: Vec<AgentMessage> = (0..15)
        .map(|m| sample(m + 1, i64::try_from(m).expect("small"), 95.0))
        .collect();
    samples.push(sample(16, 15, 50.0));
    samples.push(sample(17, 31, 50.0));
    send(&collector, &agent, samples).await;
    let all = json(&collector.cli(&alice, &["--json", "tickets"]).expect_code(0));
    let id = all[0]["id"].as_i64().expect("a ticket");
    let id_arg = id.to_string();
    assert_eq!(all[0]["status"], "resolved", "{all}");
    assert_eq!(all[0]["resolution"], "recovered by itself");

    let found = collector
        .cli(&alice, &["--json", "kb", "search", "full"])
        .expect_code(0);
    assert_eq!(
        json(&found),
        serde_json::json!([]),
        "auto-resolved: left out"
    );
    let asked = json(
        &collector
            .cli(
                &alice,
                &["--json", "kb", "search", "full", "--include-auto"],
            )
            .expect_code(0),
    );
    assert_eq!(asked[0]["ticket_id"], id, "{asked}");

    // Fires again within the reopen window at 97 %: the same ticket, with
    // the new value in its title and no resolution.
    let again = (0..15).map(|m| sample(18 + m, 32 + i64::try_from(m).expect("small"), 97.0));
    send(&collector, &agent, again.collect()).await;
    let shown = json(
        &collector
            .cli(&alice, &["--json", "ticket", "show", &id_arg])
            .expect_code(0),
    );
    assert_eq!(shown["ticket"]["status"], "open", "{shown}");
    assert_eq!(shown["ticket"]["flaps"], 1);
    assert_eq!(shown["ticket"]["title"], "disk-full: / is 97% full");
    assert!(shown["ticket"]["resolution"].is_null(), "{shown}");

    // Only a technician who exists takes a ticket.
    for (who, needle) in [
        ("bob", "no technician named \"bob\""),
        ("vic", "\"vic\" is a viewer"),
    ] {
        let refused = collector
            .cli(&alice, &["ticket", "assign", &id_arg, who])
            .expect_code(1);
        assert!(refused.error_line().contains(needle), "{}", refused.stderr);
    }
    collector
        .cli(&alice, &["ticket", "assign", &id_arg, "alice"])
        .expect_code(0);
    collector
        .cli(&alice, &["ticket", "escalate", &id_arg])
        .expect_code(0);
    let table = collector.cli(&alice, &["tickets"]).expect_code(0);
    let mut lines = table.stdout.lines();
    let header = lines.next().expect("header");
    let row = lines.next().expect("a row");
    // Columns are padded to line up: a cell starts where its heading does.
    let cell = |column: &str| {
        let at = header.find(column).expect(column);
        row[at..].split_whitespace().next().unwrap_or_default()
    };
    assert_eq!(cell("assignee"), "alice", "{}", table.stdout);
    assert_eq!(cell("esc"), "1", "{}", table.stdout);

    // Resolved by hand, then reopened by hand: no current resolution.
    collector
        .cli(
            &alice,
            &[
                "ticket",
                "resolve",
                &id_arg,
                "--resolution",
                "moved old logs",
            ],
        )
        .expect_code(0);
    collector
        .cli(&alice, &["ticket", "reopen", &id_arg])
        .expect_code(0);
    let shown = json(
        &collector
            .cli(&alice, &["--json", "ticket", "show", &id_arg])
            .expect_code(0),
    );
    assert!(shown["ticket"]["resolution"].is_null(), "{shown}");
    let text = collector
        .cli(&alice, &["ticket", "show", &id_arg])
        .expect_code(0);
    // The worklog keeps "resolved: moved old logs"; no field shows it as
    // the ticket's resolution.
    assert!(
        !text.stdout.lines().any(|l| l.starts_with("resolved ")),
        "{}",
        text.stdout
    );
}

/// The offline ticket of `host`, as `--json tickets --host` lists it.
fn offline_ticket(collector: &Collector, token: &str, host: &str) -> Option<serde_json::Value> {
    let out = collector
        .cli(token, &["--json", "tickets", "--host", host])
        .expect_code(0);
    json(&out)
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["rule"] == "offline")
        .cloned()
}

#[test]
fn a_host_back_from_offline_resolves_its_ticket_when_the_quiet_period_ends() {
    // A 30 s quiet period, and a PC whose collector jumps 15 minutes on:
    // the always-on PC has been silent past the offline rule's 10 minutes.
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::enrolled_to(&collector);
    agent.command(&["run", "--once"]).expect_code(0);
    let host = agent.host_id();
    collector
        .cli(&admin, &["host", "tag", &host, "always-on=yes"])
        .expect_code(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[tickets]\nquiet = \"30s\"\n").expect("write");
    collector
        .cli(&admin, &["rules", "apply", policy.to_str().expect("utf-8")])
        .expect_code(0);
    let addr = collector.addr.to_string();
    let collector = Collector::start_with_env(
        collector.into_data_dir(),
        &addr,
        &[],
        &[("DESKPULSE_TEST_CLOCK_OFFSET_SECS", "900")],
    );
    let opened = deskpulse_tests::wait_for(std::time::Duration::from_secs(30), || {
        offline_ticket(&collector, &admin, &host)
    })
    .expect("an offline ticket opens on the collector's first pass");
    assert_eq!(opened["status"], "new", "{opened}");

    // The PC comes back: its ticket resolves once it has streamed for the
    // quiet period, within a few seconds of that, not on a minute's tick.
    // The quiet period runs from the session's start, which lies between
    // starting the service and seeing it connected: the lower bound is
    // measured from the first, the upper from the second, so neither
    // counts the agent's start-up against the collector's timer.
    let back = std::time::Instant::now();
    let _service = deskpulse_tests::AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    let connected = std::time::Instant::now();
    let resolved = deskpulse_tests::wait_for(std::time::Duration::from_secs(150), || {
        offline_ticket(&collector, &admin, &host).filter(|t| t["status"] == "resolved")
    })
    .expect("the offline ticket resolves");
    let took = back.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(30),
        "resolved {took:?} after the PC came back, inside the 30 s quiet period"
    );
    // 30 s, a 2 s timer pass, and the CLI poll that saw it.
    let after_connected = connected.elapsed();
    assert!(
        after_connected <= std::time::Duration::from_secs(40),
        "resolved {after_connected:?} after the PC connected: its 30 s quiet period ended long before"
    );
    assert_eq!(resolved["id"], opened["id"]);
}
