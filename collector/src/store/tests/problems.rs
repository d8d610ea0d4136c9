//! Fleet-wide problems (issue 23) on both backends: grouping by threshold
//! and window, late joiners, impact, the common change, resolving the
//! problem and its tickets one by one, recovery, reopening, retiring, and
//! two replicas opening at once.

use super::*;
use crate::rules::problems::{CommonChange, ProblemRefusal};

const MIN: i64 = 60_000;

/// A policy that groups 3 hosts within 15 minutes, with a rule that fires
/// on the first sample over 80 % CPU.
const POLICY: &str = r#"
[problems]
hosts = 3
window = "15m"
changes_window = "2h"

[[rule]]
name = "cpu-test"
metric = "cpu_percent"
op = ">"
threshold = 80
recover = 50
severity = "medium"
"#;

/// Enrolls `n` hosts.
async fn hosts(store: &SharedStore, n: usize) -> Vec<String> {
    let name = uuid::Uuid::new_v4().simple().to_string();
    token(store, &name, i64::MAX, u32::try_from(n).expect("small")).await;
    let mut out = Vec::new();
    for i in 0..n {
        let outcome = store
            .enroll(&request(&name, &format!("uuid-{name}-{i}")), 0, &cert)
            .await
            .expect("enroll");
        out.push(host_id(&outcome));
    }
    out
}

/// Enrolls `n` hosts and has each send a saturated CPU sample, `step_ms`
/// after the one before, from 0.
async fn hosts_firing(store: &SharedStore, n: usize, step_ms: i64) -> Vec<String> {
    let ids = hosts(store, n).await;
    for (i, host) in ids.iter().enumerate() {
        cpu(
            store,
            host,
            1,
            i64::try_from(i).expect("small") * step_ms,
            95.0,
        )
        .await;
    }
    ids
}

/// One CPU sample of `host` at `at_ms`, stored at that time.
async fn cpu(store: &SharedStore, host: &str, seq: u64, at_ms: i64, percent: f32) {
    store
        .store_reports(&[health_report(host, seq, at_ms, percent, 10.0)], at_ms)
        .await
        .expect("store");
}

fn by(name: &str) -> AuditEntry {
    AuditEntry {
        technician_id: Some(name.into()),
        ..AuditEntry::system("", "", "")
    }
}

async fn only_problem(store: &SharedStore) -> ProblemDetail {
    let listed = store.list_problems(None, 50).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    store
        .problem(listed[0].problem.id)
        .await
        .expect("get")
        .expect("exists")
}

pub(super) async fn tickets_of_one_rule_on_enough_hosts_in_the_window_make_one_problem(db: TestDb) {
    let store = db.store.clone();
    apply_valid_policy(&store, POLICY, 1).await;
    let ids = hosts(&store, 5).await;
    // Two hosts: two tickets, no problem yet.
    cpu(&store, &ids[0], 1, 0, 95.0).await;
    cpu(&store, &ids[1], 1, MIN, 95.0).await;
    assert!(
        store
            .list_problems(None, 50)
            .await
            .expect("list")
            .is_empty()
    );
    // The third within the window makes the problem of all three.
    cpu(&store, &ids[2], 1, 2 * MIN, 95.0).await;
    let detail = only_problem(&store).await;
    let p = &detail.problem;
    assert_eq!(
        (p.kind.as_str(), p.key.as_str(), p.status.as_str()),
        ("rule", "cpu-test", "open")
    );
    assert_eq!((p.hosts, p.tickets, p.open_tickets), (3, 3, 3));
    assert_eq!(p.title, "rule cpu-test firing on many hosts");
    assert!(
        detail.log[0].note.starts_with("opened: 3 hosts"),
        "{:?}",
        detail.log
    );
    let (_, worklog) = store
        .ticket(detail.tickets[0].id)
        .await
        .expect("get")
        .expect("exists");
    assert!(
        worklog
            .iter()
            .any(|w| w.note == format!("linked to problem {}: {}", p.id, p.title)),
        "{worklog:?}"
    );
    assert_eq!(
        store
            .problem_of_ticket(detail.tickets[0].id)
            .await
            .expect("read"),
        Some(p.id)
    );
    // A fourth joins within the window of the latest join…
    cpu(&store, &ids[3], 1, 10 * MIN, 95.0).await;
    assert_eq!(only_problem(&store).await.problem.hosts, 4);
    // …a fifth long after does not.
    cpu(&store, &ids[4], 1, 60 * MIN, 95.0).await;
    let detail = only_problem(&store).await;
    assert_eq!(detail.problem.hosts, 4);
    let lone = store
        .list_tickets(&TicketQuery {
            host_id: Some(ids[4].clone()),
            ..open_tickets()
        })
        .await
        .expect("list");
    assert_eq!(
        store.problem_of_ticket(lone[0].id).await.expect("read"),
        None
    );
    // Tickets outside the window never count: three hosts spread over
    // an hour make no second problem.
    let spread = hosts(&store, 2).await;
    cpu(&store, &spread[0], 1, 100 * MIN, 95.0).await;
    cpu(&store, &spread[1], 1, 130 * MIN, 95.0).await;
    assert_eq!(store.list_problems(None, 50).await.expect("list").len(), 1);
}

pub(super) async fn employees_reporting_the_same_words_from_many_pcs_make_one_problem(db: TestDb) {
    let store = db.store.clone();
    apply_valid_policy(&store, POLICY, 1).await;
    let ids = hosts(&store, 3).await;
    for (i, (host, text)) in ids
        .iter()
        .zip([
            "Outlook won't start!",
            "outlook wont start",
            "Outlook won't start.",
        ])
        .enumerate()
    {
        let at = i64::try_from(i).expect("small") * MIN;
        let issue = IncomingReport {
            host_id: host.clone(),
            spool_id: "s".into(),
            seq: 1,
            held_from_seq: 0,
            collected_at_ms: at,
            payload: ReportPayload::UserIssue {
                text: text.into(),
                os_user: "alice".into(),
                report_key: None,
                health: serde_json::json!({}),
                reporter_email: None,
            },
        };
        store.store_reports(&[issue], at).await.expect("store");
    }
    let detail = only_problem(&store).await;
    assert_eq!(
        (
            detail.problem.kind.as_str(),
            detail.problem.key.as_str(),
            detail.problem.hosts
        ),
        ("report", "outlook wont start", 3)
    );
}

pub(super) async fn many_ordinary_hosts_raise_a_problems_priority_above_its_tickets(db: TestDb) {
    let store = db.store.clone();
    apply_valid_policy(&store, &POLICY.replace("hosts = 3", "hosts = 2"), 1).await;
    hosts_firing(&store, 10, 1000).await;
    let detail = only_problem(&store).await;
    assert!(detail.tickets.iter().all(|t| t.priority == "P3"));
    // Ten medium-criticality hosts weigh 10: one level up.
    assert_eq!(detail.problem.priority, "P2");
    assert!(
        detail
            .log
            .iter()
            .any(|l| l.note == "priority P3 -> P2: 10 hosts"),
        "{:?}",
        detail.log
    );
}

pub(super) async fn a_problem_names_the_change_its_hosts_share(db: TestDb) {
    use deskpulse_proto::v1::{Inventory, OsInfo, Package, SoftwareInfo};
    let store = db.store.clone();
    apply_valid_policy(&store, POLICY, 1).await;
    let ids = hosts(&store, 5).await;
    let inventory = |openssl: &str, extra: &str| {
        let mut inv = Inventory {
            os: Some(OsInfo {
                hostname: "pc".into(),
                ..OsInfo::default()
            }),
            software: Some(SoftwareInfo {
                packages: [("openssl", openssl), (extra, "1.0")]
                    .into_iter()
                    .map(|(name, version)| Package {
                        ecosystem: "dpkg".into(),
                        name: name.into(),
                        version: version.into(),
                        arch: "amd64".into(),
                        ..Package::default()
                    })
                    .collect(),
                ..SoftwareInfo::default()
            }),
            ..Inventory::default()
        };
        deskpulse_proto::delta::canonicalize(&mut inv);
        inv
    };
    for (i, host) in ids.iter().enumerate() {
        // Each host has its own other package, which changes too: noise.
        let extra = format!("tool-{i}");
        let before = inventory(if i == 0 { "3.0.14-1" } else { "3.0.13-1" }, &extra);
        store
            .store_reports(&[full_inventory(host, 1, 0, &before)], 0)
            .await
            .expect("store");
        // Four of five upgrade openssl to 3.0.15 half an hour before.
        if i < 4 {
            let after = inventory("3.0.15-1", &format!("{extra}-new"));
            store
                .store_reports(&[full_inventory(host, 2, 30 * MIN, &after)], 30 * MIN)
                .await
                .expect("store");
        }
        cpu(&store, host, 3, 60 * MIN, 95.0).await;
    }
    let detail = only_problem(&store).await;
    assert_eq!(detail.problem.hosts, 5);
    let lines: Vec<String> = detail
        .common_changes
        .iter()
        .map(CommonChange::describe)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("4 of 5 hosts changed `package dpkg/openssl:amd64` to 3.0.15-1 within 2h before"),
        "{lines:?}"
    );
    let listed = store.list_problems(Some("open"), 10).await.expect("list");
    assert_eq!(
        listed[0].common_change.as_ref().map(CommonChange::describe),
        lines.first().cloned()
    );
    assert!(
        store
            .list_problems(Some("resolved"), 10)
            .await
            .expect("list")
            .is_empty()
    );
}

pub(super) async fn resolving_a_problem_resolves_its_open_tickets_each_through_the_ticket_path(
    db: TestDb,
) {
    let store = db.store.clone();
    apply_valid_policy(&store, POLICY, 1).await;
    hosts_firing(&store, 3, MIN).await;
    let detail = only_problem(&store).await;
    let id = detail.problem.id;
    // One ticket a technician resolved on their own keeps its resolution.
    let first = detail.tickets[0].id;
    store
        .update_ticket(
            first,
            &TicketChange::Resolve("rebooted it".into()),
            "bob",
            &by("bob"),
            5 * MIN,
        )
        .await
        .expect("store")
        .expect("resolves");
    assert_eq!(only_problem(&store).await.problem.open_tickets, 2);

    let bad = store
        .resolve_problem(id, "  ", "bob", &by("bob"), 6 * MIN)
        .await
        .expect("store");
    assert!(matches!(bad, Err(ProblemRefusal::Invalid(_))), "{bad:?}");
    let unknown = store
        .resolve_problem(id + 100, "x", "bob", &by("bob"), 6 * MIN)
        .await
        .expect("store");
    assert_eq!(unknown, Err(ProblemRefusal::NotFound));

    let text = "rolled the antivirus signature update back fleet-wide";
    let resolved = store
        .resolve_problem(id, text, "bob", &by("bob"), 6 * MIN)
        .await
        .expect("store")
        .expect("resolves");
    assert_eq!(
        (
            resolved.status.as_str(),
            resolved.open_tickets,
            resolved.resolution.as_deref(),
            resolved.resolved_by.as_deref()
        ),
        ("resolved", 0, Some(text), Some("bob"))
    );
    let detail = only_problem(&store).await;
    for ticket in &detail.tickets {
        assert_eq!(ticket.status, "resolved");
        let expected = if ticket.id == first {
            "rebooted it"
        } else {
            text
        };
        assert_eq!(ticket.resolution.as_deref(), Some(expected));
        let (_, worklog) = store.ticket(ticket.id).await.expect("get").expect("exists");
        assert_eq!(
            worklog.last().map(|w| (w.author.as_str(), w.note.clone())),
            Some(("bob", format!("resolved: {expected}")))
        );
    }
    let again = store
        .resolve_problem(id, "x", "bob", &by("bob"), 7 * MIN)
        .await
        .expect("store");
    assert_eq!(
        again,
        Err(ProblemRefusal::Invalid(format!(
            "problem {id} is already resolved"
        )))
    );
    // Audited: the problem, and each ticket it resolved.
    let audit = store
        .list_audit(&AuditQuery {
            limit: 50,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "problem.resolve").count(),
        1
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "ticket.resolve").count(),
        3
    );
    // The knowledge base finds its tickets by the problem's resolution.
    let hits = store
        .search_kb(&["antivirus".into()], 10, false)
        .await
        .expect("search");
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.resolution == text));
}

pub(super) async fn a_problem_follows_its_tickets_resolved_one_by_one_reopened_and_retired(
    db: TestDb,
) {
    let store = db.store.clone();
    apply_valid_policy(&store, POLICY, 1).await;
    let ids = hosts_firing(&store, 4, MIN).await;
    let detail = only_problem(&store).await;
    let tickets: Vec<i64> = detail.tickets.iter().map(|t| t.id).collect();
    assert_eq!(tickets.len(), 4);
    // A retired host's ticket is closed: one open fewer.
    let retired = store
        .retire_host(&ids[3], "bob", "scrapped", &by("bob"), 5 * MIN)
        .await
        .expect("retire");
    assert!(matches!(retired, RetireOutcome::Retired(_)), "{retired:?}");
    assert_eq!(only_problem(&store).await.problem.open_tickets, 3);
    for (i, ticket) in tickets[..2].iter().enumerate() {
        store
            .update_ticket(
                *ticket,
                &TicketChange::Resolve(format!("fixed {i}")),
                "bob",
                &by("bob"),
                6 * MIN,
            )
            .await
            .expect("store")
            .expect("resolves");
    }
    let p = only_problem(&store).await.problem;
    assert_eq!((p.status.as_str(), p.open_tickets), ("open", 1));
    // The last one recovering resolves the problem by itself.
    cpu(&store, &ids[2], 2, 7 * MIN, 5.0).await;
    store
        .advance_rule_timers(7 * MIN + 16 * MIN)
        .await
        .expect("timers");
    let detail = only_problem(&store).await;
    assert_eq!(
        (
            detail.problem.status.as_str(),
            detail.problem.open_tickets,
            detail.problem.resolved_by.as_deref()
        ),
        ("resolved", 0, Some("system"))
    );
    assert!(
        detail.log.iter().any(|l| l.note
            == format!(
                "resolved: all its tickets resolved (the last, ticket {})",
                tickets[2]
            )),
        "{:?}",
        detail.log
    );
    // One of its tickets reopening reopens it.
    store
        .update_ticket(
            tickets[0],
            &TicketChange::Reopen,
            "bob",
            &by("bob"),
            30 * MIN,
        )
        .await
        .expect("store")
        .expect("reopens");
    let detail = only_problem(&store).await;
    assert_eq!(
        (detail.problem.status.as_str(), detail.problem.open_tickets),
        ("open", 1)
    );
    assert_eq!(detail.problem.resolution, None);
    assert!(
        detail
            .log
            .iter()
            .any(|l| l.note == format!("reopened: ticket {} reopened", tickets[0]))
    );
    // Resolved, it gathers no more: the next outbreak is a new problem.
    store
        .resolve_problem(detail.problem.id, "done", "bob", &by("bob"), 31 * MIN)
        .await
        .expect("store")
        .expect("resolves");
    let more = hosts(&store, 3).await;
    for host in &more {
        cpu(&store, host, 1, 32 * MIN, 95.0).await;
    }
    let listed = store.list_problems(None, 50).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].problem.status.as_str(), listed[0].problem.hosts),
        ("open", 3)
    );
}

/// Two replicas storing the same rule's firing on different hosts at once
/// open one problem between them, never two.
pub(super) async fn two_replicas_opening_tickets_at_once_make_one_problem(db: TestDb) {
    let first = db.store.clone();
    apply_valid_policy(&first, &POLICY.replace("hosts = 3", "hosts = 2"), 1).await;
    let second = backend::open(&db.url).await.expect("second replica");
    let ids = hosts(&first, 24).await;
    let (a, b) = ids.split_at(12);
    let fire = |store: SharedStore, hosts: Vec<String>| async move {
        for host in hosts {
            cpu(&store, &host, 1, 1000, 95.0).await;
        }
    };
    let second: SharedStore = second;
    tokio::join!(fire(first.clone(), a.to_vec()), fire(second, b.to_vec()));
    let listed = first.list_problems(None, 50).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Every ticket joined, perhaps one seen late by the next to join.
    assert!(listed[0].problem.hosts >= 22, "{:?}", listed[0].problem);
}

/// `problem.opened`, `problem.updated` (priority raised) and
/// `problem.resolved` reach a subscribed webhook through the outbox, each
/// body carrying the problem as the event left it.
pub(super) async fn problem_events_reach_the_webhook_outbox_with_the_problem(db: TestDb) {
    let store = db.store.clone();
    apply_valid_policy(&store, &POLICY.replace("hosts = 3", "hosts = 2"), 1).await;
    let hook = NewWebhook {
        url: "https://hooks.example.com/".into(),
        events: vec![
            crate::model::TicketEvent::ProblemOpened,
            crate::model::TicketEvent::ProblemUpdated,
            crate::model::TicketEvent::ProblemResolved,
        ],
        secret: "s".repeat(32),
        created_by: "admin".into(),
        route: crate::model::WebhookRoute::default(),
    };
    store
        .add_webhook(&hook, &|_: &i64| AuditEntry::system("test", "", ""), 0)
        .await
        .expect("add");
    hosts_firing(&store, 10, 1000).await;
    let id = only_problem(&store).await.problem.id;
    store
        .resolve_problem(id, "fixed fleet-wide", "bob", &by("bob"), 20_000)
        .await
        .expect("store")
        .expect("resolves");
    // One problem's deliveries go in order: each is claimable once the one
    // before it is delivered.
    let mut events: Vec<(String, serde_json::Value)> = Vec::new();
    for _ in 0..4 {
        let claimed = store
            .claim_deliveries(30_000, 60_000, 50)
            .await
            .expect("claim");
        assert!(claimed.len() <= 1, "{claimed:?}");
        for d in claimed {
            store
                .record_delivery(d.id, &DeliveryOutcome::Delivered(200), 30_000)
                .await
                .expect("record");
            let body: serde_json::Value = serde_json::from_str(&d.body).expect("json");
            events.push((d.event.clone(), body));
        }
    }
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["problem.opened", "problem.updated", "problem.resolved"],
        "{events:?}"
    );
    assert_eq!(events[0].1["problem"]["hosts"], 2);
    assert_eq!(events[1].1["problem"]["priority"], "P2");
    assert_eq!(events[1].1["problem"]["hosts"], 10);
    assert_eq!(events[2].1["problem"]["status"], "resolved");
    assert_eq!(events[2].1["problem"]["resolution"], "fixed fleet-wide");
    assert_eq!(events[2].1["event"], "problem.resolved");
}

/// A problem event reaches Slack and e-mail channels too, routed by the
/// problem's priority: a group address of that priority gets it with its
/// address, one of another priority, an assignee's and the reporters'
/// channel do not; the chat body renders as the problem.
pub(super) async fn problem_events_reach_chat_and_mail_by_the_problems_priority(db: TestDb) {
    use crate::model::{TicketEvent, WebhookFormat, WebhookRoute};
    let store = db.store.clone();
    apply_valid_policy(&store, &POLICY.replace("hosts = 3", "hosts = 2"), 1).await;
    let channels = [
        (
            "https://hooks.slack.com/services/T/B/X",
            WebhookFormat::Slack,
            vec![],
            None,
        ),
        (
            "mailto:desk@example.com",
            WebhookFormat::Email,
            vec![],
            None,
        ),
        (
            "mailto:p1@example.com",
            WebhookFormat::Email,
            vec!["P1".to_owned()],
            None,
        ),
        (
            "mailto:alice@example.com",
            WebhookFormat::Email,
            vec![],
            Some("alice".to_owned()),
        ),
        (
            crate::webhooks::route::REPORTER_TARGET,
            WebhookFormat::Email,
            vec![],
            None,
        ),
    ];
    for (url, format, priorities, assignee) in channels {
        let hook = NewWebhook {
            url: url.into(),
            events: vec![TicketEvent::ProblemOpened],
            secret: String::new(),
            created_by: "admin".into(),
            route: WebhookRoute {
                format,
                priorities,
                assignee,
            },
        };
        store
            .add_webhook(&hook, &|_: &i64| AuditEntry::system("test", "", ""), 0)
            .await
            .expect("add");
    }
    hosts_firing(&store, 2, 1000).await;
    let problem = only_problem(&store).await.problem;
    assert_ne!(problem.priority, "P1", "{problem:?}");

    let claimed = store
        .claim_deliveries(30_000, 60_000, 50)
        .await
        .expect("claim");
    let mut reached: Vec<(String, Option<String>)> = claimed
        .iter()
        .map(|d| (d.url.clone(), d.recipient.clone()))
        .collect();
    reached.sort();
    assert_eq!(
        reached,
        [
            ("https://hooks.slack.com/services/T/B/X".to_owned(), None),
            (
                "mailto:desk@example.com".to_owned(),
                Some("desk@example.com".to_owned())
            ),
        ],
        "{claimed:?}"
    );
    let slack = claimed
        .iter()
        .find(|d| d.format == WebhookFormat::Slack)
        .expect("slack");
    let message: serde_json::Value = serde_json::from_str(&crate::webhooks::render::slack(
        &crate::webhooks::render::Stored::parse(&slack.body),
    ))
    .expect("json");
    assert_eq!(
        message["text"],
        format!(
            "{} problem #{} opened on 2 hosts: {}",
            problem.priority, problem.id, problem.title
        )
    );
}
