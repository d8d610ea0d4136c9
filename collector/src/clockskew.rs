//! Clocks that lie (issue 20): how far the times an agent claims are
//! believed, and how far off each PC's clock is.
//!
//! An agent dates what it collects by the PC's clock, which may be hours
//! or years off (a dead CMOS battery, a wrong time zone, a hostile
//! agent). One health sample dated 2100 used to freeze a host's latest
//! health for good, since only a newer sample could replace it. So:
//!
//! - a report time later than the collector's receive time plus the
//!   policy's clock window, or older than its `oldest`, is replaced by the
//!   receive time ([`ClockWindow::judge`]); the time claimed is kept on the
//!   host as evidence;
//! - a host's latest health is the one received last, never the one
//!   claiming the latest time (`store/sqlite/batch.rs`,
//!   `store/postgres/mod.rs`);
//! - the agent stamps each Hello and each report with its clock when it
//!   sends it, and the session measures the offset against its own clock
//!   ([`Tracker`]), records it on the host (shown by `deskpulse host
//!   show`), and gives it to the rules as `clock_offset_minutes`, which
//!   the default `clock-off` rule raises a low ticket on.
//!
//! Pure arithmetic on i64 milliseconds: every value an agent sends is
//! handled with saturating arithmetic, so `i64::MAX` or a negative time is
//! a clamp, never an overflow. It imports only the rules' reading type.

/// How far the times an agent claims are believed: the policy's `[clock]`
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockWindow {
    /// How far a PC's clock may be off either way before it is flagged, and
    /// how far past the receive time a report's time is kept, ms.
    pub window_ms: i64,
    /// How old a report's time may be and be kept, ms: a spool holds
    /// reports for weeks while a laptop is away, so this is long.
    pub oldest_ms: i64,
}

/// The clock window unless the policy says otherwise: five minutes (NTP
/// keeps clocks within seconds; Kerberos refuses past five minutes).
pub const DEFAULT_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Report times older than this are replaced unless the policy says
/// otherwise: 90 days.
pub const DEFAULT_OLDEST_MS: i64 = 90 * 24 * 3600 * 1000;

impl Default for ClockWindow {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_WINDOW_MS,
            oldest_ms: DEFAULT_OLDEST_MS,
        }
    }
}

/// A report's time as kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The time stored with the report.
    pub at_ms: i64,
    /// What the agent claimed, when it was not believed.
    pub claimed_ms: Option<i64>,
}

impl ClockWindow {
    /// The time kept for a report claiming `claimed_ms`, received at
    /// `received_ms`: the claim, unless it is later than the window allows
    /// or older than `oldest`, when it is the receive time.
    pub fn judge(&self, claimed_ms: i64, received_ms: i64) -> Judged {
        let latest = received_ms.saturating_add(self.window_ms);
        let earliest = received_ms.saturating_sub(self.oldest_ms);
        if claimed_ms > latest || claimed_ms < earliest {
            Judged {
                at_ms: received_ms,
                claimed_ms: Some(claimed_ms),
            }
        } else {
            Judged {
                at_ms: claimed_ms,
                claimed_ms: None,
            }
        }
    }

    /// Whether a measured offset is beyond the window, either way.
    pub fn beyond(&self, offset_ms: i64) -> bool {
        offset_ms.unsigned_abs() > self.window_ms.unsigned_abs()
    }
}

/// The largest offset recorded, either way: about 100 years. A claim past
/// it says nothing more about the clock than that it is wildly off.
pub const MAX_OFFSET_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// The PC's clock minus the collector's, from a message the agent stamped
/// `sent_ms` and the collector received at `received_ms`; `None` when the
/// agent did not stamp it (0, an older agent) or stamped a negative time.
pub fn offset_ms(sent_ms: i64, received_ms: i64) -> Option<i64> {
    if sent_ms <= 0 {
        return None;
    }
    Some(
        sent_ms
            .saturating_sub(received_ms)
            .clamp(-MAX_OFFSET_MS, MAX_OFFSET_MS),
    )
}

/// An offset in words for a technician: "on time", "3h 2m ahead",
/// "40s behind" ([`crate::units::span`]).
pub fn describe(offset_ms: i64) -> String {
    let secs = offset_ms.unsigned_abs() / 1000;
    if secs == 0 {
        return "on time".into();
    }
    let amount = crate::units::span(std::time::Duration::from_secs(secs));
    let side = if offset_ms > 0 { "ahead" } else { "behind" };
    format!("{amount} {side}")
}

/// The rules' reading of an offset: whole minutes off, either way
/// (`clock_offset_minutes`).
pub fn reading(offset_ms: i64) -> crate::rules::model::Reading {
    (
        crate::rules::model::Metric::ClockOffsetMinutes,
        String::new(),
        (offset_ms.unsigned_abs() / 60_000) as f64,
    )
}

/// What a session records on its host ([`Tracker::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockReading {
    /// The offset last measured, if the agent stamps its messages.
    pub offset_ms: Option<i64>,
    /// When, by the collector's clock.
    pub measured_at_ms: i64,
    /// Reports whose time was replaced since the last record.
    pub clamped: u64,
    /// The time the last of those claimed.
    pub last_claim_ms: Option<i64>,
}

/// How much the offset must move before it is recorded again, ms.
const RECORD_WHEN_MOVED_MS: i64 = 60_000;
/// How often a steady offset (or a clamped report) is recorded at most, ms:
/// one host write per session this often, never one per report.
const RECORD_EVERY_MS: i64 = 60 * 60_000;

/// One session's view of its PC's clock: the offsets measured from the
/// Hello and each report, the reports clamped, and when to write them to
/// the store (at the Hello, when the offset moves or crosses the window,
/// and otherwise at most hourly).
#[derive(Debug, Clone)]
pub struct Tracker {
    window: ClockWindow,
    latest: Option<i64>,
    recorded: Option<(Option<i64>, i64)>,
    clamped: u64,
    last_claim_ms: Option<i64>,
    /// A clamp was recorded this session: later ones wait a minute.
    clamp_recorded: bool,
}

impl Tracker {
    /// A tracker for a session under `window`.
    pub fn new(window: ClockWindow) -> Self {
        Self {
            window,
            latest: None,
            recorded: None,
            clamped: 0,
            last_claim_ms: None,
            clamp_recorded: false,
        }
    }

    /// The clock window in force for this session.
    pub fn window(&self) -> ClockWindow {
        self.window
    }

    /// Measures the offset from a message stamped `sent_ms`.
    pub fn sent(&mut self, sent_ms: i64, received_ms: i64) {
        if let Some(offset) = offset_ms(sent_ms, received_ms) {
            self.latest = Some(offset);
        }
    }

    /// The offset last measured.
    pub fn offset_ms(&self) -> Option<i64> {
        self.latest
    }

    /// The time kept for a report claiming `claimed_ms`; counts a clamp.
    pub fn judge(&mut self, claimed_ms: i64, received_ms: i64) -> i64 {
        let judged = self.window.judge(claimed_ms, received_ms);
        if let Some(claimed) = judged.claimed_ms {
            self.clamped = self.clamped.saturating_add(1);
            self.last_claim_ms = Some(claimed);
        }
        judged.at_ms
    }

    /// What to record now, if anything; the caller then calls
    /// [`Tracker::recorded`] once it is stored.
    pub fn due(&self, now_ms: i64) -> Option<ClockReading> {
        let reading = ClockReading {
            offset_ms: self.latest,
            measured_at_ms: now_ms,
            clamped: self.clamped,
            last_claim_ms: self.last_claim_ms,
        };
        let Some((recorded, at)) = self.recorded else {
            return Some(reading);
        };
        let stale = now_ms.saturating_sub(at) >= RECORD_EVERY_MS;
        let moved = match (recorded, self.latest) {
            (Some(old), Some(new)) => {
                new.saturating_sub(old).unsigned_abs() > RECORD_WHEN_MOVED_MS.unsigned_abs()
                    || self.window.beyond(old) != self.window.beyond(new)
            }
            (None, Some(_)) => true,
            _ => false,
        };
        let since = now_ms.saturating_sub(at);
        let clamps_due =
            self.clamped > 0 && (!self.clamp_recorded || since >= RECORD_WHEN_MOVED_MS);
        (moved || clamps_due || (stale && self.latest.is_some())).then_some(reading)
    }

    /// What is left to record when the session ends, if anything.
    pub fn flush(&self, now_ms: i64) -> Option<ClockReading> {
        let unrecorded = match self.recorded {
            None => true,
            Some((offset, _)) => offset != self.latest || self.clamped > 0,
        };
        unrecorded.then_some(ClockReading {
            offset_ms: self.latest,
            measured_at_ms: now_ms,
            clamped: self.clamped,
            last_claim_ms: self.last_claim_ms,
        })
    }

    /// `reading` is stored: the clamps it carried are counted.
    pub fn recorded(&mut self, reading: &ClockReading) {
        self.recorded = Some((reading.offset_ms, reading.measured_at_ms));
        self.clamp_recorded |= reading.clamped > 0;
        self.clamped = self.clamped.saturating_sub(reading.clamped);
        if self.clamped == 0 {
            self.last_claim_ms = None;
        }
    }
}

#[cfg(test)]
mod tests;
