//! Fleet policy: the default policy, business time across nights, weekends,
//! holidays and daylight saving, rules merged over defaults, one-line
//! errors, and diagnostic roles.

use super::*;

const HOUR: i64 = 3_600_000;

fn at(text: &str) -> i64 {
    text.parse::<Timestamp>()
        .expect("a timestamp")
        .as_millisecond()
}

fn berlin_office() -> Calendar {
    parse_policy(
        r#"
[business_hours]
timezone = "Europe/Berlin"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "08:00-18:00"
holidays = ["2026-12-25"]
"#,
    )
    .expect("valid")
    .calendar
}

#[test]
fn the_default_policy_checks_and_runs_around_the_clock() {
    let policy = parse_policy("").expect("defaults are valid");
    assert!(policy.rules.len() >= 10, "{}", policy.rules.len());
    assert_eq!(policy.change_rules.len(), 5);
    assert!(policy.applied.is_empty());
    assert_eq!(policy.calendar.summary(), "24x7");
    assert_eq!(policy.calendar.add(1_000, 4 * HOUR), 1_000 + 4 * HOUR);
    assert_eq!(
        policy.sla(Priority::P1).response,
        Duration::from_secs(15 * 60)
    );
}

#[test]
fn business_time_skips_nights_weekends_and_holidays() {
    let cal = berlin_office();
    // Friday 2026-12-04 17:00 CET (16:00Z) + 4 business hours: one hour on
    // Friday, then Monday 08:00-11:00 CET.
    let friday = at("2026-12-04T16:00:00Z");
    assert_eq!(cal.add(friday, 4 * HOUR), at("2026-12-07T10:00:00Z"));
    assert_eq!(cal.between(friday, at("2026-12-07T10:00:00Z")), 4 * HOUR);
    // Before opening time the clock starts at 08:00.
    assert_eq!(
        cal.add(at("2026-12-08T05:00:00Z"), HOUR),
        at("2026-12-08T08:00:00Z")
    );
    // Christmas Day (a Friday) is a holiday: Thursday 17:00 + 2 h lands on
    // Monday 28th at 09:00 CET.
    assert_eq!(
        cal.add(at("2026-12-24T16:00:00Z"), 2 * HOUR),
        at("2026-12-28T08:00:00Z")
    );
}

#[test]
fn business_hours_follow_daylight_saving_time() {
    let cal = berlin_office();
    // After the switch to CEST (2027-03-28) 08:00 local is 06:00Z.
    assert_eq!(
        cal.add(at("2027-03-29T00:00:00Z"), HOUR),
        at("2027-03-29T07:00:00Z")
    );
}

#[test]
fn applied_rules_replace_add_and_switch_off_defaults() {
    let policy = parse_policy(
        r#"
[tickets]
quiet = "5m"

[sla.P2]
response = "30m"
resolution = "1d"

[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 95
recover = 90
for = "5m"
severity = "critical"
scope = ["site=berlin"]

[[rule]]
name = "cpu-saturated"
enabled = false

[[rule]]
name = "firewall-off"
metric = "firewall_off"
op = "=="
threshold = 1
severity = "medium"

[[change_rule]]
name = "new-local-admin"
change = "new_local_admin"
severity = "critical"
"#,
    )
    .expect("valid");
    let disk = policy.rule("disk-full").expect("kept, replaced");
    assert_eq!(disk.threshold, 95.0);
    assert_eq!(disk.scope, [("site".to_string(), "berlin".to_string())]);
    assert!(policy.rule("cpu-saturated").is_none());
    assert!(policy.rule("firewall-off").is_some());
    assert!(
        policy.rule("memory-exhausted").is_some(),
        "untouched default"
    );
    assert_eq!(policy.lifecycle.quiet_ms, 5 * 60_000);
    assert_eq!(policy.sla(Priority::P2).response, Duration::from_secs(1800));
    assert_eq!(
        policy
            .change_rules
            .iter()
            .find(|r| r.name == "new-local-admin")
            .map(|r| r.severity),
        Some(super::super::priority::Severity::Critical)
    );
    assert_eq!(
        policy.applied,
        [
            "disk-full",
            "cpu-saturated",
            "firewall-off",
            "new-local-admin"
        ]
    );
}

#[test]
fn bad_policies_get_one_line_errors() {
    let cases = [
        (
            "[sla.P5]\nresponse = \"1h\"\nresolution = \"2h\"\n",
            "sla.P5: expected P1",
        ),
        (
            "[sla.P1]\nresponse = \"2h\"\nresolution = \"1h\"\n",
            "sla.P1: resolution must not be shorter",
        ),
        (
            "[business_hours]\ntimezone = \"Mars/Olympus\"\ndays = [\"mon\"]\nhours = \"08:00-18:00\"\n",
            "business_hours.timezone \"Mars/Olympus\" is not a known time zone",
        ),
        (
            "[business_hours]\ntimezone = \"UTC\"\ndays = [\"mon\"]\nhours = \"18:00-08:00\"\n",
            "business_hours.hours \"18:00-08:00\" must be",
        ),
        (
            "[business_hours]\ntimezone = \"UTC\"\ndays = []\nhours = \"08:00-18:00\"\n",
            "business_hours.days must name",
        ),
        (
            "[[rule]]\nname = \"nope\"\nenabled = false\n",
            "rule nope: enabled = false names no default",
        ),
        (
            "[[rule]]\nname = \"x\"\nmetric = \"cpu_percent\"\n",
            "rule x: op is required",
        ),
        (
            "[[change_rule]]\nname = \"c\"\nchange = \"moved_desk\"\nseverity = \"low\"\n",
            "change rule c: unknown change \"moved_desk\"",
        ),
        (
            "[tickets]\nquiet = \"later\"\n",
            "tickets.quiet \"later\" is not a duration",
        ),
        ("[colour]\n", "line 1: unknown field `colour`"),
        (
            "[diagnostics.roles]\nformat_disk = \"admin\"\n",
            "diagnostics.roles: \"format_disk\" is not in the diagnostic catalog",
        ),
        (
            "[diagnostics.roles]\nping = \"viewer\"\n",
            "diagnostics.roles.ping: a viewer may not run diagnostics",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_policy(text).expect_err(text);
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn diagnostic_roles_default_by_risk_and_follow_overrides() {
    let spec = |id: &str| deskpulse_proto::catalog::spec(id).expect("in the catalog");
    let defaults = Policy::default();
    assert_eq!(defaults.diagnostic_role(spec("ping")), Role::Technician);
    assert_eq!(
        defaults.diagnostic_role(spec("restart_service")),
        Role::Admin
    );
    let policy = parse_policy(
        "[diagnostics.roles]\nrestart_service = \"technician\"\npending_updates = \"admin\"\n",
    )
    .expect("valid");
    assert_eq!(
        policy.diagnostic_role(spec("restart_service")),
        Role::Technician
    );
    assert_eq!(policy.diagnostic_role(spec("pending_updates")), Role::Admin);
}

#[test]
fn the_clock_window_defaults_to_five_minutes_and_is_checked() {
    let policy = parse_policy("").expect("default");
    assert_eq!(policy.clock, crate::clockskew::ClockWindow::default());
    assert_eq!(policy.clock.window_ms, 5 * 60_000);
    let set = parse_policy("[clock]\nwindow = \"2m\"\noldest = \"30d\"\n").expect("set");
    assert_eq!(policy.clock.oldest_ms, 90 * 86_400_000);
    assert_eq!(
        (set.clock.window_ms, set.clock.oldest_ms),
        (120_000, 30 * 86_400_000)
    );
    for (text, error) in [
        (
            "[clock]\nwindow = \"5s\"\n",
            "clock.window must be between 1m and 1d",
        ),
        (
            "[clock]\noldest = \"1h\"\n",
            "clock.oldest must be between 1 day and 400 days",
        ),
        (
            "[clock]\nwindow = \"soon\"\n",
            "clock.window \"soon\" is not a duration",
        ),
        (
            "[clock]\nahead = \"5m\"\n",
            "line 1: clock: unknown field `ahead`",
        ),
    ] {
        let got = parse_policy(text).expect_err(text);
        assert!(got.contains(error), "{text}: {got}");
        assert!(!got.contains('\n'), "{got}");
    }
}

#[test]
fn inventory_limits_default_sanely_and_follow_the_policy() {
    let defaults = Policy::default().inventory_limits;
    assert_eq!(defaults, super::DEFAULT_INVENTORY_LIMITS);
    assert_eq!(
        (
            defaults.max_packages,
            defaults.max_services,
            defaults.max_users,
            defaults.max_bytes
        ),
        (20_000, 5_000, 5_000, 4 << 20)
    );
    let policy = parse_policy(
        "[inventory]\nmax_packages = 30000\nmax_services = 800\nmax_users = 50\nmax_bytes = \"2MiB\"\n",
    )
    .expect("valid");
    assert_eq!(
        policy.inventory_limits,
        deskpulse_proto::limits::Limits {
            max_packages: 30_000,
            max_services: 800,
            max_users: 50,
            max_bytes: 2 << 20,
        }
    );
    // Keys left out keep their defaults; sizes as numbers or with units.
    for (text, bytes) in [
        ("max_bytes = 65536", 65_536),
        ("max_bytes = \"512KiB\"", 512 << 10),
        ("max_bytes = \"1 MB\"", 1 << 20),
        ("max_packages = 500", 4 << 20),
    ] {
        let policy = parse_policy(&format!("[inventory]\n{text}\n")).expect(text);
        assert_eq!(policy.inventory_limits.max_bytes, bytes, "{text}");
        assert_eq!(policy.inventory_limits.max_services, 5_000, "{text}");
    }
}

#[test]
fn bad_inventory_limits_get_one_line_errors() {
    let cases = [
        (
            "max_packages = 0",
            "inventory.max_packages must be a whole number between 100 and 100000; got 0",
        ),
        (
            "max_packages = 180000",
            "inventory.max_packages must be a whole number between 100 and 100000; got 180000",
        ),
        (
            "max_services = -1",
            "inventory.max_services must be a whole number between 50 and 50000; got -1",
        ),
        (
            "max_users = 5",
            "inventory.max_users must be a whole number between 10 and 50000; got 5",
        ),
        (
            "max_bytes = \"16MiB\"",
            "inventory.max_bytes must be a size between 64 KiB and 4 MiB, such as \"2MiB\" or \"512KiB\"; got \"16MiB\"",
        ),
        (
            "max_bytes = \"lots\"",
            "inventory.max_bytes must be a size between 64 KiB and 4 MiB",
        ),
        (
            "max_bytes = 1024",
            "inventory.max_bytes must be a size between 64 KiB and 4 MiB",
        ),
        (
            "max_bytes = 1.5",
            "inventory.max_bytes must be a size between 64 KiB and 4 MiB",
        ),
        (
            "max_packages = \"many\"",
            "line 1: inventory: invalid type: string \"many\", expected i64",
        ),
        (
            "max_pakages = 10",
            "line 1: inventory: unknown field `max_pakages`",
        ),
    ];
    for (line, expected) in cases {
        let text = format!("[inventory]\n{line}\n");
        let err = parse_policy(&text).expect_err(&text);
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn every_error_is_reported_with_the_line_of_its_table() {
    let text = "\
[tickets]
quiet = \"later\"

[[rule]]
name = \"a\"
metric = \"cpu_percent\"

[[rule]]
name = \"b\"
metric = \"cpu_percent\"
op = \">\"
threshold = 1
severity = \"high\"
colour = \"red\"

[[change_rule]]
name = \"c\"
change = \"moved_desk\"
severity = \"low\"

[sla.P9]
response = \"1h\"
resolution = \"2h\"
";
    let errors = super::check_policy(text).expect_err("four errors");
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 5, "{shown:#?}");
    assert!(
        shown[0].starts_with("line 1: tickets.quiet \"later\" is not a duration"),
        "{shown:#?}"
    );
    assert_eq!(shown[1], "line 4: rule a: op is required");
    assert!(
        shown[2].starts_with("line 8: rule b: unknown field `colour`"),
        "{shown:#?}"
    );
    assert!(
        shown[3].starts_with("line 16: change rule c: unknown change \"moved_desk\""),
        "{shown:#?}"
    );
    assert_eq!(shown[4], "line 21: sla.P9: expected P1, P2, P3 or P4");
    assert_eq!(
        parse_policy(text).expect_err("joined").lines().count(),
        5,
        "one line each"
    );
}

#[test]
fn triage_is_checked_with_the_line_of_its_rule_and_exported_back() {
    let text = "\
[[rule]]
name = \"disk-full\"
metric = \"disk_used_percent\"
op = \">\"
threshold = 95
severity = \"high\"
triage = [\"disk_usage path={subject} depth=2\", \"top_processes sort=memory\"]

[[rule]]
name = \"restarts\"
metric = \"cpu_percent\"
op = \">\"
threshold = 99
severity = \"low\"
triage = [\"restart_service service=spooler\"]

[[rule]]
name = \"nosuch\"
metric = \"cpu_percent\"
op = \">\"
threshold = 99
severity = \"low\"
triage = [\"defragment\"]

[[rule]]
name = \"away\"
metric = \"offline_minutes\"
op = \">\"
threshold = 30
severity = \"low\"
triage = [\"ping host=example.com\"]

[[change_rule]]
name = \"admin\"
change = \"new_local_admin\"
severity = \"high\"
triage = [\"log_errors hours=2 filter={subject}\"]
";
    let errors = super::check_policy(text).expect_err("three errors");
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("line 9: rule restarts: triage may run only read-only diagnostics; restart_service changes state"),
        "{shown:#?}"
    );
    assert!(
        shown[1]
            .starts_with("line 17: rule nosuch: triage names unknown diagnostic \"defragment\""),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("line 25: rule away: an offline PC runs nothing"),
        "{shown:#?}"
    );

    let good: String = text
        .split("\n\n")
        .filter(|table| {
            !table.contains("restarts") && !table.contains("nosuch") && !table.contains("away")
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let policy = parse_policy(&good).expect("valid");
    let disk = policy.rule("disk-full").expect("applied");
    let steps: Vec<String> = disk.triage.iter().map(|s| s.text()).collect();
    assert_eq!(
        steps,
        [
            "disk_usage path={subject} depth=2",
            "top_processes sort=memory"
        ]
    );
    // The export applies back to the same triage.
    let again = parse_policy(&policy.to_toml()).expect("the export applies");
    assert_eq!(again.rule("disk-full").expect("kept").triage, disk.triage);
    let admin = again
        .change_rules
        .iter()
        .find(|r| r.name == "admin")
        .expect("kept");
    assert_eq!(
        admin.triage[0].text(),
        "log_errors hours=2 filter={subject}"
    );
}

#[test]
fn the_default_rules_come_with_triage() {
    let policy = parse_policy("").expect("defaults are valid");
    let triage = |name: &str| -> Vec<String> {
        policy
            .rule(name)
            .expect("a default rule")
            .triage
            .iter()
            .map(|s| s.text())
            .collect()
    };
    assert_eq!(triage("disk-full"), ["disk_usage path={subject}"]);
    assert_eq!(triage("service-down"), ["service_status service={subject}"]);
    assert_eq!(triage("cpu-saturated"), ["top_processes sort=cpu"]);
    assert!(triage("offline").is_empty());
}
