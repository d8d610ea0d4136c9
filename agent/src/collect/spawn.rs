//! Running a system program for the few facts no file holds (Windows WMI,
//! macOS `system_profiler`). Spawning is what makes peer agents slow, so it
//! is the last resort: no shell, a hard timeout, and output capped. The
//! health sampler's slow probes (`smartctl`) use it too, on their own
//! cached intervals (D24), never on every tick.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most output kept from one program; more means something is wrong.
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Why a program gave no usable output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The program is not installed (not found on the search path).
    #[error("{0}: not installed")]
    NotFound(String),
    /// It could not be started, timed out, or failed; one line naming it.
    #[error("{0}")]
    Failed(String),
}

/// What a program printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its stdout, capped.
    pub stdout: Vec<u8>,
}

/// Runs `program` with `args` (no shell) and returns its stdout when it
/// exits successfully within `timeout`. A program still running at the
/// deadline is killed. The error is one line naming the program.
pub fn output(program: &str, args: &[&str], timeout: Duration) -> Result<Vec<u8>, String> {
    let done = run(program, args, timeout).map_err(|e| e.to_string())?;
    match done.code {
        Some(0) => Ok(done.stdout),
        Some(code) => Err(format!("{program}: exited with exit status: {code}")),
        None => Err(format!("{program}: ended by a signal")),
    }
}

/// Runs `program` like [`output`], but hands back stdout whatever the exit
/// code, for programs such as `smartctl` whose exit code is a bit mask and
/// whose output still matters when it is not 0.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<Finished, SpawnError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound(program.to_owned()),
            _ => SpawnError::Failed(format!("{program}: {e}")),
        })?;
    // Read on a thread so a chatty program cannot block on a full pipe while
    // we wait for it to exit.
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = stdout {
            let _ = out.take(MAX_OUTPUT).read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SpawnError::Failed(format!(
                    "{program}: no answer within {timeout:?}, killed"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(SpawnError::Failed(format!("{program}: {e}"))),
        }
    };
    let stdout = reader.join().unwrap_or_default();
    Ok(Finished {
        code: status.code(),
        stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_stdout_of_a_successful_program() {
        let out = output("printf", &["a b"], Duration::from_secs(5)).expect("fixture");
        assert_eq!(out, b"a b");
    }

    #[test]
    fn arguments_are_not_interpreted_by_a_shell() {
        let out = output("printf", &["%s", "$(id); *"], Duration::from_secs(5)).expect("fixture");
        assert_eq!(out, b"$(id); *");
    }

    #[test]
    fn a_slow_program_is_killed_at_the_deadline() {
        let started = Instant::now();
        let err = output("sleep", &["30"], Duration::from_millis(100)).expect_err("must fail");
        assert!(err.contains("sleep: no answer within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn failure_and_absence_are_one_line_errors() {
        let err = output("false", &[], Duration::from_secs(5)).expect_err("must fail");
        assert!(err.starts_with("false: exited with"), "{err}");
        let err =
            output("no-such-program-xyz", &[], Duration::from_secs(5)).expect_err("must fail");
        assert!(err.starts_with("no-such-program-xyz: "), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn run_keeps_stdout_of_a_nonzero_exit_and_names_a_missing_program() {
        let done = run("sh", &["-c", "printf out; exit 3"], Duration::from_secs(5)).expect("ran");
        assert_eq!((done.code, done.stdout.as_slice()), (Some(3), &b"out"[..]));
        assert_eq!(
            run("no-such-program-xyz", &[], Duration::from_secs(5)),
            Err(SpawnError::NotFound("no-such-program-xyz".into()))
        );
    }
}
