//! The Windows agent under Wine, for the end-to-end tests: whether `cargo
//! xtask test` prepared a prefix, the built `.exe`, Windows paths for
//! Linux files, and `wine` commands with that prefix's environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `cargo xtask test` prepared a Wine prefix
/// (`DESKPULSE_WINE_PREFIX`). Without one the test prints a SKIPPED line
/// and should return; under `CI=true` it fails instead.
pub fn ready(test: &str) -> bool {
    if std::env::var_os("DESKPULSE_WINE_PREFIX").is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: DESKPULSE_WINE_PREFIX is not set under CI=true; run `cargo xtask test`"
    );
    eprintln!(
        "SKIPPED {test}: no Wine prefix (DESKPULSE_WINE_PREFIX); `cargo xtask test` prepares one"
    );
    false
}

/// The agent built for `x86_64-pc-windows-gnu`, canonical (as `service
/// install` registers it); a failure naming the build command when absent.
pub fn agent_exe() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let exe = target.join("x86_64-pc-windows-gnu/debug/deskpulse-agent.exe");
    std::fs::canonicalize(&exe).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `cargo build -p deskpulse-agent --target x86_64-pc-windows-gnu` (`cargo xtask test` does)",
            exe.display()
        )
    })
}

/// A Linux path as the Windows program sees it: Wine maps `/` to `Z:`.
pub fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// `wine ARGS`, with the prefix's environment `cargo xtask test` exported.
pub fn wine(args: &[&str]) -> Command {
    let mut cmd = Command::new("wine");
    cmd.args(args).stdin(Stdio::null());
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}
