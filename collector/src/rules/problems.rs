//! Fleet-wide problems (issue 23) as plain code: the `[problems]` policy
//! section, which tickets group under which key, and a problem's impact.
//! The store links tickets (`store::engine::problems`); nothing here
//! reads a store or a clock.
//!
//! ```toml
//! [problems]
//! enabled = true          # false: tickets never group
//! hosts = 10              # this many hosts…
//! window = "15m"          # …opening tickets of one rule within this
//! changes_window = "2h"   # changes a problem's hosts share, looked for this far back
//! ```
//!
//! Impact: each host counts by its `criticality` tag (high 4, medium or
//! untagged 1, low ¼). A problem's priority is the best priority among its
//! tickets, raised one level at a weight of 10, two at 50 and three at
//! 250, never past P1: fifty P3 tickets on ordinary PCs make a P1 problem.

use std::time::Duration;

use serde::Deserialize;

use super::priority::{Impact, Priority};
use super::{DUPLICATE_IDENTITY_RULE, USER_REPORT_RULE};

/// The `[problems]` section in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemPolicy {
    /// Whether tickets group at all (`enabled = false` switches it off).
    pub enabled: bool,
    /// How many hosts must open tickets of one key within `window_ms`.
    pub hosts: u32,
    /// The window, ms: a problem forms when `hosts` hosts open tickets of
    /// one key within it, and a later ticket joins while the problem's
    /// latest ticket joined within it.
    pub window_ms: i64,
    /// How far before each ticket its host's changes are looked at for
    /// what a problem's hosts share, ms.
    pub changes_window_ms: i64,
}

impl Default for ProblemPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            hosts: 10,
            window_ms: 15 * 60_000,
            changes_window_ms: 2 * 3_600_000,
        }
    }
}

/// The fewest hosts a problem may need: one host is a ticket.
pub const MIN_HOSTS: u32 = 2;
/// The most: past this no fleet forms a problem at all.
pub const MAX_HOSTS: u32 = 100_000;

/// `[problems]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProblems {
    enabled: Option<bool>,
    hosts: Option<i64>,
    window: Option<String>,
    changes_window: Option<String>,
}

fn duration(what: &str, text: &str, min: Duration, max: Duration) -> Result<i64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{what} {text:?} is not a duration ({e}); try e.g. 15m"))?;
    if d < min || d > max {
        return Err(format!(
            "{what} must be between {} and {}",
            crate::units::duration(min),
            crate::units::duration(max)
        ));
    }
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ProblemPolicy {
    /// Checks `[problems]`: `hosts` 2 to 100,000, `window` 1 minute to 1
    /// day, `changes_window` 1 minute to 7 days.
    pub(crate) fn check(raw: &RawProblems) -> Result<Self, String> {
        let mut policy = Self {
            enabled: raw.enabled.unwrap_or(true),
            ..Self::default()
        };
        if let Some(hosts) = raw.hosts {
            policy.hosts = u32::try_from(hosts)
                .ok()
                .filter(|h| (MIN_HOSTS..=MAX_HOSTS).contains(h))
                .ok_or_else(|| {
                    format!(
                        "problems.hosts must be between {MIN_HOSTS} and {MAX_HOSTS}, not {hosts}"
                    )
                })?;
        }
        if let Some(text) = &raw.window {
            policy.window_ms = duration(
                "problems.window",
                text,
                Duration::from_secs(60),
                Duration::from_secs(24 * 3600),
            )?;
        }
        if let Some(text) = &raw.changes_window {
            policy.changes_window_ms = duration(
                "problems.changes_window",
                text,
                Duration::from_secs(60),
                Duration::from_secs(7 * 24 * 3600),
            )?;
        }
        Ok(policy)
    }
}

/// What groups a ticket: its rule, or an employee report's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    /// Tickets of one rule.
    Rule(String),
    /// Employee reports with the same normalised text.
    Report(String),
}

impl GroupKey {
    /// The key a ticket groups under; `None` for tickets that never group
    /// (manual tickets, a duplicate hardware identity: each is its own).
    pub fn of(rule: &str, report_text: Option<&str>) -> Option<Self> {
        match rule {
            "" | DUPLICATE_IDENTITY_RULE => None,
            USER_REPORT_RULE => {
                let text = normalise(report_text?);
                (!text.is_empty()).then_some(GroupKey::Report(text))
            }
            rule => Some(GroupKey::Rule(rule.to_owned())),
        }
    }

    /// `rule` or `report`.
    pub fn kind(&self) -> &'static str {
        match self {
            GroupKey::Rule(_) => "rule",
            GroupKey::Report(_) => "report",
        }
    }

    /// The rule name or the normalised text.
    pub fn text(&self) -> &str {
        match self {
            GroupKey::Rule(text) | GroupKey::Report(text) => text,
        }
    }

    /// The unique key of the problem gathering tickets of this key.
    pub fn gathering(&self) -> String {
        format!("{}:{}", self.kind(), self.text())
    }

    /// A new problem's title.
    pub fn title(&self) -> String {
        match self {
            GroupKey::Rule(rule) => format!("rule {rule} firing on many hosts"),
            GroupKey::Report(text) => format!("many employees report: {text}"),
        }
    }
}

/// The longest normalised report text a key keeps.
const MAX_KEY_CHARS: usize = 200;

/// An employee's words as reports are compared: lower case, letters and
/// digits only, single spaces, at most 200 characters. "Outlook won't
/// start!" and "outlook wont start" are the same report.
pub fn normalise(text: &str) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.replace('\'', "").to_lowercase())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
    }
    out.chars().take(MAX_KEY_CHARS).collect()
}

/// A host's weight in a problem's impact, in quarters: high 16, medium 4,
/// low 1 (4, 1, ¼).
pub fn weight_quarters(impact: Impact) -> i64 {
    match impact {
        Impact::High => 16,
        Impact::Medium => 4,
        Impact::Low => 1,
    }
}

/// The impact a `criticality` tag value gives (medium when absent or
/// unknown), as [`Impact::of`] reads tags.
pub fn impact_of_level(level: Option<&str>) -> Impact {
    match level {
        Some(level) => Impact::of(&[(Impact::TAG.to_owned(), level.to_owned())]),
        None => Impact::Medium,
    }
}

/// A problem's priority: its best ticket priority, raised one level per
/// step its hosts' weight (in quarters) reaches: 10, 50 and 250.
pub fn problem_priority(best_ticket: Priority, weight_quarters: i64) -> Priority {
    let steps = [10, 50, 250]
        .iter()
        .filter(|w| weight_quarters >= *w * 4)
        .count();
    let mut priority = best_ticket;
    for _ in 0..steps {
        priority = match priority {
            Priority::P1 | Priority::P2 => Priority::P1,
            Priority::P3 => Priority::P2,
            Priority::P4 => Priority::P3,
        };
    }
    priority
}

/// A problem as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemRow {
    /// Its id.
    pub id: i64,
    /// `rule` or `report`.
    pub kind: String,
    /// The rule's name, or the report's normalised text.
    pub key: String,
    /// Its title.
    pub title: String,
    /// `open` or `resolved`.
    pub status: String,
    /// P1…P4 from its hosts and their criticality.
    pub priority: String,
    /// How many hosts its tickets are on.
    pub hosts: i64,
    /// How many tickets it links.
    pub tickets: i64,
    /// How many of them are neither resolved nor closed.
    pub open_tickets: i64,
    /// Its hosts' weight in quarters ([`weight_quarters`]).
    pub weight_quarters: i64,
    /// The best priority among its tickets, "P1" … "P4".
    pub best_ticket_priority: String,
    /// When it opened.
    pub opened_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
    /// When its latest ticket joined.
    pub last_joined_at_ms: i64,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
    /// Who resolved it (`system` when its last ticket did).
    pub resolved_by: Option<String>,
    /// How.
    pub resolution: Option<String>,
}

/// Why a problem cannot be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemRefusal {
    /// No such problem.
    NotFound,
    /// The change does not apply to the problem as it is.
    Invalid(String),
}

/// A change many of a problem's hosts share, from their change logs in
/// the policy's `changes_window` before each one's ticket opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonChange {
    /// Its inventory section.
    pub section: String,
    /// The item that changed, e.g. "package dpkg/openssl:amd64".
    pub item: String,
    /// The value it changed to; `None` when it was removed.
    pub new: Option<String>,
    /// Whether it was new on every host that has it (installed, added).
    pub added: bool,
    /// How many of the problem's hosts have it.
    pub hosts: i64,
    /// How many hosts the problem has.
    pub of_hosts: i64,
    /// The window looked at, ms.
    pub window_ms: i64,
}

impl CommonChange {
    /// One line: "43 of 45 hosts changed `package dpkg/openssl:amd64` to
    /// 3.0.15 within 2h before".
    pub fn describe(&self) -> String {
        let what = match (&self.new, self.added) {
            (None, _) => format!("removed `{}`", self.item),
            (Some(new), true) => format!("added `{}` {new}", self.item),
            (Some(new), false) => format!("changed `{}` to {new}", self.item),
        };
        format!(
            "{} of {} hosts {what} within {} before",
            self.hosts,
            self.of_hosts,
            crate::units::duration_ms(self.window_ms)
        )
    }
}

/// Changes fewer hosts than this share are not named: with one host in
/// three or fewer, a change is more likely noise than the cause.
pub fn shared_enough(hosts: i64, of_hosts: i64) -> bool {
    hosts >= 2 && hosts * 3 >= of_hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_ordinary_hosts_raise_p3_tickets_to_a_p1_problem() {
        assert_eq!(problem_priority(Priority::P3, 50 * 4), Priority::P1);
        assert_eq!(problem_priority(Priority::P3, 49 * 4), Priority::P2);
        assert_eq!(problem_priority(Priority::P3, 9 * 4), Priority::P3);
        // Ten low-criticality hosts weigh 2.5: no raise.
        assert_eq!(problem_priority(Priority::P4, 10), Priority::P4);
        // Three high-criticality hosts weigh 12: one level.
        assert_eq!(problem_priority(Priority::P4, 3 * 16), Priority::P3);
        assert_eq!(problem_priority(Priority::P4, 250 * 4), Priority::P1);
    }

    #[test]
    fn reports_group_by_their_words_not_their_punctuation() {
        assert_eq!(normalise("  Outlook won't START!! "), "outlook wont start");
        assert_eq!(
            GroupKey::of(USER_REPORT_RULE, Some("Outlook won't start")),
            GroupKey::of(USER_REPORT_RULE, Some("outlook wont start."))
        );
        assert_eq!(GroupKey::of(USER_REPORT_RULE, Some("?!")), None);
        assert_eq!(GroupKey::of("", None), None);
        assert_eq!(GroupKey::of(DUPLICATE_IDENTITY_RULE, None), None);
        assert_eq!(
            GroupKey::of("disk-full", None).map(|k| k.gathering()),
            Some("rule:disk-full".to_owned())
        );
    }

    #[test]
    fn a_common_change_reads_as_a_sentence() {
        let change = CommonChange {
            section: "software".into(),
            item: "package dpkg/openssl:amd64".into(),
            new: Some("3.0.15".into()),
            added: false,
            hosts: 43,
            of_hosts: 45,
            window_ms: 2 * 3_600_000,
        };
        assert_eq!(
            change.describe(),
            "43 of 45 hosts changed `package dpkg/openssl:amd64` to 3.0.15 within 2h before"
        );
        assert!(shared_enough(2, 6) && !shared_enough(2, 7) && !shared_enough(1, 1));
    }

    #[test]
    fn the_section_is_applied_exported_and_diffed_and_its_errors_name_the_line() {
        use crate::rules::policy::{Policy, check_policy, parse_policy, text};
        let policy = parse_policy("[problems]\nhosts = 25\nwindow = \"30m\"\n").expect("parses");
        let expected = ProblemPolicy {
            enabled: true,
            hosts: 25,
            window_ms: 30 * 60_000,
            changes_window_ms: 2 * 3_600_000,
        };
        assert_eq!(policy.problems, expected);
        let exported = policy.to_toml();
        assert!(
            exported.contains("[problems]\nenabled = true\nhosts = 25\nwindow = \"30m\"\nchanges_window = \"2h\"\n"),
            "{exported}"
        );
        assert_eq!(
            parse_policy(&exported).expect("export parses").problems,
            expected
        );
        let changes = text::changes(&Policy::default(), &policy);
        assert!(
            changes.contains(&"problems.hosts: 10 -> 25".to_owned()),
            "{changes:?}"
        );
        assert!(
            changes.contains(&"problems.window: 15m -> 30m".to_owned()),
            "{changes:?}"
        );
        let errors = check_policy("[tickets]\nquiet = \"1m\"\n\n[problems]\nhosts = 1\n")
            .expect_err("refused");
        assert_eq!(errors[0].line, Some(4));
        assert_eq!(
            errors[0].message,
            "problems.hosts must be between 2 and 100000, not 1"
        );
        let errors = check_policy("[problems]\nhots = 3\n").expect_err("refused");
        assert!(
            errors[0]
                .message
                .starts_with("problems: unknown field `hots`"),
            "{:?}",
            errors[0]
        );
    }

    #[test]
    fn the_section_is_checked() {
        let raw = |hosts, window: Option<&str>| RawProblems {
            enabled: None,
            hosts,
            window: window.map(str::to_owned),
            changes_window: None,
        };
        assert_eq!(
            ProblemPolicy::check(&raw(None, None)),
            Ok(ProblemPolicy::default())
        );
        assert!(
            ProblemPolicy::check(&raw(Some(1), None))
                .expect_err("refused")
                .contains("problems.hosts must be between 2")
        );
        assert!(
            ProblemPolicy::check(&raw(None, Some("2d")))
                .expect_err("refused")
                .contains("problems.window must be between")
        );
        assert!(
            ProblemPolicy::check(&raw(None, Some("soon")))
                .expect_err("refused")
                .contains("is not a duration")
        );
    }
}
