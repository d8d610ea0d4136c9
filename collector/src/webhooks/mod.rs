//! Webhooks: ticket events delivered from the store's outbox to HTTP
//! receivers (signed JSON, or Slack and Teams messages) and as e-mail,
//! retried with capped exponential backoff.
//!
//! # Layout
//! - [`format`]: what an admin may configure ([`check_url`],
//!   [`check_secret`], [`parse_events`]), checked before anything is
//!   stored; [`event_of`] a ticket change and [`payload`], the JSON body
//!   (documented in `docs/webhooks.md`). The ticket engine builds it inside
//!   the ticket transaction, so it shows the ticket as the event left it.
//! - [`problems`]: the body of a problem event (issue 23).
//! - [`route`]: formats, `mailto:` targets, priority and assignee filters,
//!   and the address each e-mail goes to; [`render`]: the Slack and Teams
//!   messages and the e-mail texts, made at delivery time from the stored
//!   payload.
//! - [`change`]: the body's `change` object, what changed and who changed
//!   it (a note's text only when the note is public).
//! - [`sign`], [`signature_header`], [`verify`]: the `X-Deskpulse-Signature`
//!   scheme, HMAC-SHA256 over `"<unix seconds>.<body>"`.
//! - [`Deliverer`]: claims due deliveries and POSTs them; [`run`] is the
//!   background task `serve` spawns. Ingest and rule evaluation only write
//!   outbox rows, so a slow or dead receiver never holds them up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

pub mod change;
pub mod format;
pub mod problems;
pub mod render;
pub mod route;

pub use format::{
    TicketPayload, check_secret, check_url, event_of, parse_events, payload, rfc3339,
};

use crate::clock::SharedClock;
use crate::store::{Delivery, DeliveryOutcome, SharedStore, StoreResult, WebhookFormat};

/// How long one POST may take, connect to status line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry waits this long; each one after waits twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// No retry waits longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// A delivery still failing this long after its event is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A claimed delivery is not claimed again for this long; well above
/// [`REQUEST_TIMEOUT`], so only a crashed attempt is ever retried by it.
pub const LEASE: Duration = Duration::from_secs(60);
/// The most deliveries in flight at once.
pub const CONCURRENCY: u32 = 16;
/// How often the background task looks for due deliveries.
pub const POLL: Duration = Duration::from_secs(5);
/// Finished deliveries are kept this long, so `deskpulse webhooks` counts
/// cover the last 30 days.
pub const KEEP_FINISHED: Duration = Duration::from_secs(30 * 24 * 3600);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this never fails.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
/// Signing the timestamp with the body lets a receiver refuse replays of an
/// old delivery.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// The `X-Deskpulse-Signature` value: `t=<unix seconds>,sha256=<hex>`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},sha256={}", sign(secret, timestamp, body))
}

/// What a receiver does: checks a signature header against the body, in
/// constant time, and that its timestamp is within `tolerance_s` of
/// `now_s`. Returns the signed timestamp.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<i64, String> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("sha256", s)) => signature = hex::decode(s).ok(),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("no t= timestamp")?;
    let signature = signature.ok_or("no sha256= signature")?;
    if (now_s - timestamp).abs() > tolerance_s {
        return Err(format!("timestamp {timestamp} is too far from now"));
    }
    mac(secret, timestamp, body)
        .verify_slice(&signature)
        .map_err(|_| "signature mismatch".to_owned())?;
    Ok(timestamp)
}

/// The wait before retry number `attempt` (1 for the first retry): 30 s
/// doubling to at most an hour, times a jitter factor in `[0.8, 1.2)` so
/// many deliveries failing together do not retry together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = doubled.min(MAX_RETRY);
    capped.mul_f64(jitter.clamp(0.8, 1.2))
}

/// What one [`Deliverer::deliver_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryRun {
    /// Accepted by their receivers.
    pub delivered: u32,
    /// Failed and scheduled for a retry.
    pub retrying: u32,
    /// Failed for the last time.
    pub gave_up: u32,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends due deliveries.
#[derive(Clone)]
pub struct Deliverer {
    store: SharedStore,
    clock: SharedClock,
    client: HttpClient,
    timeout: Duration,
    mailer: Option<crate::mail::Mailer>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").finish_non_exhaustive()
    }
}

/// A rustls client config on ring with the OS's trusted roots, plus
/// `extra_roots`.
fn tls_config(extra_roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let (extra, _) = roots.add_parsable_certificates(extra_roots.iter().cloned());
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's trusted certificates");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added + extra == 0 {
        tracing::warn!("no trusted root certificates found; https webhooks will fail");
    }
    // An explicit provider: the process-wide default may be unset in tests
    // and tools, and only ring is built in (STACK-NOTES.md).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default versions; this arm only keeps a panic
        // out of the server.
        Err(error) => {
            tracing::error!(%error, "TLS setup for webhooks failed");
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    }
}

impl Deliverer {
    /// A deliverer over `store`, taking "now" from `clock`, trusting the
    /// OS's roots for `https://` receivers.
    pub fn new(store: SharedStore, clock: SharedClock) -> Self {
        Self::trusting(store, clock, &[])
    }

    /// The same, also trusting `extra_roots` (a private CA's certificates).
    pub fn trusting(
        store: SharedStore,
        clock: SharedClock,
        extra_roots: &[CertificateDer<'static>],
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Self {
            store,
            clock,
            client,
            timeout: REQUEST_TIMEOUT,
            mailer: None,
        }
    }

    /// The same, sending e-mail deliveries through `mailer`; without one
    /// they fail, are retried, and say why in `deskpulse webhooks`.
    pub fn with_mailer(mut self, mailer: Option<crate::mail::Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// The same, with another per-request timeout (tests use a short one
    /// rather than wait out ten real seconds).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One pass: claims up to [`CONCURRENCY`] due deliveries, POSTs them
    /// concurrently, and records each outcome. Tests call this directly
    /// after moving a manual clock.
    pub async fn deliver_due(&self) -> StoreResult<DeliveryRun> {
        let now = self.clock.now_ms();
        let claimed = self
            .store
            .claim_deliveries(now, ms(LEASE), CONCURRENCY)
            .await?;
        let attempts = claimed.iter().map(|d| async move {
            let outcome = self.attempt(d).await;
            (d, outcome)
        });
        let mut run = DeliveryRun::default();
        for (delivery, outcome) in futures_util::future::join_all(attempts).await {
            match &outcome {
                DeliveryOutcome::Delivered(_) => run.delivered += 1,
                DeliveryOutcome::Failed {
                    retry_at_ms: Some(_),
                    error,
                    ..
                } => {
                    run.retrying += 1;
                    tracing::info!(delivery = %delivery.delivery_id, url = %route::shown_url(&delivery.url, delivery.format), %error, "webhook delivery failed; will retry");
                }
                DeliveryOutcome::Failed {
                    retry_at_ms: None,
                    error,
                    ..
                } => {
                    run.gave_up += 1;
                    tracing::warn!(delivery = %delivery.delivery_id, url = %route::shown_url(&delivery.url, delivery.format), %error, "webhook delivery given up");
                }
            }
            self.store
                .record_delivery(delivery.id, &outcome, self.clock.now_ms())
                .await?;
        }
        Ok(run)
    }

    /// One POST; never longer than the timeout ([`REQUEST_TIMEOUT`]).
    async fn attempt(&self, delivery: &Delivery) -> DeliveryOutcome {
        let now = self.clock.now_ms();
        let failed = |status: Option<u16>, error: String| {
            let attempt = delivery.attempts.saturating_add(1);
            let retry_at = now.saturating_add(ms(backoff(attempt, rand::random_range(0.8..1.2))));
            let give_up = retry_at.saturating_sub(delivery.created_at_ms) > ms(GIVE_UP_AFTER);
            DeliveryOutcome::Failed {
                status,
                error,
                retry_at_ms: (!give_up).then_some(retry_at),
            }
        };
        let (body, signature) = match delivery.format {
            WebhookFormat::Generic => {
                let signature = signature_header(
                    &delivery.secret,
                    now.div_euclid(1000),
                    delivery.body.as_bytes(),
                );
                (delivery.body.clone(), Some(signature))
            }
            // Slack and Teams check no signature: their URL is the secret.
            WebhookFormat::Slack => (render::slack(&render::Stored::parse(&delivery.body)), None),
            WebhookFormat::Teams => (render::teams(&render::Stored::parse(&delivery.body)), None),
            WebhookFormat::Email => {
                return match self.mail(delivery).await {
                    Ok(()) => DeliveryOutcome::Delivered(250),
                    Err(error) => failed(None, error),
                };
            }
        };
        let mut request = hyper::Request::post(delivery.url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("deskpulse-collector/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Deskpulse-Event", delivery.event.as_str())
            .header("X-Deskpulse-Delivery", delivery.delivery_id.as_str());
        if let Some(signature) = signature {
            request = request.header("X-Deskpulse-Signature", signature);
        }
        let request = request.body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(e) => return failed(None, format!("cannot build the request: {e}")),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => failed(
                None,
                format!(
                    "no response within {}",
                    crate::units::duration(self.timeout)
                ),
            ),
            Ok(Err(e)) => failed(None, describe(&e)),
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    DeliveryOutcome::Delivered(status.as_u16())
                } else {
                    failed(
                        Some(status.as_u16()),
                        format!("the receiver answered HTTP {status}"),
                    )
                }
            }
        }
    }
}

impl Deliverer {
    /// Sends an e-mail delivery through the configured SMTP server, within
    /// the mailer's own timeout.
    async fn mail(&self, delivery: &Delivery) -> Result<(), String> {
        let Some(mailer) = &self.mailer else {
            return Err(
                "no SMTP server is configured on this collector (serve --smtp-host or [smtp])"
                    .into(),
            );
        };
        let Some(to) = delivery.recipient.as_deref() else {
            return Err("this e-mail delivery has no recipient".into());
        };
        let stored = render::Stored::parse(&delivery.body);
        let reader = if delivery.url == route::REPORTER_TARGET {
            render::Reader::Reporter
        } else {
            render::Reader::HelpDesk
        };
        let message = crate::mail::message(
            mailer.from(),
            to,
            &render::mail_subject(&stored, reader),
            render::mail_body(&stored, reader),
            &delivery.delivery_id,
        )?;
        mailer.send(message).await
    }
}

/// A transport error and its causes, one line.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Until `shutdown`: every [`POLL`], delivers what is due, pass after pass
/// while passes deliver something (a ticket's next event becomes claimable
/// once the one before it is delivered) or come back full. A pass finishes
/// before shutdown is honoured; its requests time out after
/// [`REQUEST_TIMEOUT`]. Hourly, finished deliveries past [`KEEP_FINISHED`]
/// are deleted.
pub async fn run(deliverer: Deliverer, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = purge.tick() => {
                let before = deliverer.clock.now_ms().saturating_sub(ms(KEEP_FINISHED));
                match deliverer.store.purge_deliveries(before).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "finished webhook deliveries past their retention deleted"),
                    Err(error) => tracing::warn!(%error, "purging finished webhook deliveries failed"),
                }
                continue;
            }
        }
        loop {
            match deliverer.deliver_due().await {
                Ok(run) => {
                    if run != DeliveryRun::default() {
                        tracing::debug!(?run, "webhook deliveries");
                    }
                    let done = run.delivered + run.retrying + run.gave_up;
                    let more = run.delivered > 0 || done >= CONCURRENCY;
                    if !more || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook delivery pass failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
