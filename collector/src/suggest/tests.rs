//! The ranking of suggested fixes and the wording of change correlation:
//! what a lookup searches for, how candidates score and are cut, and the
//! line `ticket show` prints; plain values, no store.

use super::*;

fn candidate(id: i64, rule: &str, title: &str, resolution: &str, rank: Option<f64>) -> Candidate {
    Candidate {
        ticket_id: id,
        hostname: format!("pc-{id}"),
        title: title.into(),
        rule: rule.into(),
        subject: String::new(),
        resolution: resolution.into(),
        notes: String::new(),
        resolved_at_ms: Some(id),
        text_rank: rank,
    }
}

#[test]
fn package_names_come_from_change_items() {
    assert_eq!(
        package_name("package dpkg/openssl:amd64").as_deref(),
        Some("openssl")
    );
    assert_eq!(
        package_name("package windows/Google Chrome").as_deref(),
        Some("google chrome")
    );
    assert_eq!(
        package_name("package rpm/kernel").as_deref(),
        Some("kernel")
    );
    assert_eq!(package_name("hotfix KB5034441"), None);
    assert_eq!(package_name("package dpkg/"), None);
}

#[test]
fn a_lookup_takes_software_from_changes_and_words_from_the_report() {
    let evidence = serde_json::json!({
        "reported_by": "alice",
        "text": "Outlook crashes when I open the calendar",
    });
    let lookup = lookup(
        "user-report",
        "",
        "reported by alice: Outlook crashes",
        &evidence,
        &["package dpkg/openssl:amd64".into(), "hotfix KB1".into()],
    );
    // Every employee report has this rule: it says nothing.
    assert_eq!(lookup.rule, "");
    assert_eq!(lookup.software, vec!["openssl".to_owned()]);
    assert!(lookup.terms.contains(&"outlook".to_owned()));
    assert!(lookup.terms.contains(&"calendar".to_owned()));
    assert!(lookup.terms.contains(&"openssl".to_owned()));
    // The reporter's name and stop words are no search terms.
    assert!(!lookup.terms.contains(&"alice".to_owned()));
    assert!(!lookup.terms.contains(&"the".to_owned()));
}

#[test]
fn a_service_subject_is_software_and_a_mount_point_is_not() {
    let none = serde_json::json!({});
    let service = lookup(
        "service-down",
        "cups",
        "service cups is not running",
        &none,
        &[],
    );
    assert_eq!(service.software, vec!["cups".to_owned()]);
    let disk = lookup("disk-full", "/var", "/var is 97.0% full", &none, &[]);
    assert!(disk.software.is_empty());
    assert_eq!(disk.rule, "disk-full");
}

#[test]
fn hostile_text_becomes_plain_words() {
    let evidence = serde_json::json!({"text": "\" OR NEAR(a* b) : -x ) {col}: ^\"'; DROP"});
    let lookup = lookup("", "", "", &evidence, &[]);
    for term in &lookup.terms {
        assert!(term.chars().all(char::is_alphanumeric), "{term:?}");
    }
}

#[test]
fn rule_software_and_text_add_up_and_auto_like_empty_resolutions_never_count() {
    let lookup = Lookup {
        rule: "disk-full".into(),
        subject: "/".into(),
        software: vec!["docker".into()],
        terms: vec!["full".into(), "disk".into(), "docker".into()],
    };
    let ranked = rank(
        &lookup,
        vec![
            candidate(1, "disk-full", "/ is 97% full", "Deleted old logs", None),
            candidate(
                2,
                "disk-full",
                "/ is 99% full",
                "Pruned docker images",
                Some(-3.0),
            ),
            candidate(3, "cpu-high", "CPU at 99%", "", Some(-4.0)),
            candidate(4, "memory", "memory full", "Rebooted", Some(-0.1)),
        ],
    );
    let ids: Vec<i64> = ranked.iter().map(|s| s.ticket_id).collect();
    assert_eq!(ids, vec![2, 1]);
    assert!(
        ranked[0].reason.contains("same rule")
            && ranked[0].reason.contains("same software: docker"),
        "{}",
        ranked[0].reason
    );
}

#[test]
fn one_suggestion_per_resolution_and_at_most_five() {
    let lookup = Lookup {
        rule: "disk-full".into(),
        ..Lookup::default()
    };
    let mut candidates: Vec<Candidate> = (1..=3)
        .map(|i| candidate(i, "disk-full", "full", "Deleted old logs.", None))
        .collect();
    candidates
        .extend((10..20).map(|i| candidate(i, "disk-full", "full", &format!("fix {i}"), None)));
    let ranked = rank(&lookup, candidates);
    assert_eq!(ranked.len(), SUGGESTIONS);
    let logs = ranked
        .iter()
        .filter(|s| s.resolution.starts_with("Deleted"))
        .count();
    assert!(logs <= 1);
}

#[test]
fn a_correlation_line_says_the_change_when_and_how_many_others() {
    let change = ChangeRow {
        host_id: "h".into(),
        hostname: "pc".into(),
        observed_at_ms: 0,
        section: "software".into(),
        item: "package dpkg/openssl:amd64".into(),
        old_value: Some("3.0.14".into()),
        new_value: Some("3.0.15".into()),
    };
    let line = correlation_line(
        &CorrelatedChange {
            change,
            other_hosts: Some(42),
        },
        "disk-full",
        2 * 3_600_000,
    );
    assert_eq!(
        line,
        "openssl 3.0.14 -> 3.0.15 (2h before) — 42 other hosts with this change have disk-full open"
    );
}
