//! How `deskpulse ticket show` writes issue 23's parts of a ticket: the
//! suggested fixes stored when it opened, and the change correlation (the
//! host's changes in the day before, each with how many other hosts with
//! the same change have the same rule firing), as text lines and as JSON
//! (documented in `docs/cli-json.md`).

use deskpulse_proto::v1::{CorrelatedChange, GetTicketResponse, InventoryChange, Suggestion};

use super::output::iso;
use crate::model::ChangeRow;

/// A wire change as the change log holds it.
fn change_row(c: &InventoryChange) -> ChangeRow {
    ChangeRow {
        host_id: c.host_id.clone(),
        hostname: c.hostname.clone(),
        observed_at_ms: c.observed_at_unix_ms,
        section: c.section.clone(),
        item: c.item.clone(),
        old_value: (c.kind != "added" && c.kind != "baseline").then(|| c.old_value.clone()),
        new_value: (c.kind != "removed").then(|| c.new_value.clone()),
    }
}

/// "#12 (0.93; same rule: disk-full, similar text) Deleted old logs -- on
/// pc-7: / is 97% full": one line per suggestion.
pub(super) fn suggestion_lines(detail: &GetTicketResponse) -> Vec<String> {
    detail
        .suggestions
        .iter()
        .map(|s| {
            format!(
                "#{} ({:.2}; {}) {} -- on {}: {}",
                s.ticket_id, s.score, s.reason, s.resolution, s.hostname, s.title
            )
        })
        .collect()
}

/// One line per correlated change, as [`crate::suggest::correlation_line`]
/// words it.
pub(super) fn correlation_lines(detail: &GetTicketResponse) -> Vec<String> {
    let Some(ticket) = &detail.ticket else {
        return Vec::new();
    };
    detail
        .change_correlation
        .iter()
        .filter_map(|c| {
            let change = c.change.as_ref()?;
            let correlated = crate::suggest::CorrelatedChange {
                change: change_row(change),
                other_hosts: c.other_hosts,
            };
            Some(crate::suggest::correlation_line(
                &correlated,
                &ticket.rule,
                ticket.opened_at_unix_ms,
            ))
        })
        .collect()
}

fn suggestion_json(s: &Suggestion) -> serde_json::Value {
    serde_json::json!({
        "ticket_id": s.ticket_id,
        "title": s.title,
        "hostname": s.hostname,
        "rule": s.rule,
        "resolution": s.resolution,
        "resolved_at": iso(s.resolved_at_unix_ms),
        "score": s.score,
        "reason": s.reason,
    })
}

/// The `suggestions` list of `ticket show --json`.
pub(super) fn suggestions_json(detail: &GetTicketResponse) -> serde_json::Value {
    detail.suggestions.iter().map(suggestion_json).collect()
}

fn correlated_json(c: &CorrelatedChange, opened_at_ms: i64) -> serde_json::Value {
    let change = c.change.clone().unwrap_or_default();
    serde_json::json!({
        "observed_at": iso(change.observed_at_unix_ms),
        "before_ms": opened_at_ms.saturating_sub(change.observed_at_unix_ms),
        "section": change.section,
        "item": change.item,
        "kind": change.kind,
        "old": (change.kind != "added").then_some(&change.old_value),
        "new": (change.kind != "removed").then_some(&change.new_value),
        "other_hosts": c.other_hosts,
    })
}

/// The `change_correlation` list of `ticket show --json`.
pub(super) fn correlation_json(detail: &GetTicketResponse) -> serde_json::Value {
    let opened = detail.ticket.as_ref().map_or(0, |t| t.opened_at_unix_ms);
    detail
        .change_correlation
        .iter()
        .map(|c| correlated_json(c, opened))
        .collect()
}
