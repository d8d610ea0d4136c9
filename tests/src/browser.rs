//! The web console in a real browser (issue 22): Debian's Chromium, driven
//! by `playwright-core` from npm, runs the flows in `tests/web/*.mjs`
//! against a collector the Rust test started.
//!
//! The driver is pinned in `tests/web/package-lock.json` and installed by
//! [`driver_ready`] with `npm ci` into `tests/web/node_modules`
//! (gitignored), never by hand and never with Playwright's own browsers:
//! the flows launch `/usr/bin/chromium`. Chromium, node and npm are on the
//! provision list (`xtask/src/provision.rs`); without them the test says
//! `SKIPPED` (or fails under `CI=true`) through [`crate::require_tool`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use crate::{Run, require_tool, run};

/// Where the flows, `package.json` and the lock file are.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// The Chromium the flows launch: Debian's, not a browser Playwright
/// downloads.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser tests can run: Chromium, node and npm are installed
/// (otherwise `SKIPPED`, or a failure under `CI=true`), and the pinned
/// driver is in `tests/web/node_modules`, installed by `npm ci` when it is
/// missing or not the locked version. A failed `npm ci` (no registry, say)
/// skips the test too, and fails it under `CI=true`.
pub fn driver_ready(test: &str) -> bool {
    // Each tool is asked for, so a skip names every missing one.
    let chromium = require_tool("chromium", test);
    let node = require_tool("node", test);
    let npm = require_tool("npm", test);
    if !(chromium && node && npm) {
        return false;
    }
    // One install per test binary, however many tests want the driver.
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    match INSTALLED.get_or_init(install_driver) {
        Ok(()) => true,
        // Like a missing program: CI fails, a machine offline skips.
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{test}: {why}"),
        Err(why) => {
            eprintln!("SKIPPED {test}: the browser driver is not installed: {why}");
            false
        }
    }
}

/// The version `package-lock.json` pins for `playwright-core`.
fn locked_version(dir: &Path) -> Option<String> {
    let lock = std::fs::read_to_string(dir.join("package-lock.json")).ok()?;
    let lock: serde_json::Value = serde_json::from_str(&lock).ok()?;
    lock["packages"]["node_modules/playwright-core"]["version"]
        .as_str()
        .map(str::to_owned)
}

/// The version installed in `node_modules`, if any.
fn installed_version(dir: &Path) -> Option<String> {
    let manifest =
        std::fs::read_to_string(dir.join("node_modules/playwright-core/package.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

fn install_driver() -> Result<(), String> {
    let dir = web_dir();
    let locked =
        locked_version(&dir).ok_or("tests/web/package-lock.json pins no playwright-core")?;
    if installed_version(&dir).as_deref() == Some(locked.as_str()) {
        return Ok(());
    }
    // --ignore-scripts: playwright-core runs no install script, and none
    // is wanted; nothing else is in the lock.
    let out = run(Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&dir));
    if out.code != 0 {
        return Err(format!(
            "`npm ci` in tests/web failed ({}):\n{}\n{}",
            out.code, out.stdout, out.stderr
        ));
    }
    match installed_version(&dir) {
        Some(version) if version == locked => Ok(()),
        other => Err(format!(
            "`npm ci` installed playwright-core {other:?}, not the locked {locked}"
        )),
    }
}

/// The node command that runs the flow `tests/web/{flow}.mjs` with `env`.
/// The flow finds Chromium in `DESKPULSE_CHROMIUM`, and writes screenshots
/// when `DESKPULSE_SCREENSHOTS` names a directory (passed on from the
/// test's own environment).
fn flow_command(flow: &str, env: &[(&str, String)]) -> Command {
    let dir = web_dir();
    let mut command = Command::new("node");
    command
        .arg(dir.join(format!("{flow}.mjs")))
        .current_dir(&dir)
        .env("DESKPULSE_CHROMIUM", CHROMIUM)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env_remove("RUST_BACKTRACE");
    if let Some(shots) = std::env::var_os("DESKPULSE_SCREENSHOTS") {
        // Relative to the workspace, where `cargo xtask test` runs.
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(shots);
        command.env("DESKPULSE_SCREENSHOTS", shots);
    }
    command
}

/// Fails the test, with everything the flow printed, unless it exited 0;
/// prints its steps otherwise.
fn expect_success(flow: &str, out: Run) -> Run {
    assert_eq!(
        out.code, 0,
        "the browser flow {flow}.mjs failed (exit {})\n--- stdout\n{}\n--- stderr\n{}",
        out.code, out.stdout, out.stderr
    );
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    out
}

/// Runs the flow `tests/web/{flow}.mjs` with `env` to its end, and fails
/// the test with its output unless it exits 0.
pub fn expect_flow(flow: &str, env: &[(&str, String)]) -> Run {
    expect_success(flow, run(&mut flow_command(flow, env)))
}

/// A flow started and still running, for a test that acts while the
/// browser waits (the flow tells when, e.g. by writing a file).
#[derive(Debug)]
pub struct RunningFlow {
    flow: String,
    done: mpsc::Receiver<std::io::Result<Output>>,
}

/// Starts the flow `tests/web/{flow}.mjs` with `env`.
pub fn spawn_flow(flow: &str, env: &[(&str, String)]) -> RunningFlow {
    let child = flow_command(flow, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node for {flow}.mjs: {e}"));
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    RunningFlow {
        flow: flow.to_owned(),
        done,
    }
}

impl RunningFlow {
    /// Waits for the flow's end (at most two minutes, as [`run`] does), and
    /// fails the test with its output unless it exited 0.
    pub fn expect_success(self) -> Run {
        let output = self
            .done
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{}.mjs did not finish within 120 s", self.flow))
            .unwrap_or_else(|e| panic!("{}.mjs failed to run: {e}", self.flow));
        expect_success(&self.flow, Run::from(output))
    }
}
