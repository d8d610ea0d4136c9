//! The store's part of CA rotation (docs/ca-rotation.md), on both
//! backends: the CA rows, which CA issued each host's certificate, and
//! retiring only when no host is left on the old CA, or when forced.

use super::*;

fn ca(sha256: &str, state: CaState) -> FleetCa {
    FleetCa {
        sha256: sha256.into(),
        cert_pem: format!("PEM of {sha256}"),
        sealed_key: (sha256 != "ca-1").then(|| "v1:sealed".to_owned()),
        sealed_by: (sha256 != "ca-1").then(|| "ca-1".to_owned()),
        state,
        created_at_ms: 10,
        expires_at_ms: 1_000_000,
        retired_at_ms: None,
        hosts: 0,
    }
}

fn entry(action: &str, subject: &str) -> AuditEntry {
    AuditEntry {
        technician_id: None,
        token_id: None,
        action: action.into(),
        subject: subject.into(),
        detail: String::new(),
    }
}

fn states(cas: &[FleetCa]) -> Vec<(String, CaState, u64)> {
    cas.iter()
        .map(|ca| (ca.sha256.clone(), ca.state, ca.hosts))
        .collect()
}

fn conflict(error: StoreError) -> String {
    match error {
        StoreError::Conflict(line) => {
            assert!(!line.contains('\n'), "one line: {line}");
            line
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub(super) async fn a_ca_rotation_moves_hosts_over_and_retires_the_old_ca_only_when_empty_or_forced(
    db: TestDb,
) {
    let store = db.store.clone();
    assert!(store.fleet_cas().await.expect("list").is_empty());
    assert_eq!(
        store.record_fleet_ca("ca-1").await.expect("record"),
        CaRecord::Recorded
    );
    assert!(
        store
            .record_first_fleet_ca(&ca("ca-1", CaState::Active))
            .await
            .expect("first")
    );
    // Only ever the first: a second replica's call writes nothing.
    assert!(
        !store
            .record_first_fleet_ca(&ca("ca-x", CaState::Active))
            .await
            .expect("again")
    );
    let host = enrolled_host(&store).await;
    assert_eq!(
        states(&store.fleet_cas().await.expect("list")),
        vec![("ca-1".into(), CaState::Active, 1)]
    );

    let nothing = store
        .retire_fleet_ca(false, "test", 20)
        .await
        .expect_err("nothing to retire");
    assert!(conflict(nothing).contains("nothing to retire"));
    let stale = store
        .rotate_fleet_ca(
            "ca-x",
            &ca("ca-2", CaState::Active),
            &entry("ca.rotate", "ca-2"),
            20,
        )
        .await
        .expect_err("not the active CA");
    assert!(conflict(stale).contains("not this data dir's"));

    let head = store.audit_head().await.expect("head").seq;
    store
        .rotate_fleet_ca(
            "ca-1",
            &ca("ca-2", CaState::Active),
            &entry("ca.rotate", "ca-2"),
            30,
        )
        .await
        .expect("rotate");
    assert_eq!(
        store.audit_head().await.expect("head").seq,
        head + 1,
        "audited"
    );
    assert_eq!(
        states(&store.fleet_cas().await.expect("list")),
        vec![
            ("ca-1".into(), CaState::Old, 1),
            ("ca-2".into(), CaState::Active, 0)
        ]
    );
    // D2's fingerprint follows the active CA.
    assert_eq!(
        store.record_fleet_ca("ca-2").await.expect("record"),
        CaRecord::Matches
    );
    let twice = store
        .rotate_fleet_ca(
            "ca-2",
            &ca("ca-3", CaState::Active),
            &entry("ca.rotate", "ca-3"),
            40,
        )
        .await
        .expect_err("a rotation is in progress");
    assert!(conflict(twice).contains("already in progress"));

    // The host still holds a certificate from the old CA.
    assert_eq!(
        store
            .retire_fleet_ca(false, "test", 50)
            .await
            .expect("refused"),
        CaRetirement::HostsRemain {
            sha256: "ca-1".into(),
            hosts: 1
        }
    );
    assert_eq!(
        store.fleet_cas().await.expect("list")[0].state,
        CaState::Old
    );

    // It renews onto the new CA: counted on the old one until it uses it.
    let next = HostCert {
        cert_pem: "renewed".into(),
        serial_hex: "02".into(),
        sha256_hex: "sha-renewed".into(),
        ca_sha256: "ca-2".into(),
    };
    let current = format!("sha-{host}");
    assert!(
        store
            .record_cert_renewal(&host, &current, &next, 60)
            .await
            .expect("renew")
    );
    assert_eq!(store.fleet_cas().await.expect("list")[0].hosts, 1);
    assert_eq!(
        store
            .present_host_cert(&host, "sha-renewed")
            .await
            .expect("present"),
        CertStanding::Renewed
    );
    assert_eq!(
        states(&store.fleet_cas().await.expect("list")),
        vec![
            ("ca-1".into(), CaState::Old, 0),
            ("ca-2".into(), CaState::Active, 1)
        ]
    );
    assert_eq!(
        store
            .retire_fleet_ca(false, "test", 70)
            .await
            .expect("retire"),
        CaRetirement::Done {
            sha256: "ca-1".into(),
            hosts: 0
        }
    );
    let cas = store.fleet_cas().await.expect("list");
    assert_eq!(cas[0].state, CaState::Retired);
    assert_eq!(cas[0].retired_at_ms, Some(70));
    assert_eq!(cas[1].sealed_key.as_deref(), Some("v1:sealed"));
    assert_eq!(cas[1].sealed_by.as_deref(), Some("ca-1"));

    // A second rotation, retired by force with the host still on it.
    store
        .rotate_fleet_ca(
            "ca-2",
            &ca("ca-3", CaState::Active),
            &entry("ca.rotate", "ca-3"),
            80,
        )
        .await
        .expect("rotate again");
    assert_eq!(
        store
            .retire_fleet_ca(true, "test", 90)
            .await
            .expect("forced"),
        CaRetirement::Done {
            sha256: "ca-2".into(),
            hosts: 1
        }
    );
    assert_eq!(
        states(&store.fleet_cas().await.expect("list")),
        vec![
            ("ca-1".into(), CaState::Retired, 0),
            ("ca-2".into(), CaState::Retired, 1),
            ("ca-3".into(), CaState::Active, 0)
        ]
    );
}
