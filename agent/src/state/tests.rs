//! The state dir: enrollment round trips with a private key, the single
//! process lock, and corrupt files named.

use super::*;

fn creds() -> Credentials {
    Credentials {
        enrollment: Enrollment {
            collector: "https://127.0.0.1:7443".into(),
            host_id: "6f1c2a52-0000-4000-8000-000000000001".into(),
            enrolled_at_unix_ms: 1,
        },
        cert_pem: "CERT".into(),
        key_pem: "KEY".into(),
        ca_pem: "CA".into(),
    }
}

#[test]
fn enrollment_round_trips_and_the_key_is_private() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StateDir::new(dir.path().join("state"));
    assert!(matches!(
        state.credentials(),
        Err(StateError::NotEnrolled { .. })
    ));
    state.save_enrollment(&creds()).expect("save");
    let loaded = state.credentials().expect("load");
    assert_eq!(loaded.enrollment, creds().enrollment);
    assert_eq!(loaded.key_pem, "KEY");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(state.root().join(KEY))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_second_lock_is_refused_while_the_first_is_held() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StateDir::new(dir.path());
    let first = state.lock().expect("first lock");
    let error = state.lock().expect_err("second lock");
    assert!(
        error
            .to_string()
            .contains("another deskpulse-agent is running"),
        "{error}"
    );
    drop(first);
    state.lock().expect("lock after release");
}

#[test]
fn corrupt_files_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StateDir::new(dir.path());
    fs::write(dir.path().join(ENROLLMENT), "host_id = 3").expect("write");
    let error = state.enrollment().expect_err("corrupt");
    assert!(
        error.to_string().contains("enrollment.toml is corrupt"),
        "{error}"
    );
    fs::write(dir.path().join(STATUS), "{not json").expect("write");
    assert!(state.status().is_err());
}
