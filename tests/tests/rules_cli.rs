//! The policy file from the CLI (issue 21): `rules apply` names every error
//! with its line; `--dry-run` says what would change and applies nothing;
//! a file that drops what the policy in force set needs `--replace`;
//! `rules export` writes a file that applies back unchanged; a disabled
//! default stays listed as disabled; `criticality` takes only the levels
//! ticket priority knows.

use deskpulse_tests::{Agent, Collector, Run};

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    }
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn version(collector: &Collector, token: &str) -> i64 {
    json(&collector.cli(token, &["--json", "rules"]).expect_code(0))["version"]
        .as_i64()
        .expect("version")
}

const FIRST: &str = r#"[sla.P1]
response = "10m"
resolution = "2h"

[tickets]
quiet = "30s"

[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 95
recover = 90
for = "20s"
severity = "critical"

[[rule]]
name = "cpu-saturated"
enabled = false

[[rule]]
name = "hot-room"
metric = "temperature_celsius"
op = ">"
threshold = 70
severity = "high"
scope = ["site=lab"]
"#;

#[test]
fn every_error_in_a_rule_file_is_reported_with_its_line() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let files = Files::new();
    let bad = files.write(
        "bad.toml",
        r#"[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = "=>"
threshold = 90
severity = "high"

[[rule]]
name = "fan"
metric = "fan_speed"
op = ">"
threshold = 1
severity = "low"

[sla.P1]
response = "2h"
resolution = "1h"

[[change_rule]]
name = "admins"
change = "new_local_admin"
severity = "urgent"
"#,
    );
    let refused = collector
        .cli(&admin, &["rules", "apply", &bad])
        .expect_code(1);
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{bad}: line 1: rule disk-full: unknown op \"=>\"; expected >, < or =="),
            format!(
                "{bad}: line 8: rule fan: unknown metric \"fan_speed\"; expected one of cpu_percent, memory_used_percent, swap_used_percent, load_per_cpu, disk_used_percent, disk_free_mib, temperature_celsius, battery_health_percent, uptime_days, reboot_pending, service_down, smart_failed, disk_wear_percent, days_since_update, antivirus_off, firewall_off, encryption_off, offline_minutes, clock_offset_minutes"
            ),
            format!("{bad}: line 15: sla.P1: resolution must not be shorter than response"),
            format!(
                "{bad}: line 19: change rule admins: unknown severity \"urgent\"; expected critical, high, medium or low"
            ),
            format!("deskpulse: error: {bad}: 4 errors; nothing was applied"),
        ],
        "{}",
        refused.stderr
    );
    assert_eq!(version(&collector, &admin), 0, "nothing applied");

    // Not TOML at all: its first syntax error, with its line.
    let broken = files.write("broken.toml", "[tickets]\nquiet = \"15m\n");
    let refused = collector
        .cli(&admin, &["rules", "apply", &broken])
        .expect_code(1);
    assert!(
        refused
            .error_line()
            .starts_with(&format!("deskpulse: error: {broken}: line 2: ")),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
}

#[test]
fn a_dry_run_says_what_would_change_and_dropping_needs_replace() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let files = Files::new();
    let first = files.write("first.toml", FIRST);

    let dry = collector
        .cli(&admin, &["rules", "apply", &first, "--dry-run"])
        .expect_code(0);
    for expected in [
        "the file would change:",
        "  rule disk-full changed: disk_used_percent > 90 (clears at 85) for 10m, high, triage disk_usage path={subject} -> disk_used_percent > 95 (clears at 90) for 20s, critical",
        "  rule cpu-saturated disabled",
        "  rule hot-room added: temperature_celsius > 70, high, scope site=lab",
        "  sla P1: response 15m -> 10m, resolution 4h -> 2h",
        "  tickets.quiet: 15m -> 30s",
        "dry run: nothing was applied; policy version 0 stays in force",
    ] {
        assert!(
            dry.stdout.lines().any(|l| l == expected),
            "{expected:?} in\n{}",
            dry.stdout
        );
    }
    assert_eq!(version(&collector, &admin), 0, "a dry run applies nothing");

    let applied = collector
        .cli(&admin, &["rules", "apply", &first])
        .expect_code(0);
    assert!(
        applied.stdout.starts_with("the file changed:\n"),
        "{}",
        applied.stdout
    );
    assert_eq!(version(&collector, &admin), 1);

    // The disabled default is listed, as disabled; durations as written.
    let listed = collector.cli(&admin, &["rules"]).expect_code(0);
    let cpu = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("cpu-saturated "))
        .unwrap_or_else(|| panic!("cpu-saturated listed:\n{}", listed.stdout));
    assert!(cpu.ends_with("applied (disabled)"), "{cpu}");
    assert!(
        listed.stdout.contains("auto-resolve after 30s quiet"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("for 20s") && listed.stdout.contains("P1 respond 10m resolve 2h"),
        "{}",
        listed.stdout
    );
    let disabled = json(&collector.cli(&admin, &["--json", "rules"]).expect_code(0));
    let cpu = disabled["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == "cpu-saturated")
        .expect("listed")
        .clone();
    assert_eq!(cpu["enabled"], false, "{cpu}");

    // A file without the custom rule and the SLA: refused, naming both.
    let second = files.write(
        "second.toml",
        "[[rule]]\nname = \"cpu-saturated\"\nenabled = false\n\n[[rule]]\nname = \"disk-full\"\nmetric = \"disk_used_percent\"\nop = \">\"\nthreshold = 95\nrecover = 90\nfor = \"20s\"\nseverity = \"critical\"\n",
    );
    let refused = collector
        .cli(&admin, &["rules", "apply", &second])
        .expect_code(1);
    assert_eq!(
        refused.error_line(),
        "deskpulse: error: this file drops what policy version 1 set: rule hot-room (removed), \
         the SLA of P1 (back to the default: response 15m, resolution 4h); add them to the file, \
         or apply it with --replace to drop them",
        "{}",
        refused.stderr
    );
    assert_eq!(version(&collector, &admin), 1);
    let replaced = collector
        .cli(&admin, &["--json", "rules", "apply", &second, "--replace"])
        .expect_code(0);
    let replaced = json(&replaced);
    assert_eq!(replaced["version"], 2);
    let changes: Vec<&str> = replaced["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    assert!(changes.contains(&"rule hot-room removed"), "{changes:?}");
    assert_eq!(replaced["dry_run"], false);
}

#[test]
fn an_exported_policy_applies_back_unchanged() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let files = Files::new();
    let first = files.write("first.toml", FIRST);
    collector
        .cli(&admin, &["rules", "apply", &first])
        .expect_code(0);

    let exported = collector.cli(&admin, &["rules", "export"]).expect_code(0);
    assert!(
        exported
            .stdout
            .starts_with("# The Deskpulse fleet policy in force: version 1, applied by admin"),
        "{}",
        exported.stdout
    );
    for expected in [
        "quiet = \"30s\"",
        "for = \"20s\"",
        "name = \"cpu-saturated\"\nenabled = false",
        "scope = [\"site=lab\"]",
        "# [sla.P2] the default: response 1h, resolution 8h",
    ] {
        assert!(
            exported.stdout.contains(expected),
            "{expected:?} in\n{}",
            exported.stdout
        );
    }
    let back = files.write("exported.toml", &exported.stdout);
    let dry = collector
        .cli(&admin, &["rules", "apply", &back, "--dry-run"])
        .expect_code(0);
    assert!(
        dry.stdout
            .starts_with("the file would change nothing in force\n"),
        "{}",
        dry.stdout
    );
    let applied = collector
        .cli(&admin, &["rules", "apply", &back])
        .expect_code(0);
    assert!(
        applied
            .stdout
            .starts_with("the file changed nothing in force\n"),
        "{}",
        applied.stdout
    );
    let again = collector
        .cli(&admin, &["--json", "rules", "export"])
        .expect_code(0);
    let again = json(&again);
    assert_eq!(again["version"], 2);
    let body = |text: &str| {
        text.lines()
            .skip_while(|l| l.starts_with("# The Deskpulse") || l.starts_with("# `deskpulse"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        body(again["toml"].as_str().expect("toml")),
        body(&exported.stdout)
    );
}

#[test]
fn criticality_takes_only_the_levels_priority_knows() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let refused = collector
        .cli(&admin, &["host", "tag", &host, "criticality=urgent"])
        .expect_code(2);
    assert!(
        refused.stderr.contains(
            "criticality \"urgent\" is not a known level; ticket priority knows high, medium and low"
        ),
        "{}",
        refused.stderr
    );
    let tagged = collector
        .cli(
            &admin,
            &["--json", "host", "tag", &host, "Criticality=HIGH"],
        )
        .expect_code(0);
    assert_eq!(
        json(&tagged)["tags"],
        serde_json::json!(["criticality=high"])
    );

    // A rule scoped to a level no host can have is refused too.
    let files = Files::new();
    let scoped = files.write(
        "scoped.toml",
        "[[rule]]\nname = \"vip-disk\"\nmetric = \"disk_used_percent\"\nop = \">\"\nthreshold = 80\nseverity = \"high\"\nscope = [\"criticality=vip\"]\n",
    );
    let refused = collector
        .cli(&admin, &["rules", "apply", &scoped])
        .expect_code(1);
    assert!(
        refused.error_line().contains(
            "line 1: rule vip-disk: scope \"criticality=vip\": tag \"criticality=vip\": criticality \"vip\" is not a known level"
        ),
        "{}",
        refused.stderr
    );
}
