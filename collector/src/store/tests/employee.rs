//! Contract tests of the employee's side (issue 23): a public note kept as
//! public and a private one as private; the ticket a report key raised, for
//! its `Ack`; a reporter's own tickets on their own host only, with public
//! notes only, bounded; the reporter's e-mail address in the evidence; and
//! `ticket.updated` bodies that say what changed and who changed it, with
//! a public note's text and never a private one's.

use super::{TestDb, cert, enrolled_host, host_id, request, token};
use crate::store::{
    AuditEntry, IncomingReport, MAX_REPORTER_TICKETS, NewWebhook, ReportPayload, SharedStore,
    TicketChange, TicketEvent,
};

const KEY: &str = "0b5f8a7e-3c1d-4e2a-9f60-2d7c1a9b4e11";

fn issue(host: &str, seq: u64, user: &str, text: &str, key: Option<&str>) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: 5_000,
        payload: ReportPayload::UserIssue {
            text: text.into(),
            os_user: user.into(),
            report_key: key.map(str::to_owned),
            health: serde_json::Value::Null,
            reporter_email: (user == "alice").then(|| "alice@example.com".to_owned()),
        },
    }
}

async fn change(store: &SharedStore, id: i64, change: TicketChange, at_ms: i64) {
    store
        .update_ticket(
            id,
            &change,
            "bo",
            &AuditEntry::system("test", "", ""),
            at_ms,
        )
        .await
        .expect("update")
        .expect("allowed");
}

async fn second_host(store: &SharedStore) -> String {
    token(store, "h2", i64::MAX, 1).await;
    host_id(
        &store
            .enroll(&request("h2", ""), 0, &cert)
            .await
            .expect("enroll"),
    )
}

pub(super) async fn a_public_note_is_shown_as_public_and_audited_and_a_private_one_is_not(
    db: TestDb,
) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let t = store
        .create_ticket(&host, "vpn", None, "bo", &AuditEntry::system("", "", ""), 1)
        .await
        .expect("create");
    change(
        &store,
        t.id,
        TicketChange::Note("private: the admin password".into()),
        2,
    )
    .await;
    change(
        &store,
        t.id,
        TicketChange::PublicNote("We are on it".into()),
        3,
    )
    .await;
    let (_, log) = store.ticket(t.id).await.expect("get").expect("exists");
    let notes: Vec<(&str, bool)> = log.iter().map(|w| (w.note.as_str(), w.public)).collect();
    assert_eq!(
        notes,
        [
            ("opened by hand", false),
            ("private: the admin password", false),
            ("We are on it", true)
        ]
    );
    let audit = store
        .list_audit(&crate::store::AuditQuery {
            action_prefix: Some("ticket.note".into()),
            limit: 10,
            ..crate::store::AuditQuery::default()
        })
        .await
        .expect("audit");
    let details: Vec<&str> = audit.iter().map(|a| a.detail.as_str()).collect();
    assert!(details.contains(&"(public) We are on it"), "{details:?}");
    assert!(
        details.contains(&"private: the admin password"),
        "{details:?}"
    );
}

pub(super) async fn a_report_key_names_its_ticket_and_the_reporter_sees_only_their_own(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let other_host = second_host(&store).await;
    store
        .store_reports(
            &[issue(&host, 1, "alice", "Outlook crashes", Some(KEY))],
            6_000,
        )
        .await
        .expect("store");
    let ticket = store
        .ticket_for_report(&host, KEY)
        .await
        .expect("read")
        .expect("the key's ticket");
    // Another host's key lookup finds nothing, and an unknown key neither.
    assert_eq!(
        store
            .ticket_for_report(&other_host, KEY)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .ticket_for_report(&host, "9d1e6a52-8f3b-4c07-b1a4-6e2f0c8d7a33")
            .await
            .expect("read"),
        None
    );
    // The same report sent again (a rolled-back spool) still names it.
    store
        .store_reports(
            &[issue(&host, 2, "alice", "Outlook crashes", Some(KEY))],
            7_000,
        )
        .await
        .expect("store");
    assert_eq!(
        store.ticket_for_report(&host, KEY).await.expect("read"),
        Some(ticket)
    );
    // The e-mail address went into the evidence.
    let (row, _) = store.ticket(ticket).await.expect("get").expect("exists");
    let evidence: serde_json::Value = serde_json::from_str(&row.evidence).expect("json");
    assert_eq!(evidence["reporter_email"], "alice@example.com");

    // Bob on the same PC, and alice on another PC.
    store
        .store_reports(&[issue(&host, 3, "bob", "VPN drops", None)], 8_000)
        .await
        .expect("store");
    store
        .store_reports(&[issue(&other_host, 1, "alice", "Other PC", None)], 8_000)
        .await
        .expect("store");
    change(
        &store,
        ticket,
        TicketChange::Note("private: reset her password".into()),
        9_000,
    )
    .await;
    change(
        &store,
        ticket,
        TicketChange::PublicNote("Reinstalling Outlook".into()),
        9_100,
    )
    .await;
    change(
        &store,
        ticket,
        TicketChange::Resolve("Outlook reinstalled".into()),
        9_200,
    )
    .await;

    let mine = store
        .reporter_tickets(&host, "alice", 10)
        .await
        .expect("read");
    assert!(!mine.truncated);
    assert_eq!(mine.tickets.len(), 1, "{mine:?}");
    let t = &mine.tickets[0];
    assert_eq!(t.ticket.id, ticket);
    assert_eq!(t.text, "Outlook crashes");
    assert_eq!(t.ticket.status, "resolved");
    assert_eq!(t.ticket.resolution.as_deref(), Some("Outlook reinstalled"));
    let notes: Vec<&str> = t.notes.iter().map(|n| n.note.as_str()).collect();
    assert_eq!(notes, ["Reinstalling Outlook"], "public notes only");
    assert!(t.notes.iter().all(|n| n.public && n.author == "bo"));

    let bobs = store
        .reporter_tickets(&host, "bob", 10)
        .await
        .expect("read");
    assert_eq!(bobs.tickets.len(), 1);
    assert_ne!(bobs.tickets[0].ticket.id, ticket);
    // Alice's other PC is another host: not here, and here not there.
    let elsewhere = store
        .reporter_tickets(&other_host, "alice", 10)
        .await
        .expect("read");
    assert_eq!(elsewhere.tickets.len(), 1);
    assert_eq!(elsewhere.tickets[0].text, "Other PC");
    // A user with no reports, and a name made to look like SQL, see none.
    for nobody in ["carol", "alice' OR '1'='1", ""] {
        let none = store
            .reporter_tickets(&host, nobody, 10)
            .await
            .expect("read");
        assert!(none.tickets.is_empty(), "{nobody}: {none:?}");
    }
}

pub(super) async fn a_reporters_tickets_are_bounded_newest_first(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let count = MAX_REPORTER_TICKETS as u64 + 5;
    let reports: Vec<IncomingReport> = (1..=count)
        .map(|seq| issue(&host, seq, "dana", &format!("problem {seq}"), None))
        .collect();
    for (n, report) in reports.iter().enumerate() {
        store
            .store_reports(std::slice::from_ref(report), 6_000 + n as i64)
            .await
            .expect("store");
    }
    let long_note = "x".repeat(5_000);
    let newest = store
        .reporter_tickets(&host, "dana", 1)
        .await
        .expect("read")
        .tickets[0]
        .ticket
        .id;
    for n in 0..15 {
        change(
            &store,
            newest,
            TicketChange::PublicNote(format!("{n} {long_note}")),
            10_000 + n,
        )
        .await;
    }
    let asked_too_many = store
        .reporter_tickets(&host, "dana", 10_000)
        .await
        .expect("read");
    assert!(asked_too_many.truncated);
    assert_eq!(asked_too_many.tickets.len(), MAX_REPORTER_TICKETS as usize);
    assert_eq!(asked_too_many.tickets[0].text, format!("problem {count}"));
    let notes = &asked_too_many.tickets[0].notes;
    assert_eq!(notes.len(), crate::store::MAX_PUBLIC_NOTES);
    assert!(
        notes[0].note.starts_with("5 "),
        "the latest ten, oldest first"
    );
    assert!(
        notes
            .iter()
            .all(|n| n.note.chars().count() == crate::store::MAX_EMPLOYEE_TEXT)
    );
}

pub(super) async fn ticket_updated_says_what_changed_and_who_with_public_note_text_only(
    db: TestDb,
) {
    let store = db.store.clone();
    store
        .add_webhook(
            &NewWebhook {
                url: "https://hooks.example.com/".into(),
                events: TicketEvent::ALL.to_vec(),
                secret: "s3cret".into(),
                created_by: "admin".into(),
                route: crate::model::WebhookRoute::default(),
            },
            &|_: &i64| AuditEntry::system("test", "", ""),
            1,
        )
        .await
        .expect("add webhook");
    let host = enrolled_host(&store).await;
    store
        .store_reports(&[issue(&host, 1, "alice", "Printer jams", Some(KEY))], 2)
        .await
        .expect("store");
    let ticket = store
        .ticket_for_report(&host, KEY)
        .await
        .expect("read")
        .expect("ticket");
    change(
        &store,
        ticket,
        TicketChange::Note("private: her badge is 4411".into()),
        3,
    )
    .await;
    change(
        &store,
        ticket,
        TicketChange::PublicNote("A new fuser is on its way".into()),
        4,
    )
    .await;
    change(&store, ticket, TicketChange::Status("waiting".into()), 5).await;
    change(&store, ticket, TicketChange::Escalate, 6).await;
    change(
        &store,
        ticket,
        TicketChange::Resolve("fuser replaced".into()),
        7,
    )
    .await;
    let mut bodies = Vec::new();
    loop {
        let pass = store.claim_deliveries(100, 0, 100).await.expect("claim");
        if pass.is_empty() {
            break;
        }
        for d in pass {
            store
                .record_delivery(d.id, &crate::store::DeliveryOutcome::Delivered(200), 100)
                .await
                .expect("record");
            bodies.push(serde_json::from_str::<serde_json::Value>(&d.body).expect("json"));
        }
    }
    let changes: Vec<serde_json::Value> = bodies.iter().map(|b| b["change"].clone()).collect();
    let said: Vec<(&str, &str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap_or(""),
                b["change"]["kind"].as_str().unwrap_or(""),
                b["change"]["by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("ticket.opened", "opened", "alice"),
            ("ticket.updated", "note", "bo"),
            ("ticket.updated", "note", "bo"),
            ("ticket.updated", "status", "bo"),
            ("ticket.escalated", "escalated", "bo"),
            ("ticket.resolved", "resolved", "bo"),
        ]
    );
    assert_eq!(changes[1]["public"], false);
    assert_eq!(changes[1]["note"], serde_json::Value::Null);
    assert_eq!(changes[2]["public"], true);
    assert_eq!(changes[2]["note"], "A new fuser is on its way");
    assert_eq!(
        (changes[3]["from"].as_str(), changes[3]["to"].as_str()),
        (Some("new"), Some("waiting"))
    );
    assert_eq!(
        (changes[4]["from"].as_str(), changes[4]["to"].as_str()),
        (Some("0"), Some("1"))
    );
    let all = serde_json::to_string(&bodies).expect("json");
    assert!(
        !all.contains("4411"),
        "a private note reached a payload: {all}"
    );
}
