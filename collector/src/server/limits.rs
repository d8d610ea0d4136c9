//! Limits on what a caller may repeat: failed authentications by source
//! address (API tokens on the technician API, enrollment tokens), so that
//! guessing costs the guesser time and the store nothing; and employees'
//! problem reports per host, so that an enrolled agent cannot open tickets
//! without end (the agent limits each of its users too; the same text
//! again is folded into its open ticket by the store).
//!
//! The counts are in memory, per replica: a restart forgets them, which
//! costs a guesser one window. An IPv6 address counts by its /64, which one
//! machine usually holds whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

/// Failed attempts an address may make in one window.
pub const MAX_FAILED_ATTEMPTS: u32 = 10;
/// The window failed attempts are counted in, from the first.
pub const FAILED_ATTEMPT_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; a flood from more than this many addresses
/// pushes out the ones whose window is over first.
const MAX_TRACKED: usize = 65_536;

/// Failed attempts per source address, over a fixed window that starts at
/// an address's first failure.
///
/// A caller reserves an attempt before its token is looked up
/// ([`FailedAttempts::reserve`]), and the reservation counts against the
/// address until the lookup ends: failures plus lookups in flight never
/// pass the limit, so a flood of concurrent guesses gets exactly as many
/// lookups as the limit allows (checking first and counting after let 177
/// of 300 race past a limit of 10). A caller that finds the budget taken
/// only by lookups in flight waits for them briefly rather than being
/// refused, so honest concurrent calls from one address are not turned
/// away while they succeed.
#[derive(Debug)]
pub struct FailedAttempts {
    /// What the attempts were at, for the log ("API token", "enrollment
    /// token").
    what: &'static str,
    max_failures: u32,
    window: Duration,
    by_source: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    /// Attempts reserved and not yet ended (lookups in flight).
    in_flight: u32,
}

/// How long a caller waits for other lookups from its address to end
/// before its own may start, and how often it looks.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);
const IN_FLIGHT_POLL: Duration = Duration::from_millis(5);

/// One reserved attempt from an address ([`FailedAttempts::reserve`]):
/// [`Attempt::failed`] counts it as a failure; dropping it otherwise (the
/// token was good, or the request failed for another reason) gives the
/// reservation back.
#[derive(Debug)]
#[must_use = "an attempt counts as a failure only through Attempt::failed"]
pub struct Attempt<'a> {
    limits: &'a FailedAttempts,
    source: Option<IpAddr>,
}

impl Attempt<'_> {
    /// Counts this attempt as a failure of its address.
    pub fn failed(mut self) {
        if let Some(source) = self.source.take() {
            self.limits.end(source, true);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            self.limits.end(source, false);
        }
    }
}

impl FailedAttempts {
    /// [`MAX_FAILED_ATTEMPTS`] per [`FAILED_ATTEMPT_WINDOW`].
    pub fn new(what: &'static str) -> Self {
        Self::with_limit(what, MAX_FAILED_ATTEMPTS, FAILED_ATTEMPT_WINDOW)
    }

    /// `max_failures` per `window`.
    pub fn with_limit(what: &'static str, max_failures: u32, window: Duration) -> Self {
        Self {
            what,
            max_failures,
            window,
            by_source: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // Plain counters: a panic elsewhere cannot leave them worth refusing
        // every caller for.
        self.by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves one attempt for `peer` before any token is looked up, or
    /// refuses a caller whose address used up its failed attempts, with
    /// when to retry. While the budget left is held by lookups in flight,
    /// waits for them (at most [`IN_FLIGHT_WAIT`]). A caller without an
    /// address (in-process) is not limited.
    pub async fn reserve(&self, peer: Option<SocketAddr>) -> Result<Attempt<'_>, Status> {
        let Some(source) = peer.map(source_of) else {
            return Ok(Attempt {
                limits: self,
                source: None,
            });
        };
        let waited_from = Instant::now();
        loop {
            match self.try_reserve(source) {
                Reservation::Reserved => {
                    return Ok(Attempt {
                        limits: self,
                        source: Some(source),
                    });
                }
                Reservation::Refused { retry_in_secs } => {
                    tracing::info!(
                        %source,
                        what = self.what,
                        retry_in_secs,
                        "refused a caller with too many failed attempts"
                    );
                    return Err(refusal(source, retry_in_secs));
                }
                Reservation::Busy { retry_in_secs } => {
                    if waited_from.elapsed() >= IN_FLIGHT_WAIT {
                        return Err(refusal(source, retry_in_secs));
                    }
                    tokio::time::sleep(IN_FLIGHT_POLL).await;
                }
            }
        }
    }

    fn try_reserve(&self, source: IpAddr) -> Reservation {
        let now = Instant::now();
        let mut by_source = self.lock();
        if by_source.len() >= MAX_TRACKED && !by_source.contains_key(&source) {
            let window = self.window;
            by_source.retain(|_, w| {
                w.in_flight > 0 || now.saturating_duration_since(w.started) < window
            });
            if by_source.len() >= MAX_TRACKED
                && let Some(any) = by_source
                    .iter()
                    .find(|(_, w)| w.in_flight == 0)
                    .map(|(k, _)| *k)
            {
                by_source.remove(&any);
            }
        }
        let entry = by_source.entry(source).or_insert(Window {
            started: now,
            failures: 0,
            in_flight: 0,
        });
        let elapsed = now.saturating_duration_since(entry.started);
        if elapsed >= self.window {
            // A new window; lookups still in flight keep their place.
            entry.started = now;
            entry.failures = 0;
        }
        let retry_in_secs = (self.window.saturating_sub(elapsed)).as_secs() + 1;
        if entry.failures >= self.max_failures {
            return Reservation::Refused { retry_in_secs };
        }
        if entry.failures.saturating_add(entry.in_flight) >= self.max_failures {
            return Reservation::Busy { retry_in_secs };
        }
        entry.in_flight += 1;
        Reservation::Reserved
    }

    /// Ends a reserved attempt: a failure is counted, else the reservation
    /// is given back.
    fn end(&self, source: IpAddr, failed: bool) {
        let now = Instant::now();
        let mut by_source = self.lock();
        let Some(entry) = by_source.get_mut(&source) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if !failed {
            if entry.failures == 0 && entry.in_flight == 0 {
                by_source.remove(&source);
            }
            return;
        }
        if now.saturating_duration_since(entry.started) >= self.window {
            entry.started = now;
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures == self.max_failures {
            tracing::warn!(
                %source,
                what = self.what,
                failures = entry.failures,
                window = ?self.window,
                "an address used up its failed attempts; refusing it until the window ends"
            );
        }
    }
}

enum Reservation {
    Reserved,
    /// The address used up its failed attempts.
    Refused {
        retry_in_secs: u64,
    },
    /// What is left of the budget is held by lookups in flight.
    Busy {
        retry_in_secs: u64,
    },
}

fn refusal(source: IpAddr, retry_in_secs: u64) -> Status {
    Status::resource_exhausted(format!(
        "too many failed attempts from {source}, retry in {retry_in_secs} s"
    ))
}

/// Employee reports a host may send in one [`USER_REPORT_WINDOW`].
pub const MAX_USER_REPORTS_PER_HOST: u32 = 30;
/// The window employee reports are counted in, from a host's first.
pub const USER_REPORT_WINDOW: Duration = Duration::from_secs(3600);
/// Hosts tracked before the ones whose window is over are forgotten.
const MAX_TRACKED_HOSTS: usize = 100_000;

/// Employee reports per host, over a fixed window from the host's first.
#[derive(Debug)]
pub struct UserReports {
    max_reports: u32,
    window: Duration,
    by_host: Mutex<HashMap<String, Window>>,
}

impl Default for UserReports {
    fn default() -> Self {
        Self::with_limit(MAX_USER_REPORTS_PER_HOST, USER_REPORT_WINDOW)
    }
}

impl UserReports {
    /// `max_reports` per `window` and host.
    pub fn with_limit(max_reports: u32, window: Duration) -> Self {
        Self {
            max_reports,
            window,
            by_host: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one report from `host`; the reason to reject it when the host
    /// is over its limit. The first refusal of a window is logged as a
    /// warning, the rest only as the rejections they are.
    pub fn admit(&self, host: &str) -> Result<(), String> {
        let now = Instant::now();
        let mut by_host = self
            .by_host
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if by_host.len() >= MAX_TRACKED_HOSTS && !by_host.contains_key(host) {
            let window = self.window;
            by_host.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        let entry = by_host.entry(host.to_owned()).or_insert(Window {
            started: now,
            failures: 0,
            in_flight: 0,
        });
        let elapsed = now.saturating_duration_since(entry.started);
        if elapsed >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
                in_flight: 0,
            };
        }
        if entry.failures >= self.max_reports {
            let retry_in = (self.window.saturating_sub(elapsed)).as_secs() + 1;
            if entry.failures == self.max_reports {
                tracing::warn!(
                    host,
                    max = self.max_reports,
                    window = ?self.window,
                    "a host sent more employee reports than allowed; rejecting them until the window ends"
                );
                entry.failures += 1;
            }
            return Err(format!(
                "too many employee reports from this PC: at most {} per {} min; this one was \
                 not stored, try again in {retry_in} s",
                self.max_reports,
                self.window.as_secs() / 60
            ));
        }
        entry.failures += 1;
        Ok(())
    }
}

/// What failed attempts are counted under: the IPv4 address, or an IPv6
/// address's /64 (an IPv4-mapped one as IPv4).
fn source_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests;
