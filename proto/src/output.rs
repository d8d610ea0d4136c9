//! How the command-line programs (the agent's commands and the technician
//! CLI) write their output, so that none of them panics when it cannot.
//!
//! Rust ignores `SIGPIPE`, so a write to a pipe whose reader has gone
//! (`deskpulse hosts | head -2`) fails with `BrokenPipe`, and `println!`
//! panics on it. Here a closed pipe ends the process at once and quietly
//! with [`CLOSED_PIPE_EXIT_CODE`], 141, the status a shell reports for a
//! program that `SIGPIPE` ended (128 + 13), as `ls | head` does (see "A closed
//! pipe" in `docs/decisions.md`). Any other failure to write stdout (a full
//! disk behind `> file`) ends the process with one line on stderr and
//! exit code 1, never with output silently cut short. Only `std` is used, so
//! Windows (where a closed pipe is also `BrokenPipe`) behaves the same.

use std::io::{ErrorKind, Write};

/// The exit code after stdout's reader went away: 128 + `SIGPIPE`.
pub const CLOSED_PIPE_EXIT_CODE: i32 = 141;

/// Writes `bytes` to stdout and flushes them. On a closed pipe the process
/// ends quietly with [`CLOSED_PIPE_EXIT_CODE`]; on another error it ends
/// with `PROGRAM: error: cannot write the output: …` and exit code 1.
pub fn write_stdout(program: &str, bytes: &[u8]) {
    let written = {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes).and_then(|()| stdout.flush())
    };
    if let Err(error) = written {
        if error.kind() == ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_PIPE_EXIT_CODE);
        }
        write_stderr(format!("{program}: error: cannot write the output: {error}\n").as_bytes());
        std::process::exit(1);
    }
}

/// Writes `bytes` to stderr. On a closed pipe (`2>&1 | head`) the process
/// ends quietly as for stdout; another error is dropped, since stderr is
/// where it would be reported.
pub fn write_stderr(bytes: &[u8]) {
    let written = std::io::stderr().lock().write_all(bytes);
    if written.is_err_and(|error| error.kind() == ErrorKind::BrokenPipe) {
        std::process::exit(CLOSED_PIPE_EXIT_CODE);
    }
}
