//! Injected time. Everything that compares against "now" (token expiry,
//! presence, rule timers, SLAs, job expiry) asks a [`Clock`], so tests can move time
//! instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The shared clock handle passed around the collector.
pub type SharedClock = Arc<dyn Clock>;

/// Shifts `serve`'s clock by this many seconds, in debug builds only: the
/// end-to-end tests move a real collector weeks ahead (certificate
/// renewal and expiry) without waiting. Release builds ignore it.
pub const TEST_OFFSET_ENV: &str = "DESKPULSE_TEST_CLOCK_OFFSET_SECS";

/// The wall clock moved by a fixed offset.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    offset_ms: i64,
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset_ms)
    }
}

/// The clock `serve` runs on: the wall clock, shifted by
/// [`TEST_OFFSET_ENV`] in a debug build. A value that is not a whole number
/// of seconds is a one-line error.
pub fn serve_clock() -> Result<SharedClock, String> {
    if !cfg!(debug_assertions) {
        return Ok(Arc::new(SystemClock));
    }
    match std::env::var(TEST_OFFSET_ENV) {
        Err(_) => Ok(Arc::new(SystemClock)),
        Ok(text) => {
            let secs: i64 = text.trim().parse().map_err(|_| {
                format!("{TEST_OFFSET_ENV} {text:?} is not a whole number of seconds")
            })?;
            Ok(Arc::new(OffsetClock {
                offset_ms: secs.saturating_mul(1000),
            }))
        }
    }
}
