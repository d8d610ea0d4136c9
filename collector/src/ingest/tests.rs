//! The writer's batching and its answers to each submitter.

use std::sync::Arc;

use super::Ingest;
use crate::clock::ManualClock;
use crate::store::{
    self, EnrollOutcome, EnrollRequest, HealthReading, HostCert, IncomingReport,
    NewEnrollmentToken, ReportOutcome, ReportPayload, SharedStore,
};

async fn enrolled(store: &SharedStore) -> String {
    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                id: "t".into(),
                token_sha256: "t".into(),
                expires_at_ms: i64::MAX,
                uses: 1,
                created_by: "test".into(),
                relink_host: None,
            },
            &crate::store::AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("token");
    let cert = |_: &str| {
        Ok(HostCert {
            cert_pem: String::new(),
            serial_hex: "01".into(),
            sha256_hex: "00".into(),
            ca_sha256: "ca-1".into(),
        })
    };
    let request = EnrollRequest {
        token_sha256: "t".into(),
        hostname: "pc".into(),
        hardware_uuid: String::new(),
        hardware_serial: String::new(),
        source_addr: String::new(),
        csr_der: Vec::new(),
    };
    match store.enroll(&request, 0, &cert).await.expect("enroll") {
        EnrollOutcome::Enrolled { host_id, .. } => host_id,
        other => panic!("enrollment refused: {other:?}"),
    }
}

fn health(host: &str, seq: u64, free: f32) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "s".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: 1_000 * i64::try_from(seq).unwrap_or(0),
        payload: ReportPayload::Health {
            encoded: Vec::new(),
            free: vec![("/".into(), free)],
            reading: HealthReading::default(),
            readings: Vec::new(),
        },
    }
}

#[tokio::test]
async fn a_report_the_store_refuses_fails_alone_and_its_batch_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::backend::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .expect("open");
    let host = enrolled(&store).await;
    let (ingest, writer) = Ingest::spawn(
        store.clone(),
        Arc::new(ManualClock::new(5_000)),
        crate::ingest::WriteHealth::default(),
    );
    // Queued before the writer runs, so the three share one batch. A NaN
    // free figure cannot be stored (it becomes NULL in a NOT NULL column);
    // only the newest sample's free space is written.
    let mut waiting = Vec::new();
    for (seq, free) in [(1, 40.0), (2, 30.0), (3, f32::NAN)] {
        waiting.push(
            ingest
                .submit(health(&host, seq, free))
                .await
                .expect("submit"),
        );
    }
    let mut answers = Vec::new();
    for rx in waiting {
        answers.push(rx.await.expect("answered"));
    }
    assert!(
        matches!(answers[0], Ok(ReportOutcome::Stored)),
        "{answers:?}"
    );
    assert!(
        matches!(answers[1], Ok(ReportOutcome::Stored)),
        "{answers:?}"
    );
    assert!(answers[2].is_err(), "{answers:?}");
    // Stored means committed: the first two sent again are duplicates.
    let again = store
        .store_reports(&[health(&host, 1, 40.0), health(&host, 2, 30.0)], 6_000)
        .await
        .expect("store");
    assert!(
        matches!(
            again[..],
            [ReportOutcome::Duplicate, ReportOutcome::Duplicate]
        ),
        "{again:?}"
    );
    drop(ingest);
    writer.await.expect("writer");
}
