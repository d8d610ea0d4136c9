//! Health rules and the ticket lifecycle they drive (issue "Proactive
//! tickets"), as plain code: no store, no clock of their own. The store
//! keeps each [`RuleState`] (D21) and hands it back with the next reading
//! and the current time; [`step`] says what changed.
//!
//! # Layout
//! - [`model`]: rules as admins write them (TOML), checked, with the
//!   default set a help desk switches on as it is.
//! - [`priority`]: the impact × urgency matrix and SLA targets.
//! - [`policy`]: fleet policy as applied by admins: rules merged over the
//!   defaults, SLA targets, the business-hours calendar, lifecycle timing.
//! - [`events`]: the inventory changes change rules fire on.
//! - [`problems`]: the `[problems]` section, group keys and a problem's
//!   impact (issue 23).
//! - this module: the per-(host, rule, subject) state machine with
//!   duration, hysteresis, quiet period and reopen window.

pub mod events;
pub mod model;
pub mod policy;
pub mod priority;
pub mod problems;
pub mod triage;

use model::Rule;
use serde::{Deserialize, Serialize};

/// The rule name of tickets employees open from their PC.
pub const USER_REPORT_RULE: &str = "user-report";

/// The rule name of the tickets raised when an enrollment claims the
/// hardware identity of a host that exists (issue 20).
pub const DUPLICATE_IDENTITY_RULE: &str = "duplicate-hardware-identity";

/// Timing of the ticket lifecycle, fleet policy (D7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// How long a recovered condition must stay recovered before the ticket
    /// auto-resolves, ms.
    pub quiet_ms: i64,
    /// How long after resolving a re-fire reopens the same ticket, ms.
    pub reopen_window_ms: i64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            quiet_ms: 15 * 60_000,
            reopen_window_ms: 24 * 3_600_000,
        }
    }
}

/// Where one (host, rule, subject) stands. Serialisable: it lives in the
/// store between readings (D21).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum RuleState {
    /// The condition does not hold and no ticket is open.
    #[default]
    Ok,
    /// The condition holds since `since_ms`, not yet for the rule's
    /// duration. `resolved_at_ms` remembers a ticket that resolved before,
    /// so firing within the reopen window reopens it.
    Pending {
        /// When it started to hold.
        since_ms: i64,
        /// When this rule's last ticket resolved, if it is recent.
        resolved_at_ms: Option<i64>,
    },
    /// The rule fired; its ticket is open.
    Firing {
        /// When it fired.
        fired_at_ms: i64,
    },
    /// The condition cleared (past the recovery threshold) at `since_ms`;
    /// the ticket resolves once the quiet period passes without a re-fire.
    Recovering {
        /// When it cleared.
        since_ms: i64,
    },
    /// The ticket auto-resolved at `resolved_at_ms`; a re-fire within the
    /// reopen window reopens it.
    Resolved {
        /// When it resolved.
        resolved_at_ms: i64,
    },
}

/// What a step asks the ticket side to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketAction {
    /// Open a new ticket.
    Open,
    /// Reopen the ticket that resolved within the window (a flap).
    Reopen,
    /// The open ticket's condition holds again: count an occurrence.
    Occurrence,
    /// Auto-resolve the open ticket, with a note.
    Resolve,
}

/// Feeds one reading (or, with `None`, only the passage of time) to the
/// state machine. Returns the new state and the ticket action, if any.
///
/// Hysteresis: a firing rule clears only past its recovery threshold, so a
/// reading between the two thresholds changes nothing. While recovering, a
/// reading past the raise threshold returns to firing without a new ticket.
pub fn step(
    rule: &Rule,
    state: RuleState,
    reading: Option<f64>,
    now_ms: i64,
    lifecycle: Lifecycle,
) -> (RuleState, Option<TicketAction>) {
    let raised = reading.is_some_and(|v| rule.raises(v));
    let cleared = reading.is_some_and(|v| rule.clears(v));
    let start = |resolved_at_ms: Option<i64>| {
        if rule.duration_ms == 0 {
            fire(resolved_at_ms, now_ms, lifecycle)
        } else {
            (
                RuleState::Pending {
                    since_ms: now_ms,
                    resolved_at_ms,
                },
                None,
            )
        }
    };
    match state {
        RuleState::Ok if raised => start(None),
        RuleState::Ok => (state, None),
        RuleState::Resolved { resolved_at_ms } if raised => start(Some(resolved_at_ms)),
        // Past the reopen window the ticket is closed for good (D22).
        RuleState::Resolved { resolved_at_ms }
            if now_ms - resolved_at_ms > lifecycle.reopen_window_ms =>
        {
            (RuleState::Ok, None)
        }
        RuleState::Resolved { .. } => (state, None),
        RuleState::Pending { resolved_at_ms, .. } if reading.is_some() && !raised => (
            resolved_at_ms.map_or(RuleState::Ok, |at| RuleState::Resolved {
                resolved_at_ms: at,
            }),
            None,
        ),
        // Only a reading that still raises fires: silence proves nothing.
        RuleState::Pending {
            since_ms,
            resolved_at_ms,
        } if raised && now_ms - since_ms >= rule.duration_ms => {
            fire(resolved_at_ms, now_ms, lifecycle)
        }
        RuleState::Pending { .. } => (state, None),
        RuleState::Firing { .. } if cleared => (RuleState::Recovering { since_ms: now_ms }, None),
        RuleState::Firing { .. } => (state, None),
        RuleState::Recovering { .. } if raised => (
            RuleState::Firing {
                fired_at_ms: now_ms,
            },
            Some(TicketAction::Occurrence),
        ),
        RuleState::Recovering { since_ms } if now_ms - since_ms >= lifecycle.quiet_ms => (
            RuleState::Resolved {
                resolved_at_ms: now_ms,
            },
            Some(TicketAction::Resolve),
        ),
        RuleState::Recovering { .. } => (state, None),
    }
}

/// Fires: a reopen when this rule's ticket resolved within the window.
fn fire(
    resolved_at_ms: Option<i64>,
    now_ms: i64,
    lifecycle: Lifecycle,
) -> (RuleState, Option<TicketAction>) {
    let action = match resolved_at_ms {
        Some(at) if now_ms - at <= lifecycle.reopen_window_ms => TicketAction::Reopen,
        _ => TicketAction::Open,
    };
    (
        RuleState::Firing {
            fired_at_ms: now_ms,
        },
        Some(action),
    )
}

#[cfg(test)]
mod tests;
