//! The SMTP server `serve` sends e-mail notifications through: flags
//! (`--smtp-host` …), `DESKPULSE_COLLECTOR_SMTP_*` and the config file's
//! `[smtp]` table, resolved file < env < flags (`config::resolve_serve`
//! calls [`resolve`]). Without a host there is no e-mail: e-mail
//! deliveries wait and show why in `deskpulse webhooks`.
//!
//! The password is read from `password_file` (`--smtp-password-file`) or
//! `DESKPULSE_COLLECTOR_SMTP_PASSWORD`, never from an argument, where `ps`
//! would show it; its `Debug` is redacted.

use std::net::IpAddr;
use std::path::PathBuf;

use lettre::message::Mailbox;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::config::{ConfigError, Env};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only to a relay on loopback (testing, a local MTA).
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// The `--smtp-*` flags of `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SmtpFlags {
    /// The SMTP server e-mail notifications go through; no e-mail without
    /// it [env: DESKPULSE_COLLECTOR_SMTP_HOST]
    #[arg(long, value_name = "HOST")]
    pub smtp_host: Option<String>,
    /// Its port [env: DESKPULSE_COLLECTOR_SMTP_PORT] [default: 587 for
    /// starttls, 465 for tls, 25 for none]
    #[arg(long, value_name = "PORT")]
    pub smtp_port: Option<String>,
    /// starttls (required, not opportunistic), tls (implicit), or none
    /// (loopback hosts only) [env: DESKPULSE_COLLECTOR_SMTP_TLS] [default:
    /// starttls]
    #[arg(long, value_enum, value_name = "MODE")]
    pub smtp_tls: Option<SmtpTls>,
    /// The sender, e.g. "Deskpulse <deskpulse@example.com>" [env:
    /// DESKPULSE_COLLECTOR_SMTP_FROM]
    #[arg(long, value_name = "ADDRESS")]
    pub smtp_from: Option<String>,
    /// The user name for SMTP AUTH; needs a password [env:
    /// DESKPULSE_COLLECTOR_SMTP_USERNAME]
    #[arg(long, value_name = "NAME")]
    pub smtp_username: Option<String>,
    /// A file holding the SMTP AUTH password (or set
    /// DESKPULSE_COLLECTOR_SMTP_PASSWORD) [env:
    /// DESKPULSE_COLLECTOR_SMTP_PASSWORD_FILE]
    #[arg(long, value_name = "FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// PEM certificates to trust for the SMTP server besides the system's
    /// roots [env: DESKPULSE_COLLECTOR_SMTP_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub smtp_ca_file: Option<PathBuf>,
}

/// The config file's `[smtp]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    host: Option<String>,
    port: Option<u16>,
    tls: Option<SmtpTls>,
    from: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// The SMTP password; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpPassword(String);

impl SmtpPassword {
    /// The password itself, for the AUTH exchange only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SmtpPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The resolved SMTP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// The server's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// The sender.
    pub from: Mailbox,
    /// The AUTH user, if any.
    pub username: Option<String>,
    /// The AUTH password, when there is a user.
    pub password: Option<SmtpPassword>,
    /// Extra trusted CA certificates (DER), from the CA file.
    pub ca_certs: Vec<Vec<u8>>,
}

fn env(vars: &dyn Env, key: &str) -> Option<String> {
    vars.var(&format!("DESKPULSE_COLLECTOR_SMTP_{key}"))
}

fn bad(message: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("smtp: {message}"))
}

/// Whether `host` is this machine: the only place a plain connection may go.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves the SMTP settings, file < env < flags; `None` without a host.
pub fn resolve(
    flags: &SmtpFlags,
    file: Option<SmtpFile>,
    vars: &dyn Env,
) -> Result<Option<SmtpConfig>, ConfigError> {
    let file = file.unwrap_or_default();
    let host = flags
        .smtp_host
        .clone()
        .or_else(|| env(vars, "HOST"))
        .or(file.host)
        .map(|h| h.trim().to_owned());
    let tls = match (flags.smtp_tls, env(vars, "TLS")) {
        (Some(tls), _) => Some(tls),
        (None, Some(text)) => Some(match text.trim() {
            "starttls" => SmtpTls::Starttls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => {
                return Err(bad(format!(
                    "tls {other:?}: expected starttls, tls or none"
                )));
            }
        }),
        (None, None) => file.tls,
    };
    let port_text = flags.smtp_port.clone().or_else(|| env(vars, "PORT"));
    let port = match port_text {
        Some(text) => Some(
            text.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("port {text:?} is not a port number (1-65535)")))?,
        ),
        None => file.port,
    };
    let from = flags
        .smtp_from
        .clone()
        .or_else(|| env(vars, "FROM"))
        .or(file.from);
    let username = flags
        .smtp_username
        .clone()
        .or_else(|| env(vars, "USERNAME"))
        .or(file.username);
    let password_file = flags
        .smtp_password_file
        .clone()
        .or_else(|| env(vars, "PASSWORD_FILE").map(PathBuf::from))
        .or(file.password_file);
    let ca_file = flags
        .smtp_ca_file
        .clone()
        .or_else(|| env(vars, "CA_FILE").map(PathBuf::from))
        .or(file.ca_file);
    let password_env = env(vars, "PASSWORD");

    let Some(host) = host else {
        if port.is_some()
            || tls.is_some()
            || from.is_some()
            || username.is_some()
            || password_file.is_some()
            || ca_file.is_some()
        {
            return Err(bad("host is required when other smtp settings are given"));
        }
        return Ok(None);
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(bad(format!("host {host:?} is not a host name or address")));
    }
    let tls = tls.unwrap_or_default();
    if tls == SmtpTls::None && !is_loopback(&host) {
        return Err(bad(format!(
            "tls = none sends mail and password in clear; it is allowed only to a loopback \
             host, not {host:?}"
        )));
    }
    let from_text = from.ok_or_else(|| bad("from is required, e.g. deskpulse@example.com"))?;
    let from = from_text
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| bad(format!("from {from_text:?} is not an e-mail address: {e}")))?;
    let password = match (&password_file, password_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                bad(format!(
                    "cannot read the password file {}: {e}",
                    path.display()
                ))
            })?;
            Some(text)
        }
        (None, Some(text)) => Some(text),
        (None, None) => None,
    }
    .map(|text| {
        let text = text.strip_suffix('\n').unwrap_or(&text);
        text.strip_suffix('\r').unwrap_or(text).to_owned()
    });
    let password = match (&username, password) {
        (Some(_), Some(p)) if p.is_empty() || p.contains(['\n', '\r']) => {
            return Err(bad("the password must be one non-empty line"));
        }
        (Some(_), Some(p)) => Some(SmtpPassword(p)),
        (Some(user), None) => {
            return Err(bad(format!(
                "username {user:?} needs a password: password_file, --smtp-password-file or \
                 DESKPULSE_COLLECTOR_SMTP_PASSWORD"
            )));
        }
        (None, Some(_)) => return Err(bad("a password was given without a username")),
        (None, None) => None,
    };
    let ca_certs = match &ca_file {
        None => Vec::new(),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read the CA file {}: {e}", path.display())))?;
            let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            certs
        }
    };
    Ok(Some(SmtpConfig {
        port: port.unwrap_or(tls.default_port()),
        host,
        tls,
        from,
        username,
        password,
        ca_certs,
    }))
}
