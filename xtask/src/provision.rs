//! What the tests need from the machine, in one list: the real programs
//! some tests run on their fixtures or on loopback (D32), each with the
//! Debian package that brings it. `cargo xtask test` and `cargo xtask
//! provision` (which `.ci/run` calls) install what is missing through
//! apt-get when they run as root; otherwise they print one line naming
//! the packages and the command, and the tests that need a missing program
//! say `SKIPPED` with their reason (under `CI=true` they fail instead).
//!
//! A test that looks for a program must find it here: the test
//! `every_program_a_test_looks_for_is_provisioned` reads the tests' sources.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A program some test runs, and the Debian package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestTool {
    /// The program's name, as found on `PATH`.
    pub program: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
}

const fn tool(program: &'static str, package: &'static str) -> TestTool {
    TestTool { program, package }
}

/// Every program a test runs. Most come with any Debian system; they are
/// here so that a minimal image (a container without `procps`, say) gets
/// them too, and so that the list is the whole truth.
pub const TEST_TOOLS: &[TestTool] = &[
    // Inventory parsers checked against the real tool on our fixtures.
    tool("dmidecode", "dmidecode"),
    tool("pacman", "pacman-package-manager"),
    tool("rpm", "rpm"),
    tool("plistutil", "libplist-utils"),
    tool("dpkg", "dpkg"),
    tool("dpkg-query", "dpkg"),
    tool("findmnt", "util-linux"),
    // Automatic triage against a real filling disk: a small ext4 image
    // on a loop mount (tests/src/triage.rs).
    tool("mkfs.ext4", "e2fsprogs"),
    // The health probe and the diagnostics, live; df for the one
    // definition of disk use.
    tool("smartctl", "smartmontools"),
    tool("ping", "iputils-ping"),
    tool("tracepath", "iputils-tracepath"),
    tool("apt", "apt"),
    tool("df", "coreutils"),
    // The metrics output, checked by Prometheus' own linter (D31).
    tool("promtool", "prometheus"),
    // The web console on the TLS port over HTTP/2, as a browser speaks it.
    tool("curl", "curl"),
    // The web console in a real browser (tests/tests/web_browser.rs):
    // Debian's Chromium, and node with npm for the pinned playwright-core
    // that drives it (`npm ci` in tests/web, from the lock file). Debian
    // 12's nodejs is 18, so the pin is the newest playwright-core that
    // still runs on node 18; a newer node (NodeSource's) also works.
    tool("chromium", "chromium"),
    tool("node", "nodejs"),
    tool("npm", "npm"),
    // E-mail notifications against a real SMTP server on loopback
    // (tests/smtp/server.py): aiosmtpd, the PyPI project as Debian
    // packages it; the test runs the interpreter its `aiosmtpd` names.
    tool("aiosmtpd", "python3-aiosmtpd"),
    // Test harness plumbing: other users, private mounts, limits, FIFOs.
    tool("mount", "mount"),
    tool("umount", "mount"),
    tool("unshare", "util-linux"),
    tool("setpriv", "util-linux"),
    tool("prlimit", "util-linux"),
    tool("id", "coreutils"),
    tool("cp", "coreutils"),
    tool("mkfifo", "coreutils"),
    tool("kill", "procps"),
];

/// The tools of `tools` whose program is not on `path` (a `PATH` value).
pub fn missing<'a>(tools: &'a [TestTool], path: Option<&OsStr>) -> Vec<&'a TestTool> {
    tools
        .iter()
        .filter(|tool| !on_path(tool.program, path))
        .collect()
}

/// Where administration programs live, searched after `PATH` as the
/// agent's `which` does: a user's `PATH` often lacks them, although
/// `dmidecode` and `smartctl` are there for any user to find.
const SYSTEM_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

fn on_path(program: &str, path: Option<&OsStr>) -> bool {
    let on_path =
        path.is_some_and(|path| std::env::split_paths(path).any(|dir| dir.join(program).is_file()));
    on_path
        || path.is_some()
            && SYSTEM_DIRS
                .iter()
                .any(|dir| Path::new(dir).join(program).is_file())
}

/// The packages that bring `tools`, sorted, each once.
pub fn packages(tools: &[&TestTool]) -> Vec<&'static str> {
    let mut packages: Vec<&str> = tools.iter().map(|tool| tool.package).collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// The apt-get line that installs `packages`.
pub fn install_command(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// What to do when something is missing and this is not root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutRoot {
    /// Say so in one line and go on: the tests that need it skip.
    Warn,
    /// Fail: the caller asked for the tools themselves.
    Fail,
}

/// Makes sure every test tool is installed: as root, installs the missing
/// packages through apt-get; otherwise one line names them and the command.
pub fn ensure_test_tools(without_root: WithoutRoot) -> Result<()> {
    let path = std::env::var_os("PATH");
    let missing = missing(TEST_TOOLS, path.as_deref());
    if missing.is_empty() {
        return Ok(());
    }
    let programs: Vec<&str> = missing.iter().map(|tool| tool.program).collect();
    let packages = packages(&missing);
    let install = install_command(&packages);
    if !crate::dist::tools::is_root() || !on_path("apt-get", path.as_deref()) {
        let line = format!(
            "provision: {} not installed, so the tests that need them skip; as root: `apt-get update && {install}`",
            programs.join(", ")
        );
        return match without_root {
            WithoutRoot::Warn => {
                eprintln!("{line}");
                Ok(())
            }
            WithoutRoot::Fail => bail!("{line}"),
        };
    }
    eprintln!(
        "provision: installing {} for {}",
        packages.join(" "),
        programs.join(", ")
    );
    apt_install(&packages)?;
    let path = std::env::var_os("PATH");
    let still = missing_after_install(&missing, path.as_deref());
    if !still.is_empty() {
        bail!(
            "{} installed, but {} still not on PATH",
            packages.join(" "),
            still.join(", ")
        );
    }
    Ok(())
}

fn missing_after_install(tools: &[&TestTool], path: Option<&OsStr>) -> Vec<&'static str> {
    tools
        .iter()
        .filter(|tool| !on_path(tool.program, path))
        .map(|tool| tool.program)
        .collect()
}

/// `apt-get update` then `apt-get install` of `packages`, non-interactive.
/// The caller has checked that this runs as root.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    for args in [
        vec!["update", "-qq"],
        [
            &["install", "-y", "-qq", "--no-install-recommends"][..],
            packages,
        ]
        .concat(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

/// `cargo xtask provision`: the test tools, failing without root when one
/// is missing. `check` only reports.
pub fn run(check: bool) -> Result<()> {
    if check {
        let path = std::env::var_os("PATH");
        let missing = missing(TEST_TOOLS, path.as_deref());
        if missing.is_empty() {
            eprintln!("provision: every test tool is installed");
            return Ok(());
        }
        bail!(
            "missing: {}; as root: `apt-get update && {}`",
            missing
                .iter()
                .map(|tool| tool.program)
                .collect::<Vec<_>>()
                .join(", "),
            install_command(&packages(&missing))
        );
    }
    ensure_test_tools(WithoutRoot::Fail)
}

#[cfg(test)]
mod tests;
