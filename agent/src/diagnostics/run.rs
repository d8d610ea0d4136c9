//! Carries out a plan on the job's blocking thread: each program through
//! `collect::spawn::stream` (no shell, its own process group, the time
//! left, the room left under the cap), each native step in Rust, all
//! writing to the job's capped [`Out`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use deskpulse_proto::v1::DiagnosticParams;

use super::plan::{self, Post, Step, Summary};
use super::{Context, Out, Stop, native, parse};
use crate::collect::spawn::{self, Ending, Limits, SpawnError};

/// Output read from a program whose output is filtered or summarised
/// before it is kept: the filter needs more than the cap to work on.
const POST_INPUT_CAP: usize = 4 * 1024 * 1024;

/// Directories searched after `PATH`: a service's `PATH` often lacks the
/// sbin dirs where `smartctl` and `dhclient` live.
const EXTRA_PATH: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Searched when `PATH` is unset: the usual program dirs.
const NO_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The absolute path of `program`: itself when it is a path, else the
/// first executable file of that name on `PATH` (the usual dirs when it is
/// unset) or [`EXTRA_PATH`]. A `PATH` that leaves out a bin dir is obeyed,
/// so what the agent reports as installed is what its runs find.
pub fn which(program: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            }
            #[cfg(not(unix))]
            {
                m.is_file()
            }
        })
    };
    if program.contains('/') || program.contains('\\') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| {
        if cfg!(unix) {
            NO_PATH.into()
        } else {
            Default::default()
        }
    });
    // Unix directories: on Windows they would name folders on the current
    // drive (under Wine, the Linux host's own /usr/bin).
    let extra: &[&str] = if cfg!(unix) { &EXTRA_PATH } else { &[] };
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Runs a checked request's plan. `Ok` carries the exit code (the first
/// non-zero one among the steps, 0 when all succeeded; -1 when a program
/// was killed at the output cap).
pub fn execute(
    params: &DiagnosticParams,
    context: &Context,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    let steps = plan::plan(params, plan::current(), &context.system_root, &|p| {
        which(p).is_some()
    })
    .map_err(Stop::Failed)?;
    run_steps(&steps, context, deadline, stop, out)
}

/// Runs steps in order; see [`execute`].
pub fn run_steps(
    steps: &[Step],
    context: &Context,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    let mut code = 0;
    let several = steps.len() > 1;
    for step in steps {
        if stop.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        let step_code = match step {
            Step::Native(n) => native::run(n, context, deadline, stop, out)?,
            Step::Program {
                argv,
                optional,
                post,
            } => {
                let Some((name, args)) = argv.split_first() else {
                    continue;
                };
                let Some(path) = which(name) else {
                    if *optional {
                        out.line(format!("[{name}: not installed]"));
                        continue;
                    }
                    return Err(Stop::Failed(format!("{name}: not installed")));
                };
                if several {
                    out.line(format!("$ {}", argv.join(" ")));
                }
                match program(&path, name, args, post, deadline, stop, out)? {
                    Some(c) => c,
                    // Cut at the cap: nothing more fits, so stop here.
                    None => return Ok(if code != 0 { code } else { -1 }),
                }
            }
        };
        if code == 0 {
            code = step_code;
        }
    }
    Ok(code)
}

/// One program. `Ok(None)` when it was killed at the output cap.
fn program(
    path: &Path,
    name: &str,
    args: &[String],
    post: &Post,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<Option<i32>, Stop> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    if timeout.is_zero() {
        return Err(Stop::TimedOut);
    }
    let room = out.room();
    if room == 0 {
        out.mark_truncated();
        return Ok(None);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let program = path.to_string_lossy();
    let raw = *post == Post::Raw;
    let cap = if raw { room } else { POST_INPUT_CAP };
    let mut live = |chunk: &[u8]| {
        if raw {
            out.write(chunk);
        }
    };
    let done =
        spawn::stream(&program, &args, Limits { timeout, cap }, stop, &mut live).map_err(|e| {
            match e {
                SpawnError::NotFound(_) => Stop::Failed(format!("{name}: not installed")),
                SpawnError::Failed(m) => Stop::Failed(m),
            }
        })?;
    if !raw {
        let text = String::from_utf8_lossy(&done.output);
        match post {
            Post::Raw => {}
            Post::LogFilter { filter, count } => {
                let lines = parse::log_filter(&text, filter, *count);
                if lines.is_empty() {
                    out.line("no matching log entries");
                }
                for line in lines {
                    out.line(line);
                }
            }
            Post::Head(n) => {
                for line in text.lines().take(*n) {
                    out.line(line);
                }
            }
            Post::Summary(kind) => {
                out.write(text.as_bytes());
                if !text.is_empty() && !text.ends_with('\n') {
                    out.line("");
                }
                let summary = match kind {
                    Summary::SystemctlStatus => parse::systemctl_active(&text),
                    Summary::Timedatectl => parse::timedatectl(&text),
                    Summary::Chronyc => parse::chronyc(&text),
                    Summary::Smart => parse::smart(&text),
                };
                if let Some(summary) = summary {
                    out.line(format!("summary: {summary}"));
                }
            }
        }
    }
    match done.ending {
        Ending::Exited(code) => {
            if done.truncated {
                out.mark_truncated();
            }
            Ok(Some(code.unwrap_or(-1)))
        }
        Ending::Capped => {
            out.mark_truncated();
            if raw { Ok(None) } else { Ok(Some(-1)) }
        }
        Ending::TimedOut => Err(Stop::TimedOut),
        Ending::Cancelled => Err(Stop::Cancelled),
    }
}
