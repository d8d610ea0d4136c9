//! What the collector's benches share: a fleet of enrolled hosts, made
//! through the store's real enrollment (one token, a stand-in
//! certificate), named `pc-00000`, `pc-00001`, …

use deskpulse_collector::store::{
    AuditEntry, EnrollOutcome, EnrollRequest, HostCert, NewEnrollmentToken, SharedStore,
};

/// Enrolls `hosts` hosts; their ids, in order.
pub async fn enroll_hosts(store: &SharedStore, hosts: usize) -> Vec<String> {
    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                id: "bench".into(),
                token_sha256: "bench".into(),
                expires_at_ms: i64::MAX,
                uses: u32::try_from(hosts).unwrap_or(u32::MAX),
                created_by: "bench".into(),
                relink_host: None,
            },
            &AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("token");
    let issue = |_: &str| {
        Ok(HostCert {
            cert_pem: String::new(),
            serial_hex: "01".into(),
            sha256_hex: "00".into(),
            ca_sha256: "ca-1".into(),
        })
    };
    let mut ids = Vec::with_capacity(hosts);
    for i in 0..hosts {
        let outcome = store
            .enroll(
                &EnrollRequest {
                    token_sha256: "bench".into(),
                    hostname: format!("pc-{i:05}"),
                    hardware_uuid: String::new(),
                    hardware_serial: String::new(),
                    source_addr: String::new(),
                    csr_der: Vec::new(),
                },
                0,
                &issue,
            )
            .await
            .expect("enroll");
        let EnrollOutcome::Enrolled { host_id, .. } = outcome else {
            panic!("enrollment refused: {outcome:?}");
        };
        ids.push(host_id);
    }
    ids
}
