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

/// What a rule measures. Per-subject metrics make one state (and one
/// ticket) per subject (D20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// CPU use over the sample interval, percent.
    CpuPercent,
    /// Memory in use, percent.
    MemoryUsedPercent,
    /// Use of one filesystem, percent; the subject is its mount point.
    DiskUsedPercent,
    /// Minutes since the host was last heard from; only hosts that should
    /// always be on (D18).
    OfflineMinutes,
}

impl Metric {
    const NAMES: [(&'static str, Metric); 4] = [
        ("cpu_percent", Metric::CpuPercent),
        ("memory_used_percent", Metric::MemoryUsedPercent),
        ("disk_used_percent", Metric::DiskUsedPercent),
        ("offline_minutes", Metric::OfflineMinutes),
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }

    fn parse(text: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown metric {text:?}; expected one of {}",
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    metric: String,
    op: String,
    threshold: f64,
    recover: Option<f64>,
    #[serde(rename = "for", default)]
    duration: Option<String>,
    severity: String,
    #[serde(default)]
    scope: Vec<String>,
}

fn check(raw: RawRule) -> Result<Rule, String> {
    let name = raw.name.trim().to_owned();
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(format!(
            "rule name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
            raw.name
        ));
    }
    let at = |e: String| format!("rule {name}: {e}");
    let metric = Metric::parse(&raw.metric).map_err(at)?;
    let op = Op::parse(&raw.op).map_err(at)?;
    if !raw.threshold.is_finite() {
        return Err(at("threshold must be a finite number".into()));
    }
    let recover = raw.recover.unwrap_or(raw.threshold);
    let recover_ok = match op {
        Op::Greater => recover <= raw.threshold,
        Op::Less => recover >= raw.threshold,
        Op::Equal => recover == raw.threshold,
    };
    if !recover.is_finite() || !recover_ok {
        return Err(at(format!(
            "recover {recover} must be on the clear side of threshold {} for op {}",
            raw.threshold,
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
    let severity = Severity::parse(&raw.severity).map_err(at)?;
    let scope = raw
        .scope
        .iter()
        .map(|tag| {
            crate::query::parse_tag(tag, false).map_err(|e| at(format!("scope {tag:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        name,
        metric,
        op,
        threshold: raw.threshold,
        recover,
        duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        severity,
        scope,
    })
}

/// Parses and checks a rule file. Errors are one line and name the rule.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let file: RuleFile =
        toml::from_str(text).map_err(|e| format!("rule file: {}", e.message().trim()))?;
    let mut rules = Vec::with_capacity(file.rule.len());
    for raw in file.rule {
        let rule = check(raw)?;
        if rules.iter().any(|r: &Rule| r.name == rule.name) {
            return Err(format!("rule {} is defined twice", rule.name));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// The default rule set: what a help desk switches on as it is.
pub const DEFAULT_RULES: &str = r#"
[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 90
recover = 85
for = "10m"
severity = "high"

[[rule]]
name = "disk-almost-full"
metric = "disk_used_percent"
op = ">"
threshold = 80
recover = 75
for = "1h"
severity = "low"

[[rule]]
name = "memory-exhausted"
metric = "memory_used_percent"
op = ">"
threshold = 95
recover = 90
for = "15m"
severity = "medium"

[[rule]]
name = "cpu-saturated"
metric = "cpu_percent"
op = ">"
threshold = 95
recover = 80
for = "30m"
severity = "medium"

[[rule]]
name = "offline"
metric = "offline_minutes"
op = ">"
threshold = 10
recover = 0
severity = "high"
"#;

/// The default rules, checked.
pub fn default_rules() -> Vec<Rule> {
    // Checked by a test, so this cannot fail at run time.
    parse_rules(DEFAULT_RULES).unwrap_or_default()
}
