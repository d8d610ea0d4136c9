//! E-mail through SMTP (issue 23): the `[smtp]` part of `serve`'s config
//! and the [`Mailer`] the webhook delivery task sends e-mail deliveries
//! with (lettre on tokio and rustls with ring; no OpenSSL).
//!
//! # Layout
//! - [`config`]: `--smtp-*` flags, `DESKPULSE_COLLECTOR_SMTP_*`, the
//!   config file's `[smtp]` table, resolved file < env < flags into an
//!   [`SmtpConfig`], every mistake one line. The password comes from a
//!   file or the environment, never an argument, and is never logged.
//! - [`Mailer`]: one SMTP transport (STARTTLS, implicit TLS, or plain to
//!   a loopback relay), trusting the system's roots and the optional CA
//!   file; [`message`] builds one plain-text message with lettre's
//!   builders, which fold and encode header values, so text from agents
//!   cannot add a header.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub mod config;

pub use config::{SmtpConfig, SmtpFlags, SmtpTls};

/// How long one SMTP conversation may take, connect to the last reply.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends e-mail through the configured SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `config`; an error is one line (a CA certificate rustls
    /// refuses, say).
    pub fn new(config: &SmtpConfig) -> Result<Self, String> {
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(config.host.clone());
                for der in &config.ca_certs {
                    let cert = Certificate::from_der(der.clone())
                        .map_err(|e| format!("smtp CA certificate: {e}"))?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| format!("smtp TLS setup: {e}"))?;
                if mode == SmtpTls::Starttls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            from: config.from.clone(),
            server: format!("{}:{}", config.host, config.port),
        })
    }

    /// The sender every message has.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Sends one message; the error is one line naming the server.
    pub async fn send(&self, message: Message) -> Result<(), String> {
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp {}: {}", self.server, crate::webhooks::describe(&e)))
    }
}

/// One plain-text message. The subject and body are text: lettre encodes
/// the subject (RFC 2047 where needed) and the body (quoted-printable or
/// base64 as needed), so no value can end a header or start another.
/// `message_id` makes retries of one delivery the same message
/// (`<delivery id@deskpulse>`).
pub fn message(
    from: &Mailbox,
    to: &str,
    subject: &str,
    body: String,
    message_id: &str,
) -> Result<Message, String> {
    let to: Mailbox = crate::webhooks::route::check_address(to)?
        .parse::<lettre::Address>()
        .map(|a| Mailbox::new(None, a))
        .map_err(|e| format!("{to:?} is not an e-mail address: {e}"))?;
    // Defence in depth: the subject is one line whatever the caller made.
    let subject: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{message_id}@deskpulse>")))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the e-mail: {e}"))
}

#[cfg(test)]
mod tests;
