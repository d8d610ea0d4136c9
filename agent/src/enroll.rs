//! `deskpulse-agent enroll`: makes the agent's private key on this PC (it
//! never leaves), sends a CSR with a one-time token, and stores the issued
//! certificate, the CA bundle and the host id in the state dir.

use std::path::Path;

use deskpulse_proto::v1::EnrollRequest;
use deskpulse_proto::v1::enrollment_client::EnrollmentClient;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::state::{Credentials, Enrollment, StateDir, StateError};
use crate::transport::{self, TransportError};

/// Where the CA to trust comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// A PEM file the admin copied from `ca export`.
    File(std::path::PathBuf),
    /// The pin printed by `ca export`; the CA is taken from the collector's
    /// handshake only if its hash matches.
    Pin(String),
}

/// What can go wrong enrolling.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Reaching the collector failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The state dir failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The key or CSR could not be made.
    #[error("cannot make the agent key: {0}")]
    Key(#[from] rcgen::Error),
    /// The collector refused.
    #[error("the collector refused the enrollment: {0}")]
    Refused(String),
}

/// The result of a successful enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The host id.
    pub host_id: String,
    /// True when the collector linked this hardware to its existing host.
    pub relinked: bool,
    /// This PC's hardware matched an enrolled host: it enrolled as a new
    /// host until an admin approves linking it to that one.
    pub awaiting_approval: bool,
}

fn read_ca_file(path: &Path) -> Result<String, EnrollError> {
    let text = std::fs::read_to_string(path).map_err(|e| EnrollError::CaFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(EnrollError::CaFile {
            path: path.to_path_buf(),
            reason: "holds no PEM certificate".into(),
        });
    }
    Ok(text)
}

/// Enrolls with the collector at `url` and stores the result in `state`.
pub async fn enroll(
    state: &StateDir,
    url: &str,
    token: &str,
    ca: &CaSource,
    system_root: &Path,
    now_ms: i64,
) -> Result<Enrolled, EnrollError> {
    transport::parse_collector_url(url)?;
    let ca_pem = match ca {
        CaSource::File(path) => read_ca_file(path)?,
        CaSource::Pin(pin) => transport::fetch_pinned_ca(url, pin).await?,
    };
    // Make sure the state dir is writable before using up the token.
    state.create()?;
    let _lock = state.lock()?;
    // Employees may report while the service is stopped from the start.
    if let Err(error) = crate::issue::dropbox::prepare(state) {
        tracing::warn!(%error, "cannot prepare the report drop box; the service will try again");
    }
    state.make_private()?;

    let inventory = crate::collect::collect_inventory(system_root);
    let system = inventory.system.unwrap_or_default();
    let hostname = inventory.os.map(|os| os.hostname).unwrap_or_default();

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // The collector replaces the subject; this only helps a human reading
    // the CSR in a log.
    dn.push(DnType::CommonName, hostname.as_str());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;

    let channel = transport::connect(url, &ca_pem, None).await?;
    let response = EnrollmentClient::new(channel)
        .enroll(EnrollRequest {
            token: token.trim().to_owned(),
            csr_der: csr.der().to_vec(),
            hostname,
            hardware_uuid: system.hardware_uuid,
            hardware_serial: system.serial,
        })
        .await
        .map_err(|status| EnrollError::Refused(deskpulse_proto::client::describe_status(&status)))?
        .into_inner();
    // Trust the bundle the collector sends only if it still contains the
    // CA we verified it with; otherwise keep ours.
    let ca_bundle = if response.ca_bundle_pem.contains(ca_pem.trim()) {
        response.ca_bundle_pem
    } else {
        ca_pem
    };
    state.save_enrollment(&Credentials {
        enrollment: Enrollment {
            collector: url.trim_end_matches('/').to_owned(),
            host_id: response.host_id.clone(),
            enrolled_at_unix_ms: now_ms,
        },
        cert_pem: response.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: ca_bundle,
    })?;
    Ok(Enrolled {
        host_id: response.host_id,
        relinked: response.relinked,
        awaiting_approval: response.awaiting_approval,
    })
}

/// `enroll.toml`: what a package's install script enrolls from, so an
/// admin can pre-seed PCs without typing a token on each. The token is
/// removed from the file once used ([`forget_token`]).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollFile {
    /// The collector, `https://HOST:PORT`.
    pub collector: String,
    /// The one-time enrollment token; absent once used.
    pub token: Option<String>,
    /// The SHA-256 pin of the collector's CA.
    pub ca_sha256: String,
}

/// Reads and checks `enroll.toml`; the error is one line naming the file.
pub fn read_enroll_file(path: &Path) -> Result<EnrollFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: EnrollFile =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message().trim()))?;
    transport::parse_collector_url(&file.collector)
        .map_err(|e| format!("{}: collector: {e}", path.display()))?;
    transport::parse_pin(&file.ca_sha256)
        .map_err(|e| format!("{}: ca_sha256: {e}", path.display()))?;
    Ok(file)
}

/// Rewrites `enroll.toml` without its token, keeping the collector and
/// the pin for the admin to see. A token is single-use, but it is still a
/// secret until the collector has seen it.
pub fn forget_token(path: &Path, file: &EnrollFile) -> Result<(), StateError> {
    let text = format!(
        "# The token was used to enroll this PC and removed.\ncollector = {}\nca_sha256 = {}\n",
        toml::Value::String(file.collector.clone()),
        toml::Value::String(file.ca_sha256.clone()),
    );
    crate::state::write_atomic(path, text.as_bytes(), 0o600)
}
