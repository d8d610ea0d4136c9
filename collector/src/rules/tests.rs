//! The rule state machine: durations, hysteresis, quiet periods, reopen
//! windows, occurrences, silence, and the priority matrix with SLA targets.

use super::model::{Metric, Op};
use super::policy::{default_rules, parse_rules};
use super::priority::{Impact, Priority, Severity, default_sla};
use super::*;

const MIN: i64 = 60_000;

fn disk_full() -> Rule {
    default_rules()
        .into_iter()
        .find(|r| r.name == "disk-full")
        .expect("disk-full is a default rule")
}

/// Feeds one reading a minute; returns the actions in order.
fn feed(
    rule: &Rule,
    readings: &[f64],
    lifecycle: Lifecycle,
) -> (RuleState, Vec<(i64, TicketAction)>) {
    let mut state = RuleState::Ok;
    let mut actions = Vec::new();
    for (minute, value) in readings.iter().enumerate() {
        let now = i64::try_from(minute).expect("small") * MIN;
        let (next, action) = step(rule, state, Some(*value), now, lifecycle);
        state = next;
        if let Some(action) = action {
            actions.push((now / MIN, action));
        }
    }
    (state, actions)
}

#[test]
fn a_condition_must_hold_for_the_duration_to_fire_once() {
    let rule = disk_full(); // > 90 for 10 minutes, clears at 85
    let mut readings = vec![95.0; 30];
    readings[5] = 89.0; // a dip resets the timer
    let (state, actions) = feed(&rule, &readings, Lifecycle::default());
    assert_eq!(
        actions,
        [(16, TicketAction::Open)],
        "10 minutes after the dip, once"
    );
    assert!(matches!(state, RuleState::Firing { .. }));
}

#[test]
fn readings_inside_the_hysteresis_band_change_nothing() {
    let rule = disk_full();
    let mut readings = vec![95.0; 11];
    // Flapping between 86 and 92: never below 85, so never recovering.
    readings.extend((0..60).map(|i| if i % 2 == 0 { 86.0 } else { 92.0 }));
    let (state, actions) = feed(&rule, &readings, Lifecycle::default());
    assert_eq!(actions, [(10, TicketAction::Open)]);
    assert!(matches!(state, RuleState::Firing { .. }));
}

#[test]
fn recovery_plus_the_quiet_period_resolves_and_a_refire_reopens() {
    let rule = disk_full();
    let lifecycle = Lifecycle {
        quiet_ms: 15 * MIN,
        reopen_window_ms: 60 * MIN,
    };
    let mut readings = vec![95.0; 11]; // fires at minute 10
    readings.extend(vec![50.0; 20]); // recovers at 11, resolves at 26
    readings.extend(vec![95.0; 11]); // pending again, fires at 41: within the window
    let (_, actions) = feed(&rule, &readings, lifecycle);
    assert_eq!(
        actions,
        [
            (10, TicketAction::Open),
            (26, TicketAction::Resolve),
            (41, TicketAction::Reopen),
        ]
    );
}

#[test]
fn a_refire_while_recovering_is_an_occurrence_not_a_ticket() {
    let rule = disk_full();
    let mut readings = vec![95.0; 11];
    readings.extend(vec![50.0; 5]); // recovering, quiet period not over
    readings.push(96.0);
    let (state, actions) = feed(&rule, &readings, Lifecycle::default());
    assert_eq!(
        actions,
        [(10, TicketAction::Open), (16, TicketAction::Occurrence)]
    );
    assert!(matches!(state, RuleState::Firing { .. }));
}

#[test]
fn past_the_reopen_window_a_refire_opens_a_new_ticket() {
    let rule = disk_full();
    let lifecycle = Lifecycle {
        quiet_ms: 5 * MIN,
        reopen_window_ms: 10 * MIN,
    };
    let mut readings = vec![95.0; 11];
    readings.extend(vec![50.0; 30]); // resolves at 16, closes after 26
    readings.extend(vec![95.0; 11]);
    let (_, actions) = feed(&rule, &readings, lifecycle);
    assert_eq!(
        actions,
        [
            (10, TicketAction::Open),
            (16, TicketAction::Resolve),
            (51, TicketAction::Open),
        ]
    );
}

#[test]
fn silence_neither_fires_nor_clears_but_lets_the_quiet_period_pass() {
    let rule = disk_full();
    let lifecycle = Lifecycle::default();
    let (state, _) = step(&rule, RuleState::Ok, Some(95.0), 0, lifecycle);
    let (state, action) = step(&rule, state, None, 60 * MIN, lifecycle);
    assert_eq!(action, None, "no reading, no proof the condition held");
    assert!(matches!(state, RuleState::Pending { .. }));
    let recovering = RuleState::Recovering { since_ms: 0 };
    let (state, action) = step(&rule, recovering, None, lifecycle.quiet_ms, lifecycle);
    assert_eq!(action, Some(TicketAction::Resolve));
    assert!(matches!(state, RuleState::Resolved { .. }));
}

#[test]
fn a_zero_duration_fires_at_once_and_state_round_trips_as_json() {
    let offline = default_rules()
        .into_iter()
        .find(|r| r.metric == Metric::OfflineMinutes)
        .expect("offline rule");
    assert_eq!(offline.duration_ms, 0);
    let (state, action) = step(&offline, RuleState::Ok, Some(11.0), 5, Lifecycle::default());
    assert_eq!(action, Some(TicketAction::Open));
    let json = serde_json::to_string(&state).expect("json");
    assert_eq!(json, r#"{"phase":"firing","fired_at_ms":5}"#);
    assert_eq!(
        serde_json::from_str::<RuleState>(&json).expect("back"),
        state
    );
    let (_, action) = step(&offline, state, Some(0.0), 6, Lifecycle::default());
    assert_eq!(action, None, "heard from again: recovering");
}

#[test]
fn the_priority_matrix_and_sla_targets() {
    let tags = |v: &str| vec![("criticality".to_owned(), v.to_owned())];
    assert_eq!(Impact::of(&tags("high")), Impact::High);
    assert_eq!(Impact::of(&[]), Impact::Medium);
    assert_eq!(Impact::of(&tags("bogus")), Impact::Medium);
    let p = |impact, severity| Priority::of(impact, severity);
    assert_eq!(p(Impact::High, Severity::High), Priority::P1);
    assert_eq!(p(Impact::Medium, Severity::High), Priority::P2);
    assert_eq!(p(Impact::Medium, Severity::Medium), Priority::P3);
    assert_eq!(p(Impact::Low, Severity::Low), Priority::P4);
    assert_eq!(p(Impact::Low, Severity::Critical), Priority::P2);
    assert!(default_sla(Priority::P1).response < default_sla(Priority::P2).response);
    assert!(default_sla(Priority::P3).resolution < default_sla(Priority::P4).resolution);
}

#[test]
fn rule_files_are_checked_with_one_line_errors() {
    let rules = default_rules();
    assert_eq!(rules.len(), 15, "the default set parses");
    let scoped = parse_rules(
        "[[rule]]\nname = \"berlin-cpu\"\nmetric = \"cpu_percent\"\nop = \">\"\nthreshold = 90\nrecover = 70\nfor = \"5m\"\nseverity = \"low\"\nscope = [\"site=berlin\"]\n",
    )
    .expect("parses");
    let rule = &scoped[0];
    assert_eq!((rule.op, rule.duration_ms), (Op::Greater, 5 * MIN));
    assert!(rule.in_scope(&[("site".into(), "berlin".into())]));
    assert!(!rule.in_scope(&[("site".into(), "paris".into())]));

    let base = |extra: &str| {
        format!(
            "[[rule]]\nname = \"r\"\nmetric = \"cpu_percent\"\nop = \">\"\nthreshold = 90\nseverity = \"low\"\n{extra}"
        )
    };
    let cases = [
        (
            base("recover = 95\n"),
            "rule r: recover 95 must be on the clear side of threshold 90 for op >",
        ),
        (
            base("for = \"soon\"\n"),
            "rule r: for \"soon\" is not a duration",
        ),
        (base("colour = 1\n"), "rule r: unknown field `colour`"),
        (
            base("").replace("cpu_percent", "fan_speed"),
            "rule r: unknown metric \"fan_speed\"",
        ),
        (
            base("").replace("\"low\"", "\"urgent\""),
            "rule r: unknown severity \"urgent\"",
        ),
        (
            base("").replace("\">\"", "\">=\""),
            "rule r: unknown op \">=\"",
        ),
        (
            format!("{}{}", base(""), base("")),
            "rule r is defined twice",
        ),
        (
            base("").replace("name = \"r\"", "name = \"a b\""),
            "rule name \"a b\" must be",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_rules(&text).expect_err("must fail");
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}
