//! Webhooks: ticket events delivered to HTTP receivers from the store's
//! outbox, signed with HMAC-SHA256, retried with capped exponential backoff.
//!
//! # Layout
//! - [`check_url`], [`check_secret`], [`parse_events`]: what an admin may
//!   configure, checked before anything is stored.
//! - [`payload`]: the JSON body (documented in `docs/webhooks.md`). The store
//!   builds it inside the ticket transaction, so it shows the ticket as the
//!   event left it.
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
use serde::Serialize;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::store::{
    Delivery, DeliveryOutcome, SharedStore, StoreResult, TicketChange, TicketEvent,
};

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
/// The longest URL accepted.
const MAX_URL: usize = 2048;
/// The longest secret accepted.
const MAX_SECRET: usize = 1024;

/// The event a technician's change raises, on either store backend. A reopen is `ticket.opened`: a
/// receiver paging on new problems wants to hear that one is back (the
/// payload's `flaps` and unchanged ticket id tell it apart from a new one).
pub fn event_of(change: &TicketChange) -> TicketEvent {
    match change {
        TicketChange::Resolve(_) => TicketEvent::Resolved,
        TicketChange::Escalate => TicketEvent::Escalated,
        TicketChange::Reopen => TicketEvent::Opened,
        TicketChange::Assign(_) | TicketChange::Note(_) | TicketChange::Status(_) => {
            TicketEvent::Updated
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks a receiver URL: absolute http or https with a host, no user info
/// (a password in the URL would be shown by `deskpulse webhooks`).
pub fn check_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_URL {
        return Err(format!("the URL must be 1-{MAX_URL} characters"));
    }
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} carries a user name or password; the webhook secret signs requests instead"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok(text.to_owned())
}

/// Checks a secret as read from a file, stdin or the environment: one
/// trailing newline is dropped; it must be non-empty and printable.
pub fn check_secret(text: &str) -> Result<String, String> {
    let secret = text.strip_suffix('\n').unwrap_or(text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.trim().is_empty() {
        return Err("the webhook secret is empty".into());
    }
    if secret.len() > MAX_SECRET {
        return Err(format!(
            "the webhook secret is longer than {MAX_SECRET} bytes"
        ));
    }
    if secret.chars().any(char::is_control) {
        return Err("the webhook secret must be one line of printable text".into());
    }
    Ok(secret.to_owned())
}

/// Parses event names; none means every event. Duplicates are dropped.
pub fn parse_events<S: AsRef<str>>(names: &[S]) -> Result<Vec<TicketEvent>, String> {
    if names.is_empty() {
        return Ok(TicketEvent::ALL.to_vec());
    }
    let mut events = Vec::new();
    for name in names {
        let event: TicketEvent = name.as_ref().trim().parse()?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// The ticket as a webhook payload shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketPayload {
    /// The ticket id.
    pub id: i64,
    /// The title.
    pub title: String,
    /// The host id.
    pub host_id: String,
    /// The host's current name.
    pub hostname: String,
    /// The rule that opened it; empty for a manual ticket.
    pub rule: String,
    /// The subject (mount point, service, ...), or empty.
    pub subject: String,
    /// new, open, in_progress, waiting, resolved, closed.
    pub status: String,
    /// "P1" … "P4".
    pub priority: String,
    /// critical, high, medium, low.
    pub severity: String,
    /// The technician working it.
    pub assignee: Option<String>,
    /// The escalation level.
    pub escalation: u32,
    /// How often its condition fired.
    pub occurrences: u32,
    /// How often it reopened after resolving.
    pub flaps: u32,
    /// RFC 3339 times.
    pub opened_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it resolved, if it is resolved.
    pub resolved_at: Option<String>,
    /// When the first response is due.
    pub response_due: String,
    /// When the resolution is due.
    pub resolution_due: String,
    /// How it was resolved, if a technician resolved it.
    pub resolution: Option<String>,
}

/// An RFC 3339 UTC time with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_millis(at).to_string()
}

#[derive(Serialize)]
struct Payload<'a> {
    event: &'static str,
    delivery_id: &'a str,
    occurred_at: String,
    ticket: &'a TicketPayload,
}

/// The JSON body of one delivery.
pub fn payload(
    event: TicketEvent,
    delivery_id: &str,
    occurred_at_ms: i64,
    ticket: &TicketPayload,
) -> String {
    let body = Payload {
        event: event.name(),
        delivery_id,
        occurred_at: rfc3339(occurred_at_ms),
        ticket,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
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
        }
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
                    tracing::info!(delivery = %delivery.delivery_id, url = %delivery.url, %error, "webhook delivery failed; will retry");
                }
                DeliveryOutcome::Failed {
                    retry_at_ms: None,
                    error,
                    ..
                } => {
                    run.gave_up += 1;
                    tracing::warn!(delivery = %delivery.delivery_id, url = %delivery.url, %error, "webhook delivery given up");
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
        let signature = signature_header(
            &delivery.secret,
            now.div_euclid(1000),
            delivery.body.as_bytes(),
        );
        let request = hyper::Request::post(delivery.url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("deskpulse-collector/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Deskpulse-Event", delivery.event.as_str())
            .header("X-Deskpulse-Delivery", delivery.delivery_id.as_str())
            .header("X-Deskpulse-Signature", signature)
            .body(Full::new(Bytes::from(delivery.body.clone())));
        let request = match request {
            Ok(request) => request,
            Err(e) => return failed(None, format!("cannot build the request: {e}")),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => failed(
                None,
                format!(
                    "no response within {}",
                    humantime::format_duration(self.timeout)
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

/// A transport error and its causes, one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
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
