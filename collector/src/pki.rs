//! The fleet's public key infrastructure: the CA, the collector's server
//! certificate, and host certificates issued from agents' CSRs.
//!
//! Host certificates carry the host id as their subject common name and
//! nothing the agent asked for: the CSR contributes only its public key, so a
//! CSR cannot request CA rights, names or lifetimes.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::secrets::sha256_hex;

/// Server certificates live a year and are reissued at start when close to
/// expiry.
const SERVER_CERT_DAYS: i64 = 365;
/// The fleet CA lives twenty years.
const CA_DAYS: i64 = 365 * 20;

/// What went wrong with a certificate or key.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to build or sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM or DER input did not parse.
    #[error("{0}")]
    Parse(String),
}

/// A freshly made key and certificate, both PEM.
#[derive(Debug, Clone)]
pub struct KeyAndCert {
    /// The certificate, PEM (for the server: leaf then CA).
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// A certificate issued to a host.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its serial number, lowercase hex.
    pub serial_hex: String,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256_hex: String,
}

/// When and for how long a host certificate is valid: issued at the
/// collector's clock (injected, so tests move it), for the policy's
/// lifetime.
#[derive(Debug, Clone, Copy)]
pub struct HostCertTerms {
    /// Now, ms since the Unix epoch.
    pub now_ms: i64,
    /// The policy's lifetime.
    pub lifetime: std::time::Duration,
}

impl HostCertTerms {
    fn validity(self) -> (OffsetDateTime, OffsetDateTime) {
        let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.now_ms) * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let lifetime = Duration::try_from(self.lifetime).unwrap_or(Duration::days(30));
        // Backdated a little so a PC whose clock runs slow still accepts it.
        (now - Duration::hours(1), now + lifetime)
    }
}

/// The fleet CA, able to sign.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("sha256", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    // Backdated a little so a PC whose clock runs slow still accepts it.
    (now - Duration::hours(1), now + Duration::days(days))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    // A positive, non-zero DER integer.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Makes a new self-signed fleet CA.
    pub fn generate() -> Result<KeyAndCert, PkiError> {
        Self::generate_named("Deskpulse fleet CA")
    }

    /// Makes a new self-signed fleet CA named `common_name` (a rotated-in
    /// CA carries its date, so people and logs tell the two apart).
    pub fn generate_named(common_name: &str) -> Result<KeyAndCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Deskpulse");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(CA_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(KeyAndCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads the CA from its PEM certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::Parse(format!("the CA key does not parse: {e}")))?;
        let cert_der = first_cert_der(cert_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::Parse(format!("the CA certificate does not parse: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The `--ca-sha256` pin: lowercase hex SHA-256 of the CA's DER (D3).
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.cert_der)
    }

    /// Issues the collector's TLS server certificate for `names` (DNS names
    /// or IP addresses). The returned chain is leaf then CA, so an agent
    /// enrolling with only a pin can find the CA in the handshake.
    pub fn issue_server_cert(&self, names: &[String]) -> Result<KeyAndCert, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Deskpulse collector");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|name| san(name))
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(SERVER_CERT_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(KeyAndCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a client certificate for `host_id` from an agent's CSR, valid
    /// on `terms`. Only the CSR's public key is used.
    pub fn sign_host_csr(
        &self,
        csr_der: &[u8],
        host_id: &str,
        terms: HostCertTerms,
    ) -> Result<IssuedCert, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| {
                    PkiError::Parse(format!(
                        "the CSR is not a valid signed PKCS#10 request: {e}"
                    ))
                })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host_id);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = terms.validity();
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial_hex: hex::encode(serial.to_bytes()),
            sha256_hex: sha256_hex(cert.der()),
        })
    }
}

/// The expiry of a DER certificate, ms since the Unix epoch.
pub fn expiry_ms(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    cert.validity().not_after.timestamp().checked_mul(1000)
}

/// True when the CSR asks for the key the DER certificate already holds:
/// a renewal must bring a new key, or a stolen key would live on through
/// every renewal.
pub fn csr_reuses_key(csr_der: &[u8], cert_der: &[u8]) -> Result<bool, PkiError> {
    use x509_parser::certification_request::X509CertificationRequest;
    let (_, csr) = X509CertificationRequest::from_der(csr_der).map_err(|e| {
        PkiError::Parse(format!(
            "the CSR is not a valid signed PKCS#10 request: {e}"
        ))
    })?;
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::Parse(format!("the certificate does not parse: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw == cert.public_key().raw)
}

fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let invalid = || PkiError::Parse(format!("{name:?} is not a valid host name"));
    if !valid {
        return Err(invalid());
    }
    let dns = name.try_into().map_err(|_| invalid())?;
    Ok(SanType::DnsName(dns))
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| PkiError::Parse("no certificate in the PEM text".into()))?
        .map_err(|e| PkiError::Parse(format!("the certificate PEM does not parse: {e}")))
}

/// True when the first certificate in `cert_pem` is a CA certificate whose
/// public key is the public half of `key_pem`.
pub fn is_ca_for_key(cert_pem: &str, key_pem: &str) -> Result<bool, PkiError> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| PkiError::Parse(format!("the key does not parse: {e}")))?;
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| PkiError::Parse(format!("the certificate does not parse: {e}")))?;
    let public = cert.public_key().subject_public_key.data.as_ref();
    Ok(cert.is_ca() && public == key.public_key_raw())
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The DNS and IP subject alternative names, and the expiry (Unix seconds),
/// of the first certificate in a PEM text.
pub fn names_and_expiry(pem: &str) -> Result<(Vec<String>, i64), PkiError> {
    let der = first_cert_der(pem)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| PkiError::Parse(format!("the certificate does not parse: {e}")))?;
    let mut names = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

pub mod rotation;

#[cfg(test)]
mod tests;
