//! A small HTTPS client for the web console's end-to-end tests: HTTP/1.1
//! over rustls to the collector's `--web-listen` address, trusting only the
//! fleet CA, with a cookie jar that keeps what the console sets as a
//! browser would (every cookie, sent back on every request; an empty
//! value deletes one).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// One response: status, headers (names lowercased, in order) and body.
#[derive(Debug, Clone)]
pub struct WebResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl WebResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `Set-Cookie` value, whole.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A browser-like client of one console address.
#[derive(Debug)]
pub struct WebClient {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    /// The cookies the console set and has not deleted.
    pub cookies: BTreeMap<String, String>,
}

impl WebClient {
    /// A client of `addr` trusting the CA in `ca_file`.
    pub fn new(addr: SocketAddr, ca_file: &Path) -> Self {
        let pem = std::fs::read(ca_file).expect("the CA file");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.expect("a CA certificate"))
                .expect("usable CA");
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            addr,
            tls: Arc::new(tls),
            cookies: BTreeMap::new(),
        }
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> WebResponse {
        self.request("GET", path, &[], "")
    }

    /// POST `form` (already URL-encoded) to `path`.
    pub fn post(&mut self, path: &str, form: &str) -> WebResponse {
        self.request(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
    }

    /// One request with the jar's cookies and `headers`; the jar takes the
    /// response's cookies. Redirects are not followed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> WebResponse {
        let name = ServerName::IpAddress(self.addr.ip().into());
        let connection =
            rustls::ClientConnection::new(self.tls.clone(), name).expect("a TLS client");
        let tcp = TcpStream::connect(self.addr).expect("connect to the console");
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        let mut text = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            text.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(body);
        stream.write_all(text.as_bytes()).expect("send the request");
        let mut raw = Vec::new();
        // A peer that closes without close_notify still sent the whole
        // response before it: what was read is kept.
        let _ = stream.read_to_end(&mut raw);
        let response = parse(&raw);
        for cookie in response.set_cookies() {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((key, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(key);
                } else {
                    self.cookies.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        response
    }
}

fn parse(raw: &[u8]) -> WebResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    WebResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the `csrf-token` meta tag of a console page.
pub fn csrf_token(page: &str) -> String {
    let marker = "name=\"csrf-token\" content=\"";
    let start = page.find(marker).expect("a CSRF meta tag") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("its value")
        .to_owned()
}

/// The value of the hidden `nonce` field of the sign-in page.
pub fn sign_in_nonce(page: &str) -> String {
    let marker = "name=\"nonce\" value=\"";
    let start = page.find(marker).expect("a nonce field") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("its value")
        .to_owned()
}

/// `text` URL-encoded as a form value.
pub fn form_value(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
