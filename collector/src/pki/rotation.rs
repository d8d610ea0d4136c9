//! What rotating the fleet CA needs of the PKI (docs/ca-rotation.md):
//! the new CA's key sealed for the other replicas, which CA issued a host
//! certificate, and the checks a CA brought by the admin must pass.
//!
//! A new CA reaches every replica through the store, but the store must not
//! hold a usable CA key: whoever reads the database would then mint host
//! certificates. So the new key is sealed (AES-256-GCM) under a key derived
//! (HKDF-SHA256) from the private key of the CA it replaces, which every
//! replica already holds (D2) and the database never sees. The new CA's
//! fingerprint is the associated data, so a sealed key cannot be moved to
//! another CA's row.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertificateAuthority, PkiError, first_cert_der, is_ca_for_key};

const SEAL_VERSION: &str = "v1";
const SEAL_SALT: &[u8] = b"deskpulse fleet CA key seal v1";

fn sealing_key(sealing_ca_key_pem: &str) -> Result<LessSafeKey, PkiError> {
    let der = PrivateKeyDer::from_pem_slice(sealing_ca_key_pem.as_bytes())
        .map_err(|e| PkiError::Parse(format!("the sealing CA key does not parse: {e}")))?;
    let prk = Salt::new(HKDF_SHA256, SEAL_SALT).extract(der.secret_der());
    let mut bytes = [0u8; 32];
    prk.expand(&[b"aes-256-gcm"], &AES_256_GCM)
        .and_then(|okm| okm.fill(&mut bytes))
        .map_err(|_| PkiError::Parse("cannot derive the sealing key".into()))?;
    let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
        .map_err(|_| PkiError::Parse("cannot make the sealing key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals `key_pem` (the new CA's key) under the key of the CA it replaces,
/// bound to the new CA's fingerprint: `v1:` and hex of nonce and sealed
/// bytes.
pub fn seal_key(
    sealing_ca_key_pem: &str,
    key_pem: &str,
    new_ca_sha256: &str,
) -> Result<String, PkiError> {
    let key = sealing_key(sealing_ca_key_pem)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| PkiError::Parse("no randomness for the seal".into()))?;
    let mut sealed = key_pem.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(new_ca_sha256.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| PkiError::Parse("sealing the CA key failed".into()))?;
    Ok(format!(
        "{SEAL_VERSION}:{}{}",
        hex::encode(nonce),
        hex::encode(sealed)
    ))
}

/// Opens what [`seal_key`] sealed, with the key of the CA it was sealed
/// under. One line when it cannot: a wrong sealing key, a tampered seal.
pub fn unseal_key(
    sealing_ca_key_pem: &str,
    sealed: &str,
    new_ca_sha256: &str,
) -> Result<String, PkiError> {
    let bad = |why: &str| PkiError::Parse(format!("the sealed key of CA {new_ca_sha256} {why}"));
    let body = sealed
        .strip_prefix(SEAL_VERSION)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(|| bad("is not a v1 seal"))?;
    let bytes = hex::decode(body).map_err(|_| bad("is not hex"))?;
    if bytes.len() <= NONCE_LEN {
        return Err(bad("is too short"));
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("has no nonce"))?;
    let mut rest = rest.to_vec();
    let key = sealing_key(sealing_ca_key_pem)?;
    let plain = key
        .open_in_place(nonce, Aad::from(new_ca_sha256.as_bytes()), &mut rest)
        .map_err(|_| bad("does not open with this data dir's CA key (not the CA it was sealed under, or altered)"))?;
    String::from_utf8(plain.to_vec()).map_err(|_| bad("is not text"))
}

/// True when the CA certificate `ca_der` signed the certificate `leaf_der`.
pub fn issued_by(leaf_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(leaf_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// The validity of the first certificate in a PEM text, ms since the
/// Unix epoch.
pub fn validity_ms(cert_pem: &str) -> Result<(i64, i64), PkiError> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| PkiError::Parse(format!("the certificate does not parse: {e}")))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp().saturating_mul(1000),
        validity.not_after.timestamp().saturating_mul(1000),
    ))
}

/// The CA that a rotation brings in, from the admin's PEM files: a CA
/// certificate (and only one) with the key that belongs to it, valid now
/// and for at least `min_left_ms` more. One line naming what is wrong.
pub fn check_new_ca(
    cert_pem: &str,
    key_pem: &str,
    now_ms: i64,
    min_left_ms: i64,
) -> Result<CertificateAuthority, PkiError> {
    use rustls::pki_types::CertificateDer;
    let count = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).count();
    if count != 1 {
        return Err(PkiError::Parse(format!(
            "the new CA certificate file must hold exactly one certificate, not {count}"
        )));
    }
    let ca = CertificateAuthority::load(cert_pem, key_pem)?;
    if !is_ca_for_key(cert_pem, key_pem)? {
        return Err(PkiError::Parse(
            "the new CA key does not belong to the certificate, or the certificate is not a CA"
                .into(),
        ));
    }
    let (not_before, not_after) = validity_ms(cert_pem)?;
    if not_before > now_ms {
        return Err(PkiError::Parse(
            "the new CA certificate is not valid yet".into(),
        ));
    }
    if not_after.saturating_sub(now_ms) < min_left_ms {
        return Err(PkiError::Parse(format!(
            "the new CA certificate expires too soon (at {} ms); make one that lives years",
            not_after
        )));
    }
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_sealing_key_and_for_its_ca() {
        let old = CertificateAuthority::generate().expect("old");
        let other = CertificateAuthority::generate().expect("other");
        let new = CertificateAuthority::generate().expect("new");
        let sealed = seal_key(&old.key_pem, &new.key_pem, "aa").expect("seal");
        assert!(!sealed.contains("PRIVATE KEY"));
        assert_eq!(
            unseal_key(&old.key_pem, &sealed, "aa").expect("open"),
            new.key_pem
        );
        let wrong_key = unseal_key(&other.key_pem, &sealed, "aa").expect_err("other key");
        assert!(
            wrong_key.to_string().contains("does not open"),
            "{wrong_key}"
        );
        assert!(
            unseal_key(&old.key_pem, &sealed, "bb").is_err(),
            "bound to its CA"
        );
        // The last character changed, whatever it was.
        let mut tampered = sealed.clone();
        let last = tampered.pop();
        tampered.push(if last == Some('0') { '1' } else { '0' });
        assert!(unseal_key(&old.key_pem, &tampered, "aa").is_err());
        for junk in ["", "v1:", "v1:zz", "v2:00"] {
            let error = unseal_key(&old.key_pem, junk, "aa").expect_err(junk);
            assert!(!error.to_string().contains('\n'));
        }
    }

    #[test]
    fn the_issuer_of_a_host_certificate_is_recognised() {
        let made = CertificateAuthority::generate_named("A").expect("a");
        let a = CertificateAuthority::load(&made.cert_pem, &made.key_pem).expect("load a");
        let made_b = CertificateAuthority::generate_named("B").expect("b");
        let b = CertificateAuthority::load(&made_b.cert_pem, &made_b.key_pem).expect("load b");
        // Same name, other key: only the signature tells them apart.
        let made_c = CertificateAuthority::generate_named("A").expect("c");
        let c = CertificateAuthority::load(&made_c.cert_pem, &made_c.key_pem).expect("load c");
        let server = a.issue_server_cert(&["localhost".into()]).expect("leaf");
        let leaf = first_cert_der(&server.cert_pem).expect("der");
        assert!(issued_by(&leaf, a.cert_der()));
        assert!(!issued_by(&leaf, b.cert_der()));
        assert!(!issued_by(&leaf, c.cert_der()));
        assert!(!issued_by(b"junk", a.cert_der()));
    }

    #[test]
    fn a_new_ca_from_files_is_checked() {
        let made = CertificateAuthority::generate().expect("ca");
        let other = CertificateAuthority::generate().expect("other");
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        assert!(check_new_ca(&made.cert_pem, &made.key_pem, now, 0).is_ok());
        let mismatch = check_new_ca(&made.cert_pem, &other.key_pem, now, 0).expect_err("pair");
        assert!(
            mismatch.to_string().contains("does not belong"),
            "{mismatch}"
        );
        let two = format!("{}{}", made.cert_pem, other.cert_pem);
        assert!(check_new_ca(&two, &made.key_pem, now, 0).is_err());
        assert!(check_new_ca("garbage", &made.key_pem, now, 0).is_err());
        assert!(check_new_ca(&made.cert_pem, "garbage", now, 0).is_err());
        let leaf = CertificateAuthority::load(&made.cert_pem, &made.key_pem)
            .expect("load")
            .issue_server_cert(&["localhost".into()])
            .expect("leaf");
        let leaf_only = leaf
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .expect("leaf pem");
        assert!(
            check_new_ca(leaf_only, &leaf.key_pem, now, 0).is_err(),
            "not a CA"
        );
        let far = 30 * 365 * 24 * 3600 * 1000;
        assert!(
            check_new_ca(&made.cert_pem, &made.key_pem, now, far).is_err(),
            "too short"
        );
    }
}
