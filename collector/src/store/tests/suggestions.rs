//! Contract tests of issue 23: the fixes suggested when a ticket opens
//! (earlier tickets a technician resolved, never one that recovered by
//! itself; hostile text in a report is only words), and the change
//! correlation read with a ticket (other hosts with the same change and the
//! same rule firing).

use deskpulse_proto::v1::{Inventory, OsInfo, Package, SoftwareInfo};

use super::{TestDb, disk_sample, full_inventory, request, tamper, token};
use crate::store::{
    AuditEntry, IncomingReport, ReportPayload, SharedStore, TicketChange, TicketQuery, TicketRow,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

async fn enroll(store: &SharedStore, n: u32) -> String {
    let secret = format!("suggest-{n}");
    token(store, &secret, i64::MAX, 1).await;
    super::host_id(
        &store
            .enroll(&request(&secret, &format!("uuid-{n}")), 0, &super::cert)
            .await
            .expect("enroll"),
    )
}

fn by() -> AuditEntry {
    AuditEntry::system("test", "", "")
}

/// A manual ticket resolved by a technician with `resolution`.
async fn resolved(store: &SharedStore, host: &str, title: &str, resolution: &str, at: i64) -> i64 {
    let t = store
        .create_ticket(host, title, None, "alice", &by(), at)
        .await
        .expect("ticket");
    store
        .update_ticket(
            t.id,
            &TicketChange::Resolve(resolution.into()),
            "alice",
            &by(),
            at + 1,
        )
        .await
        .expect("update")
        .expect("resolved");
    t.id
}

fn report(host: &str, seq: u64, at: i64, text: &str) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "issues".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at,
        payload: ReportPayload::UserIssue {
            text: text.into(),
            os_user: "bob".into(),
            report_key: None,
            health: serde_json::json!({}),
            reporter_email: None,
        },
    }
}

async fn newest_ticket(store: &SharedStore, host: &str) -> TicketRow {
    store
        .list_tickets(&TicketQuery {
            host_id: Some(host.to_owned()),
            limit: 100,
            ..TicketQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .max_by_key(|t| t.id)
        .expect("a ticket")
}

pub(super) async fn an_opened_ticket_gets_earlier_human_resolutions_and_never_auto_ones(
    db: TestDb,
) {
    let store = db.store.clone();
    let host = enroll(&store, 1).await;
    let outlook = resolved(
        &store,
        &host,
        "Outlook crashes when the calendar opens",
        "Repaired the Office installation",
        1_000,
    )
    .await;
    let vpn = resolved(
        &store,
        &host,
        "VPN drops every hour",
        "Renewed the VPN certificate",
        2_000,
    )
    .await;
    // A ticket that only recovered by itself: it matches the words best,
    // and must never be suggested.
    let auto = store
        .create_ticket(
            &host,
            "Outlook crashes calendar crashes",
            None,
            "system",
            &by(),
            3_000,
        )
        .await
        .expect("ticket")
        .id;
    tamper(
        &db,
        format!(
            "UPDATE tickets SET status = 'resolved', resolved_at_ms = 3001, \
             resolution = '{}' WHERE id = {auto}",
            crate::store::AUTO_RESOLUTION
        ),
    )
    .await;

    store
        .store_reports(
            &[report(
                &host,
                1,
                10_000,
                "Outlook crashes every time I open my calendar",
            )],
            10_000,
        )
        .await
        .expect("store");
    let opened = newest_ticket(&store, &host).await;
    assert_eq!(opened.rule, "user-report");
    let suggestions = store.ticket_suggestions(opened.id).await.expect("read");
    let ids: Vec<i64> = suggestions.iter().map(|s| s.ticket_id).collect();
    assert_eq!(ids.first(), Some(&outlook), "{suggestions:?}");
    assert!(!ids.contains(&auto), "{suggestions:?}");
    assert!(!ids.contains(&vpn), "nothing in common: {suggestions:?}");
    let best = &suggestions[0];
    assert_eq!(best.resolution, "Repaired the Office installation");
    assert_eq!(best.title, "Outlook crashes when the calendar opens");
    assert_eq!(best.reason, "similar text");
    assert!(best.score > 0.0);

    // A ticket that matches nothing gets none, and opens all the same.
    store
        .store_reports(&[report(&host, 2, 11_000, "zzz qqq")], 11_000)
        .await
        .expect("store");
    let nothing = newest_ticket(&store, &host).await;
    assert_ne!(nothing.id, opened.id);
    assert!(
        store
            .ticket_suggestions(nothing.id)
            .await
            .expect("read")
            .is_empty()
    );
}

pub(super) async fn a_rule_ticket_is_suggested_fixes_of_its_rule_and_software(db: TestDb) {
    let store = db.store.clone();
    let host = enroll(&store, 1).await;
    let other = enroll(&store, 2).await;
    // An earlier disk-full on another host, resolved by a technician who
    // named the software; and one that recovered by itself.
    for (h, seq0) in [(&other, 0u64)] {
        for m in 0..12 {
            let at = m * MIN;
            store
                .store_reports(
                    &[disk_sample(
                        h,
                        seq0 + u64::try_from(m).expect("small") + 1,
                        at,
                        95.0,
                    )],
                    at,
                )
                .await
                .expect("store");
        }
    }
    let earlier = newest_ticket(&store, &other).await;
    assert_eq!(earlier.rule, "disk-full");
    store
        .update_ticket(
            earlier.id,
            &TicketChange::Resolve("docker filled /var/lib/docker: ran docker system prune".into()),
            "alice",
            &by(),
            HOUR,
        )
        .await
        .expect("update")
        .expect("resolved");
    // The host upgraded docker the day before its disk filled.
    let inventory = |version: &str| Inventory {
        os: Some(OsInfo {
            hostname: "pc-1".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages: vec![Package {
                ecosystem: "dpkg".into(),
                name: "docker.io".into(),
                version: version.into(),
                arch: "amd64".into(),
                ..Package::default()
            }],
            ..SoftwareInfo::default()
        }),
        ..Inventory::default()
    };
    let t0 = 2 * HOUR;
    store
        .store_reports(&[full_inventory(&host, 1, t0, &inventory("24.0"))], t0)
        .await
        .expect("store");
    store
        .store_reports(
            &[full_inventory(&host, 2, t0 + MIN, &inventory("26.1"))],
            t0 + MIN,
        )
        .await
        .expect("store");
    for m in 0..12 {
        let at = t0 + HOUR + m * MIN;
        store
            .store_reports(
                &[disk_sample(
                    &host,
                    10 + u64::try_from(m).expect("small"),
                    at,
                    95.0,
                )],
                at,
            )
            .await
            .expect("store");
    }
    let opened = newest_ticket(&store, &host).await;
    assert_eq!(opened.rule, "disk-full");
    let suggestions = store.ticket_suggestions(opened.id).await.expect("read");
    assert_eq!(suggestions.len(), 1, "{suggestions:?}");
    assert_eq!(suggestions[0].ticket_id, earlier.id);
    assert!(
        suggestions[0]
            .reason
            .starts_with("same rule and subject: disk-full /")
            && suggestions[0].reason.contains("same software: docker.io"),
        "{}",
        suggestions[0].reason
    );
}

pub(super) async fn hostile_report_text_reaches_the_lookup_only_as_words(db: TestDb) {
    let store = db.store.clone();
    let host = enroll(&store, 1).await;
    resolved(
        &store,
        &host,
        "Printer NEAR the door jams",
        "Cleared the paper path",
        1_000,
    )
    .await;
    for (seq, text) in [
        "\"unbalanced quote NEAR(printer door",
        "printer* OR door: -jams ^start {title}: (x AND",
        "'); DROP TABLE tickets; -- printer \\ door",
        "\u{7f} printer \u{202e}door",
    ]
    .iter()
    .enumerate()
    {
        let seq = u64::try_from(seq).expect("small") + 1;
        let at = 10_000 + i64::try_from(seq).expect("small");
        store
            .store_reports(&[report(&host, seq, at, text)], at)
            .await
            .expect("a hostile report is stored");
        let opened = newest_ticket(&store, &host).await;
        let suggestions = store.ticket_suggestions(opened.id).await.expect("read");
        assert_eq!(
            suggestions.first().map(|s| s.resolution.as_str()),
            Some("Cleared the paper path"),
            "{text:?}"
        );
    }
}

pub(super) async fn change_correlation_counts_other_hosts_with_the_change_and_the_rule_open(
    db: TestDb,
) {
    let store = db.store.clone();
    let hosts = [
        enroll(&store, 1).await,
        enroll(&store, 2).await,
        enroll(&store, 3).await,
        enroll(&store, 4).await,
    ];
    let inventory = |version: &str| Inventory {
        os: Some(OsInfo {
            hostname: "pc".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages: vec![Package {
                ecosystem: "dpkg".into(),
                name: "openssl".into(),
                version: version.into(),
                arch: "amd64".into(),
                ..Package::default()
            }],
            ..SoftwareInfo::default()
        }),
        ..Inventory::default()
    };
    // Every host had 3.0.14; hosts 0-2 upgraded to 3.0.15, host 3 to 3.0.16.
    for (i, host) in hosts.iter().enumerate() {
        let upgraded = if i == 3 { "3.0.16" } else { "3.0.15" };
        store
            .store_reports(&[full_inventory(host, 1, 0, &inventory("3.0.14"))], 0)
            .await
            .expect("store");
        store
            .store_reports(&[full_inventory(host, 2, HOUR, &inventory(upgraded))], HOUR)
            .await
            .expect("store");
    }
    // disk-full fires on hosts 0, 1 and 3 two hours later; host 2 stays fine.
    for (i, host) in hosts.iter().enumerate() {
        let used = if i == 2 { 50.0 } else { 95.0 };
        for m in 0..12 {
            let at = 3 * HOUR + m * MIN;
            store
                .store_reports(
                    &[disk_sample(
                        host,
                        10 + u64::try_from(m).expect("small"),
                        at,
                        used,
                    )],
                    at,
                )
                .await
                .expect("store");
        }
    }
    let ticket = newest_ticket(&store, &hosts[0]).await;
    assert_eq!(ticket.rule, "disk-full");
    let correlation = store.change_correlation(&ticket).await.expect("read");
    assert_eq!(correlation.len(), 1, "{correlation:?}");
    let c = &correlation[0];
    assert_eq!(c.change.item, "package dpkg/openssl:amd64");
    assert_eq!(
        (c.change.old_value.as_deref(), c.change.new_value.as_deref()),
        (Some("3.0.14"), Some("3.0.15"))
    );
    // Host 1 only: host 2 has no ticket, host 3 another version.
    assert_eq!(c.other_hosts, Some(1));
    assert_eq!(
        crate::suggest::correlation_line(c, &ticket.rule, ticket.opened_at_ms),
        "openssl 3.0.14 -> 3.0.15 (2h 10m before) — 1 other host with this change has disk-full open"
    );

    // Once host 1's ticket is resolved, no other host has it firing.
    let other = newest_ticket(&store, &hosts[1]).await;
    store
        .update_ticket(
            other.id,
            &TicketChange::Resolve("freed space".into()),
            "alice",
            &by(),
            4 * HOUR,
        )
        .await
        .expect("update")
        .expect("resolved");
    let correlation = store.change_correlation(&ticket).await.expect("read");
    assert_eq!(correlation[0].other_hosts, Some(0));

    // A manual ticket has no rule to count by; changes older than a day
    // before it are not shown.
    let manual = store
        .create_ticket(&hosts[0], "slow", None, "alice", &by(), HOUR + 30 * MIN)
        .await
        .expect("ticket");
    let correlation = store.change_correlation(&manual).await.expect("read");
    assert_eq!(correlation.len(), 1);
    assert_eq!(correlation[0].other_hosts, None);
    let late = store
        .create_ticket(&hosts[0], "later", None, "alice", &by(), HOUR + 25 * HOUR)
        .await
        .expect("ticket");
    assert!(
        store
            .change_correlation(&late)
            .await
            .expect("read")
            .is_empty()
    );
}
