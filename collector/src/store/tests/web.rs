//! Contract tests of the web console's rows (issue 22): local accounts made
//! once, their password reset and their deletion each audited and ending
//! the account's password sessions; a session found by its secret's hash,
//! holding only while what it was signed in with still works; the latest
//! health of a page of hosts, read at once for the fleet list.

use super::{TestDb, enrolled_host, health_report};
use crate::store::{
    AuditEntry, AuditQuery, NewApiToken, NewLocalUser, NewWebSession, ReportOutcome, ReportPayload,
    Role, SharedStore, StoreError,
};

async fn audited(store: &SharedStore, action: &str) -> usize {
    store
        .list_audit(&AuditQuery {
            action_prefix: Some(action.to_owned()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .len()
}

fn account(name: &str, role: Role, hash: &str) -> NewLocalUser {
    NewLocalUser {
        name: name.into(),
        role,
        password_hash: hash.into(),
    }
}

fn session(id: &str, technician_id: &str, api_token_id: Option<&str>) -> NewWebSession {
    NewWebSession {
        id: id.into(),
        secret_sha256: format!("secret-of-{id}"),
        technician_id: technician_id.into(),
        api_token_id: api_token_id.map(str::to_owned),
        csrf_token: format!("csrf-of-{id}"),
        expires_at_ms: 10_000_000,
    }
}

fn entry(action: &str) -> AuditEntry {
    AuditEntry::system(action, "", "test")
}

pub(super) async fn local_accounts_are_made_once_reset_and_deleted_with_their_sessions(db: TestDb) {
    let store = db.store.clone();
    let made = |_: &String| entry("local-user.create");
    let wendy = store
        .create_local_user(&account("wendy", Role::Technician, "$hash1"), &made, 1)
        .await
        .expect("create");
    let again = store
        .create_local_user(&account("wendy", Role::Technician, "$hash2"), &made, 2)
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict(ref line)) if line.contains("already has")),
        "{again:?}"
    );
    let other_role = store
        .create_local_user(&account("wendy", Role::Admin, "$hash2"), &made, 2)
        .await;
    assert!(matches!(other_role, Err(StoreError::Conflict(_))));
    assert_eq!(audited(&store, "local-user.create").await, 1);

    let login = store
        .local_user_login("wendy")
        .await
        .expect("login")
        .expect("an account");
    assert_eq!(
        (
            login.technician_id.as_str(),
            login.role,
            login.password_hash.as_str()
        ),
        (wendy.as_str(), Role::Technician, "$hash1")
    );
    assert!(
        store
            .local_user_login("nobody")
            .await
            .expect("login")
            .is_none()
    );
    let listed = store.list_local_users().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].created_at_ms),
        ("wendy", 1)
    );

    store
        .create_web_session(&session("s1", &wendy, None), &entry("web.sign-in"), 5)
        .await
        .expect("session");
    let found = store
        .web_session("secret-of-s1", 5)
        .await
        .expect("read")
        .expect("found");
    assert!(found.credential_valid);
    assert_eq!(
        (found.name.as_str(), found.csrf_token.as_str()),
        ("wendy", "csrf-of-s1")
    );

    assert!(
        store
            .set_local_password("wendy", "$hash3", &entry("local-user.password"), 6)
            .await
            .expect("reset")
    );
    assert!(
        store
            .web_session("secret-of-s1", 6)
            .await
            .expect("read")
            .is_none(),
        "a new password ends the password sessions"
    );
    assert_eq!(
        store
            .local_user_login("wendy")
            .await
            .expect("login")
            .expect("account")
            .password_hash,
        "$hash3"
    );
    assert!(
        !store
            .set_local_password("nobody", "$x", &entry("local-user.password"), 6)
            .await
            .expect("no account")
    );
    assert_eq!(audited(&store, "local-user.password").await, 1);

    store
        .create_web_session(&session("s2", &wendy, None), &entry("web.sign-in"), 7)
        .await
        .expect("session");
    assert!(
        store
            .delete_local_user("wendy", &entry("local-user.delete"), 8)
            .await
            .expect("delete")
    );
    assert!(
        store
            .web_session("secret-of-s2", 8)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .local_user_login("wendy")
            .await
            .expect("login")
            .is_none()
    );
    assert!(
        !store
            .delete_local_user("wendy", &entry("local-user.delete"), 9)
            .await
            .expect("gone")
    );
    assert_eq!(audited(&store, "local-user.delete").await, 1);
    assert_eq!(audited(&store, "web.sign-in").await, 2);
}

pub(super) async fn a_web_session_holds_while_its_api_token_works(db: TestDb) {
    let store = db.store.clone();
    let technician = store
        .create_api_token(
            &NewApiToken {
                technician_name: "vic".into(),
                role: Role::Viewer,
                token_id: "tok-1".into(),
                token_sha256: crate::secrets::token_hash("t1"),
                expires_at_ms: Some(1_000),
            },
            &|_: &String| entry("api-token.create"),
            0,
        )
        .await
        .expect("token");
    store
        .create_web_session(
            &session("s1", &technician, Some("tok-1")),
            &entry("web.sign-in"),
            10,
        )
        .await
        .expect("session");
    let at = |now: i64| {
        let store = store.clone();
        async move {
            store
                .web_session("secret-of-s1", now)
                .await
                .expect("read")
                .expect("found")
        }
    };
    let live = at(10).await;
    assert!(live.credential_valid);
    assert_eq!(
        (
            live.role,
            live.api_token_id.as_deref(),
            live.last_seen_at_ms
        ),
        (Role::Viewer, Some("tok-1"), 10)
    );
    assert!(!at(1_000).await.credential_valid, "the token expired");

    assert!(
        !store.touch_web_session("s1", 30).await.expect("touch"),
        "within the minute"
    );
    assert!(store.touch_web_session("s1", 70_010).await.expect("touch"));
    assert_eq!(at(70_010).await.last_seen_at_ms, 70_010);

    assert!(
        store
            .web_session("secret-of-nothing", 10)
            .await
            .expect("read")
            .is_none()
    );
    assert!(store.delete_web_session("s1").await.expect("delete"));
    assert!(!store.delete_web_session("s1").await.expect("gone"));
    assert!(
        store
            .web_session("secret-of-s1", 10)
            .await
            .expect("read")
            .is_none()
    );

    // A sign-in clears the sessions past their absolute expiry.
    store
        .create_web_session(
            &session("s2", &technician, Some("tok-1")),
            &entry("web.sign-in"),
            20,
        )
        .await
        .expect("session");
    store
        .create_web_session(
            &session("s3", &technician, Some("tok-1")),
            &entry("web.sign-in"),
            10_000_001,
        )
        .await
        .expect("session");
    assert!(
        store
            .web_session("secret-of-s2", 20)
            .await
            .expect("read")
            .is_none()
    );
}

pub(super) async fn the_latest_health_of_a_page_of_hosts_is_read_at_once(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    assert!(
        store
            .latest_health(&[host.as_str()])
            .await
            .expect("read")
            .is_empty(),
        "no sample yet"
    );
    let mut report = health_report(&host, 1, 5_000, 10.0, 20.0);
    if let ReportPayload::Health { encoded, .. } = &mut report.payload {
        *encoded = b"the sample".to_vec();
    }
    let stored = store.store_reports(&[report], 6_000).await.expect("store");
    assert_eq!(stored, vec![ReportOutcome::Stored]);
    let latest = store
        .latest_health(&[host.as_str(), "no-such-host"])
        .await
        .expect("read");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest.get(&host), Some(&(b"the sample".to_vec(), 5_000)));
    assert!(store.latest_health(&[]).await.expect("read").is_empty());
}

pub(super) async fn presence_by_os_counts_as_is_online_decides(db: TestDb) {
    let store = db.store.clone();
    let host = enrolled_host(&store).await;
    let stored = store
        .store_reports(&[health_report(&host, 1, 5_000, 10.0, 20.0)], 6_000)
        .await
        .expect("store");
    assert_eq!(stored, vec![ReportOutcome::Stored]);
    for now in [6_000, 6_001, 100_000, 10_000_000] {
        let rows = store
            .list_hosts(&crate::store::HostQuery::default(), None, 100)
            .await
            .expect("hosts");
        let online = rows.iter().filter(|h| h.is_online(now)).count();
        let counted = store.presence_by_os(now).await.expect("counts");
        let total: u64 = counted.iter().map(|(_, n, _)| n).sum();
        let up: u64 = counted.iter().map(|(_, _, up)| up).sum();
        assert_eq!(total, 1, "{counted:?}");
        assert_eq!(up, online as u64, "at {now}: {counted:?} against {rows:?}");
    }
}
