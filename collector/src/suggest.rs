//! Suggested fixes (issue 23): what the knowledge base is searched for when
//! a ticket opens, and how the resolved tickets it finds are ranked into
//! the few suggestions stored with the ticket. Plain functions over domain
//! values, so the ranking is tested here and the store only runs the two
//! bounded queries (`store::engine::suggestions`).
//!
//! A ticket is looked up three ways, each giving a reason:
//! - **same rule**: earlier tickets of the rule that opened it (not the
//!   employee-report rule, which every report shares, nor a manual ticket);
//!   the same subject (mount point, service) counts a little more;
//! - **same software**: packages named by the host's recent changes, or the
//!   ticket's subject when it is a service or package, found in an earlier
//!   ticket's title, resolution or notes;
//! - **similar text**: the words of the title and of the evidence's text
//!   (an employee's report, a change's detail), through the full-text index,
//!   where user text reaches the query only as quoted phrases.
//!
//! Only tickets with a human resolution count: one resolved by itself
//! ([`crate::model::AUTO_RESOLUTION`]) says nothing about a fix and is left
//! out by the queries themselves. Suggestions with the same resolution text
//! are one suggestion, the best-scored, so the few shown are different fixes.

use std::collections::HashSet;

use serde::Serialize;

use crate::model::ChangeRow;

/// Suggestions stored with a ticket.
pub const SUGGESTIONS: usize = 5;
/// Earlier tickets of the same rule read as candidates, newest first.
pub const RULE_CANDIDATES: u32 = 20;
/// Full-text matches read as candidates, best first.
pub const TEXT_CANDIDATES: u32 = 30;
/// The most words (and software names) a lookup searches for.
const MAX_TERMS: usize = 24;
/// The most software names taken from a host's changes.
const MAX_SOFTWARE: usize = 10;
/// How far back a host's changes name its software, and how many are read.
pub const SOFTWARE_CHANGES_MS: i64 = 7 * 86_400_000;
/// The most recent changes read for the software names.
pub const SOFTWARE_CHANGES: u32 = 20;
/// The window before a ticket opened whose changes `ticket show` correlates.
pub const CORRELATION_WINDOW_MS: i64 = 24 * 3_600_000;
/// The most changes correlated for one ticket.
pub const CORRELATED_CHANGES: u32 = 20;

/// Score parts: a candidate's text match counts up to `TEXT`, its rule
/// `RULE` (and `SUBJECT` more for the same subject), shared software
/// `SOFTWARE`. A candidate below `MIN_SCORE` is not suggested.
const TEXT: f64 = 1.0;
const RULE: f64 = 0.6;
const SUBJECT: f64 = 0.2;
const SOFTWARE: f64 = 0.8;
const MIN_SCORE: f64 = 0.35;

/// Words too common to tell tickets apart; the full-text index would only
/// rank them low, and they would take the place of words that matter.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "cannot", "do", "does",
    "for", "from", "get", "gets", "had", "has", "have", "i", "in", "is", "it", "its", "me", "my",
    "no", "not", "of", "on", "or", "our", "so", "that", "the", "then", "there", "this", "to",
    "was", "we", "when", "with", "you", "your", "again", "all", "any", "after", "before", "since",
    "very", "just", "now", "up", "out", "will", "would", "what", "which", "who", "why", "how",
    "reported", "every",
];

/// What a new ticket is looked up by.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lookup {
    /// Its rule, when that says something of the problem: empty for a
    /// manual ticket and for an employee's report.
    pub rule: String,
    /// Its subject (mount point, service), or empty.
    pub subject: String,
    /// Software names, lowercased: from the host's recent changes and a
    /// subject that names a service or package.
    pub software: Vec<String>,
    /// Search words, lowercased, then the software names: what the
    /// full-text query is made of, each one a quoted phrase.
    pub terms: Vec<String>,
}

/// A resolved ticket a knowledge-base query found.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The ticket.
    pub ticket_id: i64,
    /// Its host's name.
    pub hostname: String,
    /// Its title.
    pub title: String,
    /// Its rule.
    pub rule: String,
    /// Its subject.
    pub subject: String,
    /// Its (human) resolution.
    pub resolution: String,
    /// Its technicians' notes, joined.
    pub notes: String,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
    /// The full-text rank (lower is better: bm25, or negated `ts_rank`);
    /// `None` when only the rule query found it.
    pub text_rank: Option<f64>,
}

/// A suggested fix, as stored with a ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The earlier ticket.
    pub ticket_id: i64,
    /// Its host's name.
    pub hostname: String,
    /// Its title.
    pub title: String,
    /// Its rule.
    pub rule: String,
    /// How it was resolved.
    pub resolution: String,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
    /// How well it matches, higher is better (up to 2.6).
    pub score: f64,
    /// Why: "same rule", "same software: openssl", "similar text", joined
    /// with ", ".
    pub reason: String,
}

/// A suggestion as a webhook payload and `ticket show --json` carry it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SuggestionPayload {
    /// The earlier ticket.
    pub ticket_id: i64,
    /// Its title.
    pub title: String,
    /// Its host's name.
    pub hostname: String,
    /// Its rule.
    pub rule: String,
    /// How it was resolved.
    pub resolution: String,
    /// When it resolved, RFC 3339.
    pub resolved_at: Option<String>,
    /// How well it matches, higher is better.
    pub score: f64,
    /// Why it is suggested.
    pub reason: String,
}

impl Suggestion {
    /// As a webhook payload shows it.
    pub fn payload(&self) -> SuggestionPayload {
        SuggestionPayload {
            ticket_id: self.ticket_id,
            title: self.title.clone(),
            hostname: self.hostname.clone(),
            rule: self.rule.clone(),
            resolution: self.resolution.clone(),
            resolved_at: self.resolved_at_ms.map(crate::webhooks::format::rfc3339),
            score: round2(self.score),
            reason: self.reason.clone(),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A change on a ticket's host before it fired, and how many other hosts
/// with the same change have the same rule's ticket open.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatedChange {
    /// The change.
    pub change: ChangeRow,
    /// Other hosts with the same change (section, item, new value, and
    /// both added or both changed) and an open ticket of the same rule;
    /// `None` for a ticket without a rule.
    pub other_hosts: Option<u64>,
}

/// The package name in a change-log item ("package dpkg/openssl:amd64" →
/// "openssl", "package windows/Google Chrome" → "google chrome"); `None`
/// for an item that is not a package.
pub fn package_name(item: &str) -> Option<String> {
    let rest = item.strip_prefix("package ")?;
    let name = rest.split_once('/').map_or(rest, |(_, name)| name);
    let name = match name.rsplit_once(':') {
        Some((base, arch)) if !arch.contains(' ') && !base.is_empty() => base,
        _ => name,
    };
    let name = name.trim().to_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The names a package goes by in people's words: its own, its stem
/// before a dot or a trailing version number ("docker.io" → "docker",
/// "python3" → "python") when that is still a name (three characters or
/// more), and its first part before a hyphen (four or more).
pub fn aliases(name: &str) -> Vec<String> {
    let mut names = vec![name.to_owned()];
    let stem = name.split('.').next().unwrap_or(name);
    let stem = stem.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.chars().count() >= 3
        && stem != name
        && stem.chars().all(|c| c.is_alphanumeric() || c == '-')
    {
        names.push(stem.to_owned());
    }
    // "openssh-server" → "openssh", "tracker-miner-fs" → "tracker".
    if let Some((first, _)) = name.split_once('-')
        && first.chars().count() >= 4
        && first.chars().all(char::is_alphanumeric)
        && !names.iter().any(|n| n == first)
    {
        names.push(first.to_owned());
    }
    names
}

/// The lowercased words of `text` worth searching for: letters or digits,
/// at least two characters with a letter among them, no stop words.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2 && w.chars().any(char::is_alphabetic))
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
}

/// What evidence says in words: its text fields that people or PCs wrote
/// (an employee's report, a change's detail, the subject).
fn evidence_text(evidence: &serde_json::Value) -> String {
    ["text", "detail", "subject"]
        .iter()
        .filter_map(|key| evidence.get(key).and_then(serde_json::Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rules whose name says nothing of the problem.
fn uninformative_rule(rule: &str) -> bool {
    rule.is_empty() || rule == crate::rules::USER_REPORT_RULE
}

/// What a new ticket is looked up by: its rule and subject, the software
/// its host changed lately (`changed_items`, change-log items) and the
/// words of its title and evidence.
pub fn lookup(
    rule: &str,
    subject: &str,
    title: &str,
    evidence: &serde_json::Value,
    changed_items: &[String],
) -> Lookup {
    let mut software: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    // A subject that is not a path names a service or a package.
    let subject_software = (!subject.is_empty()
        && !subject.contains('/')
        && !subject.contains('\\')
        && !subject.contains(' '))
    .then(|| subject.to_lowercase());
    for name in subject_software
        .into_iter()
        .chain(changed_items.iter().filter_map(|item| package_name(item)))
    {
        if software.len() < MAX_SOFTWARE && seen.insert(name.clone()) {
            software.push(name);
        }
    }
    let text = format!("{title}\n{}", evidence_text(evidence));
    let mut terms: Vec<String> = Vec::new();
    // The reporter's name is in an employee report's title: it tells who,
    // not what.
    let mut seen_words: HashSet<String> = evidence
        .get("reported_by")
        .and_then(serde_json::Value::as_str)
        .into_iter()
        .flat_map(words)
        .collect();
    for word in words(&text) {
        if terms.len() + software.len() >= MAX_TERMS {
            break;
        }
        if !software.contains(&word) && seen_words.insert(word.clone()) {
            terms.push(word);
        }
    }
    for name in &software {
        for alias in aliases(name) {
            if !terms.contains(&alias) {
                terms.push(alias);
            }
        }
    }
    Lookup {
        rule: if uninformative_rule(rule) {
            String::new()
        } else {
            rule.to_owned()
        },
        subject: subject.to_owned(),
        software,
        terms,
    }
}

/// A word's stem for overlap counting: its first six characters, so that
/// "crashes" and "crashed" meet.
fn stem(word: &str) -> String {
    word.chars().take(6).collect()
}

/// Whether `text` (lowercased) holds `name` as whole words.
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Ranks candidates into at most [`SUGGESTIONS`] suggestions, best first:
/// the text match (its rank relative to the best one found, weighed by
/// how many of the looked-up words it shares), the same rule and subject,
/// and shared software add up; one suggestion per resolution text.
pub fn rank(lookup: &Lookup, candidates: Vec<Candidate>) -> Vec<Suggestion> {
    let best_rank = candidates
        .iter()
        .filter_map(|c| c.text_rank)
        .fold(0.0_f64, f64::min);
    let software_names: HashSet<String> = lookup.software.iter().flat_map(|n| aliases(n)).collect();
    let wanted: HashSet<String> = lookup
        .terms
        .iter()
        .filter(|t| !software_names.contains(*t))
        .map(|t| stem(t))
        .collect();
    let mut scored: Vec<Suggestion> = Vec::new();
    let mut seen_tickets = HashSet::new();
    // A ticket both queries found is scored once, with its text rank.
    let mut candidates = candidates;
    candidates.sort_by_key(|c| c.text_rank.is_none());
    for c in candidates {
        if !seen_tickets.insert(c.ticket_id) || c.resolution.trim().is_empty() {
            continue;
        }
        let body = format!("{}\n{}\n{}", c.title, c.resolution, c.notes).to_lowercase();
        let mut score = 0.0;
        let mut reasons: Vec<String> = Vec::new();
        if !lookup.rule.is_empty() && c.rule == lookup.rule {
            score += RULE;
            if !lookup.subject.is_empty() && c.subject == lookup.subject {
                score += SUBJECT;
                reasons.push(format!("same rule and subject: {} {}", c.rule, c.subject));
            } else {
                reasons.push(format!("same rule: {}", c.rule));
            }
        }
        let shared: Vec<&str> = lookup
            .software
            .iter()
            .filter(|name| aliases(name).iter().any(|alias| mentions(&body, alias)))
            .map(String::as_str)
            .collect();
        if !shared.is_empty() {
            score += SOFTWARE;
            reasons.push(format!("same software: {}", shared.join(", ")));
        }
        if let Some(rank) = c.text_rank {
            let relative = if best_rank < 0.0 {
                (rank / best_rank).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let body_stems: HashSet<String> = words(&body).map(|w| stem(&w)).collect();
            let overlap = wanted.intersection(&body_stems).count();
            let text = TEXT * relative * (overlap.min(3) as f64 / 3.0);
            if text >= 0.2 {
                reasons.push("similar text".into());
            }
            score += text;
        }
        if score < MIN_SCORE {
            continue;
        }
        scored.push(Suggestion {
            ticket_id: c.ticket_id,
            hostname: c.hostname,
            title: c.title,
            rule: c.rule,
            resolution: c.resolution,
            resolved_at_ms: c.resolved_at_ms,
            score,
            reason: reasons.join(", "),
        });
    }
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.resolved_at_ms.cmp(&a.resolved_at_ms))
            .then(b.ticket_id.cmp(&a.ticket_id))
    });
    let mut resolutions = HashSet::new();
    scored
        .into_iter()
        .filter(|s| resolutions.insert(normalized(&s.resolution)))
        .take(SUGGESTIONS)
        .collect()
}

/// A resolution text compared with others: lowercase, single spaces, no
/// final full stop.
fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches('.')
        .to_lowercase()
}

/// "2h before", "35m before", "just before": how long before the ticket a
/// change was seen.
pub fn before_text(change_at_ms: i64, opened_at_ms: i64) -> String {
    let ms = opened_at_ms.saturating_sub(change_at_ms).max(0);
    if ms < 60_000 {
        "just before".into()
    } else {
        format!("{} before", crate::units::duration_ms(ms - ms % 60_000))
    }
}

/// One correlated change as `ticket show` and the web page write it:
/// `openssl 3.0.14 -> 3.0.15 (2h before) — 42 other hosts with this change
/// have disk-full open`.
pub fn correlation_line(c: &CorrelatedChange, rule: &str, opened_at_ms: i64) -> String {
    let change = &c.change;
    let what = package_name(&change.item).unwrap_or_else(|| {
        if change.section == "software" {
            change.item.clone()
        } else {
            format!("{} {}", change.section, change.item)
        }
    });
    let values = match (&change.old_value, &change.new_value) {
        (Some(old), Some(new)) => format!("{old} -> {new}"),
        (None, Some(new)) => format!("added {new}"),
        (Some(old), None) => format!("removed {old}"),
        (None, None) => String::new(),
    };
    let mut line = format!(
        "{what} {values} ({})",
        before_text(change.observed_at_ms, opened_at_ms)
    );
    if let Some(n) = c.other_hosts {
        let (hosts, have) = if n == 1 {
            ("host", "has")
        } else {
            ("hosts", "have")
        };
        line.push_str(&format!(
            " — {n} other {hosts} with this change {have} {rule} open"
        ));
    }
    line
}

#[cfg(test)]
mod tests;
