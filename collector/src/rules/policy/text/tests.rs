//! Export round trips, change lists and what a file drops.

use super::*;
use crate::rules::policy::parse_policy;

const FULL: &str = r#"
[tickets]
quiet = "30s"
reopen_window = "2d"

[sla.P1]
response = "10m"
resolution = "1h 30m"

[business_hours]
timezone = "Europe/Berlin"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "08:00-18:00"
holidays = ["2026-12-25"]

[certificates]
lifetime = "60d"

[clock]
window = "2m"
oldest = "30d"

[inventory]
max_packages = 30000
max_bytes = "2MiB"

[diagnostics.roles]
restart_service = "technician"

[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 95.5
recover = 90
for = "20s"
severity = "critical"
scope = ["site=berlin", "criticality=high"]

[[rule]]
name = "cpu-saturated"
enabled = false

[[rule]]
name = "hot"
metric = "temperature_celsius"
op = ">"
threshold = 85
severity = "high"

[[change_rule]]
name = "new-local-admin"
change = "new_local_admin"
severity = "critical"

[[change_rule]]
name = "disk-replaced"
enabled = false
"#;

#[test]
fn an_export_applies_back_to_the_same_policy() {
    let policy = parse_policy(FULL).expect("valid");
    let exported = policy.to_toml();
    let again = parse_policy(&exported).unwrap_or_else(|e| panic!("{e}\n{exported}"));
    assert_eq!(
        again.to_toml(),
        exported,
        "a second export is the same text"
    );
    assert_eq!(again.rules, policy.rules);
    assert_eq!(again.change_rules, policy.change_rules);
    assert_eq!(again.applied, policy.applied);
    assert_eq!(again.disabled, policy.disabled);
    assert_eq!(again.sla, policy.sla);
    assert_eq!(again.sla_applied, policy.sla_applied);
    assert_eq!(again.lifecycle, policy.lifecycle);
    assert_eq!(again.calendar.summary(), policy.calendar.summary());
    assert_eq!(again.host_cert_lifetime, policy.host_cert_lifetime);
    assert_eq!(again.clock, policy.clock);
    assert_eq!(again.inventory_limits, policy.inventory_limits);
    assert_eq!(again.diagnostic_roles, policy.diagnostic_roles);
    assert!(changes(&policy, &again).is_empty(), "{exported}");
    assert!(dropped(&policy, &again).is_empty());
    assert!(exported.contains("for = \"20s\""), "{exported}");
    assert!(exported.contains("resolution = \"1h 30m\""), "{exported}");

    // The built-in policy exports too, and applies back unchanged.
    let defaults = Policy::default();
    let text = defaults.to_toml();
    let back = parse_policy(&text).expect("the defaults' export is valid");
    assert!(back.applied.is_empty(), "{text}");
    assert!(changes(&defaults, &back).is_empty(), "{text}");
}

#[test]
fn changes_name_each_rule_and_setting() {
    let old = parse_policy(FULL).expect("valid");
    let new = parse_policy(
        r#"
[tickets]
quiet = "1m"

[sla.P1]
response = "10m"
resolution = "2h"

[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 97
recover = 90
for = "20s"
severity = "critical"

[[rule]]
name = "memory-exhausted"
enabled = false

[[rule]]
name = "hot"
metric = "temperature_celsius"
op = ">"
threshold = 85
severity = "high"
"#,
    )
    .expect("valid");
    let lines = changes(&old, &new);
    for expected in [
        "rule disk-full changed: disk_used_percent > 95.5 (clears at 90) for 20s, critical, scope site=berlin criticality=high -> disk_used_percent > 97 (clears at 90) for 20s, critical",
        "rule cpu-saturated enabled again: cpu_percent > 95 (clears at 80) for 30m, medium, triage top_processes sort=cpu",
        "rule memory-exhausted disabled",
        "rule new-local-admin changed: inventory change new_local_admin, critical -> inventory change new_local_admin, high",
        "rule disk-replaced enabled again: inventory change disk_serial_changed, medium",
        "sla P1: resolution 1h 30m -> 2h",
        "tickets.quiet: 30s -> 1m",
        "tickets.reopen_window: 2d -> 1d",
        "business_hours: mon,tue,wed,thu,fri 08:00-18:00 Europe/Berlin -> 24x7",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected}\n{lines:#?}"
        );
    }
    let dropped = dropped(&old, &new);
    assert_eq!(
        dropped,
        [
            "rule cpu-saturated (back to the built-in one)",
            "rule new-local-admin (back to the built-in one)",
            "rule disk-replaced (back to the built-in one)",
        ]
    );
    let no_sla = parse_policy("").expect("empty");
    assert!(
        super::dropped(&old, &no_sla)
            .iter()
            .any(|d| d == "the SLA of P1 (back to the default: response 15m, resolution 4h)"),
        "{:?}",
        super::dropped(&old, &no_sla)
    );
    let custom_gone = super::dropped(&old, &no_sla);
    assert!(
        custom_gone.iter().any(|d| d == "rule hot (removed)"),
        "{custom_gone:?}"
    );
}
