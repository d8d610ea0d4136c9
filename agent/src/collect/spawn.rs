//! Running a system program for the few facts no file holds (Windows WMI,
//! macOS `system_profiler`). Spawning is what makes peer agents slow, so it
//! is the last resort: no shell, a hard timeout, and output capped. The
//! health sampler's slow probes (`smartctl`) use it too, on their own
//! cached intervals (D24), never on every tick.
//!
//! Diagnostics use [`stream`]: the same rules, plus stdout and stderr
//! merged into one capped stream handed out chunk by chunk, cancellation,
//! and the program in a [`Tree`] of its own (a process group on Unix, a Job
//! Object on Windows), so a timeout, a cancel or the cap kills the whole
//! tree it started, not just the first process.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
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
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    own_group(&mut command);
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SpawnError::NotFound(program.to_owned()),
        _ => SpawnError::Failed(format!("{program}: {e}")),
    })?;
    let tree = Tree::adopt(&child);
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
    loop {
        match has_exited(&mut child) {
            Ok(true) => break,
            Ok(false) if Instant::now() >= deadline => {
                kill_tree(&tree, &mut child);
                return Err(SpawnError::Failed(format!(
                    "{program}: no answer within {timeout:?}, killed"
                )));
            }
            Ok(false) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_tree(&tree, &mut child);
                return Err(SpawnError::Failed(format!("{program}: {e}")));
            }
        }
    }
    // Anything the program left running in its tree goes too, so the
    // pipe closes and nothing outlives the probe; then the leader is reaped.
    tree.kill(&child);
    let status = child
        .wait()
        .map_err(|e| SpawnError::Failed(format!("{program}: {e}")))?;
    let stdout = reader.join().unwrap_or_default();
    Ok(Finished {
        code: status.code(),
        stdout,
    })
}

/// Puts the child in a process group of its own (its pid is the group id),
/// so [`Tree::kill`] reaches every process it starts.
fn own_group(command: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    #[cfg(not(unix))]
    let _ = command;
}

/// Everything a spawned program started, to be killed as one.
///
/// On Unix that is the child's process group, named by its pid, so there
/// is nothing to hold. On Windows it is a Job Object the child is put in
/// right after it starts; its descendants inherit it. A process the child
/// starts in the microseconds before it joins would escape, as one that
/// makes itself a new session escapes a process group; no catalog program
/// does either.
struct Tree {
    #[cfg(windows)]
    job: Option<job::Job>,
}

impl Tree {
    fn adopt(child: &std::process::Child) -> Tree {
        #[cfg(windows)]
        return Tree {
            job: job::Job::adopt(child),
        };
        #[cfg(not(windows))]
        {
            let _ = child;
            Tree {}
        }
    }

    /// Kills every process of the tree. Harmless when they are gone.
    fn kill(&self, child: &std::process::Child) {
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        #[cfg(windows)]
        {
            let _ = child;
            if let Some(job) = &self.job {
                job.terminate();
            }
        }
        #[cfg(not(any(unix, windows)))]
        let _ = child;
    }
}

/// The Job Object behind a [`Tree`] on Windows.
#[cfg(windows)]
mod job {
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject, TerminateJobObject,
    };

    /// A Job Object that kills what is left in it when it is closed, so
    /// nothing a probe started outlives the probe even if the agent
    /// forgets to kill it.
    pub struct Job(OwnedHandle);

    impl Job {
        /// A new job holding `child`, or `None` when Windows refuses one
        /// (then only the child itself can be killed).
        #[allow(unsafe_code)]
        // Win32 calls on handles we own: the job handle is checked for null
        // and owned at once, the limit structure is zeroed plain data of
        // the size passed, and the child's handle lives as long as `child`.
        pub fn adopt(child: &std::process::Child) -> Option<Job> {
            let raw = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if raw.is_null() {
                return None;
            }
            let job = Job(unsafe { OwnedHandle::from_raw_handle(raw) });
            let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
            limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            let set = unsafe {
                SetInformationJobObject(
                    job.0.as_raw_handle(),
                    JobObjectExtendedLimitInformation,
                    (&raw const limits).cast(),
                    std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                )
            };
            let assigned =
                unsafe { AssignProcessToJobObject(job.0.as_raw_handle(), child.as_raw_handle()) };
            (set != 0 && assigned != 0).then_some(job)
        }

        /// Ends every process in the job.
        #[allow(unsafe_code)]
        // The handle is ours and open for as long as `self`.
        pub fn terminate(&self) {
            unsafe {
                TerminateJobObject(self.0.as_raw_handle(), 1);
            }
        }
    }
}

/// True once the child has exited, without reaping it (`waitid` with
/// `WNOWAIT`): while it is an unreaped zombie its pid, and so its process
/// group id, stays reserved, and killing the group cannot reach a process
/// that reused the number.
#[cfg(unix)]
fn has_exited(child: &mut std::process::Child) -> std::io::Result<bool> {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let Some(pid) = Pid::from_raw(child.id() as i32) else {
        return Ok(true);
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    Ok(waitid(WaitId::Pid(pid), options)?.is_some())
}

#[cfg(not(unix))]
fn has_exited(child: &mut std::process::Child) -> std::io::Result<bool> {
    Ok(child.try_wait()?.is_some())
}

/// Kills the tree, then the child itself, and reaps it.
fn kill_tree(tree: &Tree, child: &mut std::process::Child) {
    tree.kill(child);
    let _ = child.kill();
    let _ = child.wait();
}

/// The limits of one [`stream`] run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Killed, with its process group, after this.
    pub timeout: Duration,
    /// Output kept; past it the program is killed and the output marked
    /// truncated.
    pub cap: usize,
}

/// How a [`stream`] run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself; its code, or `None` when a signal ended it.
    Exited(Option<i32>),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The cancel flag was raised and it was killed.
    Cancelled,
    /// It wrote more than the cap and was killed.
    Capped,
}

/// What a [`stream`] run printed (stdout and stderr merged, in the order
/// the program wrote them) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// How it ended.
    pub ending: Ending,
    /// The output, at most the cap.
    pub output: Vec<u8>,
    /// True when output past the cap was thrown away.
    pub truncated: bool,
    /// The pid it ran as (the group id of its tree).
    pub pid: u32,
}

/// Runs `program` with `args` (no shell) in its own process group, with
/// stdout and stderr on one pipe. Each piece of output within the cap is
/// passed to `on_chunk` as it arrives. The whole group is killed at the
/// timeout, when `cancel` is raised, when the output passes the cap, and
/// after the program exits (so a background child it left cannot linger).
pub fn stream(
    program: &str,
    args: &[&str],
    limits: Limits,
    cancel: &AtomicBool,
    on_chunk: &mut dyn FnMut(&[u8]),
) -> Result<Streamed, SpawnError> {
    let (reader, writer) =
        std::io::pipe().map_err(|e| SpawnError::Failed(format!("{program}: {e}")))?;
    let writer_err = writer
        .try_clone()
        .map_err(|e| SpawnError::Failed(format!("{program}: {e}")))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err);
    own_group(&mut command);
    let spawned = command.spawn();
    // The parent's copies of the write end must close, or the pipe never
    // reaches end of file.
    drop(command);
    let mut child = spawned.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SpawnError::NotFound(program.to_owned()),
        _ => SpawnError::Failed(format!("{program}: {e}")),
    })?;
    let pid = child.id();
    let tree = Tree::adopt(&child);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = vec![0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + limits.timeout;
    let mut output = Vec::new();
    let mut ending = None;
    let mut keep = |chunk: Vec<u8>, output: &mut Vec<u8>| -> bool {
        let room = limits.cap.saturating_sub(output.len());
        let take = chunk.len().min(room);
        if take > 0 {
            on_chunk(&chunk[..take]);
            output.extend_from_slice(&chunk[..take]);
        }
        take == chunk.len()
    };
    let mut pipe_open = true;
    while ending.is_none() {
        if pipe_open {
            match rx.recv_timeout(Duration::from_millis(10)) {
                Ok(chunk) => {
                    if !keep(chunk, &mut output) {
                        ending = Some(Ending::Capped);
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => pipe_open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
        if cancel.load(Ordering::Relaxed) {
            ending = Some(Ending::Cancelled);
        } else if Instant::now() >= deadline {
            ending = Some(Ending::TimedOut);
        } else {
            match has_exited(&mut child) {
                Ok(true) => ending = Some(Ending::Exited(None)),
                Ok(false) => {}
                Err(e) => {
                    kill_tree(&tree, &mut child);
                    return Err(SpawnError::Failed(format!("{program}: {e}")));
                }
            }
        }
    }
    let mut ending = ending.unwrap_or(Ending::TimedOut);
    let mut truncated = ending == Ending::Capped;
    // The group is killed while the exited leader is still unreaped, so
    // its pid (the group id) cannot have been reused by a stranger.
    tree.kill(&child);
    let _ = child.kill();
    let status = child.wait();
    if ending == Ending::Exited(None) {
        ending = Ending::Exited(status.ok().and_then(|s| s.code()));
    }
    // With the group dead the pipe closes; take what is still buffered.
    // The bound covers a process that escaped the group and holds the pipe.
    let drain_until = Instant::now() + Duration::from_secs(1);
    while !truncated {
        let left = drain_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => truncated = !keep(chunk, &mut output),
            Err(_) => break,
        }
    }
    Ok(Streamed {
        ending,
        output,
        truncated,
        pid,
    })
}

// They run Unix programs (sh, printf, sleep) and look for the process
// group's members by pid; Windows has neither.
#[cfg(all(test, unix))]
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

    fn limits(timeout_ms: u64, cap: usize) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            cap,
        }
    }

    /// A pid is gone once it is reaped or a zombie (its parent, init here,
    /// may not have reaped it yet): either way it runs nothing. A process
    /// that got SIGKILL still needs a moment to finish exiting, so this
    /// polls for up to five seconds before calling it alive.
    fn alive(pid: u32) -> bool {
        let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if dead() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !dead()
    }

    /// Starts a tree (two background sleeps and a waiting shell), prints
    /// their pids, and checks every one is dead after the run ends. With
    /// `cancel_when_up` the cancel flag is raised once all three pids are
    /// printed, so it lands on a running tree without a sleep.
    fn tree_is_killed(limits: Limits, cancel_when_up: bool) -> Streamed {
        let cancel = AtomicBool::new(false);
        let script = "sleep 100 & echo $!; sleep 100 & echo $!; echo $$; wait";
        let mut lines = 0;
        let done = stream("sh", &["-c", script], limits, &cancel, &mut |chunk| {
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            if cancel_when_up && lines >= 3 {
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .expect("sh runs");
        let pids: Vec<u32> = String::from_utf8_lossy(&done.output)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert_eq!(pids.len(), 3, "{:?}", String::from_utf8_lossy(&done.output));
        for pid in pids {
            assert!(!alive(pid), "pid {pid} of the tree still runs");
        }
        done
    }

    #[test]
    fn stream_kills_the_whole_tree_at_the_timeout() {
        // Time for `sh` to start both sleeps and print the three pids
        // on a loaded machine before the timeout kills the tree.
        let done = tree_is_killed(limits(3_000, 4096), false);
        assert_eq!(done.ending, Ending::TimedOut);
    }

    #[test]
    fn stream_kills_the_whole_tree_on_cancel() {
        let done = tree_is_killed(limits(60_000, 4096), true);
        assert_eq!(done.ending, Ending::Cancelled);
    }

    #[test]
    fn stream_cuts_at_the_cap_and_kills_the_writer() {
        let started = Instant::now();
        let mut live = Vec::new();
        let done = stream(
            "sh",
            &["-c", "while :; do echo yes; done"],
            limits(60_000, 1000),
            &AtomicBool::new(false),
            &mut |c| live.extend_from_slice(c),
        )
        .expect("runs");
        assert_eq!(done.ending, Ending::Capped);
        assert!(done.truncated);
        assert_eq!(done.output.len(), 1000);
        assert_eq!(live, done.output, "live chunks are exactly the kept output");
        assert!(!alive(done.pid));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn stream_merges_stderr_and_reports_the_exit_code() {
        let done = stream(
            "sh",
            &["-c", "echo out; echo err >&2; exit 7"],
            limits(10_000, 4096),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("runs");
        assert_eq!(done.ending, Ending::Exited(Some(7)));
        assert_eq!(done.output, b"out\nerr\n");
        assert!(!done.truncated);
        assert_eq!(
            stream(
                "no-such-program-xyz",
                &[],
                limits(1000, 10),
                &AtomicBool::new(false),
                &mut |_| {}
            ),
            Err(SpawnError::NotFound("no-such-program-xyz".into()))
        );
    }

    #[test]
    fn stream_leaves_no_background_child_after_a_normal_exit() {
        let done = stream(
            "sh",
            &["-c", "sleep 100 & echo $!"],
            limits(10_000, 4096),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("runs");
        assert_eq!(done.ending, Ending::Exited(Some(0)));
        let pid: u32 = String::from_utf8_lossy(&done.output)
            .trim()
            .parse()
            .expect("pid");
        assert!(
            !alive(pid),
            "the background sleep was killed with the group"
        );
    }
}
