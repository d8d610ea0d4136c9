//! `cargo xtask`: the entry point for development tasks. See the library docs
//! for what each task does.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Deskpulse development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate proto/src/generated from the .proto files.
    Codegen,
    /// Build everything, start a collector on loopback, enroll this machine's
    /// agent, report, and show the result with the CLI.
    Demo(xtask::demo::DemoArgs),
    /// Build every binary, then run every test; extra arguments go to
    /// `cargo test`.
    Test {
        /// Passed through to `cargo test --workspace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the agent's inventory cost, wire size and idle cost beside
    /// the peer agents from Debian's packages.
    BenchAgent(xtask::bench_agent::BenchArgs),
    /// Simulate a fleet of enrolled agents against a collector and print the
    /// achieved report rate, Ack latency, errors and collector cost.
    Loadgen(xtask::loadgen::LoadgenArgs),
    /// One worker process of `loadgen` (started by it; reads its
    /// configuration and commands on stdin).
    #[command(hide = true)]
    LoadgenWorker,
    /// The bare ceilings of `loadgen --anchors`, as one JSON line (started
    /// by it, from the release build).
    #[command(hide = true)]
    LoadgenAnchors,
    /// Lint the agent and proto for Windows and macOS (clippy --all-targets
    /// -D warnings), installing the targets, mingw and cargo-zigbuild first
    /// when missing.
    CheckTargets(xtask::check_targets::CheckTargetsArgs),
    /// Make sure PostgreSQL answers on 127.0.0.1:5432, starting a local
    /// cluster when none does.
    Pg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let root = xtask::workspace_root();
    match task {
        Task::Codegen => xtask::codegen::run(&root),
        Task::Demo(args) => xtask::demo::run(&root, &args),
        Task::Test { args } => {
            cargo(&root, &["build", "--workspace", "--bins"])?;
            let mut test = vec!["test", "--workspace"];
            test.extend(args.iter().map(String::as_str));
            cargo(&root, &test)
        }
        Task::Pg => xtask::pg::ensure_running(),
        Task::CheckTargets(args) => xtask::check_targets::run(&root, &args),
        Task::BenchAgent(args) => xtask::bench_agent::run(&root, &args),
        Task::Loadgen(args) => xtask::loadgen::run(&root, &args),
        Task::LoadgenWorker => xtask::loadgen::run_worker(),
        Task::LoadgenAnchors => xtask::loadgen::run_anchors(),
    }
}

fn cargo(root: &std::path::Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
