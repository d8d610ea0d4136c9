//! `http_check`: one HTTP/1.1 GET over a plain socket or rustls (ring),
//! reporting the timings, the status line and a few headers, and for HTTPS
//! the server certificate's subject, issuer and expiry.
//!
//! The certificate is verified against the PC's own trust store, the CA
//! bundle under the system root (`etc/ssl/certs/ca-certificates.crt` and
//! the other usual places), so an intranet CA the PC trusts counts. There
//! is no switch to trust anything else: a certificate that does not verify
//! is reported as the TLS error it is, and its expiry is still shown,
//! because the verifier notes the presented certificate before judging it.
//! A minimal client rather than hyper or reqwest keeps the agent small; it
//! follows no redirects (it shows `Location`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::native::{left, resolve};
use super::{Out, Stop, parse};

/// The most response head read.
const MAX_HEAD: usize = 16 * 1024;

/// Where distributions keep the CA bundle, relative to the system root.
const CA_BUNDLES: [&str; 5] = [
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/ssl/ca-bundle.pem",
    "etc/ssl/cert.pem",
    "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// A checked URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// https.
    pub tls: bool,
    /// The host, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
}

/// Takes a URL (already through `catalog::check`) apart.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("the url must start with http:// or https://".into());
    };
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the url")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port in the url")?,
            None => default,
        };
        (host.to_owned(), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "bad port in the url")?),
            None => (authority.to_owned(), default),
        }
    };
    Ok(Target {
        tls,
        host,
        port,
        path,
    })
}

/// The PC's trusted CAs: the first CA bundle found under the root.
pub fn system_roots(root: &Path) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for bundle in CA_BUNDLES {
        if let Ok(bytes) = std::fs::read(root.join(bundle)) {
            let certs = CertificateDer::pem_slice_iter(&bytes).flatten();
            let (added, _) = store.add_parsable_certificates(certs);
            if added > 0 {
                break;
            }
        }
    }
    store
}

/// Verifies with webpki against the PC's roots, noting the presented
/// certificate first so its expiry can be reported even when it fails.
#[derive(Debug)]
struct Noting {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Noting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.to_vec());
        }
        match &self.inner {
            Some(verifier) => {
                verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            None => Err(rustls::Error::General(
                "no trusted CA certificates found on this PC".into(),
            )),
        }
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

/// One line about a certificate: subject, issuer, expiry and days left.
pub fn describe_certificate(der: &[u8], now_unix: i64) -> String {
    use x509_cert::der::Decode;
    match x509_cert::Certificate::from_der(der) {
        Ok(cert) => {
            let cert = cert.tbs_certificate;
            let not_after = i64::try_from(cert.validity.not_after.to_unix_duration().as_secs())
                .unwrap_or(i64::MAX);
            let days = (not_after - now_unix).div_euclid(86_400);
            let when = if not_after < now_unix {
                format!("EXPIRED {} days ago", -days)
            } else {
                format!("in {days} days")
            };
            format!(
                "certificate: subject {}, issuer {}, expires {} ({when})",
                distinguished_name(&cert.subject),
                distinguished_name(&cert.issuer),
                parse::utc(not_after)
            )
        }
        Err(error) => format!("certificate: cannot be parsed ({error})"),
    }
}

/// A distinguished name as `C=…, O=…, CN=…`, in the certificate's order:
/// the usual attributes by their short names, any other by its dotted OID,
/// and a value that is not text as `#` and hex. Control characters from a
/// hostile server are escaped. Not x509-cert's own `Display`: it links
/// const-oid's table of every OID name, about 100 KB of the agent.
fn distinguished_name(name: &x509_cert::name::Name) -> String {
    use std::fmt::Write;
    use x509_cert::der::{Tag, Tagged};
    const SHORT_NAMES: [(&str, &str); 9] = [
        ("2.5.4.3", "CN"),
        ("2.5.4.6", "C"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.5", "serialNumber"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("1.2.840.113549.1.9.1", "emailAddress"),
    ];
    let mut text = String::new();
    for attribute in name.0.iter().flat_map(|rdn| rdn.0.iter()) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let oid = attribute.oid.to_string();
        match SHORT_NAMES.iter().find(|(dotted, _)| *dotted == oid) {
            Some((_, short)) => text.push_str(short),
            None => text.push_str(&oid),
        }
        text.push('=');
        let value = &attribute.value;
        match value.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
                for c in String::from_utf8_lossy(value.value()).chars() {
                    if c.is_control() {
                        let _ = write!(text, "\\{:02x}", u32::from(c));
                    } else {
                        text.push(c);
                    }
                }
            }
            _ => {
                text.push('#');
                text.push_str(&hex::encode(value.value()));
            }
        }
    }
    text
}

fn ms(since: Instant) -> String {
    format!("{:.1} ms", since.elapsed().as_secs_f64() * 1000.0)
}

/// Reads the response head: up to the blank line, [`MAX_HEAD`] or the end.
/// Public, like `report_head`, for the fuzz targets (`fuzz/`).
pub fn read_head(stream: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            // A server that closes without TLS close_notify after its
            // answer: what arrived counts.
            Err(e) if !head.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(head)
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`), or
/// `None` for anything else: a banner of another protocol never passes.
pub fn status_code(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_at_checked(3)?;
    let code: u16 = code
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| code.parse().ok())??;
    let reason_ok = reason.is_empty()
        || (reason.starts_with(' ') && reason.chars().all(|c| c == '\t' || !c.is_control()));
    ((100..=599).contains(&code) && reason_ok).then_some(code)
}

/// A header value from the server as it is safe to print: control
/// characters escaped, at most 200 characters.
fn printable(value: &str) -> String {
    value
        .chars()
        .take(200)
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints the status line and the telling headers; 0 for 1xx-3xx. What is
/// not an HTTP/1.x response is said to be so and not echoed: a banner of
/// another service (SMTP, SSH, a database) is none of the caller's
/// business.
pub fn report_head(head: &[u8], started: Instant, out: &Out) -> i32 {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    let Some(code) = status_code(status) else {
        out.line(format!(
            "not an HTTP response ({} bytes received; not shown)",
            head.len()
        ));
        return 1;
    };
    out.line(format!(
        "{} (answered in {})",
        printable(status),
        ms(started)
    ));
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let lower = name.trim().to_ascii_lowercase();
            if [
                "server",
                "location",
                "content-type",
                "content-length",
                "date",
            ]
            .contains(&lower.as_str())
            {
                out.line(format!("  {lower}: {}", printable(value.trim())));
            }
        }
    }
    if (100..400).contains(&code) { 0 } else { 1 }
}

/// Why `http_check` will not connect to `ip`, if it will not: loopback
/// (unless this agent's config allows it), link-local, cloud metadata
/// endpoints, unspecified, broadcast and multicast addresses. IPv4 inside
/// IPv6 (mapped, compatible, NAT64) is judged as the IPv4 it carries.
pub fn forbidden(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                (!allow_loopback).then_some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address (where cloud metadata services answer)")
            } else if METADATA_V4.contains(&v4) {
                Some("a cloud metadata address")
            } else if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("an unspecified address (it reaches this PC)")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("a broadcast or multicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            if v6.is_loopback() {
                (!allow_loopback).then_some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address (it reaches this PC)")
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                forbidden(IpAddr::V4(v4), allow_loopback)
            } else if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) and NAT64 well-known prefix.
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                forbidden(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), allow_loopback)
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address (where cloud metadata services answer)")
            } else if METADATA_V6.contains(&v6) {
                Some("a cloud metadata address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

/// Cloud metadata and host-agent endpoints outside the link-local range:
/// Alibaba Cloud's and Azure's WireServer.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];
/// AWS's IPv6 metadata endpoint (`fd00:ec2::254`).
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// The diagnostic itself.
/// The addresses are resolved once and each is checked ([`forbidden`])
/// before the connection, which goes to that same checked address: a name
/// that resolves to a forbidden address is refused, and no second lookup
/// can swap one in (DNS rebinding).
pub fn check(
    root: &Path,
    url: &str,
    allow_loopback: bool,
    deadline: Instant,
    out: &Out,
) -> Result<i32, Stop> {
    let target = match parse_url(url) {
        Ok(t) => t,
        Err(e) => {
            out.line(e);
            return Ok(1);
        }
    };
    let started = Instant::now();
    let addrs = match resolve(&target.host, target.port, out) {
        Ok(a) => a,
        Err(e) => {
            out.line(e);
            return Ok(1);
        }
    };
    let mut refused = Vec::new();
    let addrs: Vec<_> = addrs
        .into_iter()
        .filter(|addr| match forbidden(addr.ip(), allow_loopback) {
            Some(why) => {
                refused.push(format!("{} is {why}", addr.ip()));
                false
            }
            None => true,
        })
        .collect();
    if addrs.is_empty() {
        return Err(Stop::Failed(format!(
            "refused: {} resolves only to addresses http_check does not connect to ({}){}",
            target.host,
            refused.join("; "),
            if allow_loopback {
                ""
            } else {
                "; loopback is allowed by http_check_allow_loopback in the agent's [diagnostics] config"
            }
        )));
    }
    for line in &refused {
        out.line(format!("skipped: {line}"));
    }
    let mut tcp = None;
    for addr in addrs {
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, left(deadline)?.min(Duration::from_secs(10))) {
            Ok(s) => {
                out.line(format!("connected to {addr} in {}", ms(t)));
                tcp = Some(s);
                break;
            }
            Err(e) => out.line(format!("{addr}: {e}")),
        }
    }
    let Some(mut tcp) = tcp else {
        return Ok(1);
    };
    let io_timeout = Some(left(deadline)?);
    let _ = tcp.set_read_timeout(io_timeout);
    let _ = tcp.set_write_timeout(io_timeout);
    let host_header = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let default_port = if target.tls { 443 } else { 80 };
    let host_header = if target.port == default_port {
        host_header
    } else {
        format!("{host_header}:{}", target.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: deskpulse-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        env!("CARGO_PKG_VERSION")
    );
    if !target.tls {
        if let Err(e) = tcp.write_all(request.as_bytes()) {
            out.line(format!("sending the request failed: {e}"));
            return Ok(1);
        }
        return match read_head(&mut tcp) {
            Ok(head) => Ok(report_head(&head, started, out)),
            Err(e) => {
                out.line(format!("reading the response failed: {e}"));
                Ok(1)
            }
        };
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = system_roots(root);
    let inner = if roots.is_empty() {
        None
    } else {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok()
    };
    let verifier = Arc::new(Noting {
        inner,
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        Err(e) => {
            out.line(format!("TLS setup failed: {e}"));
            return Ok(1);
        }
    };
    let Ok(name) = ServerName::try_from(target.host.clone()) else {
        out.line(format!("{} is not a TLS server name", target.host));
        return Ok(1);
    };
    let mut conn = match rustls::ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => {
            out.line(format!("TLS setup failed: {e}"));
            return Ok(1);
        }
    };
    let t = Instant::now();
    let mut handshake = Ok(());
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            handshake = Err(e);
            break;
        }
    }
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let seen = verifier.seen.lock().ok().and_then(|s| s.clone());
    if let Err(e) = handshake {
        out.line(format!("TLS handshake failed after {}: {e}", ms(t)));
        if let Some(der) = seen {
            out.line(describe_certificate(&der, now_unix));
        }
        return Ok(1);
    }
    out.line(format!(
        "TLS {} {} in {}",
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        ms(t)
    ));
    if let Some(der) = seen {
        out.line(describe_certificate(&der, now_unix));
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    if let Err(e) = tls.write_all(request.as_bytes()) {
        out.line(format!("sending the request failed: {e}"));
        return Ok(1);
    }
    match read_head(&mut tls) {
        Ok(head) => Ok(report_head(&head, started, out)),
        Err(e) => {
            out.line(format!("reading the response failed: {e}"));
            Ok(1)
        }
    }
}
