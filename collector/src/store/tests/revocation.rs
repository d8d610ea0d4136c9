//! Contract tests of revocation (issue 20): hosts, API tokens and
//! enrollment tokens, each revoked once with its audit entry, and refused
//! from then on.

use super::{TestDb, cert, host_id, request, token};
use crate::store::{
    AuditEntry, AuditQuery, CertStanding, EnrollOutcome, HostCert, NewApiToken, NewEnrollmentToken,
    RevokeOutcome, Revoked, Role, SharedStore, TokenCheck,
};

fn entry(action: &str, subject: &str) -> AuditEntry {
    AuditEntry::system(action, subject, "test")
}

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

pub(super) async fn a_revoked_host_is_refused_with_every_certificate(db: TestDb) {
    let store = db.store.clone();
    token(&store, "t", 1_000_000, 2).await;
    let host = host_id(
        &store
            .enroll(&request("t", ""), 0, &cert)
            .await
            .expect("enroll"),
    );
    let current = format!("sha-{host}");
    let next = HostCert {
        cert_pem: "renewed".into(),
        serial_hex: "02".into(),
        sha256_hex: "sha-renewed".into(),
        ca_sha256: "ca-1".into(),
    };
    assert!(
        store
            .record_cert_renewal(&host, &current, &next, 1)
            .await
            .expect("renew")
    );
    let revoked = store
        .revoke_host(&host, "admin", "stolen", &entry("host.revoke", &host), 100)
        .await
        .expect("revoke");
    assert_eq!(revoked, RevokeOutcome::Revoked);
    for sha in [current.as_str(), "sha-renewed", "sha-other"] {
        assert_eq!(
            store.present_host_cert(&host, sha).await.expect("present"),
            CertStanding::Revoked { at_ms: 100 },
            "{sha}"
        );
    }
    assert!(
        !store
            .record_cert_renewal(&host, &current, &next, 101)
            .await
            .expect("renew"),
        "a revoked host renews nothing"
    );
    let detail = store
        .host_detail(&host)
        .await
        .expect("detail")
        .expect("host");
    let revocation = detail.revoked.expect("revoked");
    assert_eq!(
        (
            revocation.at_ms,
            revocation.by.as_str(),
            revocation.reason.as_str()
        ),
        (100, "admin", "stolen")
    );
    assert_eq!(
        store
            .revoke_host(&host, "admin", "", &entry("host.revoke", &host), 200)
            .await
            .expect("again"),
        RevokeOutcome::AlreadyRevoked(100)
    );
    assert_eq!(
        store
            .revoke_host("no-such", "admin", "", &entry("host.revoke", "x"), 200)
            .await
            .expect("unknown"),
        RevokeOutcome::Unknown
    );
    assert_eq!(audited(&store, "host.revoke").await, 1, "audited once");
    assert_eq!(
        store.revoked_since(100).await.expect("since"),
        vec![Revoked::Host(host.clone())]
    );
    assert!(store.revoked_since(101).await.expect("since").is_empty());

    // A re-link token cannot bring it back, and is not spent trying.
    let relink = NewEnrollmentToken {
        id: uuid::Uuid::new_v4().to_string(),
        token_sha256: crate::secrets::token_hash("r"),
        expires_at_ms: 1_000_000,
        uses: 1,
        created_by: "test".into(),
        relink_host: Some(host.clone()),
    };
    store
        .create_enrollment_token(&relink, &entry("enrollment-token.create", "r"), 0)
        .await
        .expect("token");
    assert_eq!(
        store
            .enroll(&request("r", ""), 300, &cert)
            .await
            .expect("enroll"),
        EnrollOutcome::RelinkHostRevoked
    );
    assert_eq!(
        store
            .enrollment_token_refusal(&crate::secrets::token_hash("r"), 300)
            .await
            .expect("check"),
        None,
        "the token itself is still usable"
    );
}

pub(super) async fn api_tokens_expire_are_revoked_and_the_last_admin_stays(db: TestDb) {
    let store = db.store.clone();
    let make = |name: &str, role: Role, secret: &str, expires_at_ms: Option<i64>| NewApiToken {
        technician_name: name.into(),
        role,
        token_id: format!("id-{secret}"),
        token_sha256: crate::secrets::token_hash(secret),
        expires_at_ms,
    };
    let create = |token: NewApiToken| {
        let store = store.clone();
        async move {
            store
                .create_api_token(&token, &|_: &String| entry("api-token.create", ""), 0)
                .await
                .expect("create");
        }
    };
    create(make("root", Role::Admin, "a", None)).await;
    create(make("tina", Role::Technician, "t", Some(1_000))).await;
    let check = |secret: &str, now: i64| {
        let store = store.clone();
        let hash = crate::secrets::token_hash(secret);
        async move { store.authenticate(&hash, now).await.expect("auth") }
    };
    let TokenCheck::Valid(tina) = check("t", 999).await else {
        panic!("tina's token works before its expiry");
    };
    assert_eq!(tina.expires_at_ms, Some(1_000));
    assert_eq!(check("t", 1_000).await, TokenCheck::Expired(1_000));
    assert_eq!(check("nope", 0).await, TokenCheck::Unknown);

    // The last use is written at most once a minute.
    assert!(store.touch_api_token("id-t", 10_000).await.expect("touch"));
    assert!(!store.touch_api_token("id-t", 40_000).await.expect("touch"));
    assert!(store.touch_api_token("id-t", 70_000).await.expect("touch"));
    let list = store.list_api_tokens().await.expect("list");
    let row = list.iter().find(|t| t.id == "id-t").expect("listed");
    assert_eq!(
        (
            row.technician.as_str(),
            row.role,
            row.last_used_at_ms,
            row.expires_at_ms
        ),
        ("tina", Role::Technician, Some(70_000), Some(1_000))
    );

    // The last working admin token stays; an expired admin token does not
    // count as another.
    let revoke = |id: &str, now: i64| {
        let store = store.clone();
        let id = id.to_owned();
        async move {
            store
                .revoke_api_token(&id, "root", &entry("api-token.revoke", &id), now)
                .await
                .expect("revoke")
        }
    };
    assert_eq!(revoke("id-a", 2_000).await, RevokeOutcome::LastAdmin);
    create(make("old", Role::Admin, "o", Some(1_500))).await;
    assert_eq!(revoke("id-a", 2_000).await, RevokeOutcome::LastAdmin);
    assert_eq!(
        revoke("id-o", 2_000).await,
        RevokeOutcome::Revoked,
        "an expired admin token may go"
    );
    create(make("second", Role::Admin, "s", None)).await;
    assert_eq!(revoke("id-a", 3_000).await, RevokeOutcome::Revoked);
    assert_eq!(check("a", 3_000).await, TokenCheck::Revoked);
    assert_eq!(
        revoke("id-a", 4_000).await,
        RevokeOutcome::AlreadyRevoked(3_000)
    );
    assert_eq!(revoke("id-none", 4_000).await, RevokeOutcome::Unknown);
    assert_eq!(revoke("id-s", 4_000).await, RevokeOutcome::LastAdmin);
    assert_eq!(audited(&store, "api-token.revoke").await, 2);
    let list = store.list_api_tokens().await.expect("list");
    let root = list.iter().find(|t| t.id == "id-a").expect("listed");
    assert_eq!(
        (root.revoked_at_ms, root.revoked_by.as_deref()),
        (Some(3_000), Some("root"))
    );
    let since = store.revoked_since(3_000).await.expect("since");
    assert_eq!(since, vec![Revoked::ApiToken("id-a".into())]);
}

pub(super) async fn a_revoked_enrollment_token_enrolls_nothing(db: TestDb) {
    let store = db.store.clone();
    token(&store, "e", 1_000_000, 3).await;
    let listed = store.list_enrollment_tokens(10).await.expect("list");
    assert_eq!(listed.len(), 1);
    let id = listed[0].id.clone();
    assert_eq!((listed[0].uses_allowed, listed[0].uses_left), (3, 3));
    assert_eq!(listed[0].revoked_at_ms, None);
    let revoke = |now: i64| {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .revoke_enrollment_token(&id, "root", &entry("enrollment-token.revoke", &id), now)
                .await
                .expect("revoke")
        }
    };
    assert_eq!(revoke(50).await, RevokeOutcome::Revoked);
    assert_eq!(revoke(60).await, RevokeOutcome::AlreadyRevoked(50));
    assert_eq!(
        store
            .enrollment_token_refusal(&crate::secrets::token_hash("e"), 100)
            .await
            .expect("check"),
        Some(EnrollOutcome::RevokedToken)
    );
    assert_eq!(
        store
            .enroll(&request("e", ""), 100, &cert)
            .await
            .expect("enroll"),
        EnrollOutcome::RevokedToken
    );
    let listed = store.list_enrollment_tokens(10).await.expect("list");
    assert_eq!(
        (
            listed[0].revoked_at_ms,
            listed[0].revoked_by.as_deref(),
            listed[0].uses_left
        ),
        (Some(50), Some("root"), 3)
    );
    assert_eq!(
        store
            .revoke_enrollment_token("nope", "root", &entry("x", "y"), 70)
            .await
            .expect("unknown"),
        RevokeOutcome::Unknown
    );
    assert_eq!(audited(&store, "enrollment-token.revoke").await, 1);
}
