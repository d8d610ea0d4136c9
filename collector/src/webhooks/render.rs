//! The notification texts (issue 23): the Slack and Teams messages and
//! the e-mail subject and body, all made from one delivery's stored body
//! at delivery time. The stored body of a non-generic delivery is the
//! generic payload (`format::payload`) with a short evidence summary beside
//! it ([`stored_body`]), so these texts show the ticket as its event left it.
//!
//! A problem event's payload (`webhooks::problems`) carries a `problem`
//! instead of a `ticket`; the same texts then show the problem: its
//! priority, hosts and tickets, with no evidence of one PC.
//!
//! The payload is read leniently ([`PayloadView`]): every field may be
//! missing, and the `change` object of `ticket.updated` and the
//! `suggestions` list are shown when the payload carries them. Text from
//! agents and employees (titles, subjects, evidence, notes) is cut to one
//! line each, its links defanged (`http[:]//`), and, for Slack, its `&`,
//! `<` and `>` escaped, so it can neither mention a channel nor link.

use serde::Deserialize;
use serde_json::Value;

/// The longest evidence line kept.
const MAX_LINE: usize = 200;
/// The most evidence lines kept.
const MAX_EVIDENCE_LINES: usize = 12;
/// The most suggestions shown.
const MAX_SUGGESTIONS: usize = 3;
/// The longest subject line.
const MAX_SUBJECT: usize = 180;

/// The generic payload as the renderers read it: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PayloadView {
    /// `ticket.opened`, ...
    pub event: String,
    /// The delivery id.
    pub delivery_id: String,
    /// RFC 3339.
    pub occurred_at: String,
    /// The ticket.
    pub ticket: TicketView,
    /// What changed, on `ticket.updated` (when the payload says).
    pub change: Option<ChangeView>,
    /// Earlier resolutions that may fit (when the payload carries them):
    /// a list, read item by item; anything else shows nothing.
    pub suggestions: Value,
    /// The problem, on a `problem.*` event.
    pub problem: Option<ProblemView>,
}

/// The problem part of a `problem.*` payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProblemView {
    /// The problem number.
    pub id: i64,
    /// The title.
    pub title: String,
    /// `open` or `resolved`.
    pub status: String,
    /// P1 … P4.
    pub priority: String,
    /// How many hosts its tickets are on.
    pub hosts: i64,
    /// How many tickets it links.
    pub tickets: i64,
    /// How many of them are open.
    pub open_tickets: i64,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// How.
    pub resolution: Option<String>,
}

/// The ticket part of [`PayloadView`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TicketView {
    /// The ticket number.
    pub id: i64,
    /// The title.
    pub title: String,
    /// The host id.
    pub host_id: String,
    /// The host's name.
    pub hostname: String,
    /// The rule, or empty.
    pub rule: String,
    /// The subject, or empty.
    pub subject: String,
    /// The status.
    pub status: String,
    /// P1 … P4.
    pub priority: String,
    /// The severity.
    pub severity: String,
    /// The assignee.
    pub assignee: Option<String>,
    /// The escalation level.
    pub escalation: u32,
    /// How often its condition fired.
    pub occurrences: u32,
    /// When the resolution is due.
    pub resolution_due: String,
    /// The resolution, once resolved by a technician.
    pub resolution: Option<String>,
}

/// The `change` object of a `ticket.updated` payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChangeView {
    /// assign, note, status, ...
    pub kind: String,
    /// Who changed it.
    pub by: Option<String>,
    /// The value before.
    pub from: Option<Value>,
    /// The value after.
    pub to: Option<Value>,
    /// The note text, when it is public.
    pub note: Option<String>,
}

/// What the outbox holds for a Slack, Teams or e-mail delivery.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Stored {
    /// The generic payload.
    pub payload: PayloadView,
    /// The evidence summary, one fact a line.
    pub evidence: Vec<String>,
}

impl Stored {
    /// Reads a stored body; a body that is not this shape (an older
    /// generic row) is read as a bare payload.
    pub fn parse(body: &str) -> Stored {
        match serde_json::from_str::<Value>(body) {
            Ok(value) if value.get("payload").is_some() => {
                serde_json::from_value(value).unwrap_or_default()
            }
            Ok(value) => Stored {
                payload: serde_json::from_value(value).unwrap_or_default(),
                evidence: Vec::new(),
            },
            Err(_) => Stored::default(),
        }
    }
}

/// The body stored for a non-generic delivery: the generic `payload` with
/// the summary of the ticket's `evidence` JSON beside it.
pub fn stored_body(payload: &str, evidence: &str) -> String {
    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    serde_json::json!({ "payload": payload, "evidence": evidence_summary(evidence) }).to_string()
}

/// A ticket's evidence JSON as at most [`MAX_EVIDENCE_LINES`] `key: value`
/// lines: scalar fields only (sample series and nested objects are left to
/// `ticket show`), times as RFC 3339, the reporter's address left out.
pub fn evidence_summary(evidence: &str) -> Vec<String> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(evidence) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for (key, value) in &fields {
        if key == "reporter_email" {
            continue;
        }
        let text = match value {
            Value::String(s) if !s.trim().is_empty() => s.clone(),
            Value::Number(n) if key.ends_with("_ms") => {
                super::format::rfc3339(n.as_i64().unwrap_or_default())
            }
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        lines.push(one_line(&format!("{key}: {text}"), MAX_LINE));
        if lines.len() == MAX_EVIDENCE_LINES {
            break;
        }
    }
    lines
}

/// `text` on one line: control characters (CR, LF, tabs, ...) become
/// spaces, runs of spaces one, links defanged, cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    let mut out = out.trim_end().replace("://", "[:]//");
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "nothing".into(),
        other => other.to_string(),
    }
}

/// What happened, in words: "opened", "escalated", ...
fn happened(view: &PayloadView) -> String {
    match view.event.as_str() {
        "ticket.opened" => "opened".into(),
        "ticket.escalated" => format!("escalated (level {})", view.ticket.escalation),
        "ticket.resolved" | "problem.resolved" => "resolved".into(),
        "problem.opened" => "opened".into(),
        "problem.updated" => "updated".into(),
        "ticket.updated" => match &view.change {
            Some(change) if !change.kind.is_empty() => {
                format!("updated ({})", one_line(&change.kind, 40))
            }
            _ => "updated".into(),
        },
        other if !other.is_empty() => one_line(other, 40),
        _ => "changed".into(),
    }
}

/// The one-line headline every format leads with, e.g.
/// `P1 ticket #17 opened on pc-0142: disk-full: / is 95% full`.
pub fn headline(view: &PayloadView) -> String {
    if let Some(p) = &view.problem {
        return one_line(
            &format!(
                "{} problem #{} {} on {} hosts: {}",
                p.priority,
                p.id,
                happened(view),
                p.hosts,
                p.title
            ),
            MAX_LINE,
        );
    }
    let t = &view.ticket;
    one_line(
        &format!(
            "{} ticket #{} {} on {}: {}",
            t.priority,
            t.id,
            happened(view),
            t.hostname,
            t.title
        ),
        MAX_LINE,
    )
}

/// The ticket's facts as (label, value) pairs, in reading order.
pub fn facts(view: &PayloadView) -> Vec<(&'static str, String)> {
    if let Some(p) = &view.problem {
        return problem_facts(p);
    }
    let t = &view.ticket;
    let mut facts = vec![
        ("Ticket", format!("#{}", t.id)),
        ("Title", one_line(&t.title, MAX_LINE)),
        (
            "Host",
            one_line(&format!("{} ({})", t.hostname, t.host_id), MAX_LINE),
        ),
        (
            "Priority",
            one_line(&format!("{} ({})", t.priority, t.severity), 40),
        ),
        ("Status", one_line(&t.status, 40)),
        (
            "Assignee",
            t.assignee
                .as_deref()
                .map_or_else(|| "nobody yet".to_owned(), |a| one_line(a, 80)),
        ),
    ];
    if !t.rule.is_empty() {
        let rule = if t.subject.is_empty() {
            t.rule.clone()
        } else {
            format!("{} on {}", t.rule, t.subject)
        };
        facts.push(("Rule", one_line(&rule, MAX_LINE)));
    }
    if t.resolution.is_none() && !t.resolution_due.is_empty() {
        facts.push(("Resolution due", one_line(&t.resolution_due, 40)));
    }
    if let Some(resolution) = &t.resolution {
        facts.push(("Resolution", one_line(resolution, 1000)));
    }
    if let Some(change) = &view.change {
        let mut text = one_line(&change.kind, 40);
        if let Some(by) = &change.by {
            text.push_str(&format!(" by {}", one_line(by, 80)));
        }
        if let (Some(from), Some(to)) = (&change.from, &change.to) {
            text.push_str(&format!(
                ": {} → {}",
                one_line(&value_text(from), 80),
                one_line(&value_text(to), 80)
            ));
        } else if let Some(to) = &change.to {
            text.push_str(&format!(": {}", one_line(&value_text(to), 80)));
        }
        facts.push(("Change", text));
        if let Some(note) = &change.note {
            facts.push(("Note", one_line(note, 1000)));
        }
    }
    facts
}

/// A problem's facts as (label, value) pairs, in reading order.
fn problem_facts(p: &ProblemView) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Problem", format!("#{}", p.id)),
        ("Title", one_line(&p.title, MAX_LINE)),
        ("Priority", one_line(&p.priority, 40)),
        ("Status", one_line(&p.status, 40)),
        ("Hosts", p.hosts.to_string()),
        (
            "Tickets",
            format!("{} ({} open)", p.tickets, p.open_tickets),
        ),
    ];
    if let Some(resolution) = &p.resolution {
        facts.push(("Resolution", one_line(resolution, 1000)));
    }
    if let Some(by) = &p.resolved_by {
        facts.push(("Resolved by", one_line(by, 80)));
    }
    facts
}

/// What an e-mail's subject and first line call the event's subject:
/// `#17` for a ticket, `problem #7` for a problem.
fn numbered(view: &PayloadView) -> String {
    match &view.problem {
        Some(p) => format!("problem #{}", p.id),
        None => format!("#{}", view.ticket.id),
    }
}

/// Each suggestion as one line: `#12 (disk-full): Purged the logs`.
pub fn suggestion_lines(view: &PayloadView) -> Vec<String> {
    let Some(list) = view.suggestions.as_array() else {
        return Vec::new();
    };
    list.iter()
        .take(MAX_SUGGESTIONS)
        .map(|s| match s {
            Value::Object(map) => {
                let field = |keys: &[&str]| {
                    keys.iter()
                        .find_map(|k| map.get(*k).filter(|v| !v.is_null()))
                        .map(value_text)
                };
                let id =
                    field(&["ticket_id", "id"]).map_or_else(String::new, |id| format!("#{id} "));
                let title = field(&["title"]).unwrap_or_default();
                let resolution = field(&["resolution"]).unwrap_or_default();
                one_line(&format!("{id}{title}: {resolution}"), MAX_LINE)
            }
            other => one_line(&value_text(other), MAX_LINE),
        })
        .collect()
}

/// Slack's escaping of `&`, `<` and `>` in message text, which also keeps
/// `<!channel>` mentions and `<url|text>` links out.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message: `text` (the headline, shown in
/// notifications) and blocks: a header, the facts as fields, the
/// evidence and the suggestions, all plain text.
pub fn slack(stored: &Stored) -> String {
    let view = &stored.payload;
    let headline = headline(view);
    let mut blocks = vec![serde_json::json!({
        "type": "header",
        "text": { "type": "plain_text", "text": one_line(&headline, 150) },
    })];
    let fields: Vec<Value> = facts(view)
        .into_iter()
        .take(10)
        .map(|(label, value)| {
            serde_json::json!({ "type": "plain_text", "text": one_line(&format!("{label}: {value}"), 1900) })
        })
        .collect();
    blocks.push(serde_json::json!({ "type": "section", "fields": fields }));
    if !stored.evidence.is_empty() {
        blocks.push(serde_json::json!({
            "type": "section",
            "text": { "type": "plain_text", "text": format!("Evidence:\n{}", stored.evidence.join("\n")) },
        }));
    }
    let suggestions = suggestion_lines(view);
    if !suggestions.is_empty() {
        blocks.push(serde_json::json!({
            "type": "section",
            "text": { "type": "plain_text", "text": format!("Suggested fixes:\n{}", suggestions.join("\n")) },
        }));
    }
    blocks.push(serde_json::json!({
        "type": "context",
        "elements": [{ "type": "plain_text", "text": format!("{} · {}", one_line(&view.event, 40), one_line(&view.occurred_at, 40)) }],
    }));
    serde_json::json!({ "text": slack_escape(&headline), "blocks": blocks }).to_string()
}

/// A Teams incoming-webhook message: one Adaptive Card (1.4) with the
/// headline, the facts as a FactSet, the evidence and the suggestions.
pub fn teams(stored: &Stored) -> String {
    let view = &stored.payload;
    let facts: Vec<Value> = facts(view)
        .into_iter()
        .map(|(label, value)| serde_json::json!({ "title": label, "value": value }))
        .collect();
    let mut body = vec![
        serde_json::json!({
            "type": "TextBlock", "text": headline(view), "weight": "Bolder",
            "size": "Medium", "wrap": true,
        }),
        serde_json::json!({ "type": "FactSet", "facts": facts }),
    ];
    if !stored.evidence.is_empty() {
        body.push(serde_json::json!({
            "type": "TextBlock", "text": format!("Evidence:\n\n{}", stored.evidence.join("\n\n")),
            "wrap": true, "isSubtle": true,
        }));
    }
    let suggestions = suggestion_lines(view);
    if !suggestions.is_empty() {
        body.push(serde_json::json!({
            "type": "TextBlock", "text": format!("Suggested fixes:\n\n{}", suggestions.join("\n\n")),
            "wrap": true,
        }));
    }
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
    .to_string()
}

/// Whom an e-mail is for: the help desk (a group or technician address)
/// or the employee who reported the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Technicians: every fact and the evidence.
    HelpDesk,
    /// The employee who reported: the ticket number, title, host and how
    /// it was resolved, without the technical evidence.
    Reporter,
}

/// An e-mail's subject: one line, at most [`MAX_SUBJECT`] characters.
pub fn mail_subject(stored: &Stored, reader: Reader) -> String {
    let view = &stored.payload;
    let t = &view.ticket;
    let text = match reader {
        Reader::HelpDesk => format!("[Deskpulse {}] {}", numbered(view), headline(view)),
        Reader::Reporter => format!(
            "[Deskpulse #{}] Your reported problem was {}: {}",
            t.id,
            happened(view),
            t.title
        ),
    };
    one_line(&text, MAX_SUBJECT)
}

/// An e-mail's plain-text body.
pub fn mail_body(stored: &Stored, reader: Reader) -> String {
    let view = &stored.payload;
    let t = &view.ticket;
    let mut out = String::new();
    match reader {
        Reader::HelpDesk => {
            let what = match &view.problem {
                Some(p) => format!("Problem #{}", p.id),
                None => format!("Ticket #{}", t.id),
            };
            out.push_str(&format!("{what} was {}.\n\n", happened(view)));
            let facts = facts(view);
            let width = facts.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
            for (label, value) in facts {
                out.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
            }
            if !stored.evidence.is_empty() {
                out.push_str("\nEvidence:\n");
                for line in &stored.evidence {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            let suggestions = suggestion_lines(view);
            if !suggestions.is_empty() {
                out.push_str("\nSuggested fixes from earlier tickets:\n");
                for line in suggestions {
                    out.push_str(&format!("  - {line}\n"));
                }
            }
            out.push_str(&format!(
                "\nEvent {} at {}, delivery {}.\n",
                one_line(&view.event, 40),
                one_line(&view.occurred_at, 40),
                one_line(&view.delivery_id, 60)
            ));
        }
        Reader::Reporter => {
            out.push_str(&format!(
                "The problem you reported from {} is {}.\n\n",
                one_line(&t.hostname, 80),
                happened(view)
            ));
            out.push_str(&format!("Ticket:  #{}\n", t.id));
            out.push_str(&format!("Title:   {}\n", one_line(&t.title, MAX_LINE)));
            if let Some(resolution) = &t.resolution {
                out.push_str(&format!("How:     {}\n", one_line(resolution, 1000)));
            }
            out.push_str(&format!(
                "\nIf it comes back, report it again with `deskpulse-agent report-issue` \
                 and mention ticket #{}.\n",
                t.id
            ));
        }
    }
    out.push_str("\n-- \nSent by the Deskpulse collector.\n");
    out
}

#[cfg(test)]
mod tests;
