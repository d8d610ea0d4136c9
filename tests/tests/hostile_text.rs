//! Text a hostile agent sends never acts on a technician's terminal
//! (issue 20): an agent enrolled for real, speaking the wire protocol
//! directly, names its host, OS, a package and a new administrator with
//! escape sequences (CSI, OSC 8 hyperlinks, OSC 52 clipboard writes), a
//! carriage return, BEL and C1 controls. Every human view of that text
//! (`hosts`, `host show`, `inventory`, `changes`, `tickets`, `ticket show`,
//! `kb search`) shows the characters as visible escapes; `--json` keeps the
//! exact strings for scripts.

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{
    AgentMessage, Inventory, LocalUser, OsInfo, Package, Report, SoftwareInfo, UsersInfo,
};
use deskpulse_tests::{Agent, Collector, Run, test_hello};

/// What a terminal would act on: clear the screen, a hyperlink, a carriage
/// return that overwrites the line, a clipboard write, BEL, C1 CSI (0x9b)
/// and C1 NEL (0x85), a bidi override.
const HOSTILE: &str = "\u{1b}[2J\u{1b}]8;;https://evil.example/\u{7}click\u{1b}]8;;\u{7}\rX\u{1b}]52;c;ZXZpbA==\u{7}\u{9b}31m\u{85}\u{202e}end";

fn hostile(what: &str) -> String {
    format!("{what}-{HOSTILE}")
}

fn inventory(with_new_admin: bool) -> Inventory {
    let mut packages = vec![Package {
        ecosystem: "deb".into(),
        name: "plain".into(),
        version: "1.0".into(),
        ..Package::default()
    }];
    let mut users = vec![LocalUser {
        name: "alice".into(),
        id: "1000".into(),
        ..LocalUser::default()
    }];
    if with_new_admin {
        packages.push(Package {
            ecosystem: "deb".into(),
            name: hostile("pkg"),
            version: "6.6.6".into(),
            ..Package::default()
        });
        users.push(LocalUser {
            name: hostile("user"),
            id: "1001".into(),
            admin: true,
            ..LocalUser::default()
        });
    }
    let mut inventory = Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        os: Some(OsInfo {
            hostname: hostile("host"),
            name: hostile("os"),
            version: "1".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages,
            ..SoftwareInfo::default()
        }),
        users: Some(UsersInfo {
            users,
            ..UsersInfo::default()
        }),
        ..Inventory::default()
    };
    deskpulse_proto::delta::canonicalize(&mut inventory);
    inventory
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

fn report(seq: u64, inventory: Inventory) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            spool_id: "hostile".into(),
            seq,
            held_from_seq: 0,
            // Recent, so `changes` (the last 7 days) lists them.
            collected_at_unix_ms: now_ms() - 600_000 + i64::try_from(seq).expect("small") * 60_000,
            payload: Some(Payload::Inventory(inventory)),
            sent_at_unix_ms: 0,
        })),
    }
}

/// The human output has no character a terminal acts on, and shows the
/// escape visibly.
fn assert_inert(what: &str, run: &Run) {
    for text in [&run.stdout, &run.stderr] {
        if let Some(c) = text
            .chars()
            .find(|&c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}')
        {
            panic!("{what}: a raw {c:?} reaches the terminal:\n{text}");
        }
    }
    assert!(
        run.stdout.contains("\\u{1b}"),
        "{what}: the escape is shown:\n{}",
        run.stdout
    );
}

/// True when a string in `value` holds `wanted`, byte for byte.
fn holds(value: &serde_json::Value, wanted: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains(wanted),
        serde_json::Value::Array(items) => items.iter().any(|v| holds(v, wanted)),
        serde_json::Value::Object(map) => map.values().any(|v| holds(v, wanted)),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_agents_text_is_shown_inert_and_json_keeps_it_exact() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();

    // A first inventory, then one with a new package and a new
    // administrator: the change log records both and a ticket opens.
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let messages = vec![
        test_hello(),
        report(1, inventory(false)),
        report(2, inventory(true)),
    ];
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages))
        .await
        .expect("session")
        .into_inner();
    for _ in 0..2 {
        let reply = replies.message().await.expect("reply").expect("some");
        assert!(matches!(reply.kind, Some(Reply::Ack(_))), "{reply:?}");
    }
    drop(replies);

    let tickets = collector
        .cli(&admin, &["--json", "tickets"])
        .expect_code(0)
        .json();
    let ticket = tickets
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| holds(t, &hostile("user")))
        .expect("the new administrator's ticket")["id"]
        .as_i64()
        .expect("id")
        .to_string();

    let views: [(&str, Vec<&str>, Vec<String>); 8] = [
        ("hosts", vec!["hosts"], vec![hostile("host"), hostile("os")]),
        (
            "host show",
            vec!["host", "show", &host],
            vec![hostile("host"), hostile("os")],
        ),
        (
            "inventory",
            vec!["inventory", &host],
            vec![hostile("host"), hostile("pkg")],
        ),
        (
            "inventory software",
            vec!["inventory", &host, "--section", "software"],
            vec![hostile("pkg")],
        ),
        ("changes", vec!["changes", &host], vec![hostile("pkg")]),
        ("fleet changes", vec!["changes"], vec![hostile("pkg")]),
        ("tickets", vec!["tickets"], vec![hostile("user")]),
        (
            "ticket show",
            vec!["ticket", "show", &ticket],
            vec![hostile("user")],
        ),
    ];
    for (what, args, exact) in views {
        let human = collector.cli(&admin, &args).expect_code(0);
        assert_inert(what, &human);
        let json_args: Vec<&str> = std::iter::once("--json").chain(args).collect();
        let json = collector.cli(&admin, &json_args).expect_code(0).json();
        for wanted in exact {
            assert!(
                holds(&json, &wanted),
                "{what} --json keeps {wanted:?}: {json}"
            );
        }
    }
    collector
        .cli(
            &admin,
            &[
                "ticket",
                "resolve",
                &ticket,
                "--resolution",
                "administrator removed",
            ],
        )
        .expect_code(0);
    let found = collector
        .cli(&admin, &["kb", "search", "administrator"])
        .expect_code(0);
    assert_inert("kb search", &found);
    // An error quoting the agent's text is one inert line too.
    let ambiguous = collector
        .cli(&admin, &["host", "show", &hostile("host")])
        .expect_code(0);
    assert_inert("host show by name", &ambiguous);
}
