//! Where the agent's log lines go, and which ones are kept.
//!
//! - **Which:** `RUST_LOG` read as a [`Targets`] filter: comma-separated
//!   `LEVEL` and `TARGET=LEVEL` directives, e.g. `warn,deskpulse_agent=debug`
//!   (no regexes or span filters: that parser would cost the agent a regex
//!   engine). Unset, it is the command's default level; a value that does
//!   not parse gives the default and one warning line, never a failure.
//! - **Where:** under systemd, when `JOURNAL_STREAM` names the file stderr
//!   is (systemd's way of saying stderr is the journal), to journald, with
//!   the level as the entry's priority; if the journald socket cannot be
//!   opened, to stderr with one warning. Elsewhere to stderr, as text or
//!   JSON (`log_format`), with ANSI colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Sets up the process's logging once; `default` is the level (e.g.
/// `"info"`) used when `RUST_LOG` is unset or invalid. A second call does
/// nothing.
pub fn init_logging(format: LogFormat, default: &str) {
    let default: Targets = default
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, bad_rust_log) = match filter_from(rust_log.as_deref()) {
        Ok(Some(filter)) => (filter, None),
        Ok(None) => (default, None),
        Err(error) => (default, Some(error)),
    };
    let registry = tracing_subscriber::registry().with(filter);

    #[cfg(target_os = "linux")]
    let journald_failed = if stderr_is_journal(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        stderr_identity(),
    ) {
        match tracing_journald::layer() {
            Ok(journald) => {
                let _ = registry.with(journald).try_init();
                warn_bad_rust_log(rust_log.as_deref(), bad_rust_log.as_deref());
                return;
            }
            Err(error) => Some(error),
        }
    } else {
        None
    };

    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => registry.with(stderr.json().with_ansi(false)).try_init(),
        LogFormat::Text => registry
            .with(stderr.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
    };
    #[cfg(target_os = "linux")]
    if let Some(error) = journald_failed {
        tracing::warn!(
            "JOURNAL_STREAM says stderr is the journal, but the journald socket cannot be opened ({error}); logging to stderr"
        );
    }
    warn_bad_rust_log(rust_log.as_deref(), bad_rust_log.as_deref());
}

fn warn_bad_rust_log(value: Option<&str>, error: Option<&str>) {
    if let (Some(value), Some(error)) = (value, error) {
        tracing::warn!(
            "RUST_LOG={value:?} is not a log filter ({error}); logging at the default level"
        );
    }
}

/// The filter a `RUST_LOG` value asks for: `None` when it is unset or
/// blank, an error (one line) when it does not parse. Blanks around
/// directives are ignored.
pub fn filter_from(rust_log: Option<&str>) -> Result<Option<Targets>, String> {
    let directives: Vec<&str> = rust_log
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Ok(None);
    }
    directives
        .join(",")
        .parse::<Targets>()
        .map(Some)
        .map_err(|e| e.to_string().replace('\n', " "))
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to
/// `DEVICE:INODE` (both decimal) of the stream it connected stdout and
/// stderr to. Only a match counts, because a program started from the
/// service with its stderr redirected inherits the variable but not the
/// stream.
pub fn stderr_is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(value), Some((device, inode))) = (journal_stream, stderr) else {
        return false;
    };
    let Some((named_device, named_inode)) = value.trim().split_once(':') else {
        return false;
    };
    named_device.parse::<u64>() == Ok(device) && named_inode.parse::<u64>() == Ok(inode)
}

/// stderr's device and inode, as `fstat` sees them.
#[cfg(target_os = "linux")]
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        let stderr = Some((64769, 123_456));
        assert!(stderr_is_journal(Some("64769:123456"), stderr));
        assert!(stderr_is_journal(Some(" 64769:123456\n"), stderr));
        // Another stream (stderr redirected by a parent that was a service).
        assert!(!stderr_is_journal(Some("64769:123457"), stderr));
        assert!(!stderr_is_journal(Some("64770:123456"), stderr));
        // Not set, or stderr closed.
        assert!(!stderr_is_journal(None, stderr));
        assert!(!stderr_is_journal(Some("64769:123456"), None));
        // Not systemd's shape.
        for bad in [
            "",
            ":",
            "64769",
            "64769:",
            ":123456",
            "x:123456",
            "64769:123456:1",
            "-1:5",
        ] {
            assert!(!stderr_is_journal(Some(bad), stderr), "{bad:?}");
        }
    }

    #[test]
    fn rust_log_is_read_as_targets() {
        let filter = filter_from(Some("warn, deskpulse_agent=debug"))
            .expect("parses")
            .expect("set");
        assert!(filter.would_enable("deskpulse_agent::session", &Level::DEBUG));
        assert!(!filter.would_enable("deskpulse_agent::session", &Level::TRACE));
        assert!(filter.would_enable("h2", &Level::WARN));
        assert!(!filter.would_enable("h2", &Level::INFO));
    }

    #[test]
    fn blank_rust_log_is_unset() {
        assert!(filter_from(None).expect("ok").is_none());
        assert!(filter_from(Some("")).expect("ok").is_none());
        assert!(filter_from(Some(" , ")).expect("ok").is_none());
    }

    #[test]
    fn a_bad_rust_log_is_one_line_error() {
        for bad in ["info=debug=trace", "deskpulse_agent=loud", "a[{x]=info"] {
            let error = filter_from(Some(bad)).expect_err(bad);
            assert!(!error.is_empty() && !error.contains('\n'), "{bad}: {error}");
        }
    }
}
