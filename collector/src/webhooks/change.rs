//! What a ticket event says changed, and who changed it (issue 23): the
//! `change` object of a webhook body (`docs/webhooks.md`). The ticket
//! engine builds one beside each ticket write ([`Change::of`] for a
//! technician's change, [`Change::system`] for the rules, timers and
//! reports) and `enqueue_change` puts it in the body. A note's text is
//! carried only when the note is public: a private note never leaves the
//! collector in a payload.
//!
//! Other formats (chat, e-mail) are built from this struct, so it is plain
//! serde data: every key is always present, `null` when it does not apply.

use serde::{Deserialize, Serialize};

use crate::model::{TicketChange, TicketRow};

/// The author of a change nobody made by hand: a rule, a timer, the SLA.
pub const SYSTEM: &str = "system";

/// What kind of change an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The ticket opened (a rule fired, an employee reported, by hand).
    Opened,
    /// Its condition fired again while it was open.
    Occurrence,
    /// A technician assigned it.
    Assigned,
    /// A worklog note was added.
    Note,
    /// Its status changed (not to resolved).
    Status,
    /// It resolved: by a technician, or by itself (the condition recovered).
    Resolved,
    /// Its escalation level rose: by hand, or an SLA target was missed.
    Escalated,
    /// It reopened: by hand, or its condition fired again within the
    /// reopen window.
    Reopened,
}

/// The `change` object of a webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// Who changed it: a technician's name, `system`, or for an employee's
    /// report the OS user who reported it.
    pub by: String,
    /// The value before: the previous assignee (`null` when none), status,
    /// or escalation level (decimal text); `null` for other kinds.
    pub from: Option<String>,
    /// The value after, as `from`.
    pub to: Option<String>,
    /// Whether the note is public (the reporting employee reads it); false
    /// for every other kind.
    pub public: bool,
    /// The note's text, only when it is public; `null` for a private note
    /// and for other kinds.
    pub note: Option<String>,
}

impl Change {
    /// A change made by the rules, timers or an employee's report, without
    /// before and after values.
    pub fn system(kind: ChangeKind, by: &str) -> Self {
        Self {
            kind,
            by: by.to_owned(),
            from: None,
            to: None,
            public: false,
            note: None,
        }
    }

    /// A change with its before and after values.
    pub fn moved(kind: ChangeKind, by: &str, from: Option<String>, to: Option<String>) -> Self {
        Self {
            from,
            to,
            ..Self::system(kind, by)
        }
    }

    /// The same change, with the value after it.
    pub fn to(mut self, to: &str) -> Self {
        self.to = Some(to.to_owned());
        self
    }

    /// A technician's `change` by `by` of the ticket as it was `before`.
    pub fn of(change: &TicketChange, before: &TicketRow, by: &str) -> Self {
        let status = |to: &str| {
            Self::moved(
                ChangeKind::Status,
                by,
                Some(before.status.clone()),
                Some(to.to_owned()),
            )
        };
        match change {
            TicketChange::Assign(name) => Self::moved(
                ChangeKind::Assigned,
                by,
                before.assignee.clone(),
                Some(name.clone()),
            ),
            TicketChange::Note(_) => Self::system(ChangeKind::Note, by),
            TicketChange::PublicNote(text) => Self {
                public: true,
                note: Some(text.clone()),
                ..Self::system(ChangeKind::Note, by)
            },
            TicketChange::Status(to) => status(to),
            TicketChange::Resolve(_) => Self {
                kind: ChangeKind::Resolved,
                ..status("resolved")
            },
            TicketChange::Escalate => Self::moved(
                ChangeKind::Escalated,
                by,
                Some(before.escalation.to_string()),
                Some((before.escalation + 1).to_string()),
            ),
            TicketChange::Reopen => Self {
                kind: ChangeKind::Reopened,
                ..status("open")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> TicketRow {
        TicketRow {
            id: 7,
            host_id: "h".into(),
            hostname: "pc".into(),
            rule: String::new(),
            subject: String::new(),
            title: "t".into(),
            status: "open".into(),
            priority: "P3".into(),
            severity: "medium".into(),
            assignee: Some("ana".into()),
            escalation: 1,
            occurrences: 1,
            flaps: 0,
            opened_at_ms: 0,
            updated_at_ms: 0,
            resolved_at_ms: None,
            response_due_ms: 0,
            resolution_due_ms: 0,
            evidence: "{}".into(),
            responded_at_ms: None,
            resolution: None,
        }
    }

    #[test]
    fn a_private_note_carries_no_text_and_a_public_one_does() {
        let private = Change::of(
            &TicketChange::Note("the password is x".into()),
            &ticket(),
            "bo",
        );
        assert_eq!(private.kind, ChangeKind::Note);
        assert_eq!((private.public, private.note), (false, None));
        let json = serde_json::to_string(&Change::of(
            &TicketChange::Note("the password is x".into()),
            &ticket(),
            "bo",
        ))
        .expect("json");
        assert!(!json.contains("password"), "{json}");
        let public = Change::of(&TicketChange::PublicNote("on it".into()), &ticket(), "bo");
        assert_eq!(
            (public.public, public.note.as_deref()),
            (true, Some("on it"))
        );
    }

    #[test]
    fn each_change_says_from_and_to() {
        let t = ticket();
        let assigned = Change::of(&TicketChange::Assign("bo".into()), &t, "bo");
        assert_eq!(
            (
                assigned.kind,
                assigned.from.as_deref(),
                assigned.to.as_deref()
            ),
            (ChangeKind::Assigned, Some("ana"), Some("bo"))
        );
        let escalated = Change::of(&TicketChange::Escalate, &t, "bo");
        assert_eq!(
            (escalated.from.as_deref(), escalated.to.as_deref()),
            (Some("1"), Some("2"))
        );
        let resolved = Change::of(&TicketChange::Resolve("fixed".into()), &t, "bo");
        assert_eq!(
            (resolved.kind, resolved.to.as_deref()),
            (ChangeKind::Resolved, Some("resolved"))
        );
        let json: serde_json::Value =
            serde_json::to_value(Change::system(ChangeKind::Occurrence, SYSTEM)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"kind": "occurrence", "by": "system", "from": null, "to": null, "public": false, "note": null})
        );
    }
}
