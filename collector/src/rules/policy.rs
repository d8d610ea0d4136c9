//! Fleet policy (D7): the rules in force, SLA targets per priority, the
//! business-hours calendar SLAs run on, and the ticket lifecycle timing.
//! An admin applies it with `deskpulse rules apply FILE`; the store keeps
//! the text, so every replica evaluates the same policy.
//!
//! ```toml
//! [tickets]
//! quiet = "15m"            # recovered this long: auto-resolve
//! reopen_window = "24h"    # a re-fire within this reopens the same ticket
//!
//! [sla.P1]                 # P1..P4; unset priorities keep their defaults
//! response = "15m"
//! resolution = "4h"
//!
//! [business_hours]         # omit for 24x7
//! timezone = "Europe/Berlin"
//! days = ["mon", "tue", "wed", "thu", "fri"]
//! hours = "08:00-18:00"
//! holidays = ["2026-12-25"]
//!
//! [[rule]]                 # see `model`; a rule named like a default replaces it
//! name = "disk-full"
//! enabled = false          # switches a default off
//!
//! [[change_rule]]
//! name = "new-local-admin"
//! change = "new_local_admin"
//! severity = "critical"
//!
//! [diagnostics.roles]      # who may run what; defaults: read-only ones
//! restart_service = "technician"   # technician, state-changing ones admin
//!
//! [certificates]
//! lifetime = "30d"         # host certificates; agents renew at two thirds
//!
//! [clock]                  # how far a PC's clock is believed (issue 20)
//! window = "5m"            # offsets beyond it are flagged; later times clamped
//! oldest = "90d"           # report times older than this are clamped
//!
//! [inventory]              # per inventory; agents cut to these, the
//! max_packages = 20000     # collector refuses more (issue 20)
//! max_services = 5000
//! max_users = 5000         # accounts, and sessions
//! max_bytes = "4MiB"       # the encoded report
//!
//! [problems]               # fleet-wide problems (issue 23; `problems`)
//! hosts = 10
//! window = "15m"
//! changes_window = "2h"
//! ```

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;
use toml::Spanned;

use deskpulse_proto::catalog;
use deskpulse_proto::limits::{Limits, bytes_text};
use deskpulse_proto::v1::DiagnosticRisk;

use super::Lifecycle;
use super::model::{self, ChangeRule, RawChangeRule, RawRule, Rule};
use super::priority::{Priority, SlaTarget, default_sla};
use crate::model::Role;

/// The policy in force.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Metric rules, defaults first, then the applied file's new ones.
    pub rules: Vec<Rule>,
    /// Inventory-change rules.
    pub change_rules: Vec<ChangeRule>,
    /// Which rules came from the applied file rather than the defaults,
    /// the ones it switched off among them.
    pub applied: Vec<String>,
    /// Default metric rules the file switched off (`enabled = false`): not
    /// in force, listed as disabled.
    pub disabled: Vec<Rule>,
    /// Default change rules the file switched off.
    pub disabled_changes: Vec<ChangeRule>,
    /// SLA targets, P1 to P4.
    pub sla: [SlaTarget; 4],
    /// The priorities whose SLA targets the file set.
    pub sla_applied: Vec<Priority>,
    /// When SLA clocks run.
    pub calendar: Calendar,
    /// Quiet period and reopen window.
    pub lifecycle: Lifecycle,
    /// Per-diagnostic role overrides (D7).
    pub diagnostic_roles: Vec<(String, Role)>,
    /// How long a host certificate issued now lives.
    pub host_cert_lifetime: Duration,
    /// How far the time an agent claims is believed
    /// ([`crate::clockskew`]).
    pub clock: crate::clockskew::ClockWindow,
    /// What one inventory may hold: sent to agents, enforced on reports.
    pub inventory_limits: Limits,
    /// When tickets group into a fleet-wide problem (issue 23).
    pub problems: super::problems::ProblemPolicy,
}

/// Host certificates live this long unless the policy says otherwise.
pub const DEFAULT_HOST_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest host certificate lifetime a policy may set: agents renew at
/// two thirds of it, so an agent offline for a weekend would otherwise
/// come back expired.
const MIN_HOST_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The longest: a stolen key stays usable this long.
const MAX_HOST_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest encoded report an agent may send, whatever the policy says:
/// the collector's message limit.
pub const MAX_INVENTORY_BYTES: u64 = 4 * 1024 * 1024;

/// The inventory limits unless the policy says otherwise. A desktop lists
/// a few thousand packages at most, a large server 10,000-20,000; a few
/// hundred services; local accounts and sessions in the tens, a terminal
/// server in the thousands. An inventory at these limits decodes to tens
/// of MB at most on the collector.
pub const DEFAULT_INVENTORY_LIMITS: Limits = Limits {
    max_packages: 20_000,
    max_services: 5_000,
    max_users: 5_000,
    max_bytes: MAX_INVENTORY_BYTES,
};

/// What a policy may set each limit to: low enough bounds that a typo
/// cannot cut every PC's inventory to nothing, high ones that keep an
/// inventory's memory and write time bounded.
const PACKAGES_RANGE: (u32, u32) = (100, 100_000);
const SERVICES_RANGE: (u32, u32) = (50, 50_000);
const USERS_RANGE: (u32, u32) = (10, 50_000);
const MIN_INVENTORY_BYTES: u64 = 64 * 1024;

impl Default for Policy {
    fn default() -> Self {
        // The defaults are checked by a test, so this cannot fail at run
        // time; an empty policy is the safe fallback regardless.
        parse_policy("").unwrap_or_else(|_| Policy {
            rules: Vec::new(),
            change_rules: Vec::new(),
            applied: Vec::new(),
            disabled: Vec::new(),
            disabled_changes: Vec::new(),
            sla: PRIORITIES.map(default_sla),
            sla_applied: Vec::new(),
            calendar: Calendar::Always,
            lifecycle: Lifecycle::default(),
            diagnostic_roles: Vec::new(),
            host_cert_lifetime: DEFAULT_HOST_CERT_LIFETIME,
            clock: crate::clockskew::ClockWindow::default(),
            inventory_limits: DEFAULT_INVENTORY_LIMITS,
            problems: super::problems::ProblemPolicy::default(),
        })
    }
}

/// P1 to P4.
pub const PRIORITIES: [Priority; 4] = [Priority::P1, Priority::P2, Priority::P3, Priority::P4];

impl Policy {
    /// The SLA target of a priority.
    pub fn sla(&self, priority: Priority) -> SlaTarget {
        self.sla[PRIORITIES.iter().position(|p| *p == priority).unwrap_or(2)]
    }

    /// A metric rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The least role that may run a diagnostic: the policy's override, or
    /// technician for read-only ones and admin for state-changing ones.
    pub fn diagnostic_role(&self, spec: &catalog::Spec) -> Role {
        self.diagnostic_roles
            .iter()
            .find(|(id, _)| id == spec.id)
            .map_or(
                if spec.risk == DiagnosticRisk::ReadOnly {
                    Role::Technician
                } else {
                    Role::Admin
                },
                |(_, role)| *role,
            )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    tickets: Option<Spanned<toml::Table>>,
    #[serde(default)]
    sla: std::collections::BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    business_hours: Option<Spanned<toml::Table>>,
    // Each table is checked on its own, so one bad rule does not hide the
    // next (issue 21), and its span gives the line an error names.
    #[serde(default)]
    rule: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    change_rule: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    diagnostics: Option<Spanned<toml::Table>>,
    #[serde(default)]
    certificates: Option<Spanned<toml::Table>>,
    #[serde(default)]
    clock: Option<Spanned<toml::Table>>,
    inventory: Option<Spanned<toml::Table>>,
    #[serde(default)]
    problems: Option<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    window: Option<String>,
    oldest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    max_packages: Option<i64>,
    max_services: Option<i64>,
    max_users: Option<i64>,
    max_bytes: Option<toml::Value>,
}

/// `inventory.KEY`, an integer within `range`.
fn count_limit(
    key: &str,
    value: Option<i64>,
    range: (u32, u32),
    default: u32,
) -> Result<u32, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    u32::try_from(value)
        .ok()
        .filter(|v| (range.0..=range.1).contains(v))
        .ok_or_else(|| {
            format!(
                "inventory.{key} must be a whole number between {} and {}; got {value}",
                range.0, range.1
            )
        })
}

/// `inventory.max_bytes`: a number of bytes, or text such as "4MiB",
/// "512KiB", "2MB" (KB/MB counted as KiB/MiB, as people mean them here).
fn byte_limit(value: Option<&toml::Value>) -> Result<u64, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_INVENTORY_LIMITS.max_bytes);
    };
    let bad = || {
        format!(
            "inventory.max_bytes must be a size between {} and {}, such as \"2MiB\" or \"512KiB\"; got {value}",
            bytes_text(MIN_INVENTORY_BYTES),
            bytes_text(MAX_INVENTORY_BYTES)
        )
    };
    let bytes = match value {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad())?,
        toml::Value::String(text) => {
            let text = text.trim();
            let digits = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(digits);
            let number: u64 = number.parse().map_err(|_| bad())?;
            let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                _ => return Err(bad()),
            };
            number.checked_mul(scale).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if (MIN_INVENTORY_BYTES..=MAX_INVENTORY_BYTES).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(bad())
    }
}

fn inventory_limits(raw: Option<&RawInventory>) -> Result<Limits, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_INVENTORY_LIMITS);
    };
    let d = DEFAULT_INVENTORY_LIMITS;
    Ok(Limits {
        max_packages: count_limit(
            "max_packages",
            raw.max_packages,
            PACKAGES_RANGE,
            d.max_packages,
        )?,
        max_services: count_limit(
            "max_services",
            raw.max_services,
            SERVICES_RANGE,
            d.max_services,
        )?,
        max_users: count_limit("max_users", raw.max_users, USERS_RANGE, d.max_users)?,
        max_bytes: byte_limit(raw.max_bytes.as_ref())?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificates {
    lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiagnostics {
    #[serde(default)]
    roles: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTickets {
    quiet: Option<String>,
    reopen_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSla {
    response: String,
    resolution: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    timezone: String,
    days: Vec<String>,
    hours: String,
    #[serde(default)]
    holidays: Vec<String>,
}

fn duration(what: &str, text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{what} {text:?} is not a duration ({e}); try e.g. 4h"))?;
    if d < min || d > max {
        return Err(format!(
            "{what} must be between {} and {}",
            crate::units::duration(min),
            crate::units::duration(max)
        ));
    }
    Ok(d)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One problem in a policy file: the line it is on, where known, and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// One line for a person.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Parses and checks a policy file and merges it over the defaults. Every
/// error is reported, one line each with the line of the file it is on
/// (`line 12: rule x: op is required`), joined by newlines.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    check_policy(text).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The 1-based line of a byte offset in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line a table's errors name: its `[header]` line. toml's span of a
/// table starts at its header, or at its first key for a table made by a
/// header, so the header line is looked for just above.
fn table_line(text: &str, span: std::ops::Range<usize>) -> usize {
    let line = line_at(text, span.start);
    let lines: Vec<&str> = text.lines().collect();
    (1..=line)
        .rev()
        .find(|l| {
            lines
                .get(l - 1)
                .is_some_and(|t| t.trim_start().starts_with('['))
        })
        .unwrap_or(line)
}

/// A table checked into its raw type; the error is serde's, one line.
fn raw<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().replace('\n', " "))
}

/// Parses and checks a policy file, collecting every error.
pub fn check_policy(text: &str) -> Result<Policy, Vec<PolicyError>> {
    let mut errors: Vec<PolicyError> = Vec::new();
    let defaults: PolicyFile = toml::from_str(model::DEFAULT_RULES).map_err(|e| {
        vec![PolicyError {
            line: None,
            message: format!("default rules: {}", e.message().trim()),
        }]
    })?;
    let file: PolicyFile = toml::from_str(text).map_err(|e| {
        vec![PolicyError {
            line: e.span().map(|span| line_at(text, span.start)),
            message: e.message().trim().replace('\n', " "),
        }]
    })?;
    let mut error = |line: usize, message: String| {
        errors.push(PolicyError {
            line: Some(line),
            message,
        });
    };

    let mut applied = Vec::new();
    let mut disabled = Vec::new();
    let mut disabled_changes = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    for table in &defaults.rule {
        let checked = raw::<RawRule>(table.get_ref()).and_then(model::check);
        rules.push(checked.map_err(|e| {
            vec![PolicyError {
                line: None,
                message: format!("default rules: {e}"),
            }]
        })?);
    }
    let mut seen = std::collections::HashSet::new();
    for table in &file.rule {
        let line = table_line(text, table.span());
        let raw_rule = match raw::<RawRule>(table.get_ref()) {
            Ok(r) => r,
            Err(e) => {
                let name = table.get_ref().get("name").and_then(toml::Value::as_str);
                error(
                    line,
                    match name {
                        Some(name) => format!("rule {name}: {e}"),
                        None => format!("rule: {e}"),
                    },
                );
                continue;
            }
        };
        let name = match model::check_name(&raw_rule.name) {
            Ok(name) => name,
            Err(e) => {
                error(line, e);
                continue;
            }
        };
        if !seen.insert(name.clone()) {
            error(line, format!("rule {name} is defined twice"));
            continue;
        }
        let existing = rules.iter().position(|r| r.name == name);
        if !raw_rule.enabled {
            match existing {
                Some(i) => {
                    disabled.push(rules.remove(i));
                    applied.push(name);
                }
                None => error(
                    line,
                    format!("rule {name}: enabled = false names no default rule"),
                ),
            }
            continue;
        }
        match model::check(raw_rule) {
            Ok(rule) => {
                applied.push(rule.name.clone());
                match existing {
                    Some(i) => rules[i] = rule,
                    None => rules.push(rule),
                }
            }
            Err(e) => error(line, e),
        }
    }

    let mut change_rules: Vec<ChangeRule> = Vec::new();
    for table in &defaults.change_rule {
        let checked = raw::<RawChangeRule>(table.get_ref()).and_then(model::check_change);
        change_rules.push(checked.map_err(|e| {
            vec![PolicyError {
                line: None,
                message: format!("default rules: {e}"),
            }]
        })?);
    }
    for table in &file.change_rule {
        let line = table_line(text, table.span());
        let raw_rule = match raw::<RawChangeRule>(table.get_ref()) {
            Ok(r) => r,
            Err(e) => {
                let name = table.get_ref().get("name").and_then(toml::Value::as_str);
                error(
                    line,
                    match name {
                        Some(name) => format!("change rule {name}: {e}"),
                        None => format!("change rule: {e}"),
                    },
                );
                continue;
            }
        };
        let name = match model::check_name(&raw_rule.name) {
            Ok(name) => name,
            Err(e) => {
                error(line, e);
                continue;
            }
        };
        if !seen.insert(name.clone()) {
            error(line, format!("rule {name} is defined twice"));
            continue;
        }
        if rules.iter().any(|r| r.name == name) {
            error(
                line,
                format!("change rule {name}: a metric rule has that name"),
            );
            continue;
        }
        let existing = change_rules.iter().position(|r| r.name == name);
        if !raw_rule.enabled {
            match existing {
                Some(i) => {
                    disabled_changes.push(change_rules.remove(i));
                    applied.push(name);
                }
                None => error(
                    line,
                    format!("change rule {name}: enabled = false names no default rule"),
                ),
            }
            continue;
        }
        match model::check_change(raw_rule) {
            Ok(rule) => {
                applied.push(rule.name.clone());
                match existing {
                    Some(i) => change_rules[i] = rule,
                    None => change_rules.push(rule),
                }
            }
            Err(e) => error(line, e),
        }
    }
    // A file's change rule may take a default metric rule's name only if
    // the file also renamed that away; the checks above catch the rest.
    if let Some(clash) = change_rules
        .iter()
        .find(|c| rules.iter().any(|r| r.name == c.name))
    {
        let line = file
            .change_rule
            .iter()
            .find(|t| {
                t.get_ref().get("name").and_then(toml::Value::as_str) == Some(clash.name.as_str())
            })
            .map_or(1, |t| table_line(text, t.span()));
        error(line, format!("rule {} is defined twice", clash.name));
    }

    let mut sla = PRIORITIES.map(default_sla);
    let mut sla_applied = Vec::new();
    for (key, table) in &file.sla {
        let line = table_line(text, table.span());
        let checked = (|| {
            let Some(i) = PRIORITIES.iter().position(|p| p.name() == key) else {
                return Err(format!("sla.{key}: expected P1, P2, P3 or P4"));
            };
            let raw_sla: RawSla = raw(table.get_ref()).map_err(|e| format!("sla.{key}: {e}"))?;
            let year = Duration::from_secs(365 * 24 * 3600);
            let response = duration(
                &format!("sla.{key}.response"),
                &raw_sla.response,
                Duration::from_secs(60),
                year,
            )?;
            let resolution = duration(
                &format!("sla.{key}.resolution"),
                &raw_sla.resolution,
                Duration::from_secs(60),
                year,
            )?;
            if resolution < response {
                return Err(format!(
                    "sla.{key}: resolution must not be shorter than response"
                ));
            }
            Ok((
                i,
                SlaTarget {
                    response,
                    resolution,
                },
            ))
        })();
        match checked {
            Ok((i, target)) => {
                sla[i] = target;
                sla_applied.push(PRIORITIES[i]);
            }
            Err(e) => error(line, e),
        }
    }
    sla_applied.sort();

    let mut lifecycle = Lifecycle::default();
    if let Some(table) = &file.tickets {
        let line = table_line(text, table.span());
        let checked = (|| {
            let t: RawTickets = raw(table.get_ref()).map_err(|e| format!("tickets: {e}"))?;
            if let Some(q) = &t.quiet {
                lifecycle.quiet_ms = ms(duration(
                    "tickets.quiet",
                    q,
                    Duration::ZERO,
                    Duration::from_secs(7 * 24 * 3600),
                )?);
            }
            if let Some(w) = &t.reopen_window {
                lifecycle.reopen_window_ms = ms(duration(
                    "tickets.reopen_window",
                    w,
                    Duration::ZERO,
                    Duration::from_secs(90 * 24 * 3600),
                )?);
            }
            Ok::<(), String>(())
        })();
        if let Err(e) = checked {
            error(line, e);
        }
    }

    let calendar = match &file.business_hours {
        None => Calendar::Always,
        Some(table) => {
            let checked = raw::<RawHours>(table.get_ref())
                .map_err(|e| format!("business_hours: {e}"))
                .and_then(|h| BusinessHours::parse(&h));
            match checked {
                Ok(hours) => Calendar::Hours(hours),
                Err(e) => {
                    error(table_line(text, table.span()), e);
                    Calendar::Always
                }
            }
        }
    };
    let mut diagnostic_roles = Vec::new();
    if let Some(table) = &file.diagnostics {
        let line = table_line(text, table.span());
        match raw::<RawDiagnostics>(table.get_ref()) {
            Err(e) => error(line, format!("diagnostics: {e}")),
            Ok(d) => {
                for (id, role) in &d.roles {
                    if catalog::spec(id).is_none() {
                        error(
                            line,
                            format!("diagnostics.roles: {id:?} is not in the diagnostic catalog"),
                        );
                        continue;
                    }
                    match role.parse::<Role>() {
                        Err(e) => error(line, format!("diagnostics.roles.{id}: {e}")),
                        Ok(Role::Viewer) => error(
                            line,
                            format!(
                                "diagnostics.roles.{id}: a viewer may not run diagnostics; use technician or admin"
                            ),
                        ),
                        Ok(role) => diagnostic_roles.push((id.clone(), role)),
                    }
                }
            }
        }
    }
    let mut host_cert_lifetime = DEFAULT_HOST_CERT_LIFETIME;
    if let Some(table) = &file.certificates {
        let checked = raw::<RawCertificates>(table.get_ref())
            .map_err(|e| format!("certificates: {e}"))
            .and_then(|c| match &c.lifetime {
                None => Ok(DEFAULT_HOST_CERT_LIFETIME),
                Some(text) => duration(
                    "certificates.lifetime",
                    text,
                    MIN_HOST_CERT_LIFETIME,
                    MAX_HOST_CERT_LIFETIME,
                ),
            });
        match checked {
            Ok(lifetime) => host_cert_lifetime = lifetime,
            Err(e) => error(table_line(text, table.span()), e),
        }
    }
    let inventory_limits = match &file.inventory {
        None => DEFAULT_INVENTORY_LIMITS,
        Some(table) => {
            let checked = raw::<RawInventory>(table.get_ref())
                .map_err(|e| format!("inventory: {e}"))
                .and_then(|raw| inventory_limits(Some(&raw)));
            checked.unwrap_or_else(|e| {
                error(table_line(text, table.span()), e);
                DEFAULT_INVENTORY_LIMITS
            })
        }
    };
    let clock = match &file.clock {
        None => crate::clockskew::ClockWindow::default(),
        Some(table) => {
            let checked = raw::<RawClock>(table.get_ref())
                .map_err(|e| format!("clock: {e}"))
                .and_then(|raw| clock_window(Some(&raw)));
            checked.unwrap_or_else(|e| {
                error(table_line(text, table.span()), e);
                crate::clockskew::ClockWindow::default()
            })
        }
    };
    let problems = match &file.problems {
        None => super::problems::ProblemPolicy::default(),
        Some(table) => raw::<super::problems::RawProblems>(table.get_ref())
            .map_err(|e| format!("problems: {e}"))
            .and_then(|raw| super::problems::ProblemPolicy::check(&raw))
            .unwrap_or_else(|e| {
                error(table_line(text, table.span()), e);
                super::problems::ProblemPolicy::default()
            }),
    };
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    Ok(Policy {
        rules,
        change_rules,
        applied,
        disabled,
        disabled_changes,
        sla,
        sla_applied,
        calendar,
        lifecycle,
        diagnostic_roles,
        host_cert_lifetime,
        clock,
        inventory_limits,
        problems,
    })
}

/// The `[clock]` table, checked: `window` 1 minute to 1 day, `oldest` 1 day
/// to 400 days (past a year a spooled report is implausible and would fall
/// outside the change log's default retention anyway).
fn clock_window(raw: Option<&RawClock>) -> Result<crate::clockskew::ClockWindow, String> {
    let mut clock = crate::clockskew::ClockWindow::default();
    let Some(raw) = raw else {
        return Ok(clock);
    };
    if let Some(text) = &raw.window {
        clock.window_ms = ms(duration(
            "clock.window",
            text,
            Duration::from_secs(60),
            Duration::from_secs(24 * 3600),
        )?);
    }
    if let Some(text) = &raw.oldest {
        let oldest = humantime::parse_duration(text)
            .map_err(|e| format!("clock.oldest {text:?} is not a duration ({e}); try e.g. 90d"))?;
        if oldest < Duration::from_secs(24 * 3600) || oldest > Duration::from_secs(400 * 24 * 3600)
        {
            return Err("clock.oldest must be between 1 day and 400 days".into());
        }
        clock.oldest_ms = ms(oldest);
    }
    Ok(clock)
}

/// When SLA clocks run.
#[derive(Debug, Clone)]
pub enum Calendar {
    /// Around the clock (the default).
    Always,
    /// Only within business hours.
    Hours(BusinessHours),
}

/// A weekly business-hours calendar in one time zone, with holidays. DST is
/// handled by the time zone: hours are local wall-clock hours.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    /// The zone name, e.g. "Europe/Berlin".
    pub zone_name: String,
    zone: TimeZone,
    /// Monday first.
    days: [bool; 7],
    start: (i8, i8),
    end: (i8, i8),
    holidays: Vec<Date>,
    /// As written, for listing: "mon-fri 08:00-18:00".
    pub summary: String,
}

fn hhmm(text: &str) -> Option<(i8, i8)> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && (h < 24 || m == 0)).then_some((h, m))
}

impl BusinessHours {
    fn parse(raw: &RawHours) -> Result<Self, String> {
        let zone = TimeZone::get(raw.timezone.trim()).map_err(|_| {
            format!(
                "business_hours.timezone {:?} is not a known time zone; try e.g. Europe/Berlin",
                raw.timezone
            )
        })?;
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let mut days = [false; 7];
        for day in &raw.days {
            let lower = day.trim().to_ascii_lowercase();
            let Some(i) = NAMES.iter().position(|n| lower.starts_with(n)) else {
                return Err(format!(
                    "business_hours.days: {day:?} is not a weekday; expected mon..sun"
                ));
            };
            days[i] = true;
        }
        if !days.contains(&true) {
            return Err("business_hours.days must name at least one day".into());
        }
        let (start, end) = raw
            .hours
            .split_once('-')
            .and_then(|(a, b)| Some((hhmm(a)?, hhmm(b)?)))
            .filter(|(a, b)| a < b)
            .ok_or_else(|| {
                format!(
                    "business_hours.hours {:?} must be HH:MM-HH:MM with the start first",
                    raw.hours
                )
            })?;
        let holidays = raw
            .holidays
            .iter()
            .map(|d| {
                d.trim().parse::<Date>().map_err(|_| {
                    format!("business_hours.holidays: {d:?} is not a date like 2026-12-25")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let day_list: Vec<&str> = NAMES
            .iter()
            .zip(days)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        Ok(Self {
            zone_name: raw.timezone.trim().to_owned(),
            zone,
            days,
            start,
            end,
            holidays,
            summary: format!(
                "{} {:02}:{:02}-{:02}:{:02} {}",
                day_list.join(","),
                start.0,
                start.1,
                end.0,
                end.1,
                raw.timezone.trim()
            ),
        })
    }

    /// The business window of a date, as ms, if it is a business day.
    fn window(&self, date: Date) -> Option<(i64, i64)> {
        let weekday: Weekday = date.weekday();
        let index = usize::try_from(weekday.to_monday_zero_offset()).unwrap_or(0);
        if !self.days[index] || self.holidays.contains(&date) {
            return None;
        }
        let at = |(h, m): (i8, i8)| -> Option<i64> {
            let civil = if h == 24 {
                date.tomorrow().ok()?.at(0, 0, 0, 0)
            } else {
                date.at(h, m, 0, 0)
            };
            Some(
                civil
                    .to_zoned_datetime(self.zone.clone())
                    .ok()?
                    .timestamp()
                    .as_millisecond(),
            )
        };
        Some((at(self.start)?, at(self.end)?))
    }

    fn date_of(&self, at_ms: i64) -> Option<Date> {
        Some(
            Timestamp::from_millisecond(at_ms)
                .ok()?
                .to_zoned_datetime(self.zone.clone())
                .date(),
        )
    }
}

/// Business days searched ahead before giving up: ten years.
const HORIZON_DAYS: usize = 3660;

impl Calendar {
    /// The time `business_ms` of business time after `from_ms`.
    pub fn add(&self, from_ms: i64, business_ms: i64) -> i64 {
        let Calendar::Hours(hours) = self else {
            return from_ms.saturating_add(business_ms);
        };
        let Some(mut date) = hours.date_of(from_ms) else {
            return from_ms.saturating_add(business_ms);
        };
        let mut left = business_ms.max(0);
        let cursor = from_ms;
        for _ in 0..HORIZON_DAYS {
            if let Some((start, end)) = hours.window(date) {
                let begin = cursor.max(start);
                if begin < end {
                    if left <= end - begin {
                        return begin + left;
                    }
                    left -= end - begin;
                }
            }
            let Ok(next) = date.tomorrow() else { break };
            date = next;
        }
        from_ms.saturating_add(business_ms)
    }

    /// The business time between `from_ms` and `to_ms` (0 when `to_ms` is
    /// not later).
    pub fn between(&self, from_ms: i64, to_ms: i64) -> i64 {
        if to_ms <= from_ms {
            return 0;
        }
        let Calendar::Hours(hours) = self else {
            return to_ms - from_ms;
        };
        let Some(mut date) = hours.date_of(from_ms) else {
            return to_ms - from_ms;
        };
        let mut total = 0;
        for _ in 0..HORIZON_DAYS {
            if let Some((start, end)) = hours.window(date) {
                if start >= to_ms {
                    break;
                }
                let (a, b) = (start.max(from_ms), end.min(to_ms));
                total += (b - a).max(0);
            }
            let Ok(next) = date.tomorrow() else { break };
            date = next;
            if hours.window(date).is_some_and(|(start, _)| start >= to_ms) {
                break;
            }
        }
        total
    }

    /// "24x7" or the business hours as written.
    pub fn summary(&self) -> String {
        match self {
            Calendar::Always => "24x7".into(),
            Calendar::Hours(h) => h.summary.clone(),
        }
    }
}

/// Parses and checks a file's `[[rule]]` tables: the rules it defines or
/// replaces. Errors are one line and name the rule.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let policy = parse_policy(text)?;
    Ok(policy
        .rules
        .into_iter()
        .filter(|r| policy.applied.contains(&r.name))
        .collect())
}

/// The default rules, checked.
pub fn default_rules() -> Vec<Rule> {
    Policy::default().rules
}

pub mod text;

#[cfg(test)]
mod tests;
