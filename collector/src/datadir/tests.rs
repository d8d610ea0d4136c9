//! The data dir: idempotent init with a private admin token written once,
//! the server certificate reused until a new name is asked for, and a CA
//! that is not the fleet's refused as a config error.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::clock::SystemClock;
use crate::config::{StoreConfig, default_database_url};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        database_url: default_database_url(dir),
    }
}

#[tokio::test]
async fn init_is_idempotent_and_the_admin_token_is_private_and_written_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("data");
    let first = DataDir::open(&config(&root), &SystemClock)
        .await
        .expect("first open");
    let token = fs::read_to_string(root.join(INITIAL_ADMIN_TOKEN)).expect("token file");
    let mode = fs::metadata(root.join(INITIAL_ADMIN_TOKEN))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key_mode = fs::metadata(root.join(CA_KEY))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let caller = first
        .store
        .authenticate(&secrets::token_hash(&token), 0)
        .await
        .expect("auth")
        .caller()
        .expect("the token works");
    assert_eq!(caller.role, Role::Admin);
    let fingerprint = first.ca.active.fingerprint();
    drop(first);

    let second = DataDir::open(&config(&root), &SystemClock)
        .await
        .expect("second open");
    assert_eq!(
        second.ca.active.fingerprint(),
        fingerprint,
        "the CA is reused"
    );
    assert_eq!(
        fs::read_to_string(root.join(INITIAL_ADMIN_TOKEN)).expect("token"),
        token,
        "the admin token is not remade"
    );
}

#[tokio::test]
async fn the_server_certificate_is_reused_until_a_new_name_is_asked_for() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = DataDir::open(&config(tmp.path()), &SystemClock)
        .await
        .expect("open");
    let now = SystemClock.now_ms();
    let first = dir.server_identity(&[], now).expect("first");
    let again = dir.server_identity(&[], now).expect("again");
    assert_eq!(first.cert_pem, again.cert_pem);
    let named = dir
        .server_identity(&["collector.corp.example".into()], now)
        .expect("named");
    assert_ne!(named.cert_pem, first.cert_pem);
    let (names, _) = pki::names_and_expiry(&named.cert_pem).expect("names");
    assert!(names.contains(&"collector.corp.example".to_string()));
    assert!(names.contains(&"127.0.0.1".to_string()));
    // Near expiry it is reissued even with the same names.
    let later = now + 400 * 24 * 3600 * 1000;
    let renewed = dir
        .server_identity(&["collector.corp.example".into()], later)
        .expect("renewed");
    assert_ne!(renewed.cert_pem, named.cert_pem);
}

#[tokio::test]
async fn a_data_dir_whose_ca_is_not_the_fleet_ca_is_a_config_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let shared_db = default_database_url(&tmp.path().join("shared"));
    fs::create_dir_all(tmp.path().join("shared")).expect("mkdir");
    let replica = |name: &str| StoreConfig {
        data_dir: tmp.path().join(name),
        database_url: shared_db.clone(),
    };
    DataDir::open(&replica("a"), &SystemClock)
        .await
        .expect("first replica");
    let error = DataDir::open(&replica("b"), &SystemClock)
        .await
        .expect_err("a second CA must be refused");
    assert!(error.is_config());
    assert!(error.to_string().contains("ca import"), "{error}");

    // Importing the fleet CA into the second replica fixes it.
    let a = tmp.path().join("a");
    let cert = fs::read_to_string(a.join(CA_CERT)).expect("cert");
    let key = fs::read_to_string(a.join(CA_KEY)).expect("key");
    let other_key = fs::read_to_string(tmp.path().join("b").join(CA_KEY)).expect("key");
    assert!(
        import_ca(&tmp.path().join("b"), &cert, &other_key).is_err(),
        "a mismatched pair is refused"
    );
    import_ca(&tmp.path().join("b"), &cert, &key).expect("import");
    let b = DataDir::open(&replica("b"), &SystemClock)
        .await
        .expect("b opens now");
    assert_eq!(b.ca.active.cert_pem(), cert);
}

/// Issue 20: a data dir that holds a fleet (its CA) beside a database that
/// holds none lost its database; opening it must not make a new, empty
/// fleet with a new admin token, unless `serve --init` asks for one.
#[tokio::test]
async fn a_data_dir_whose_database_was_lost_is_refused_unless_a_new_fleet_is_asked_for() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("data");
    let first = DataDir::open(&config(&root), &SystemClock)
        .await
        .expect("first open");
    first
        .store
        .append_audit(
            &crate::store::AuditEntry {
                technician_id: None,
                token_id: None,
                action: "enrollment-token.create".into(),
                subject: "t".into(),
                detail: "by test".into(),
            },
            1_000,
        )
        .await
        .expect("audit");
    first
        .audit
        .anchor_or_warn(first.store.as_ref(), 1_000)
        .await;
    drop(first);
    let token = fs::read_to_string(root.join(INITIAL_ADMIN_TOKEN)).expect("token");
    for file in ["deskpulse.db", "deskpulse.db-wal", "deskpulse.db-shm"] {
        let _ = fs::remove_file(root.join(file));
    }

    let error = DataDir::open(&config(&root), &SystemClock)
        .await
        .expect_err("a lost database is refused");
    let text = error.to_string();
    assert!(matches!(error, DataDirError::StoreLost { .. }), "{text}");
    assert!(
        text.contains("restore") && text.contains("--init"),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(root.join(INITIAL_ADMIN_TOKEN)).expect("token"),
        token,
        "no new admin token"
    );

    let fresh = DataDir::open_with(&config(&root), &SystemClock, true)
        .await
        .expect("--init starts a new fleet");
    assert_ne!(
        fs::read_to_string(root.join(INITIAL_ADMIN_TOKEN)).expect("token"),
        token
    );
    let verified = fresh
        .audit
        .verify(fresh.store.as_ref())
        .await
        .expect("verify");
    assert_eq!(
        verified.problem, None,
        "the old chain's anchors were set aside"
    );
}
