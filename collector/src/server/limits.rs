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

    /// Refuses a caller whose address used up its failed attempts, with
    /// when to retry; before any token is looked up. A caller without an
    /// address (in-process) is not limited.
    pub fn check(&self, peer: Option<SocketAddr>) -> Result<(), Status> {
        let Some(source) = peer.map(source_of) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut by_source = self.lock();
        let Some(window) = by_source.get(&source).copied() else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= self.window {
            by_source.remove(&source);
            return Ok(());
        }
        if window.failures < self.max_failures {
            return Ok(());
        }
        drop(by_source);
        let retry_in = (self.window - elapsed).as_secs() + 1;
        tracing::info!(
            %source,
            what = self.what,
            retry_in_secs = retry_in,
            "refused a caller with too many failed attempts"
        );
        Err(Status::resource_exhausted(format!(
            "too many failed attempts from {source}, retry in {retry_in} s"
        )))
    }

    /// Counts a failed attempt from `peer`.
    pub fn failed(&self, peer: Option<SocketAddr>) {
        let Some(source) = peer.map(source_of) else {
            return;
        };
        let now = Instant::now();
        let mut by_source = self.lock();
        if by_source.len() >= MAX_TRACKED && !by_source.contains_key(&source) {
            let window = self.window;
            by_source.retain(|_, w| now.saturating_duration_since(w.started) < window);
            if by_source.len() >= MAX_TRACKED
                && let Some(any) = by_source.keys().next().copied()
            {
                by_source.remove(&any);
            }
        }
        let entry = by_source.entry(source).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(entry.started) >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
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
        });
        let elapsed = now.saturating_duration_since(entry.started);
        if elapsed >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
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
