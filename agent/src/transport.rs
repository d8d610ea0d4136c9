//! Connections to the collector: TLS channels, with the host certificate
//! for the agent service, and the pin bootstrap that lets `enroll
//! --ca-sha256` learn the CA from the collector's own handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// What can go wrong reaching the collector.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL is not `https://HOST:PORT`.
    #[error("{0}")]
    BadUrl(String),
    /// Connecting failed.
    #[error("cannot reach the collector at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why, one line.
        reason: String,
    },
    /// The pin matched no certificate the collector presented.
    #[error(
        "no certificate presented by {url} has the SHA-256 given with --ca-sha256; check the pin with `deskpulse-collector ca export`"
    )]
    PinMismatch {
        /// The URL.
        url: String,
    },
}

/// Checks that `url` is `https://HOST:PORT` and returns it parsed.
pub fn parse_collector_url(url: &str) -> Result<Uri, TransportError> {
    let bad = |why: &str| {
        TransportError::BadUrl(format!(
            "collector URL {url:?} {why}; expected https://HOST:PORT"
        ))
    };
    let uri: Uri = url.parse().map_err(|_| bad("does not parse"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must use https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.port_u16().is_none() {
        return Err(bad("has no port"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("must not have a path"));
    }
    Ok(uri)
}

/// Opens a TLS channel to the collector, trusting `ca_pem`, presenting the
/// host certificate when `identity` is given.
pub async fn connect(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, TransportError> {
    let uri = parse_collector_url(url)?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let failed = |error: &(dyn std::error::Error + 'static)| TransportError::Connect {
        url: url.to_owned(),
        reason: explain_untrusted(deskpulse_proto::client::describe_error(error)),
    };
    Endpoint::from(uri)
        .tls_config(tls)
        .map_err(|e| failed(&e))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| failed(&e))
}

/// Says what a server certificate from an unknown CA most likely means
/// for an enrolled agent: the fleet CA was rotated and the old one retired
/// before this PC took the new one (docs/ca-rotation.md).
fn explain_untrusted(reason: String) -> String {
    if reason.contains("UnknownIssuer") {
        format!(
            "{reason} (the collector's certificate is not from a CA this agent trusts: if the \
             fleet CA was rotated and the old one retired before this PC renewed, enroll it again \
             with a fresh token)"
        )
    } else {
        reason
    }
}

/// Accepts any server certificate but remembers the chain. Used only to
/// find the CA whose hash the admin pinned; nothing is sent over that
/// connection, and the real connection verifies against the pinned CA.
#[derive(Debug)]
struct ChainRecorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Normalises a `--ca-sha256` pin: 64 hex digits, colons allowed, any case.
pub fn parse_pin(pin: &str) -> Result<String, String> {
    let normal: String = pin
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if normal.len() != 64 || !normal.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "--ca-sha256 {pin:?} is not a SHA-256 in hex (64 hex digits); `deskpulse-collector ca export` prints it"
        ));
    }
    Ok(normal)
}

/// Fetches the collector's certificate chain with one TLS handshake and
/// returns, as PEM, the certificate whose SHA-256 is `pin`.
pub async fn fetch_pinned_ca(url: &str, pin: &str) -> Result<String, TransportError> {
    let uri = parse_collector_url(url)?;
    let failed = |reason: String| TransportError::Connect {
        url: url.to_owned(),
        reason,
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(ChainRecorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name =
        ServerName::try_from(host.clone()).map_err(|e| failed(format!("bad host name: {e}")))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| failed("timed out connecting".into()))?
    .map_err(|e| failed(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| failed("timed out in the TLS handshake".into()))?
        .map_err(|e| failed(format!("TLS handshake failed: {e}")))?;
    drop(stream);
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    let ca = chain
        .iter()
        .find(|cert| hex::encode(Sha256::digest(cert.as_ref())) == pin)
        .ok_or_else(|| TransportError::PinMismatch {
            url: url.to_owned(),
        })?;
    Ok(der_to_pem(ca.as_ref()))
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls_must_be_https_with_a_port() {
        assert!(parse_collector_url("https://127.0.0.1:7443").is_ok());
        assert!(parse_collector_url("https://collector.example:7443/").is_ok());
        for bad in [
            "http://127.0.0.1:7443",
            "https://127.0.0.1",
            "not a url",
            "https://h:1/x",
        ] {
            let error = parse_collector_url(bad).expect_err(bad).to_string();
            assert!(error.contains("expected https://HOST:PORT"), "{error}");
        }
    }

    #[test]
    fn pins_are_normalised_and_checked() {
        let pin = "AB:".repeat(31) + "AB";
        assert_eq!(parse_pin(&pin).expect("valid"), "ab".repeat(32));
        assert!(parse_pin("abc").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
