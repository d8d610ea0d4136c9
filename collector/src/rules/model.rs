//! Rules as admins write them: a TOML file of `[[rule]]` tables, checked
//! field by field with one-line errors, and the default set.
//!
//! ```toml
//! [[rule]]
//! name = "disk-full"
//! metric = "disk_used_percent"   # see Metric
//! op = ">"                       # ">", "<" or "=="
//! threshold = 90
//! recover = 85                   # hysteresis; defaults to the threshold
//! for = "10m"                    # how long the condition must hold
//! severity = "high"              # critical, high, medium, low
//! scope = ["site=berlin"]        # host tags that must all match; optional
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::priority::Severity;
use super::triage::{self, TriageStep};

/// What a rule measures. Per-subject metrics make one state (and one
/// ticket) per subject (D20). Flags read 1 when true and 0 when false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// CPU use over the sample interval, percent.
    CpuPercent,
    /// Memory in use, percent.
    MemoryUsedPercent,
    /// Swap in use, percent; 0 without swap.
    SwapUsedPercent,
    /// The 5-minute load average divided by the logical CPUs.
    LoadPerCpu,
    /// Use of one filesystem, percent; the subject is its mount point.
    DiskUsedPercent,
    /// Free space of one filesystem, MiB; the subject is its mount point.
    DiskFreeMib,
    /// One temperature sensor, Celsius; the subject is the sensor.
    TemperatureCelsius,
    /// A battery's full-charge over design capacity, percent; the subject
    /// is the battery.
    BatteryHealthPercent,
    /// Days since boot.
    UptimeDays,
    /// 1 while the OS waits for a reboot.
    RebootPending,
    /// 1 while a watched service is not running; the subject is the
    /// service.
    ServiceDown,
    /// 1 when a disk fails its SMART self-assessment; the subject is the
    /// device.
    SmartFailed,
    /// NVMe rated endurance used, percent; the subject is the device.
    DiskWearPercent,
    /// Days since the OS last installed updates.
    DaysSinceUpdate,
    /// 1 while a registered antivirus has real-time protection off.
    AntivirusOff,
    /// 1 while the host firewall is off.
    FirewallOff,
    /// 1 while the system volume is not encrypted.
    EncryptionOff,
    /// Minutes since the host was last heard from; only hosts that should
    /// always be on (D18).
    OfflineMinutes,
    /// How far the PC's clock is off the collector's, either way, whole
    /// minutes: measured by the session from the agent's send times
    /// (`crate::clockskew`), absent from agents that do not send them.
    ClockOffsetMinutes,
}

/// One reading of a health sample for the rules: metric, subject (mount
/// point, sensor, service, device or empty), value.
pub type Reading = (Metric, String, f64);

impl Metric {
    /// Every metric with its rule-file name and unit, in display order.
    pub const ALL: [(&'static str, Metric, &'static str); 19] = [
        ("cpu_percent", Metric::CpuPercent, "%"),
        ("memory_used_percent", Metric::MemoryUsedPercent, "%"),
        ("swap_used_percent", Metric::SwapUsedPercent, "%"),
        ("load_per_cpu", Metric::LoadPerCpu, ""),
        ("disk_used_percent", Metric::DiskUsedPercent, "%"),
        ("disk_free_mib", Metric::DiskFreeMib, " MiB"),
        ("temperature_celsius", Metric::TemperatureCelsius, " °C"),
        ("battery_health_percent", Metric::BatteryHealthPercent, "%"),
        ("uptime_days", Metric::UptimeDays, " days"),
        ("reboot_pending", Metric::RebootPending, ""),
        ("service_down", Metric::ServiceDown, ""),
        ("smart_failed", Metric::SmartFailed, ""),
        ("disk_wear_percent", Metric::DiskWearPercent, "%"),
        ("days_since_update", Metric::DaysSinceUpdate, " days"),
        ("antivirus_off", Metric::AntivirusOff, ""),
        ("firewall_off", Metric::FirewallOff, ""),
        ("encryption_off", Metric::EncryptionOff, ""),
        ("offline_minutes", Metric::OfflineMinutes, " min"),
        ("clock_offset_minutes", Metric::ClockOffsetMinutes, " min"),
    ];

    /// Whether its readings, and so its tickets, have a subject: a mount
    /// point, sensor, battery, service or device.
    pub fn has_subject(self) -> bool {
        matches!(
            self,
            Metric::DiskUsedPercent
                | Metric::DiskFreeMib
                | Metric::TemperatureCelsius
                | Metric::BatteryHealthPercent
                | Metric::ServiceDown
                | Metric::SmartFailed
                | Metric::DiskWearPercent
        )
    }

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m, _)| *m == self)
            .map_or("", |(n, _, _)| n)
    }

    /// How a reading of this metric is written for people, rounded to
    /// what its unit needs: "22.6%", "1235 MiB", "71.3 °C", "0.85", "1".
    pub fn format(self, value: f64) -> String {
        let unit = Self::ALL
            .iter()
            .find(|(_, m, _)| *m == self)
            .map_or("", |(_, _, u)| u);
        let decimals = match self {
            Metric::LoadPerCpu => 2,
            Metric::CpuPercent
            | Metric::MemoryUsedPercent
            | Metric::SwapUsedPercent
            | Metric::DiskUsedPercent
            | Metric::TemperatureCelsius
            | Metric::BatteryHealthPercent
            | Metric::DiskWearPercent
            | Metric::UptimeDays
            | Metric::DaysSinceUpdate => 1,
            _ => 0,
        };
        crate::units::rounded(value, decimals, unit)
    }

    /// The metric a rule file or ticket evidence names.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, m, _)| *m)
    }

    fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _, _)| *n == text)
            .map(|(_, m, _)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _, _)| *n).collect();
                format!(
                    "unknown metric {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// An inventory change that a change rule fires on. The subject is the
/// disk, account, product or volume concerned (D20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Total memory went down.
    MemoryDecreased,
    /// A disk's serial number changed.
    DiskSerialChanged,
    /// A local account gained administrator rights, or a new one has them.
    NewLocalAdmin,
    /// An antivirus product's real-time protection went from on to off.
    AntivirusDisabled,
    /// A volume went from encrypted to not encrypted.
    EncryptionDisabled,
}

impl ChangeKind {
    /// Whether its tickets have a subject: a disk, account, product or
    /// volume.
    pub fn has_subject(self) -> bool {
        self != ChangeKind::MemoryDecreased
    }

    /// Every change kind with its rule-file name.
    pub const ALL: [(&'static str, ChangeKind); 5] = [
        ("memory_decreased", ChangeKind::MemoryDecreased),
        ("disk_serial_changed", ChangeKind::DiskSerialChanged),
        ("new_local_admin", ChangeKind::NewLocalAdmin),
        ("antivirus_disabled", ChangeKind::AntivirusDisabled),
        ("encryption_disabled", ChangeKind::EncryptionDisabled),
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("", |(n, _)| n)
    }

    fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown change {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How a reading is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Above the threshold.
    Greater,
    /// Below the threshold.
    Less,
    /// Exactly the threshold.
    Equal,
}

impl Op {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            ">" => Ok(Op::Greater),
            "<" => Ok(Op::Less),
            "==" => Ok(Op::Equal),
            other => Err(format!("unknown op {other:?}; expected >, < or ==")),
        }
    }

    /// The symbol used in rule files.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Greater => ">",
            Op::Less => "<",
            Op::Equal => "==",
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name, e.g. "disk-full".
    pub name: String,
    /// What it measures.
    pub metric: Metric,
    /// How it compares.
    pub op: Op,
    /// Raise past this.
    pub threshold: f64,
    /// Clear past this (hysteresis).
    pub recover: f64,
    /// How long the condition must hold before it fires, ms.
    pub duration_ms: i64,
    /// Urgency for the priority matrix.
    pub severity: Severity,
    /// Host tags (key, value) that must all match; empty for every host.
    pub scope: Vec<(String, String)>,
    /// What runs on the PC when its ticket opens (issue 23).
    pub triage: Vec<TriageStep>,
}

impl Rule {
    /// True when `value` meets the raise condition.
    pub fn raises(&self, value: f64) -> bool {
        match self.op {
            Op::Greater => value > self.threshold,
            Op::Less => value < self.threshold,
            Op::Equal => value == self.threshold,
        }
    }

    /// True when `value` is past the recovery threshold.
    pub fn clears(&self, value: f64) -> bool {
        match self.op {
            Op::Greater => value <= self.recover,
            Op::Less => value >= self.recover,
            Op::Equal => value != self.threshold,
        }
    }

    /// True when the rule applies to a host with these tags.
    pub fn in_scope(&self, tags: &[(String, String)]) -> bool {
        self.scope.iter().all(|wanted| tags.contains(wanted))
    }

    /// The title of the ticket this rule opens for `subject` at `value`;
    /// both store backends name tickets with it.
    pub fn ticket_title(&self, subject: &str, value: f64) -> String {
        let shown = self.metric.format(value);
        let what = match self.metric {
            Metric::DiskUsedPercent => format!("{subject} is {shown} full"),
            Metric::DiskFreeMib => format!("{subject} has {shown} free"),
            Metric::CpuPercent => format!("CPU at {shown}"),
            Metric::MemoryUsedPercent => format!("memory {shown} used"),
            Metric::SwapUsedPercent => format!("swap {shown} used"),
            Metric::LoadPerCpu => format!("load {shown} per CPU"),
            Metric::TemperatureCelsius => format!("{subject} at {shown}"),
            Metric::BatteryHealthPercent => format!("battery {subject} down to {shown} of design"),
            Metric::UptimeDays => format!("up for {shown}"),
            Metric::RebootPending => "a reboot is pending".to_owned(),
            Metric::ServiceDown => format!("service {subject} is not running"),
            Metric::SmartFailed => format!("disk {subject} fails its SMART check"),
            Metric::DiskWearPercent => format!("disk {subject} has used {shown} of its endurance"),
            Metric::DaysSinceUpdate => format!("no OS updates for {shown}"),
            Metric::AntivirusOff => "antivirus real-time protection is off".to_owned(),
            Metric::FirewallOff => "the firewall is off".to_owned(),
            Metric::EncryptionOff => "the system volume is not encrypted".to_owned(),
            Metric::OfflineMinutes => format!("offline for {shown}"),
            Metric::ClockOffsetMinutes => {
                format!("the PC's clock is {shown} off; check its time and time zone")
            }
        };
        format!("{}: {what}", self.name)
    }
}

/// A checked inventory-change rule: it fires once per change, and its
/// ticket stays open until a technician resolves it (a change has no
/// recovery to wait for).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRule {
    /// Unique name, e.g. "memory-decreased".
    pub name: String,
    /// The change it fires on.
    pub change: ChangeKind,
    /// Urgency for the priority matrix.
    pub severity: Severity,
    /// Host tags (key, value) that must all match; empty for every host.
    pub scope: Vec<(String, String)>,
    /// What runs on the PC when its ticket opens (issue 23).
    pub triage: Vec<TriageStep>,
}

impl ChangeRule {
    /// True when the rule applies to a host with these tags.
    pub fn in_scope(&self, tags: &[(String, String)]) -> bool {
        self.scope.iter().all(|wanted| tags.contains(wanted))
    }
}

/// A `[[rule]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    metric: Option<String>,
    op: Option<String>,
    threshold: Option<f64>,
    recover: Option<f64>,
    #[serde(rename = "for", default)]
    duration: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    triage: Vec<String>,
    /// `false` switches off the default rule of the same name.
    #[serde(default = "yes")]
    pub(super) enabled: bool,
}

/// A `[[change_rule]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChangeRule {
    pub(super) name: String,
    change: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    triage: Vec<String>,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
}

fn yes() -> bool {
    true
}

/// Checks a rule name: the error names the raw text.
pub(super) fn check_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_owned();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "rule name {raw:?} must be 1-64 characters of [A-Za-z0-9_-]"
        ))
    }
}

fn scope(tags: &[String], at: &dyn Fn(String) -> String) -> Result<Vec<(String, String)>, String> {
    tags.iter()
        .map(|tag| {
            crate::query::parse_tag(tag, false).map_err(|e| at(format!("scope {tag:?}: {e}")))
        })
        .collect()
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{field} is required"))
}

pub(super) fn check(raw: RawRule) -> Result<Rule, String> {
    let name = check_name(&raw.name)?;
    let at = |e: String| format!("rule {name}: {e}");
    let metric = Metric::parse(&required(raw.metric, "metric").map_err(at)?).map_err(at)?;
    let op = Op::parse(&required(raw.op, "op").map_err(at)?).map_err(at)?;
    let threshold = required(raw.threshold, "threshold").map_err(at)?;
    if !threshold.is_finite() {
        return Err(at("threshold must be a finite number".into()));
    }
    let recover = raw.recover.unwrap_or(threshold);
    let recover_ok = match op {
        Op::Greater => recover <= threshold,
        Op::Less => recover >= threshold,
        Op::Equal => recover == threshold,
    };
    if !recover.is_finite() || !recover_ok {
        return Err(at(format!(
            "recover {recover} must be on the clear side of threshold {threshold} for op {}",
            op.symbol()
        )));
    }
    let duration = match &raw.duration {
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            at(format!(
                "for {text:?} is not a duration ({e}); try e.g. 10m"
            ))
        })?,
        None => Duration::ZERO,
    };
    if duration > Duration::from_secs(7 * 24 * 3600) {
        return Err(at("for must be at most 7d".into()));
    }
    let severity = Severity::parse(&required(raw.severity, "severity").map_err(at)?).map_err(at)?;
    Ok(Rule {
        metric,
        op,
        threshold,
        recover,
        duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        severity,
        scope: scope(&raw.scope, &at)?,
        triage: if metric == Metric::OfflineMinutes && !raw.triage.is_empty() {
            return Err(at(
                "an offline PC runs nothing, so offline rules take no triage; \
                 their tickets get the last health and changes the PC sent"
                    .into(),
            ));
        } else {
            triage::parse_all(&raw.triage, metric.has_subject()).map_err(at)?
        },
        name,
    })
}

pub(super) fn check_change(raw: RawChangeRule) -> Result<ChangeRule, String> {
    let name = check_name(&raw.name)?;
    let at = |e: String| format!("change rule {name}: {e}");
    let change = ChangeKind::parse(&required(raw.change, "change").map_err(at)?).map_err(at)?;
    let severity = Severity::parse(&required(raw.severity, "severity").map_err(at)?).map_err(at)?;
    Ok(ChangeRule {
        change,
        severity,
        scope: scope(&raw.scope, &at)?,
        triage: triage::parse_all(&raw.triage, change.has_subject()).map_err(at)?,
        name,
    })
}

/// The default rules: what a help desk switches on as it is. Every
/// threshold waits long enough that a passing spike raises nothing.
pub const DEFAULT_RULES: &str = r#"
[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 90
recover = 85
for = "10m"
severity = "high"
triage = ["disk_usage path={subject}"]

[[rule]]
name = "disk-almost-full"
metric = "disk_used_percent"
op = ">"
threshold = 80
recover = 75
for = "1h"
severity = "low"
triage = ["disk_usage path={subject}"]

[[rule]]
name = "memory-exhausted"
metric = "memory_used_percent"
op = ">"
threshold = 95
recover = 90
for = "15m"
severity = "medium"
triage = ["top_processes sort=memory"]

[[rule]]
name = "cpu-saturated"
metric = "cpu_percent"
op = ">"
threshold = 95
recover = 80
for = "30m"
severity = "medium"
triage = ["top_processes sort=cpu"]

[[rule]]
name = "swap-exhausted"
metric = "swap_used_percent"
op = ">"
threshold = 90
recover = 70
for = "15m"
severity = "medium"
triage = ["top_processes sort=memory"]

[[rule]]
name = "overheating"
metric = "temperature_celsius"
op = ">"
threshold = 90
recover = 80
for = "5m"
severity = "high"
triage = ["top_processes sort=cpu"]

[[rule]]
name = "battery-worn"
metric = "battery_health_percent"
op = "<"
threshold = 50
recover = 55
for = "1h"
severity = "low"
triage = ["battery_report"]

[[rule]]
name = "service-down"
metric = "service_down"
op = "=="
threshold = 1
for = "5m"
severity = "high"
triage = ["service_status service={subject}"]

[[rule]]
name = "smart-failing"
metric = "smart_failed"
op = "=="
threshold = 1
severity = "critical"
triage = ["smart_report device={subject}"]

[[rule]]
name = "disk-worn-out"
metric = "disk_wear_percent"
op = ">"
threshold = 90
recover = 90
severity = "medium"
triage = ["smart_report device={subject}"]

[[rule]]
name = "updates-stale"
metric = "days_since_update"
op = ">"
threshold = 30
recover = 7
for = "1h"
severity = "medium"
triage = ["pending_updates"]

[[rule]]
name = "reboot-overdue"
metric = "reboot_pending"
op = "=="
threshold = 1
for = "3d"
severity = "low"

[[rule]]
name = "antivirus-off"
metric = "antivirus_off"
op = "=="
threshold = 1
severity = "high"

[[rule]]
name = "clock-off"
metric = "clock_offset_minutes"
op = ">"
threshold = 5
recover = 1
for = "30m"
severity = "low"
triage = ["clock_status"]

[[rule]]
name = "offline"
metric = "offline_minutes"
op = ">"
threshold = 10
recover = 0
severity = "high"

[[change_rule]]
name = "memory-decreased"
change = "memory_decreased"
severity = "high"

[[change_rule]]
name = "disk-replaced"
change = "disk_serial_changed"
severity = "medium"

[[change_rule]]
name = "new-local-admin"
change = "new_local_admin"
severity = "high"

[[change_rule]]
name = "antivirus-disabled"
change = "antivirus_disabled"
severity = "high"

[[change_rule]]
name = "encryption-disabled"
change = "encryption_disabled"
severity = "high"
"#;
