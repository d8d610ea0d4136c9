//! Contract tests of issue 21's lookups and ticket fixes: software filters
//! without regard to case, with `*` globs and the versions they matched;
//! the OS filter on the codename; jobs by the start of their id; tickets
//! assigned only to technicians who exist; a reopened ticket without its
//! old resolution.

use super::{
    TestDb, cert, enrolled_host, host_id, inventory_report, ping_job, pkg, request, token,
};
use crate::store::{
    AuditEntry, HostQuery, InventoryFacts, NewApiToken, Role, SharedStore, SoftwareMatch,
    TicketChange, TicketRefusal, VersionOp,
};

/// Makes `name` a technician with `role`, as `token create` does.
pub(super) async fn technician(store: &SharedStore, name: &str, role: Role) {
    store
        .create_api_token(
            &NewApiToken {
                technician_name: name.into(),
                role,
                token_id: format!("id-{name}"),
                token_sha256: crate::secrets::token_hash(&format!("dpt_{name}")),
                expires_at_ms: None,
            },
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("technician");
}

fn software(name: &str, compare: Option<(VersionOp, &str)>) -> HostQuery {
    HostQuery {
        software: Some((name.into(), compare.map(|(op, v)| (op, v.to_owned())))),
        ..HostQuery::default()
    }
}

/// The hosts a query finds, each with the packages it matched as
/// "name version", in the store's order.
async fn found(store: &SharedStore, query: &HostQuery) -> Vec<(String, Vec<String>)> {
    let hosts = store.list_hosts(query, None, 100).await.expect("list");
    let ids: Vec<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
    let matches = store.matching_software(&ids, query).await.expect("matches");
    hosts
        .iter()
        .map(|h| {
            let names = matches
                .iter()
                .filter(|m: &&SoftwareMatch| m.host_id == h.id)
                .map(|m| format!("{} {}", m.name, m.version))
                .collect();
            (h.hostname.clone(), names)
        })
        .collect()
}

pub(super) async fn software_filters_ignore_case_take_globs_and_name_the_versions(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", i64::MAX, 3).await;
    let mut hosts = Vec::new();
    for uuid in ["a", "b", "c"] {
        hosts.push(host_id(
            &store
                .enroll(&request("t", uuid), 0, &cert)
                .await
                .expect("enroll"),
        ));
    }
    let facts = |packages| InventoryFacts {
        packages,
        ..InventoryFacts::default()
    };
    // Host names come from the report's seq: pc-1, pc-2, pc-3.
    store
        .store_reports(
            &[
                inventory_report(
                    &hosts[0],
                    1,
                    facts(vec![
                        pkg("dpkg", "libssl3", "3.0.11-1~deb12u2"),
                        pkg("dpkg", "libssl1.1", "1.1.1w-0+deb11u1"),
                        pkg("dpkg", "lib_odd", "1"),
                    ]),
                ),
                inventory_report(
                    &hosts[1],
                    2,
                    facts(vec![
                        pkg("windows", "OpenSSL", "3.1.4"),
                        pkg("dpkg", "libXodd", "1"),
                    ]),
                ),
                inventory_report(
                    &hosts[2],
                    3,
                    facts(vec![pkg("dpkg", "libssl3", "3.0.13-1~deb12u1")]),
                ),
            ],
            10,
        )
        .await
        .expect("store");

    // Any case, either way round.
    assert_eq!(
        found(&store, &software("openssl", None)).await,
        [("pc-2".to_owned(), vec!["OpenSSL 3.1.4".to_owned()])]
    );
    assert_eq!(found(&store, &software("OPENSSL", None)).await.len(), 1);
    // A glob, with each host's matching versions.
    assert_eq!(
        found(&store, &software("libssl*", None)).await,
        [
            (
                "pc-1".to_owned(),
                vec![
                    "libssl1.1 1.1.1w-0+deb11u1".to_owned(),
                    "libssl3 3.0.11-1~deb12u2".to_owned()
                ]
            ),
            (
                "pc-3".to_owned(),
                vec!["libssl3 3.0.13-1~deb12u1".to_owned()]
            ),
        ]
    );
    // Still with a version rule: only the packages below it are named.
    assert_eq!(
        found(
            &store,
            &software("LibSSL*", Some((VersionOp::Less, "3.0.13")))
        )
        .await,
        [(
            "pc-1".to_owned(),
            vec![
                "libssl1.1 1.1.1w-0+deb11u1".to_owned(),
                "libssl3 3.0.11-1~deb12u2".to_owned()
            ]
        )]
    );
    assert_eq!(
        found(&store, &software("*ssl3", None)).await.len(),
        2,
        "a glob may start with *"
    );
    // `_` and `%` are themselves, in names and in globs.
    assert_eq!(
        found(&store, &software("lib_odd", None)).await,
        [("pc-1".to_owned(), vec!["lib_odd 1".to_owned()])]
    );
    assert_eq!(
        found(&store, &software("lib_o*", None)).await,
        [("pc-1".to_owned(), vec!["lib_odd 1".to_owned()])]
    );
    assert!(found(&store, &software("lib%", None)).await.is_empty());
    assert!(found(&store, &software("libssl", None)).await.is_empty());
    // Without a software filter nothing is matched.
    assert!(
        store
            .matching_software(&[hosts[0].as_str()], &HostQuery::default())
            .await
            .expect("none")
            .is_empty()
    );
}

pub(super) async fn the_os_filter_finds_a_codename(db: TestDb) {
    use deskpulse_proto::v1::{Inventory, OsInfo};
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let inventory = Inventory {
        os: Some(OsInfo {
            name: "Debian GNU/Linux".into(),
            version: "12".into(),
            build: "12 (bookworm)".into(),
            ..OsInfo::default()
        }),
        ..Inventory::default()
    };
    let facts = crate::facts::inventory_facts(&inventory);
    store
        .store_reports(&[inventory_report(&host, 1, facts)], 10)
        .await
        .expect("store");
    let os = |text: &str| HostQuery {
        os: Some(text.into()),
        ..HostQuery::default()
    };
    for text in ["bookworm", "debian gnu/linux 12", "linux 12 (book"] {
        assert_eq!(
            store
                .list_hosts(&os(text), None, 10)
                .await
                .expect("list")
                .len(),
            1,
            "{text}"
        );
    }
    for text in ["bullseye", "12 (12", "debian_gnu"] {
        assert!(
            store
                .list_hosts(&os(text), None, 10)
                .await
                .expect("list")
                .is_empty(),
            "{text}"
        );
    }
}

pub(super) async fn jobs_are_found_by_a_unique_start_of_their_id(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    for id in [
        "3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60",
        "3f2a0000-0b7d-4c1a-9e2f-1d2c3b4a5f61",
        "7c000000-0000-4000-8000-000000000001",
    ] {
        store
            .create_job(&ping_job(&host, id, 100_000), 1_000)
            .await
            .expect("create");
    }
    let starting = |prefix: &'static str, limit| {
        let store = store.clone();
        async move {
            store
                .job_ids_with_prefix(prefix, limit)
                .await
                .expect("prefix")
        }
    };
    assert_eq!(
        starting("7c00", 10).await,
        ["7c000000-0000-4000-8000-000000000001"]
    );
    assert_eq!(
        starting("3f2a", 10).await,
        [
            "3f2a0000-0b7d-4c1a-9e2f-1d2c3b4a5f61",
            "3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60"
        ]
    );
    assert_eq!(starting("3f2a", 1).await.len(), 1, "at most the limit");
    assert_eq!(
        starting("3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60", 10).await,
        ["3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60"]
    );
    assert!(starting("3f2b", 10).await.is_empty());
    assert!(starting("3f2%", 10).await.is_empty(), "% is no wildcard");
    assert!(starting("3f2_", 10).await.is_empty(), "_ is no wildcard");
}

pub(super) async fn tickets_go_only_to_technicians_who_exist(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    technician(&store, "alice", Role::Technician).await;
    technician(&store, "val", Role::Viewer).await;
    let ticket = store
        .create_ticket(
            &host,
            "printer",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            1,
        )
        .await
        .expect("create");
    let assign = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .update_ticket(
                    ticket.id,
                    &TicketChange::Assign(name.into()),
                    "alice",
                    &crate::store::AuditEntry::system("test", "", ""),
                    2,
                )
                .await
                .expect("update")
        }
    };
    match assign("bob").await {
        Err(TicketRefusal::Invalid(why)) => {
            assert!(why.contains("no technician named \"bob\""), "{why}");
        }
        other => panic!("assigned to a technician who does not exist: {other:?}"),
    }
    match assign("val").await {
        Err(TicketRefusal::Invalid(why)) => assert!(why.contains("viewer"), "{why}"),
        other => panic!("assigned to a viewer: {other:?}"),
    }
    // Refused changes leave the ticket as it was.
    let (row, log) = store.ticket(ticket.id).await.expect("get").expect("found");
    assert_eq!((row.assignee, row.status.as_str()), (None, "new"));
    assert_eq!(log.len(), 1, "{log:?}");
    let assigned = assign("alice").await.expect("a technician");
    assert_eq!(assigned.assignee.as_deref(), Some("alice"));
}

pub(super) async fn a_ticket_reopened_by_hand_has_no_current_resolution(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let ticket = store
        .create_ticket(
            &host,
            "VPN drops",
            None,
            "alice",
            &AuditEntry::system("", "", ""),
            1,
        )
        .await
        .expect("create");
    let change = |c: TicketChange, at: i64| {
        let store = store.clone();
        async move {
            store
                .update_ticket(
                    ticket.id,
                    &c,
                    "alice",
                    &crate::store::AuditEntry::system("test", "", ""),
                    at,
                )
                .await
                .expect("update")
                .expect("applies")
        }
    };
    change(TicketChange::Resolve("renewed the certificate".into()), 2).await;
    let reopened = change(TicketChange::Reopen, 3).await;
    assert_eq!(
        (
            reopened.status.as_str(),
            reopened.resolution,
            reopened.resolved_at_ms
        ),
        ("open", None, None)
    );
    // The old resolution is history: it stays in the worklog.
    let (_, log) = store.ticket(ticket.id).await.expect("get").expect("found");
    assert!(
        log.iter()
            .any(|e| e.note == "resolved: renewed the certificate"),
        "{log:?}"
    );
    // Resolved again, it shows and is found by the new resolution only.
    let again = change(TicketChange::Resolve("reissued the profile".into()), 4).await;
    assert_eq!(again.resolution.as_deref(), Some("reissued the profile"));
    let hits = store
        .search_kb(&["reissued".to_owned()], 10, false)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].resolution, "reissued the profile");
}
