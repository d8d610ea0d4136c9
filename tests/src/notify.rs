//! Receivers of notifications for the end-to-end tests: a minimal HTTP
//! receiver for webhooks ([`http_receiver`]) and a real SMTP server on
//! loopback ([`SmtpServer`]: `tests/smtp/server.py` on aiosmtpd, with a CA
//! and server certificate the test makes, [`MailCa`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the HTTP receiver read it: lowercased headers and the body.
#[derive(Debug)]
pub struct Received {
    /// Header names lowercased, with their values.
    pub headers: HashMap<String, String>,
    /// The body as sent.
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver: reads one request per connection (headers,
/// then Content-Length bytes), answers 200 and closes.
pub fn http_receiver(listener: TcpListener) -> tokio::sync::mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let headers: HashMap<String, String> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tx.send(Received {
                    headers,
                    body: buf[head_end..head_end + length].to_vec(),
                });
            });
        }
    });
    rx
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in a temp
/// dir: the SMTP server presents the certificate, the collector trusts the
/// CA through `--smtp-ca-file`.
#[derive(Debug)]
pub struct MailCa {
    dir: tempfile::TempDir,
}

impl MailCa {
    /// Makes the CA and the server certificate.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Deskpulse test mail CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write CA");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write key");
        Self { dir }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

impl Default for MailCa {
    fn default() -> Self {
        Self::new()
    }
}

/// How the SMTP server protects its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, required before MAIL.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// One message the SMTP server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TO, each.
    pub to: Vec<String>,
    /// The message as sent: headers, a blank line, the body.
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The user the client authenticated as, if it did.
    pub user: Option<String>,
}

impl Mail {
    /// The value of the header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                // A folded line: unfolding removes only the line break.
                if let Some(v) = value.as_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// The header names, in order.
    pub fn header_names(&self) -> Vec<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n")
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// The body, quoted-printable soft line breaks and `=XX` escapes
    /// undone (lettre picks the encoding).
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if encoding != "quoted-printable" {
            return body.replace("\r\n", "\n");
        }
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && let Some(hex) = joined.get(i + 1..i + 3)
                && let Ok(byte) = u8::from_str_radix(hex, 16)
            {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

/// A running `tests/smtp/server.py` on 127.0.0.1; killed when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    child: Child,
    /// Its port.
    pub port: u16,
    mails: mpsc::Receiver<Mail>,
}

/// The Python interpreter that has aiosmtpd: the one the `aiosmtpd`
/// program on `PATH` names in its `#!` line (Debian's `/usr/bin/python3`
/// for python3-aiosmtpd, a virtualenv's for a pip install).
fn aiosmtpd_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let program = std::env::split_paths(&path)
        .map(|dir| dir.join("aiosmtpd"))
        .find(|p| p.is_file())?;
    let text = std::fs::read_to_string(program).ok()?;
    let interpreter = text.lines().next()?.strip_prefix("#!")?.trim();
    let interpreter = interpreter.split_whitespace().next()?;
    Some(PathBuf::from(interpreter))
}

fn server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp/server.py")
}

impl SmtpServer {
    /// Starts the server with `tls`, requiring AUTH as `user` when given,
    /// on `port` (0 for any free one); `None` when aiosmtpd is missing
    /// (the test then says SKIPPED, through [`crate::require_tool`]).
    pub fn start(
        test: &str,
        ca: &MailCa,
        tls: SmtpTls,
        user: Option<(&str, &str)>,
        port: u16,
    ) -> Option<Self> {
        if !crate::require_tool("aiosmtpd", test) {
            return None;
        }
        let python = aiosmtpd_python().expect("the aiosmtpd program names its interpreter");
        let mut command = Command::new(python);
        command
            .arg(server_script())
            .args(["--port", &port.to_string()])
            .args([
                "--tls",
                match tls {
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::Implicit => "implicit",
                },
            ])
            .arg("--cert")
            .arg(ca.cert_file())
            .arg("--key")
            .arg(ca.key_file());
        if let Some((name, password)) = user {
            command.args(["--user", name, "--password", password]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP server");
        let stdout = child.stdout.take().expect("stdout");
        let (port_tx, port_rx) = mpsc::channel();
        let (mail_tx, mails) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(port) = value["port"].as_u64() {
                    let _ = port_tx.send(u16::try_from(port).unwrap_or(0));
                    continue;
                }
                let _ = mail_tx.send(Mail {
                    from: value["from"].as_str().unwrap_or_default().to_owned(),
                    to: value["to"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    data: value["data"].as_str().unwrap_or_default().to_owned(),
                    tls: value["tls"].as_bool().unwrap_or(false),
                    user: value["user"].as_str().map(str::to_owned),
                });
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("the SMTP server printed no port within 20 s");
            }
        };
        Some(Self { child, port, mails })
    }

    /// The next message accepted within `limit`.
    pub fn next_mail(&self, limit: Duration) -> Option<Mail> {
        self.mails.recv_timeout(limit).ok()
    }

    /// Stops the server (its port is free again).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
