//! Host certificate renewal on the agent (issue 20).
//!
//! At two thirds of its certificate's lifetime the service makes a new key
//! and sends a CSR over its session; the collector answers with a
//! certificate for the same host. The new pair is written, with the CA
//! bundle, to one file beside the current pair ([`NEXT`], atomically,
//! 0600), and the agent reconnects with it. Only once the collector has
//! accepted that connection (which retires the old certificate on its side)
//! is the pair copied over the current one and the file removed. A crash at
//! any point leaves a pair the collector accepts: before the file is
//! written, the current one; after, the next one, which the agent always
//! tries first ([`pending`]), and a half-done copy is simply done again.
//!
//! The same waiting slot carries a certificate the collector sends unasked
//! when an admin approved this enrollment's re-link to an existing host
//! ([`take_relinked`]): it is for the key the agent holds, names the host
//! it took over, and becomes current, with that host id, the same way.
//!
//! An expired certificate is never renewed: the agent stops connecting and
//! says in one line (log and `status`) that it must enroll again with a
//! fresh token.

use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::state::{Credentials, StateDir, write_atomic};

/// The host id a certificate names: its subject common name, which the
/// collector sets to the host id (and reads back from it).
pub fn host_id_of(cert_pem: &str) -> Result<String, String> {
    let cert = parse(cert_pem)?;
    let subject = cert.tbs_certificate.subject.to_string();
    subject
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .filter(|cn| !cn.is_empty() && cn.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .map(str::to_owned)
        .ok_or_else(|| format!("the certificate names no host id (subject {subject:?})"))
}

/// A certificate the collector sent without being asked: an admin approved
/// this enrollment's re-link to an existing host (issue 20), and this is a
/// certificate for that host, issued to the key the agent already holds.
/// It waits as the next pair ([`NEXT`]) like a renewed one, so the next
/// connection presents it and, once the collector accepts it, it becomes
/// current with its host id ([`promote`]). Returns that host id.
pub fn take_relinked(
    state: &StateDir,
    current: &Credentials,
    cert_pem: &str,
    ca_bundle_pem: &str,
) -> Result<String, String> {
    let host_id = host_id_of(cert_pem)?;
    let pair = Pair {
        cert_pem: cert_pem.to_owned(),
        key_pem: current.key_pem.clone(),
        ca_pem: ca_bundle_pem.to_owned(),
    };
    pair.check()
        .map_err(|e| format!("{e} (this agent's key)"))?;
    let text = serde_json::to_vec(&pair).map_err(|e| e.to_string())?;
    write_atomic(&state.root().join(NEXT), &text, 0o600).map_err(|e| e.to_string())?;
    Ok(host_id)
}

/// The renewed pair waiting to be confirmed, in the state dir.
pub const NEXT: &str = "agent-next.json";

/// Shifts the agent's notion of "now" for renewal and expiry decisions by
/// this many seconds. Read only by debug builds, for the end-to-end tests,
/// which cannot wait weeks; the shipped agent ignores it.
pub const CLOCK_OFFSET_ENV: &str = "DESKPULSE_TEST_CLOCK_OFFSET_SECS";

/// After a renewal was asked for and did not complete, how long before
/// asking again (a collector that refuses would otherwise be asked on
/// every connection).
pub const RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Now for renewal and expiry, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::session::now_ms().saturating_add(offset_ms())
}

#[cfg(debug_assertions)]
fn offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| match std::env::var(CLOCK_OFFSET_ENV) {
        Err(_) => 0,
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(secs) => secs.saturating_mul(1000),
            Err(_) => {
                warn!(value = %text, "{CLOCK_OFFSET_ENV} is not a whole number of seconds; ignored");
                0
            }
        },
    })
}

#[cfg(not(debug_assertions))]
fn offset_ms() -> i64 {
    0
}

/// When a certificate is valid, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not before.
    pub not_before_ms: i64,
    /// Not after.
    pub not_after_ms: i64,
}

impl Validity {
    /// Two thirds of the lifetime have passed.
    pub fn renewal_due(&self, now_ms: i64) -> bool {
        let lifetime = self.not_after_ms.saturating_sub(self.not_before_ms);
        now_ms >= self.not_before_ms.saturating_add(lifetime / 3 * 2)
    }

    /// The certificate no longer works.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.not_after_ms
    }
}

/// The certificate's DER and its parsed form: the first certificate of a
/// PEM text.
fn parse(cert_pem: &str) -> Result<x509_cert::Certificate, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_cert::der::Decode;
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .ok_or("holds no certificate")?
        .map_err(|e| format!("the certificate PEM does not parse: {e}"))?;
    x509_cert::Certificate::from_der(&der)
        .map_err(|e| format!("the certificate does not parse: {e}"))
}

/// The validity of the first certificate in a PEM text.
pub fn validity(cert_pem: &str) -> Result<Validity, String> {
    let validity = parse(cert_pem)?.tbs_certificate.validity;
    let ms = |t: x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_millis()).unwrap_or(i64::MAX)
    };
    Ok(Validity {
        not_before_ms: ms(validity.not_before),
        not_after_ms: ms(validity.not_after),
    })
}

/// A time as `2026-12-06T14:02:35Z`.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::diagnostics::parse::civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The one line an agent with an expired certificate says, in its log and
/// in `status`. It never enrolls again by itself (issue 20): an admin's say
/// is needed, a re-link token for its host, or an ordinary token whose
/// enrollment an admin then approves.
pub fn expired_line(not_after_ms: i64, host_id: &str) -> String {
    format!(
        "the host certificate expired at {}: this agent no longer connects; stop the service and enroll again with a fresh token (deskpulse-agent enroll --force --collector URL --token TOKEN …): a re-link token keeps host {host_id} (an admin runs deskpulse-collector enroll-token create --relink {host_id}); an ordinary token makes a new host until an admin approves it (deskpulse enrollments approve ID)",
        format_ms(not_after_ms)
    )
}

/// A renewal under way: the new key, kept in memory until its certificate
/// arrives.
pub struct Renewal {
    key: KeyPair,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal").finish_non_exhaustive()
    }
}

impl Renewal {
    /// A new key and its CSR (DER).
    pub fn start() -> Result<(Self, Vec<u8>), String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a new key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // The collector names the host from the session's certificate.
        dn.push(DnType::CommonName, "deskpulse-agent renewal");
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("cannot make the CSR: {e}"))?;
        Ok((Self { key }, csr.der().to_vec()))
    }

    /// Checks the collector's certificate against the new key and stores
    /// the pair as [`NEXT`]. Returns the new certificate's validity.
    pub fn finish(
        self,
        state: &StateDir,
        cert_pem: &str,
        ca_bundle_pem: &str,
    ) -> Result<Validity, String> {
        let pair = Pair {
            cert_pem: cert_pem.to_owned(),
            key_pem: self.key.serialize_pem(),
            ca_pem: ca_bundle_pem.to_owned(),
        };
        let validity = pair.check()?;
        let text = serde_json::to_vec(&pair).map_err(|e| e.to_string())?;
        write_atomic(&state.root().join(NEXT), &text, 0o600).map_err(|e| e.to_string())?;
        Ok(validity)
    }
}

/// A certificate, its key and the CA bundle to trust, as [`NEXT`] holds
/// them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl Pair {
    /// The certificate is for the key, and the bundle holds a certificate.
    fn check(&self) -> Result<Validity, String> {
        let cert = parse(&self.cert_pem)?;
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| format!("the key: {e}"))?;
        let public = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        if public != key.public_key_raw() {
            return Err("the certificate is not for the new key".into());
        }
        parse(&self.ca_pem).map_err(|e| format!("the CA bundle {e}"))?;
        validity(&self.cert_pem)
    }
}

/// The renewed pair waiting in the state dir, as credentials for the same
/// enrollment; `None` when there is none. A file that does not hold a
/// matching pair is removed with a warning: the current pair still works.
pub fn pending(state: &StateDir, current: &Credentials) -> Option<Credentials> {
    let path = state.root().join(NEXT);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            warn!(%error, path = %path.display(), "cannot read the renewed certificate; using the current one");
            return None;
        }
    };
    let pair = serde_json::from_slice::<Pair>(&text)
        .map_err(|e| e.to_string())
        .and_then(|pair| pair.check().map(|_| pair));
    match pair {
        Ok(pair) => Some(Credentials {
            // A renewal names the same host; a re-link the host it took
            // over, which becomes this agent's host id with the pair.
            enrollment: crate::state::Enrollment {
                host_id: host_id_of(&pair.cert_pem)
                    .unwrap_or_else(|_| current.enrollment.host_id.clone()),
                ..current.enrollment.clone()
            },
            cert_pem: pair.cert_pem,
            key_pem: pair.key_pem,
            ca_pem: pair.ca_pem,
        }),
        Err(reason) => {
            warn!(%reason, path = %path.display(), "the renewed certificate file is unusable; removing it and using the current pair");
            discard(state);
            None
        }
    }
}

/// The DER certificates of a PEM bundle; an error for text holding none
/// or one that does not parse.
fn bundle_ders(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|der| der.map(|d| d.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA bundle does not parse: {e}"))?;
    if ders.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    for der in &ders {
        use x509_cert::der::Decode;
        x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("the CA bundle holds a certificate that does not parse: {e}"))?;
    }
    Ok(ders)
}

/// Takes `bundle_pem`, the CAs the collector says to trust (at each
/// session's start; docs/ca-rotation.md), as the agent's CA bundle when it
/// differs from the one in `creds` and shares a certificate with it: a
/// rotation adds the new CA beside the old, then drops the old, and never
/// both at once, so a bundle sharing nothing would cut this agent off and
/// is refused. Written atomically, private. True when it changed.
pub fn adopt_bundle(
    state: &StateDir,
    creds: &mut Credentials,
    bundle_pem: &str,
) -> Result<bool, String> {
    let offered = bundle_ders(bundle_pem)?;
    let held = bundle_ders(&creds.ca_pem).unwrap_or_default();
    let same = offered.len() == held.len() && offered.iter().all(|der| held.contains(der));
    if same {
        return Ok(false);
    }
    if !offered.iter().any(|der| held.contains(der)) {
        return Err(
            "the offered CA bundle shares no certificate with the CAs this agent trusts".into(),
        );
    }
    state.replace_ca(bundle_pem).map_err(|e| e.to_string())?;
    creds.ca_pem = bundle_pem.to_owned();
    Ok(true)
}

/// The collector accepted the renewed pair: it becomes the current one.
/// Safe to repeat after a crash (the file goes last).
pub fn promote(state: &StateDir, next: &Credentials) -> Result<(), String> {
    let stored = state.enrollment().map_err(|e| e.to_string())?;
    if stored.is_some_and(|e| e.host_id != next.enrollment.host_id) {
        // A re-link: the host id changes with the certificate.
        state.save_enrollment(next).map_err(|e| e.to_string())?;
    } else {
        state
            .replace_certificate(&next.cert_pem, &next.key_pem, &next.ca_pem)
            .map_err(|e| e.to_string())?;
    }
    match std::fs::remove_file(state.root().join(NEXT)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {NEXT}: {e}")),
    }
}

/// Forgets the renewed pair (the collector refused it).
pub fn discard(state: &StateDir) {
    let path = state.root().join(NEXT);
    if let Err(error) = std::fs::remove_file(&path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(%error, path = %path.display(), "cannot remove the renewed certificate file");
    }
}

#[cfg(test)]
mod tests;
