//! Errors that carry their process exit code (D11): 2 for a usage or config
//! error found before any I/O, 1 for everything else. Binaries print the
//! error as one line and exit with its code.

use std::fmt;
use std::process::ExitCode;

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// 1 or 2.
    pub code: u8,
    /// The one-line message.
    pub message: String,
}

impl Failure {
    /// A usage or config error (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }

    /// Any other failure (exit 1).
    pub fn runtime(message: impl fmt::Display) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }

    /// Prints the error as one line on stderr and returns the exit code.
    pub fn report(&self, program: &str) -> ExitCode {
        // Nested causes are joined with ": " already; newlines would break
        // the one-line promise, so fold any that slipped in.
        // Messages can quote what an agent or a technician sent (a host
        // name in "no host named ..."), so control characters are shown,
        // not acted on.
        let line = self.message.replace('\n', " ");
        crate::cli::terminal::err(&format!(
            "{program}: error: {}\n",
            crate::cli::terminal::inert(&line)
        ));
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Result alias for command bodies.
pub type CommandResult<T = ()> = Result<T, Failure>;

/// Sets up stderr logging: text or JSON, level from `RUST_LOG` or `default`,
/// with ANSI colours only when stderr is a terminal (not in a journal, a
/// pipe or a file).
pub fn init_logging(json: bool, default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
