//! `cargo xtask check-targets`: lints the agent and the wire contract
//! (`cargo clippy --all-targets -- -D warnings`) for the targets besides
//! Linux that the agent ships on, the same check CI runs:
//! - `x86_64-pc-windows-gnu`, with Debian's mingw-w64 as its C compiler;
//! - `x86_64-apple-darwin` and `aarch64-apple-darwin`, through
//!   `cargo-zigbuild`, whose zig compiles the C dependencies (ring, zstd,
//!   SQLite) without an Apple SDK. Clippy links nothing, so no SDK is needed.
//!
//! It first provisions what is missing: the rustup targets; the
//! `gcc-mingw-w64-x86-64` package through apt-get when running as root
//! (otherwise a one-line error names the command); cargo-zigbuild and
//! ziglang from PyPI in a venv under `target/zigbuild-venv` (and, as root,
//! Debian's `python3` and `python3-venv` when no venv can be made). Every target
//! is checked even after one fails, one line per target gives the outcome
//! and the time, and any failure fails the task. The targets build under the
//! normal target dir (cargo keeps one subdir per target), so a second run
//! only re-lints what changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The packages linted: the agent and the crate of ours it links.
const PACKAGES: [&str; 2] = ["deskpulse-agent", "deskpulse-proto"];

/// The PyPI releases installed into the venv: the versions checked here,
/// pinned so that a new release cannot change CI's outcome unseen.
const ZIGBUILD_REQUIREMENTS: [&str; 2] = ["cargo-zigbuild==0.24.1", "ziglang==0.17.1"];

/// Debian's package of the Windows C compiler, and the compiler it gives.
const MINGW_PACKAGE: &str = "gcc-mingw-w64-x86-64";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// A target checked by this task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum CrossTarget {
    #[value(name = "x86_64-pc-windows-gnu")]
    WindowsGnu,
    #[value(name = "x86_64-apple-darwin")]
    MacosIntel,
    #[value(name = "aarch64-apple-darwin")]
    MacosArm,
}

impl CrossTarget {
    pub const ALL: [CrossTarget; 3] = [Self::WindowsGnu, Self::MacosIntel, Self::MacosArm];

    pub fn triple(self) -> &'static str {
        match self {
            Self::WindowsGnu => "x86_64-pc-windows-gnu",
            Self::MacosIntel => "x86_64-apple-darwin",
            Self::MacosArm => "aarch64-apple-darwin",
        }
    }

    /// Whether the C dependencies need zig (no Apple SDK here).
    fn needs_zig(self) -> bool {
        matches!(self, Self::MacosIntel | Self::MacosArm)
    }
}

/// Options of `cargo xtask check-targets`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckTargetsArgs {
    /// Check only these targets [default: all three].
    #[arg(value_enum, value_name = "TARGET")]
    pub targets: Vec<CrossTarget>,
}

/// One target's clippy run.
struct Outcome {
    target: CrossTarget,
    passed: bool,
    took: Duration,
}

/// Provisions what is missing, lints every chosen target and fails when any
/// target fails.
pub fn run(root: &Path, args: &CheckTargetsArgs) -> Result<()> {
    let mut targets = if args.targets.is_empty() {
        CrossTarget::ALL.to_vec()
    } else {
        args.targets.clone()
    };
    targets.sort();
    targets.dedup();
    add_rustup_targets(&targets)?;
    if targets.contains(&CrossTarget::WindowsGnu) {
        ensure_mingw()?;
    }
    let zig_bin = if targets.iter().any(|t| t.needs_zig()) {
        Some(ensure_zigbuild(&target_dir(root))?)
    } else {
        None
    };

    let mut outcomes = Vec::new();
    for target in targets {
        let mut clippy = match (&zig_bin, target.needs_zig()) {
            (Some(bin), true) => zigbuild_command(bin)?,
            _ => Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
        };
        clippy.arg("clippy");
        for package in PACKAGES {
            clippy.args(["-p", package]);
        }
        clippy
            .args(["--all-targets", "--target", target.triple()])
            .args(["--", "-D", "warnings"])
            .current_dir(root);
        eprintln!("check-targets: clippy for {}", target.triple());
        let started = Instant::now();
        let passed = match clippy.status() {
            Ok(status) => status.success(),
            Err(error) => {
                eprintln!("check-targets: could not start {clippy:?}: {error}");
                false
            }
        };
        outcomes.push(Outcome {
            target,
            passed,
            took: started.elapsed(),
        });
    }

    for outcome in &outcomes {
        println!(
            "{:<22} {:<6} {}",
            outcome.target.triple(),
            if outcome.passed { "ok" } else { "FAILED" },
            minutes_seconds(outcome.took)
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.target.triple())
        .collect();
    if !failed.is_empty() {
        bail!("clippy failed for {}", failed.join(", "));
    }
    Ok(())
}

/// `1m 05s`: the granularity that matters for a check of minutes.
fn minutes_seconds(took: Duration) -> String {
    let secs = took.as_secs();
    format!("{}m {:02}s", secs / 60, secs % 60)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// `rustup target add` for the targets the toolchain does not have yet.
pub(crate) fn add_rustup_targets(targets: &[CrossTarget]) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::inherit())
        .output()
        .context("running rustup (it adds the cross targets; install it from rustup.rs)")?;
    if !installed.status.success() {
        bail!(
            "rustup target list --installed failed ({})",
            installed.status
        );
    }
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = targets
        .iter()
        .map(|t| t.triple())
        .filter(|triple| !installed.lines().any(|line| line.trim() == *triple))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run_checked(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

/// The mingw C compiler, from Debian's package when this runs as root.
pub(crate) fn ensure_mingw() -> Result<()> {
    if answers(Command::new(MINGW_GCC).arg("--version")) {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "{MINGW_GCC} (the Windows C compiler) is missing: run `sudo apt-get install -y {MINGW_PACKAGE}`"
        );
    }
    eprintln!("check-targets: installing {MINGW_PACKAGE}");
    run_checked(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", MINGW_PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !answers(Command::new(MINGW_GCC).arg("--version")) {
        bail!("{MINGW_PACKAGE} is installed but {MINGW_GCC} does not run");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// The venv's `bin` dir holding cargo-zigbuild and ziglang, made when
/// missing or incomplete.
pub(crate) fn ensure_zigbuild(target_dir: &Path) -> Result<PathBuf> {
    ensure_venv(
        &target_dir.join("zigbuild-venv"),
        &ZIGBUILD_REQUIREMENTS,
        zigbuild_ready,
    )
}

/// The `bin` dir of a venv at `venv` with `pip install PIP_ARGS` done in
/// it, made when missing or when `ready` says it is incomplete (an
/// interrupted install is made again from scratch, never used half-done).
pub(crate) fn ensure_venv(
    venv: &Path,
    pip_args: &[&str],
    ready: impl Fn(&Path) -> bool,
) -> Result<PathBuf> {
    let bin = venv.join("bin");
    if ready(&bin) {
        return Ok(bin);
    }
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .with_context(|| format!("removing the incomplete venv {}", venv.display()))?;
    }
    eprintln!(
        "xtask: installing {} into {}",
        pip_args.join(" "),
        venv.display()
    );
    let mut failure = make_venv(venv);
    // A fresh Debian may lack python3, or its venv module: only making one
    // tells. As root, install them and try once more.
    if failure.is_some() && is_root() {
        let _ = std::fs::remove_dir_all(venv);
        eprintln!("check-targets: installing {}", PYTHON_PACKAGES.join(" "));
        crate::provision::apt_install(&PYTHON_PACKAGES)?;
        failure = make_venv(venv);
    }
    if let Some(reason) = failure {
        let _ = std::fs::remove_dir_all(venv);
        bail!(
            "python3 -m venv failed ({reason}): install Python's venv module, on Debian `apt-get install -y {}`",
            PYTHON_PACKAGES.join(" ")
        );
    }
    run_checked(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet"])
            .args(pip_args),
    )?;
    if !ready(&bin) {
        bail!(
            "{} does not run after installing it into {}",
            pip_args.join(" "),
            venv.display()
        );
    }
    Ok(bin)
}

/// Debian's packages of `python3 -m venv`.
const PYTHON_PACKAGES: [&str; 2] = ["python3", "python3-venv"];

/// Makes a venv at `venv`; the reason when that fails.
fn make_venv(venv: &Path) -> Option<String> {
    match Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(first_paragraph(&String::from_utf8_lossy(&out.stderr))),
        Err(error) => Some(error.to_string()),
    }
}

/// The first paragraph of a program's message, on one line.
fn first_paragraph(text: &str) -> String {
    let paragraph: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty())
        .collect();
    if paragraph.is_empty() {
        "no message".to_owned()
    } else {
        paragraph
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn zigbuild_ready(bin: &Path) -> bool {
    answers(Command::new(bin.join("cargo-zigbuild")).arg("--version"))
        && answers(Command::new(bin.join("python3")).args(["-m", "ziglang", "version"]))
}

/// cargo-zigbuild with the venv first on PATH: it runs zig as
/// `python3 -m ziglang`, which must be the venv's python.
pub(crate) fn zigbuild_command(bin: &Path) -> Result<Command> {
    let mut path = vec![bin.to_path_buf()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).context("the venv's path cannot go on PATH")?;
    let mut cmd = Command::new(bin.join("cargo-zigbuild"));
    cmd.env("PATH", path);
    Ok(cmd)
}

/// True when the command runs and succeeds; its output is not shown.
pub(crate) fn answers(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
