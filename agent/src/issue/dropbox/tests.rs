//! The report drop box: reports found in their owner's name, per-user
//! limits, the sticky-bit check, and junk, links and FIFOs deleted unread.

use std::path::Path;

use super::*;

fn state() -> (tempfile::TempDir, StateDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StateDir::new(dir.path());
    (dir, state)
}

fn me(root: &Path) -> String {
    #[cfg(unix)]
    {
        crate::issue::os_user(root, rustix::process::geteuid().as_raw())
    }
    #[cfg(windows)]
    {
        let _ = root;
        crate::local::current_user().expect("current user")
    }
}

#[test]
fn a_dropped_report_is_found_in_its_owners_name_and_time() {
    let (_dir, state) = state();
    prepare(&state).expect("prepare");
    let file = drop_report(&state, "The VPN drops", 1_000).expect("dropped");
    assert!(file.starts_with(dir(&state)), "{}", file.display());
    let found = take_pending(&state, Path::new("/"), 5_000);
    let key = found
        .first()
        .map(|p| p.report_key.clone())
        .unwrap_or_default();
    assert!(uuid::Uuid::parse_str(&key).is_ok(), "{key:?}");
    assert_eq!(
        found,
        [Pending {
            path: file.clone(),
            os_user: me(Path::new("/")),
            text: "The VPN drops".into(),
            reported_at_unix_ms: 1_000,
            report_key: key.clone(),
        }]
    );
    // The key was made when the employee reported, so reading the same
    // file again (a state dir restored from a copy) gives the same key.
    assert_eq!(
        take_pending(&state, Path::new("/"), 5_000)[0].report_key,
        key
    );
    // A time from the future (a wrong clock, a forged file) is now.
    let (_dir, state) = self::state();
    prepare(&state).expect("prepare");
    drop_report(&state, "late", 9_000).expect("dropped");
    assert_eq!(
        take_pending(&state, Path::new("/"), 5_000)[0].reported_at_unix_ms,
        5_000
    );
}

#[test]
fn a_user_may_have_only_so_many_reports_waiting() {
    let (_dir, state) = state();
    prepare(&state).expect("prepare");
    for i in 0..MAX_PENDING {
        drop_report(&state, "again", i64::try_from(i).expect("small")).expect("within the limit");
    }
    let error = drop_report(&state, "one more", 99).expect_err("over the limit");
    assert!(matches!(error, DropError::TooMany), "{error}");
    assert!(error.to_string().contains("already have 5 reports waiting"));
    assert_eq!(take_pending(&state, Path::new("/"), 100).len(), MAX_PENDING);
}

#[test]
fn without_the_drop_box_the_error_says_whom_to_ask() {
    let (_dir, state) = state();
    let error = drop_report(&state, "help", 1).expect_err("no drop box");
    let text = error.to_string();
    assert!(text.contains("does not exist"), "{text}");
    assert!(
        text.contains("restart the Deskpulse agent service"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn a_drop_box_without_the_sticky_bit_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, state) = state();
    let path = prepare(&state).expect("prepare");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let error = drop_report(&state, "help", 1).expect_err("not sticky");
    assert!(
        error
            .to_string()
            .contains("is not the one the agent service made"),
        "{error}"
    );
}

#[test]
fn what_is_not_a_report_is_deleted_unread_and_partial_ones_wait() {
    let (_dir, state) = state();
    let path = prepare(&state).expect("prepare");
    let garbage = path.join("1-garbage.report");
    std::fs::write(&garbage, b"\xff\xfe not json").expect("garbage");
    let bad_text = path.join("2-bad.report");
    std::fs::write(
        &bad_text,
        br#"{"text":"clear\u001b[2J","reported_at_unix_ms":1}"#,
    )
    .expect("bad text");
    let extra_key = path.join("3-extra.report");
    std::fs::write(
        &extra_key,
        br#"{"text":"hi","reported_at_unix_ms":1,"os_user":"root"}"#,
    )
    .expect("extra key");
    let huge = path.join("4-huge.report");
    std::fs::write(
        &huge,
        vec![b' '; usize::try_from(MAX_FILE_BYTES).expect("small") + 1],
    )
    .expect("huge");
    let other_name = path.join("notes.txt");
    std::fs::write(&other_name, b"{}").expect("other");
    let partial = path.join(".5-x.partial");
    std::fs::write(&partial, b"{").expect("partial");
    assert_eq!(take_pending(&state, Path::new("/"), 10), []);
    for gone in [&garbage, &bad_text, &extra_key, &huge, &other_name] {
        assert!(!gone.exists(), "{} should be deleted", gone.display());
    }
    assert!(partial.exists(), "a fresh partial report is being written");
}

#[cfg(unix)]
#[test]
fn links_and_fifos_are_deleted_without_being_followed() {
    let (dir, state) = state();
    let path = prepare(&state).expect("prepare");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, br#"{"text":"secret","reported_at_unix_ms":1}"#).expect("secret");
    let symlink = path.join("1-link.report");
    std::os::unix::fs::symlink(&secret, &symlink).expect("symlink");
    let hardlink = path.join("2-hard.report");
    std::fs::hard_link(&secret, &hardlink).expect("hard link");
    let fifo = path.join("3-fifo.report");
    // The mkfifo(1) tool: rustix has no mkfifo on every Unix.
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // A FIFO would block a reader that opened it plainly: this returns.
    assert_eq!(take_pending(&state, Path::new("/"), 10), []);
    for gone in [&symlink, &hardlink, &fifo] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{} should be deleted",
            gone.display()
        );
    }
    assert!(secret.exists(), "the link's target is untouched");
}
