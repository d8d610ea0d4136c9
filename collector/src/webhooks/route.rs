//! Where a notification goes (issue 23): a webhook's format (generic,
//! slack, teams, email), its destination (an http(s) URL, or `mailto:`
//! an address or `mailto:reporter`), and the tickets it is for (some
//! priorities, one assignee), checked before anything is stored; then, in
//! the ticket's transaction, which subscribers an event reaches and the
//! address of each e-mail ([`recipient`]).

use crate::model::{TicketEvent, TicketRow, WebhookFormat, WebhookRoute};

/// The target of an e-mail channel that mails the employee who reported
/// the ticket (the evidence's `reporter_email`).
pub const REPORTER_TARGET: &str = "mailto:reporter";
/// The longest technician name an assignee filter takes.
const MAX_ASSIGNEE: usize = 64;

/// A webhook an event may go to, as the ticket transaction reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The webhook id.
    pub id: i64,
    /// Its URL or `mailto:` target.
    pub url: String,
    /// Its format and filters.
    pub route: WebhookRoute,
}

/// A destination as an admin asked for it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL or `mailto:` target, as stored.
    pub url: String,
    /// The format and filters.
    pub route: WebhookRoute,
    /// The events it gets.
    pub events: Vec<TicketEvent>,
    /// The HMAC secret; empty for every format but generic.
    pub secret: String,
}

/// Whether `text` is an e-mail address lettre can send to, with no display
/// name, comment or line break.
pub fn check_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 254 || text.chars().any(char::is_control) {
        return Err(format!("{text:?} is not an e-mail address"));
    }
    text.parse::<lettre::Address>()
        .map(|a| a.to_string())
        .map_err(|e| format!("{text:?} is not an e-mail address: {e}"))
}

/// Parses a priority filter: P1 … P4, any case; duplicates dropped.
pub fn parse_priorities<S: AsRef<str>>(names: &[S]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let name = name.as_ref().trim().to_ascii_uppercase();
        if !["P1", "P2", "P3", "P4"].contains(&name.as_str()) {
            return Err(format!(
                "unknown priority {name:?}: expected P1, P2, P3 or P4"
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Checks an assignee filter: a technician's name, one line.
pub fn check_assignee(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_ASSIGNEE || name.chars().any(char::is_control) {
        return Err(format!(
            "the assignee must be a technician's name of 1-{MAX_ASSIGNEE} characters"
        ));
    }
    Ok(name.to_owned())
}

/// The events a webhook gets when the admin names none: every event,
/// except for e-mail, where a mailbox wants less: the reporter hears of the
/// resolution, a group address of new and escalated tickets and of new
/// fleet-wide problems, and an assignee's own address of every event of
/// their tickets.
pub fn default_events(route: &WebhookRoute, url: &str) -> Vec<TicketEvent> {
    match route.format {
        WebhookFormat::Email if url == REPORTER_TARGET => vec![TicketEvent::Resolved],
        WebhookFormat::Email if route.assignee.is_none() => {
            vec![
                TicketEvent::Opened,
                TicketEvent::Escalated,
                TicketEvent::ProblemOpened,
            ]
        }
        _ => TicketEvent::ALL.to_vec(),
    }
}

/// Checks everything `webhooks add` takes. `format` empty means email for
/// a `mailto:` target and generic otherwise. A generic webhook needs its
/// secret; the others refuse one: Slack and Teams URLs are themselves the
/// secret, and an e-mail is not signed.
pub fn check_destination(
    url: &str,
    format: &str,
    events: &[String],
    priorities: &[String],
    assignee: &str,
    secret: &str,
) -> Result<Destination, String> {
    let url = url.trim();
    let mailto = url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("mailto:"));
    let format = match format.trim() {
        "" if mailto => WebhookFormat::Email,
        "" => WebhookFormat::Generic,
        name => name.parse::<WebhookFormat>()?,
    };
    let url = match format {
        WebhookFormat::Email => {
            if !mailto {
                return Err(format!(
                    "{url:?}: an email webhook's target is mailto:ADDRESS or mailto:reporter"
                ));
            }
            let target = &url[7..];
            if target.trim() == "reporter" {
                REPORTER_TARGET.to_owned()
            } else {
                format!("mailto:{}", check_address(target)?)
            }
        }
        _ if mailto => {
            return Err(format!(
                "{url:?} is an e-mail target; use --format email (or leave --format out)"
            ));
        }
        _ => super::check_url(url)?,
    };
    let secret = match format {
        WebhookFormat::Generic => super::check_secret(secret)?,
        other if !secret.is_empty() => {
            return Err(format!(
                "a {} webhook takes no secret: {}",
                other.name(),
                if other == WebhookFormat::Email {
                    "e-mail is not signed"
                } else {
                    "its URL is the secret"
                }
            ));
        }
        _ => String::new(),
    };
    let route = WebhookRoute {
        format,
        priorities: parse_priorities(priorities)?,
        assignee: match assignee.trim() {
            "" => None,
            name => Some(check_assignee(name)?),
        },
    };
    let events = if events.is_empty() {
        default_events(&route, &url)
    } else {
        super::parse_events(events)?
    };
    Ok(Destination {
        url,
        route,
        events,
        secret,
    })
}

/// The URL as `deskpulse webhooks` and the audit log show it: a Slack or
/// Teams URL is its own secret, so only its scheme and host are shown.
pub fn shown_url(url: &str, format: WebhookFormat) -> String {
    match format {
        WebhookFormat::Slack | WebhookFormat::Teams => match url.parse::<hyper::Uri>() {
            Ok(uri) => format!(
                "{}://{}/…",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map_or("", |a| a.as_str())
            ),
            Err(_) => "(hidden)".into(),
        },
        _ => url.to_owned(),
    }
}

/// Whether `subscriber` gets this ticket's event, and for an e-mail the
/// address it goes to: `None` to skip it (another priority or assignee,
/// or a reporter channel for a ticket with no known address),
/// `Some(None)` for an HTTP receiver, `Some(Some(address))` for an e-mail.
pub fn recipient(subscriber: &Subscriber, ticket: &TicketRow) -> Option<Option<String>> {
    if !subscriber
        .route
        .accepts(&ticket.priority, ticket.assignee.as_deref())
    {
        return None;
    }
    if subscriber.route.format != WebhookFormat::Email {
        return Some(None);
    }
    if subscriber.url == REPORTER_TARGET {
        return reporter_email(&ticket.evidence).map(Some);
    }
    mailbox(subscriber).map(Some)
}

/// As [`recipient`], for a fleet-wide problem's event, by the problem's
/// priority. A problem has no assignee and no reporter, so a webhook kept
/// to one assignee's tickets, or the reporters' channel, gets none.
pub fn problem_recipient(subscriber: &Subscriber, priority: &str) -> Option<Option<String>> {
    if subscriber.route.assignee.is_some()
        || subscriber.url == REPORTER_TARGET
        || !subscriber.route.accepts(priority, None)
    {
        return None;
    }
    if subscriber.route.format != WebhookFormat::Email {
        return Some(None);
    }
    mailbox(subscriber).map(Some)
}

/// The address of a `mailto:ADDR` webhook.
fn mailbox(subscriber: &Subscriber) -> Option<String> {
    check_address(subscriber.url.get(7..)?).ok()
}

/// The employee's address an employee report's evidence carries
/// (`reporter_email`), if it is one.
pub fn reporter_email(evidence: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(evidence).ok()?;
    check_address(value.get("reporter_email")?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked_with_one_line_errors() {
        let mail = check_destination("mailto:oncall@example.com", "", &[], &["p1".into()], "", "")
            .expect("a group address");
        assert_eq!(mail.route.format, WebhookFormat::Email);
        assert_eq!(mail.route.priorities, vec!["P1"]);
        assert_eq!(
            mail.events,
            vec![
                TicketEvent::Opened,
                TicketEvent::Escalated,
                TicketEvent::ProblemOpened
            ]
        );
        let reporter =
            check_destination("mailto:reporter", "email", &[], &[], "", "").expect("reporter");
        assert_eq!(reporter.url, REPORTER_TARGET);
        assert_eq!(reporter.events, vec![TicketEvent::Resolved]);
        let mine = check_destination("mailto:alice@example.com", "", &[], &[], "alice", "")
            .expect("assignee");
        assert_eq!(mine.events, TicketEvent::ALL.to_vec());
        let slack = check_destination(
            "https://hooks.slack.com/services/T/B/X",
            "slack",
            &[],
            &[],
            "",
            "",
        )
        .expect("slack");
        assert!(slack.secret.is_empty());

        for (url, format, priorities, secret, wanted) in [
            (
                "mailto:not an address",
                "",
                vec![],
                "",
                "not an e-mail address",
            ),
            (
                "mailto:a@example.com\r\nBcc: x@evil.example",
                "",
                vec![],
                "",
                "not an e-mail address",
            ),
            ("https://h.example/x", "email", vec![], "", "mailto:"),
            ("mailto:a@example.com", "slack", vec![], "", "e-mail target"),
            (
                "https://h.example/x",
                "slack",
                vec![],
                "s",
                "its URL is the secret",
            ),
            ("mailto:a@example.com", "", vec![], "s", "not signed"),
            ("https://h.example/x", "", vec![], "", "secret is empty"),
            (
                "https://h.example/x",
                "pager",
                vec![],
                "s",
                "unknown format",
            ),
            (
                "https://h.example/x",
                "",
                vec!["P5".to_owned()],
                "s",
                "unknown priority",
            ),
        ] {
            let error =
                check_destination(url, format, &[], &priorities, "", secret).expect_err(url);
            assert!(error.contains(wanted), "{url} {format}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn slack_and_teams_urls_are_shown_without_their_secret_path() {
        assert_eq!(
            shown_url(
                "https://hooks.slack.com/services/T0/B0/secret",
                WebhookFormat::Slack
            ),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            shown_url("https://h.example/x", WebhookFormat::Generic),
            "https://h.example/x"
        );
    }

    #[test]
    fn the_reporter_address_comes_from_the_evidence_when_it_is_one() {
        assert_eq!(
            reporter_email(r#"{"reporter_email":"emma@example.com"}"#).as_deref(),
            Some("emma@example.com")
        );
        assert_eq!(
            reporter_email(r#"{"reporter_email":"emma@example.com\nBcc: x@y.z"}"#),
            None
        );
        assert_eq!(reporter_email(r#"{"reported_by":"emma"}"#), None);
        assert_eq!(reporter_email("not json"), None);
    }
}
