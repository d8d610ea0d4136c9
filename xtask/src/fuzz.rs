//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/` for a few
//! seconds each (CI's short pass) or as long as asked.
//!
//! It installs what is missing first: the nightly toolchain (rustup,
//! minimal profile; where none can be fetched, the default toolchain
//! builds the targets, since no sanitizer is used) and cargo-fuzz at a
//! pinned version (`cargo install
//! --locked` into `target/dist-tools`). The targets are built once, without
//! a sanitizer (safe Rust; overflow checks and debug assertions stay on),
//! into `target/fuzz`: optimised, or with `--dev` unoptimised, which builds
//! in a fraction of the time for CI's short pass. Each target then
//! runs from a copy of its seed corpus (`fuzz/corpus/<target>`) in
//! `target/fuzz/corpus/<target>`, so what libFuzzer adds never lands in the
//! repository; a crash leaves its input in `target/fuzz/artifacts/<target>/`.
//! One line per target gives the seconds, executions, corpus size and
//! outcome; any crash fails the task after every target has run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::dist::Layout;
use crate::dist::tools::{CargoTool, cargo_tool};

/// The cargo-fuzz release checked here.
pub const CARGO_FUZZ: CargoTool = CargoTool {
    name: "cargo-fuzz",
    version: "0.13.2",
};

/// libFuzzer's limits for one input: a hang or a blow-up is a finding too.
const INPUT_TIMEOUT_SECS: u32 = 10;
const RSS_LIMIT_MB: u32 = 2048;

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds to run each target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Run only these targets (default: every target in fuzz/Cargo.toml).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Build unoptimised (the fuzz crate's dev profile): a fraction of the
    /// build time, a fraction of the executions per second. For CI's short
    /// pass; long passes want the optimised build.
    #[arg(long)]
    pub dev: bool,
}

/// What one target's run gave.
#[derive(Debug)]
pub struct Outcome {
    pub target: String,
    pub seconds: f64,
    pub executions: Option<u64>,
    pub corpus: usize,
    pub crashed: bool,
}

pub fn run(root: &Path, args: &FuzzArgs) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let all_count = all.len();
    let chosen: Vec<String> = if args.targets.is_empty() {
        all
    } else {
        for name in &args.targets {
            if !all.contains(name) {
                bail!(
                    "no fuzz target {name:?}; the targets are {}",
                    all.join(", ")
                );
            }
        }
        args.targets.clone()
    };
    let toolchain = toolchain();
    let layout = Layout::new(root);
    let cargo_fuzz = cargo_tool(&layout, CARGO_FUZZ)?;
    let target_dir = layout.target_dir.join("fuzz");
    let started = Instant::now();
    // `cargo fuzz build` takes one target or none (all of them); one build
    // of all shares the compiled crates.
    let builds: Vec<Option<&String>> = if chosen.len() == all_count {
        vec![None]
    } else {
        chosen.iter().map(Some).collect()
    };
    for target in builds {
        let mut build = with_toolchain(Command::new(&cargo_fuzz), toolchain);
        build
            .args(["fuzz", "build", "--sanitizer", "none", "--target-dir"])
            .arg(&target_dir)
            .args(args.dev.then_some("--dev"))
            .args(target)
            .current_dir(&fuzz_dir);
        let status = build.status().context("running cargo fuzz build")?;
        if !status.success() {
            bail!("cargo fuzz build failed ({status})");
        }
    }
    eprintln!(
        "fuzz: built {} targets in {:.0} s",
        chosen.len(),
        started.elapsed().as_secs_f64()
    );
    let profile_dir = if args.dev { "debug" } else { "release" };
    let bin_dir = target_dir.join(host_triple()?).join(profile_dir);
    let mut outcomes = Vec::new();
    for target in &chosen {
        let outcome = run_target(&fuzz_dir, &target_dir, &bin_dir, target, args.seconds)?;
        println!(
            "fuzz {:<18} {:>6.0} s {:>12} runs {:>6} inputs  {}",
            outcome.target,
            outcome.seconds,
            outcome
                .executions
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            outcome.corpus,
            if outcome.crashed { "CRASH" } else { "ok" }
        );
        outcomes.push(outcome);
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (inputs in {})",
            crashed.join(", "),
            target_dir.join("artifacts").display()
        );
    }
    Ok(())
}

/// The `[[bin]]` names of fuzz/Cargo.toml.
pub fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let value: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", manifest.display()))?;
    let names: Vec<String> = value
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bin| bin.get("name").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        bail!("{} names no fuzz target", manifest.display());
    }
    Ok(names)
}

fn run_target(
    fuzz_dir: &Path,
    target_dir: &Path,
    bin_dir: &Path,
    target: &str,
    seconds: u32,
) -> Result<Outcome> {
    let work_corpus = target_dir.join("corpus").join(target);
    let artifacts = target_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&work_corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let log_path = target_dir.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut cmd = Command::new(bin_dir.join(target));
    cmd.arg(&work_corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    let status = cmd
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("running fuzz target {target}"))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let crashed = !status.success();
    if crashed {
        // The finding's own lines: libFuzzer's summary and the panic.
        for line in text.lines().filter(|l| {
            l.contains("panicked at")
                || l.contains("SUMMARY")
                || l.contains("Test unit written")
                || l.starts_with("==")
        }) {
            eprintln!("fuzz {target}: {line}");
        }
        eprintln!("fuzz {target}: full log in {}", log_path.display());
    }
    Ok(Outcome {
        target: target.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        executions: final_stat(&text, "stat::number_of_executed_units:"),
        corpus: std::fs::read_dir(&work_corpus).map_or(0, Iterator::count),
        crashed,
    })
}

/// A `-print_final_stats` figure.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix(name))
        .and_then(|n| n.trim().parse().ok())
}

/// A command run with `toolchain` (None: rustup's default), whatever
/// toolchain runs xtask.
fn with_toolchain(mut cmd: Command, toolchain: Option<&str>) -> Command {
    match toolchain {
        Some(name) => cmd.env("RUSTUP_TOOLCHAIN", name),
        None => cmd.env_remove("RUSTUP_TOOLCHAIN"),
    };
    cmd.env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    cmd
}

/// The toolchain to build with: nightly, installed (minimal profile) when
/// rustup lacks it. Without a sanitizer cargo-fuzz passes only stable
/// flags, so where nightly cannot be had (a machine whose network reaches
/// no toolchain server) the default toolchain builds the targets as well.
fn toolchain() -> Option<&'static str> {
    let has_nightly = || {
        Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_nightly() {
        return Some("nightly");
    }
    eprintln!("fuzz: installing the nightly toolchain (rustup, minimal profile)");
    let installed = Command::new("rustup")
        .args(["toolchain", "install", "nightly", "--profile", "minimal"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && has_nightly() {
        return Some("nightly");
    }
    eprintln!(
        "fuzz: no nightly toolchain; building with the default one (no sanitizer needs nightly)"
    );
    None
}

/// The host's target triple, where cargo-fuzz puts the binaries.
fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}
