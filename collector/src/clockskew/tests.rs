//! The clock window, offsets and when a session records them.

use super::*;

const NOW: i64 = 1_780_000_000_000;
const YEAR_2100: i64 = 4_102_444_800_000;

#[test]
fn times_beyond_the_window_are_the_receive_time_and_the_claim_is_kept() {
    let window = ClockWindow::default();
    assert_eq!(
        window.judge(NOW - 1_000, NOW),
        Judged {
            at_ms: NOW - 1_000,
            claimed_ms: None
        }
    );
    assert_eq!(window.judge(NOW + DEFAULT_WINDOW_MS, NOW).claimed_ms, None);
    for hostile in [
        YEAR_2100,
        i64::MAX,
        NOW + DEFAULT_WINDOW_MS + 1,
        -1,
        i64::MIN,
        1,
    ] {
        assert_eq!(
            window.judge(hostile, NOW),
            Judged {
                at_ms: NOW,
                claimed_ms: Some(hostile)
            },
            "{hostile}"
        );
    }
    // A laptop back after three weeks away: its spooled reports keep their
    // times.
    let three_weeks = 21 * 24 * 3600 * 1000;
    assert_eq!(window.judge(NOW - three_weeks, NOW).claimed_ms, None);
}

#[test]
fn hostile_offsets_saturate_and_unstamped_messages_measure_nothing() {
    assert_eq!(offset_ms(0, NOW), None);
    assert_eq!(offset_ms(-5, NOW), None);
    assert_eq!(offset_ms(i64::MIN, NOW), None);
    assert_eq!(offset_ms(i64::MAX, NOW), Some(MAX_OFFSET_MS));
    assert_eq!(offset_ms(1, i64::MAX), Some(-MAX_OFFSET_MS));
    assert_eq!(offset_ms(NOW - 3 * 3_600_000, NOW), Some(-3 * 3_600_000));
    let window = ClockWindow::default();
    assert!(window.beyond(MAX_OFFSET_MS) && window.beyond(-MAX_OFFSET_MS));
    assert!(!window.beyond(-DEFAULT_WINDOW_MS));
}

#[test]
fn offsets_are_described_in_words() {
    assert_eq!(describe(0), "on time");
    assert_eq!(describe(-999), "on time");
    assert_eq!(describe(-40_000), "40s behind");
    assert_eq!(describe(-(3 * 3600 + 2 * 60) * 1000), "3h 2m behind");
    assert_eq!(describe(90 * 1000), "1m 30s ahead");
    assert_eq!(describe(MAX_OFFSET_MS), "36600d ahead");
    assert_eq!(
        describe(i64::MIN),
        describe(-i64::MAX).replace("ahead", "behind")
    );
}

#[test]
fn a_session_records_at_hello_on_moves_and_clamps_and_not_per_report() {
    let mut tracker = Tracker::new(ClockWindow::default());
    tracker.sent(NOW - 3 * 3_600_000, NOW);
    let first = tracker.due(NOW).expect("recorded at the Hello");
    assert_eq!(first.offset_ms, Some(-3 * 3_600_000));
    tracker.recorded(&first);
    // The same offset again: nothing to write.
    tracker.sent(NOW + 1_000 - 3 * 3_600_000, NOW + 1_000);
    assert_eq!(tracker.due(NOW + 1_000), None);
    // A clamp is recorded at once the first time...
    assert_eq!(tracker.judge(YEAR_2100, NOW + 2_000), NOW + 2_000);
    let clamp = tracker.due(NOW + 2_000).expect("a first clamp");
    assert_eq!((clamp.clamped, clamp.last_claim_ms), (1, Some(YEAR_2100)));
    tracker.recorded(&clamp);
    // ...later ones at most once a minute.
    tracker.judge(i64::MAX, NOW + 3_000);
    assert_eq!(tracker.due(NOW + 3_000), None);
    assert_eq!(
        tracker.due(NOW + 62_000).map(|r| r.clamped),
        Some(1),
        "a minute later"
    );
    // The clock is set right: a move past a minute is recorded.
    tracker.sent(NOW + 70_000, NOW + 70_000);
    assert_eq!(tracker.due(NOW + 70_000).and_then(|r| r.offset_ms), Some(0));
    assert!(tracker.flush(NOW + 70_000).is_some());
}
