//! Renewal on disk: when it is due, and that a crash at any step leaves a
//! pair the collector accepts.

use rcgen::{CertificateParams, KeyPair};

use super::*;
use crate::state::{Credentials, Enrollment, StateDir};

const DAY_MS: i64 = 86_400_000;

type Ymd = (i32, u8, u8);

/// A certificate for `key`, valid from `start` to `end` (midnight UTC).
fn cert_for(key: &KeyPair, start: Ymd, end: Ymd) -> String {
    let mut params = CertificateParams::new(vec!["host".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(start.0, start.1, start.2);
    params.not_after = rcgen::date_time_ymd(end.0, end.1, end.2);
    params.self_signed(key).expect("sign").pem()
}

fn enrolled(dir: &std::path::Path) -> (StateDir, Credentials) {
    let state = StateDir::new(dir);
    let key = KeyPair::generate().expect("key");
    let creds = Credentials {
        enrollment: Enrollment {
            collector: "https://127.0.0.1:1".into(),
            host_id: "h".into(),
            enrolled_at_unix_ms: 0,
        },
        cert_pem: cert_for(&key, (2024, 1, 1), (2024, 1, 31)),
        key_pem: key.serialize_pem(),
        ca_pem: cert_for(
            &KeyPair::generate().expect("ca key"),
            (2000, 1, 1),
            (2100, 1, 1),
        ),
    };
    state.save_enrollment(&creds).expect("save");
    (state, creds)
}

#[test]
fn renewal_is_due_at_two_thirds_and_expiry_at_the_end() {
    let validity = Validity {
        not_before_ms: 0,
        not_after_ms: 30 * DAY_MS,
    };
    assert!(!validity.renewal_due(20 * DAY_MS - 1));
    assert!(validity.renewal_due(20 * DAY_MS));
    assert!(!validity.expired(30 * DAY_MS - 1));
    assert!(validity.expired(30 * DAY_MS));
}

#[test]
fn the_validity_is_read_from_the_certificate() {
    let key = KeyPair::generate().expect("key");
    let validity = validity(&cert_for(&key, (2024, 1, 2), (2024, 1, 31))).expect("validity");
    assert_eq!(validity.not_before_ms, 1_704_153_600_000);
    assert_eq!(validity.not_after_ms, 1_704_153_600_000 + 29 * DAY_MS);
    assert!(super::validity("not a certificate").is_err());
}

#[test]
fn times_print_as_utc() {
    assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_ms(1_796_565_755_000), "2026-12-06T14:02:35Z");
    assert!(expired_line(0, "h-1").contains("enroll again with a fresh token"));
    assert!(expired_line(0, "h-1").contains("--relink h-1"));
}

#[test]
fn a_renewed_pair_waits_beside_the_current_one_until_promoted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (state, creds) = enrolled(dir.path());
    assert!(pending(&state, &creds).is_none());

    let (renewal, _csr) = Renewal::start().expect("start");
    let new_cert = cert_for(&renewal.key, (2024, 1, 21), (2024, 2, 20));
    let ca = creds.ca_pem.clone();
    renewal.finish(&state, &new_cert, &ca).expect("finish");
    // The current pair is untouched: a crash here still connects with it.
    assert_eq!(state.credentials().expect("creds").cert_pem, creds.cert_pem);
    let next = pending(&state, &creds).expect("pending");
    assert_eq!(next.cert_pem, new_cert);
    assert_ne!(next.key_pem, creds.key_pem);

    // A crash halfway through the promotion (key replaced, certificate not)
    // still finds the renewed pair, and promoting again completes it.
    state
        .replace_certificate(&creds.cert_pem, &next.key_pem, &creds.ca_pem)
        .expect("half");
    let again = pending(&state, &creds).expect("still pending");
    promote(&state, &again).expect("promote");
    let now = state.credentials().expect("creds");
    assert_eq!(now.cert_pem, new_cert);
    assert_eq!(now.key_pem, next.key_pem);
    assert!(pending(&state, &now).is_none());
}

#[test]
fn a_certificate_for_another_key_or_a_corrupt_file_is_never_used() {
    let dir = tempfile::tempdir().expect("tmp");
    let (state, creds) = enrolled(dir.path());
    let (renewal, _csr) = Renewal::start().expect("start");
    let other = KeyPair::generate().expect("other");
    let error = renewal
        .finish(
            &state,
            &cert_for(&other, (2024, 1, 21), (2024, 2, 20)),
            &creds.ca_pem,
        )
        .expect_err("wrong key");
    assert!(error.contains("not for the new key"), "{error}");
    assert!(pending(&state, &creds).is_none());

    std::fs::write(dir.path().join(NEXT), b"{\"cert_pem\": 1").expect("write");
    assert!(pending(&state, &creds).is_none());
    assert!(!dir.path().join(NEXT).exists(), "a corrupt file is removed");
}

/// A certificate for `key` whose subject names host `host_id`, as the
/// collector issues them.
fn host_cert_for(key: &KeyPair, host_id: &str) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, host_id);
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 2);
    params.not_after = rcgen::date_time_ymd(2024, 2, 1);
    params.self_signed(key).expect("sign").pem()
}

#[test]
fn a_relinked_certificate_for_this_key_brings_its_host_id_and_another_keys_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (state, creds) = enrolled(dir.path());
    let key = KeyPair::from_pem(&creds.key_pem).expect("key");
    let host = "3f1d0c52-9f0e-4a53-a1f5-0a0c3f6b2f11";

    let other = KeyPair::generate().expect("other");
    let error = take_relinked(&state, &creds, &host_cert_for(&other, host), &creds.ca_pem)
        .expect_err("another key");
    assert!(error.contains("this agent's key"), "{error}");
    assert!(pending(&state, &creds).is_none());

    let cert = host_cert_for(&key, host);
    assert_eq!(
        take_relinked(&state, &creds, &cert, &creds.ca_pem).expect("taken"),
        host
    );
    // Until the collector accepts it, the current pair and host id stay.
    assert_eq!(state.credentials().expect("creds").enrollment.host_id, "h");
    let next = pending(&state, &creds).expect("pending");
    assert_eq!(next.enrollment.host_id, host);
    assert_eq!(next.key_pem, creds.key_pem);
    promote(&state, &next).expect("promote");
    let now = state.credentials().expect("creds");
    assert_eq!(
        (now.enrollment.host_id.as_str(), now.cert_pem.as_str()),
        (host, cert.as_str())
    );
    assert_eq!(now.enrollment.collector, creds.enrollment.collector);
    assert!(pending(&state, &now).is_none());
}

#[test]
fn a_ca_bundle_is_taken_only_when_it_shares_a_ca_and_is_written_privately() {
    let dir = tempfile::tempdir().expect("tmp");
    let (state, mut creds) = enrolled(dir.path());
    let first = creds.ca_pem.clone();
    let second = cert_for(
        &KeyPair::generate().expect("key"),
        (2000, 1, 1),
        (2100, 1, 1),
    );
    let stranger = cert_for(
        &KeyPair::generate().expect("key"),
        (2000, 1, 1),
        (2100, 1, 1),
    );
    let on_disk = || std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca.pem");

    // The same CAs: nothing written.
    assert_eq!(adopt_bundle(&state, &mut creds, &first), Ok(false));
    // A rotation adds the new CA beside the old ...
    let both = format!("{second}{first}");
    assert_eq!(adopt_bundle(&state, &mut creds, &both), Ok(true));
    assert_eq!(on_disk(), both);
    assert_eq!(creds.ca_pem, both);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.pem"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // ... and its retirement drops the old.
    assert_eq!(adopt_bundle(&state, &mut creds, &second), Ok(true));
    assert_eq!(on_disk(), second);
    // A bundle sharing nothing would cut the agent off: refused, kept.
    let refused = adopt_bundle(&state, &mut creds, &stranger).expect_err("no shared CA");
    assert!(refused.contains("shares no certificate"), "{refused}");
    for junk in [
        "",
        "not PEM",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        assert!(adopt_bundle(&state, &mut creds, junk).is_err(), "{junk:?}");
    }
    assert_eq!(on_disk(), second);
    assert_eq!(creds.ca_pem, second);
}
