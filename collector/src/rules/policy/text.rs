//! A policy as text again (issue 21): `rules export` writes the policy in
//! force as a file `rules apply` takes back unchanged, and `rules apply`
//! (and `--dry-run`) says what a new file changes against the policy in
//! force, and what it drops that the earlier file set.
//!
//! The export writes every section's values in force, the rules and SLA
//! targets the applied file set (disabled defaults as `enabled = false`),
//! and the defaults it left alone as comments, so applying it back gives
//! the same policy with the same sources.

use std::fmt::Write;

use super::{Calendar, PRIORITIES, Policy, default_sla};
use crate::rules::model::{ChangeRule, Rule};
use crate::rules::triage::TriageStep;
use crate::units;

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn number(value: f64) -> String {
    toml::Value::Float(value).to_string()
}

fn scope_text(scope: &[(String, String)]) -> String {
    let items: Vec<String> = scope
        .iter()
        .map(|(k, v)| quoted(&format!("{k}={v}")))
        .collect();
    format!("[{}]", items.join(", "))
}

fn triage_text(triage: &[TriageStep]) -> String {
    let items: Vec<String> = triage.iter().map(|step| quoted(&step.text())).collect();
    format!("[{}]", items.join(", "))
}

fn write_rule(out: &mut String, rule: &Rule) {
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "[[rule]]");
    let _ = writeln!(out, "name = {}", quoted(&rule.name));
    let _ = writeln!(out, "metric = {}", quoted(rule.metric.name()));
    let _ = writeln!(out, "op = {}", quoted(rule.op.symbol()));
    let _ = writeln!(out, "threshold = {}", number(rule.threshold));
    let _ = writeln!(out, "recover = {}", number(rule.recover));
    if rule.duration_ms > 0 {
        let _ = writeln!(
            out,
            "for = {}",
            quoted(&units::duration_ms(rule.duration_ms))
        );
    }
    let _ = writeln!(out, "severity = {}", quoted(rule.severity.name()));
    if !rule.scope.is_empty() {
        let _ = writeln!(out, "scope = {}", scope_text(&rule.scope));
    }
    if !rule.triage.is_empty() {
        let _ = writeln!(out, "triage = {}", triage_text(&rule.triage));
    }
    out.push('\n');
}

fn write_change_rule(out: &mut String, rule: &ChangeRule) {
    let _ = writeln!(out, "[[change_rule]]");
    let _ = writeln!(out, "name = {}", quoted(&rule.name));
    let _ = writeln!(out, "change = {}", quoted(rule.change.name()));
    let _ = writeln!(out, "severity = {}", quoted(rule.severity.name()));
    if !rule.scope.is_empty() {
        let _ = writeln!(out, "scope = {}", scope_text(&rule.scope));
    }
    if !rule.triage.is_empty() {
        let _ = writeln!(out, "triage = {}", triage_text(&rule.triage));
    }
    out.push('\n');
}

/// The names of `names`, wrapped as comment lines under `heading`.
fn comment_list(out: &mut String, heading: &str, names: &[&str]) {
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "# {heading}:");
    let mut line = String::from("#  ");
    for name in names {
        if line.len() + name.len() > 76 {
            let _ = writeln!(out, "{}", line.trim_end());
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(name);
    }
    let _ = writeln!(out, "{}", line.trim_end());
    out.push('\n');
}

impl Policy {
    /// The policy as a file `rules apply` accepts back unchanged.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "[tickets]");
        let _ = writeln!(
            out,
            "quiet = {}",
            quoted(&units::duration_ms(self.lifecycle.quiet_ms))
        );
        let _ = writeln!(
            out,
            "reopen_window = {}\n",
            quoted(&units::duration_ms(self.lifecycle.reopen_window_ms))
        );
        for (i, priority) in PRIORITIES.iter().enumerate() {
            let target = self.sla[i];
            let (response, resolution) = (
                units::duration(target.response),
                units::duration(target.resolution),
            );
            if self.sla_applied.contains(priority) {
                let _ = writeln!(out, "[sla.{}]", priority.name());
                let _ = writeln!(out, "response = {}", quoted(&response));
                let _ = writeln!(out, "resolution = {}\n", quoted(&resolution));
            } else {
                let _ = writeln!(
                    out,
                    "# [sla.{}] the default: response {response}, resolution {resolution}\n",
                    priority.name()
                );
            }
        }
        match &self.calendar {
            Calendar::Always => {
                let _ = writeln!(out, "# [business_hours] none: SLA clocks run 24x7\n");
            }
            Calendar::Hours(hours) => {
                const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
                let days: Vec<toml::Value> = NAMES
                    .iter()
                    .zip(hours.days)
                    .filter(|(_, on)| *on)
                    .map(|(n, _)| toml::Value::String((*n).to_owned()))
                    .collect();
                let holidays: Vec<toml::Value> = hours
                    .holidays
                    .iter()
                    .map(|d| toml::Value::String(d.to_string()))
                    .collect();
                let _ = writeln!(out, "[business_hours]");
                let _ = writeln!(out, "timezone = {}", quoted(&hours.zone_name));
                let _ = writeln!(out, "days = {}", toml::Value::Array(days));
                let _ = writeln!(
                    out,
                    "hours = {}",
                    quoted(&format!(
                        "{:02}:{:02}-{:02}:{:02}",
                        hours.start.0, hours.start.1, hours.end.0, hours.end.1
                    ))
                );
                let _ = writeln!(out, "holidays = {}\n", toml::Value::Array(holidays));
            }
        }
        let _ = writeln!(out, "[certificates]");
        let _ = writeln!(
            out,
            "lifetime = {}\n",
            quoted(&units::duration(self.host_cert_lifetime))
        );
        let _ = writeln!(out, "[clock]");
        let _ = writeln!(
            out,
            "window = {}",
            quoted(&units::duration_ms(self.clock.window_ms))
        );
        let _ = writeln!(
            out,
            "oldest = {}\n",
            quoted(&units::duration_ms(self.clock.oldest_ms))
        );
        let limits = self.inventory_limits;
        let _ = writeln!(out, "[inventory]");
        let _ = writeln!(out, "max_packages = {}", limits.max_packages);
        let _ = writeln!(out, "max_services = {}", limits.max_services);
        let _ = writeln!(out, "max_users = {}", limits.max_users);
        let _ = writeln!(out, "max_bytes = {}\n", limits.max_bytes);
        let _ = writeln!(out, "[problems]");
        let _ = writeln!(out, "enabled = {}", self.problems.enabled);
        let _ = writeln!(out, "hosts = {}", self.problems.hosts);
        let _ = writeln!(
            out,
            "window = {}",
            quoted(&units::duration_ms(self.problems.window_ms))
        );
        let _ = writeln!(
            out,
            "changes_window = {}\n",
            quoted(&units::duration_ms(self.problems.changes_window_ms))
        );
        if !self.diagnostic_roles.is_empty() {
            let _ = writeln!(out, "[diagnostics.roles]");
            for (id, role) in &self.diagnostic_roles {
                let _ = writeln!(out, "{id} = {}", quoted(role.as_str()));
            }
            out.push('\n');
        }
        let from_file = |name: &str| self.applied.iter().any(|n| n == name);
        let untouched: Vec<&str> = self
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.change_rules.iter().map(|r| r.name.as_str()))
            .filter(|n| !from_file(n))
            .collect();
        comment_list(
            &mut out,
            "default rules in force as built in (`deskpulse rules` shows them)",
            &untouched,
        );
        // In the order the file had them, so the export's `applied` list
        // (and the sources `deskpulse rules` shows) come back the same.
        for name in &self.applied {
            if let Some(rule) = self.rules.iter().find(|r| &r.name == name) {
                write_rule(&mut out, rule);
            } else if self.disabled.iter().any(|r| &r.name == name) {
                let _ = writeln!(out, "[[rule]]\nname = {}\nenabled = false\n", quoted(name));
            } else if let Some(rule) = self.change_rules.iter().find(|r| &r.name == name) {
                write_change_rule(&mut out, rule);
            } else if self.disabled_changes.iter().any(|r| &r.name == name) {
                let _ = writeln!(
                    out,
                    "[[change_rule]]\nname = {}\nenabled = false\n",
                    quoted(name)
                );
            }
        }
        while out.ends_with("\n\n") {
            out.pop();
        }
        out
    }
}

/// A metric rule in one line: `disk_used_percent > 90 (clears at 85) for
/// 10m, high, scope site=berlin`.
pub fn describe_rule(rule: &Rule) -> String {
    let mut text = format!(
        "{} {} {}",
        rule.metric.name(),
        rule.op.symbol(),
        rule.threshold
    );
    if rule.recover != rule.threshold {
        let _ = write!(text, " (clears at {})", rule.recover);
    }
    if rule.duration_ms > 0 {
        let _ = write!(text, " for {}", units::duration_ms(rule.duration_ms));
    }
    let _ = write!(text, ", {}", rule.severity.name());
    if !rule.scope.is_empty() {
        let scope: Vec<String> = rule.scope.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(text, ", scope {}", scope.join(" "));
    }
    describe_triage(&mut text, &rule.triage);
    text
}

fn describe_change_rule(rule: &ChangeRule) -> String {
    let mut text = format!(
        "inventory change {}, {}",
        rule.change.name(),
        rule.severity.name()
    );
    if !rule.scope.is_empty() {
        let scope: Vec<String> = rule.scope.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(text, ", scope {}", scope.join(" "));
    }
    describe_triage(&mut text, &rule.triage);
    text
}

/// `, triage disk_usage path={subject}; top_processes`, or nothing.
fn describe_triage(text: &mut String, triage: &[TriageStep]) {
    if !triage.is_empty() {
        let steps: Vec<String> = triage.iter().map(TriageStep::text).collect();
        let _ = write!(text, ", triage {}", steps.join("; "));
    }
}

/// Every rule of a policy by name, in force or disabled, described.
fn rule_lines(policy: &Policy) -> Vec<(String, bool, String)> {
    let mut all: Vec<(String, bool, String)> = Vec::new();
    all.extend(
        policy
            .rules
            .iter()
            .map(|r| (r.name.clone(), true, describe_rule(r))),
    );
    all.extend(
        policy
            .change_rules
            .iter()
            .map(|r| (r.name.clone(), true, describe_change_rule(r))),
    );
    all.extend(
        policy
            .disabled
            .iter()
            .map(|r| (r.name.clone(), false, describe_rule(r))),
    );
    all.extend(
        policy
            .disabled_changes
            .iter()
            .map(|r| (r.name.clone(), false, describe_change_rule(r))),
    );
    all
}

/// What `new` changes against `old`, one line each, rules first; empty
/// when applying it would change nothing in force.
pub fn changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut lines = Vec::new();
    let before = rule_lines(old);
    let after = rule_lines(new);
    let find = |list: &[(String, bool, String)], name: &str| {
        list.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, on, d)| (*on, d.clone()))
    };
    let mut names: Vec<&str> = before.iter().map(|(n, _, _)| n.as_str()).collect();
    for (name, _, _) in &after {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    for name in names {
        match (find(&before, name), find(&after, name)) {
            (None, Some((true, d))) => lines.push(format!("rule {name} added: {d}")),
            (None, Some((false, _))) => lines.push(format!("rule {name} disabled")),
            (Some((true, _)), None) => lines.push(format!("rule {name} removed")),
            (Some((false, _)), None) => {
                lines.push(format!("rule {name} removed (it was disabled)"))
            }
            (Some((true, _)), Some((false, _))) => lines.push(format!("rule {name} disabled")),
            (Some((false, _)), Some((true, d))) => {
                lines.push(format!("rule {name} enabled again: {d}"));
            }
            (Some((true, a)), Some((true, b))) if a != b => {
                lines.push(format!("rule {name} changed: {a} -> {b}"));
            }
            _ => {}
        }
    }
    for (i, priority) in PRIORITIES.iter().enumerate() {
        let (a, b) = (old.sla[i], new.sla[i]);
        let mut parts = Vec::new();
        if a.response != b.response {
            parts.push(format!(
                "response {} -> {}",
                units::duration(a.response),
                units::duration(b.response)
            ));
        }
        if a.resolution != b.resolution {
            parts.push(format!(
                "resolution {} -> {}",
                units::duration(a.resolution),
                units::duration(b.resolution)
            ));
        }
        if !parts.is_empty() {
            lines.push(format!("sla {}: {}", priority.name(), parts.join(", ")));
        }
    }
    let mut setting = |name: &str, a: String, b: String| {
        if a != b {
            lines.push(format!("{name}: {a} -> {b}"));
        }
    };
    setting(
        "tickets.quiet",
        units::duration_ms(old.lifecycle.quiet_ms),
        units::duration_ms(new.lifecycle.quiet_ms),
    );
    setting(
        "tickets.reopen_window",
        units::duration_ms(old.lifecycle.reopen_window_ms),
        units::duration_ms(new.lifecycle.reopen_window_ms),
    );
    setting(
        "business_hours",
        old.calendar.summary(),
        new.calendar.summary(),
    );
    setting(
        "certificates.lifetime",
        units::duration(old.host_cert_lifetime),
        units::duration(new.host_cert_lifetime),
    );
    setting(
        "clock.window",
        units::duration_ms(old.clock.window_ms),
        units::duration_ms(new.clock.window_ms),
    );
    setting(
        "clock.oldest",
        units::duration_ms(old.clock.oldest_ms),
        units::duration_ms(new.clock.oldest_ms),
    );
    let (a, b) = (old.inventory_limits, new.inventory_limits);
    setting(
        "inventory.max_packages",
        a.max_packages.to_string(),
        b.max_packages.to_string(),
    );
    setting(
        "inventory.max_services",
        a.max_services.to_string(),
        b.max_services.to_string(),
    );
    setting(
        "inventory.max_users",
        a.max_users.to_string(),
        b.max_users.to_string(),
    );
    setting(
        "inventory.max_bytes",
        a.max_bytes.to_string(),
        b.max_bytes.to_string(),
    );
    setting(
        "problems.enabled",
        old.problems.enabled.to_string(),
        new.problems.enabled.to_string(),
    );
    setting(
        "problems.hosts",
        old.problems.hosts.to_string(),
        new.problems.hosts.to_string(),
    );
    setting(
        "problems.window",
        units::duration_ms(old.problems.window_ms),
        units::duration_ms(new.problems.window_ms),
    );
    setting(
        "problems.changes_window",
        units::duration_ms(old.problems.changes_window_ms),
        units::duration_ms(new.problems.changes_window_ms),
    );
    let roles = |p: &Policy| {
        let mut r: Vec<String> = p
            .diagnostic_roles
            .iter()
            .map(|(id, role)| format!("{id}={role}"))
            .collect();
        r.sort();
        if r.is_empty() {
            "by risk".to_owned()
        } else {
            r.join(" ")
        }
    };
    setting("diagnostics.roles", roles(old), roles(new));
    lines
}

/// What the file of `old` set that `new` leaves out: rules (new ones
/// vanish, replaced or disabled defaults return to the built-in ones)
/// and SLA overrides (back to the defaults). Applying such a file needs
/// `--replace`.
pub fn dropped(old: &Policy, new: &Policy) -> Vec<String> {
    let defaults = Policy::default();
    let is_default = |name: &str| {
        defaults.rules.iter().any(|r| r.name == name)
            || defaults.change_rules.iter().any(|r| r.name == name)
    };
    let mut out: Vec<String> = old
        .applied
        .iter()
        .filter(|name| !new.applied.contains(name))
        .map(|name| {
            if is_default(name) {
                format!("rule {name} (back to the built-in one)")
            } else {
                format!("rule {name} (removed)")
            }
        })
        .collect();
    for priority in &old.sla_applied {
        if !new.sla_applied.contains(priority) {
            let d = default_sla(*priority);
            out.push(format!(
                "the SLA of {} (back to the default: response {}, resolution {})",
                priority.name(),
                units::duration(d.response),
                units::duration(d.resolution)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
