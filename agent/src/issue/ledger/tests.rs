//! The per-user ledger: the limit, duplicates, a restart, a clock set back,
//! a corrupt file.

use super::*;

const NOW: i64 = 1_780_000_000_000;
const MINUTE: i64 = 60_000;

fn key(n: usize) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

#[test]
fn each_user_may_send_the_limit_per_hour_and_is_told_when_to_try_again() {
    let mut ledger = Ledger::in_memory();
    for n in 0..LIMIT {
        assert_eq!(
            ledger.admit("alice", &format!("problem {n}"), &key(n), NOW + n as i64),
            Admission::Admitted { reference: key(n) }
        );
    }
    let Admission::Limited(line) = ledger.admit("alice", "one more", &key(99), NOW + 10 * MINUTE)
    else {
        panic!("over the limit")
    };
    assert_eq!(
        line,
        "you have sent 10 reports in the last 60 minutes and your help desk has them all; this one was not sent: try again in 50m, or call your help desk if it is urgent"
    );
    // Another user is not held back by alice.
    assert!(matches!(
        ledger.admit("bob", "one more", &key(100), NOW),
        Admission::Admitted { .. }
    ));
    // Once the first report leaves the window, one more is admitted.
    assert!(matches!(
        ledger.admit("alice", "one more", &key(101), NOW + 60 * MINUTE + 1),
        Admission::Admitted { .. }
    ));
}

#[test]
fn the_same_text_again_is_answered_with_the_earlier_reference() {
    let mut ledger = Ledger::in_memory();
    ledger.admit("alice", "The printer is on fire", &key(1), NOW);
    assert_eq!(
        ledger.admit(
            "alice",
            "  The printer is on fire\n",
            &key(2),
            NOW + 5 * MINUTE
        ),
        Admission::AlreadySent {
            reference: key(1),
            at_ms: NOW,
            ticket: None,
        }
    );
    assert_eq!(
        ledger.count("alice", NOW + 5 * MINUTE),
        1,
        "not counted twice"
    );
    assert_eq!(
        already_sent_line(&key(1), NOW, NOW + 5 * MINUTE, None),
        "already sent: you reported the same thing 5m ago (reference 00000001); your help desk has it, so it was not sent again"
    );
    assert_eq!(
        already_sent_line(&key(1), NOW, NOW + 5 * MINUTE, Some(42)),
        "already sent: you reported the same thing 5m ago (ticket #42, reference 00000001); your help desk has it, so it was not sent again"
    );
    // Another user's same words are their own report.
    assert!(matches!(
        ledger.admit("bob", "The printer is on fire", &key(3), NOW),
        Admission::Admitted { .. }
    ));
    // A withdrawn report (never spooled) may be sent again.
    ledger.withdraw("bob", &key(3));
    assert!(matches!(
        ledger.admit("bob", "The printer is on fire", &key(4), NOW),
        Admission::Admitted { .. }
    ));
}

#[test]
fn the_ledger_survives_a_restart_and_a_corrupt_one_starts_afresh() {
    let dir = tempfile::tempdir().expect("dir");
    let mut ledger = Ledger::open(dir.path());
    for n in 0..LIMIT {
        ledger.admit("alice", &format!("problem {n}"), &key(n), NOW);
    }
    drop(ledger);
    let mut reopened = Ledger::open(dir.path());
    assert!(matches!(
        reopened.admit("alice", "after a restart", &key(50), NOW + MINUTE),
        Admission::Limited(_)
    ));
    assert!(matches!(
        reopened.admit("alice", "problem 3", &key(51), NOW + MINUTE),
        Admission::AlreadySent { .. }
    ));
    let text = std::fs::read_to_string(dir.path().join(FILE)).expect("file");
    assert!(!text.contains("problem"), "texts are not kept: {text}");
    // No temporary files are left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![FILE.to_owned()]);

    std::fs::write(dir.path().join(FILE), b"{ not json").expect("corrupt");
    let mut fresh = Ledger::open(dir.path());
    assert!(matches!(
        fresh.admit("alice", "after the corruption", &key(60), NOW),
        Admission::Admitted { .. }
    ));
}

#[test]
fn reports_dated_in_the_future_by_a_clock_set_back_do_not_block_forever() {
    let mut ledger = Ledger::in_memory();
    let next_year = NOW + 365 * 24 * 60 * MINUTE;
    for n in 0..LIMIT {
        ledger.admit("alice", &format!("problem {n}"), &key(n), next_year);
    }
    assert!(matches!(
        ledger.admit("alice", "the clock was set back", &key(70), NOW),
        Admission::Admitted { .. }
    ));
    // Hostile times neither panic nor wrap.
    for at in [i64::MIN, -1, 0, i64::MAX] {
        let _ = ledger.admit("mallory", "x", &key(80), at);
        let _ = ledger.count("mallory", at);
    }
}

#[test]
fn a_reports_ticket_number_is_kept_across_a_restart_and_named_when_sent_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::open(dir.path());
    assert!(matches!(
        ledger.admit("alice", "The printer is on fire", &key(1), NOW),
        Admission::Admitted { .. }
    ));
    assert_eq!(ledger.ticket_of(&key(1)), None);
    // A collector naming a report this ledger never admitted grows nothing.
    assert!(!ledger.record_ticket(&key(9), 7));
    assert!(ledger.record_ticket(&key(1), 42));
    assert!(!ledger.record_ticket(&key(1), 42), "already known");
    drop(ledger);

    let mut reopened = Ledger::open(dir.path());
    assert_eq!(reopened.ticket_of(&key(1)), Some(42));
    assert_eq!(
        reopened.admit("alice", "The printer is on fire", &key(2), NOW + MINUTE),
        Admission::AlreadySent {
            reference: key(1),
            at_ms: NOW,
            ticket: Some(42),
        }
    );
    // Past the duplicate window the report is still remembered, with its
    // number, for `my-tickets` offline; past KEEP_REPORTS it is not.
    let later = NOW + 2 * 60 * MINUTE;
    let known = reopened.known("alice", later);
    assert_eq!(known.len(), 1);
    assert_eq!(
        (known[0].reference.as_str(), known[0].ticket),
        (key(1).as_str(), Some(42))
    );
    assert!(reopened.known("bob", later).is_empty());
    let much_later = NOW + KEEP_REPORTS.as_millis() as i64 + MINUTE;
    assert!(reopened.known("alice", much_later).is_empty());
}

#[test]
fn a_ledger_from_before_issue_23_is_read_with_no_ticket_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = format!(
        r#"{{"users":{{"alice":[{{"at_ms":{NOW},"text_sha256":"{}","reference":"{}"}}]}}}}"#,
        "00".repeat(32),
        key(1)
    );
    std::fs::write(dir.path().join(FILE), old).expect("write");
    let mut ledger = Ledger::open(dir.path());
    assert_eq!(
        ledger.count("alice", NOW + MINUTE),
        1,
        "the old file was read"
    );
    assert!(ledger.known("alice", NOW + MINUTE).is_empty());
}
