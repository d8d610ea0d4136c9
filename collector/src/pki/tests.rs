//! The fleet CA: a CSR contributes only its key, garbage CSRs and bad host
//! names are clear errors, and the server chain ends with the CA.

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

fn ca() -> CertificateAuthority {
    let made = CertificateAuthority::generate().expect("generate CA");
    CertificateAuthority::load(&made.cert_pem, &made.key_pem).expect("load CA")
}

fn terms() -> HostCertTerms {
    HostCertTerms {
        now_ms: 1_800_000_000_000,
        lifetime: std::time::Duration::from_secs(30 * 86_400),
    }
}

#[test]
fn a_host_certificate_lives_as_long_as_the_policy_says_from_the_collectors_clock() {
    let ca = ca();
    let key = KeyPair::generate().expect("key");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    let issued = ca
        .sign_host_csr(csr.der(), "6f1c2a52-0000-4000-8000-000000000001", terms())
        .expect("sign");
    let der = first_cert_der(&issued.cert_pem).expect("der");
    assert_eq!(
        expiry_ms(&der),
        Some(1_800_000_000_000 + 30 * 86_400_000),
        "30 days from the injected now"
    );
    let fresh = KeyPair::generate().expect("fresh key");
    let renewal = CertificateParams::default()
        .serialize_request(&fresh)
        .expect("csr");
    assert!(!csr_reuses_key(renewal.der(), &der).expect("compare"));
    let renewal = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    assert!(
        csr_reuses_key(renewal.der(), &der).expect("compare"),
        "a CSR for the certificate's own key is recognised"
    );
}

#[test]
fn a_csr_contributes_only_its_key_never_ca_rights_or_names() {
    let ca = ca();
    let key = KeyPair::generate().expect("key");
    let mut wanted = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
    wanted.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = wanted.serialize_request(&key).expect("csr");

    let issued = ca
        .sign_host_csr(csr.der(), "6f1c2a52-0000-4000-8000-000000000001", terms())
        .expect("sign");
    let der = first_cert_der(&issued.cert_pem).expect("der");
    let (_, cert) = X509Certificate::from_der(&der).expect("parse");
    assert!(!cert.is_ca(), "a host certificate must never be a CA");
    assert_eq!(
        common_name(&der).as_deref(),
        Some("6f1c2a52-0000-4000-8000-000000000001")
    );
    let (names, _) = names_and_expiry(&issued.cert_pem).expect("names");
    assert!(
        names.is_empty(),
        "requested SANs must be dropped: {names:?}"
    );
    assert_eq!(issued.sha256_hex, crate::secrets::sha256_hex(&der));
    assert_eq!(
        cert.raw_serial_as_string().replace(':', ""),
        issued.serial_hex
    );
}

#[test]
fn garbage_csr_is_a_clear_error() {
    let error = ca()
        .sign_host_csr(b"not a csr", "h", terms())
        .expect_err("must fail");
    assert!(error.to_string().contains("CSR"), "{error}");
}

#[test]
fn server_cert_names_round_trip_and_chain_ends_with_the_ca() {
    let ca = ca();
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "collector.corp.example".to_string(),
    ];
    let server = ca.issue_server_cert(&names).expect("server cert");
    let (got, expiry) = names_and_expiry(&server.cert_pem).expect("parse");
    assert_eq!(got, names);
    assert!(expiry > 0);
    assert!(server.cert_pem.ends_with(ca.cert_pem()));
}

#[test]
fn invalid_host_name_is_refused() {
    let error = ca()
        .issue_server_cert(&["bad name with spaces".to_string()])
        .expect_err("must fail");
    assert!(
        error.to_string().contains("not a valid host name"),
        "{error}"
    );
}
