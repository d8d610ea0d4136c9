//! `cargo xtask`: the entry point for development tasks. See the library docs
//! for what each task does.

use std::path::Path;
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
    /// Build every binary, then run every test: the workspace's on Linux,
    /// then the agent's and proto's for Windows under Wine (`test-windows`).
    /// First installs the programs the tests run (`provision`) when root;
    /// otherwise says which are missing, and their tests skip.
    Test {
        /// Run the Linux tests only: no Wine, no Windows build.
        #[arg(long)]
        skip_windows: bool,
        /// Passed through to `cargo test --workspace` (the Linux run).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the agent's and proto's tests built for Windows under Wine,
    /// installing and preparing Wine first when needed.
    TestWindows {
        /// Passed through to `cargo test --target x86_64-pc-windows-gnu`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Prepare Wine as `test-windows` does, leave its wineserver running,
    /// and print the environment for a shell: `eval "$(cargo xtask wine)"`,
    /// then `wine target/x86_64-pc-windows-gnu/debug/deskpulse-agent.exe`.
    Wine,
    /// Measure the agent's inventory cost, wire size and idle cost beside
    /// the peer agents from Debian's packages.
    BenchAgent(xtask::bench_agent::BenchArgs),
    /// Measure the collector's peak memory and technician write latency
    /// while hostile agents send huge inventories (issue 20).
    BenchMemory(xtask::bench_memory::BenchMemoryArgs),
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
    /// Install the Debian packages of the programs the tests run
    /// (xtask/src/provision.rs), as root; fails naming them otherwise.
    Provision {
        /// Only say what is missing; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Build the packages into target/dist: the agent's and the collector's
    /// .deb and .rpm, the agent's .msi and its macOS tarballs.
    Dist(xtask::dist::DistArgs),
    /// Build the packages, then install them on this machine (as root) and
    /// under Wine against a real collector, and purge them again. Changes
    /// /usr/bin, /etc/deskpulse and /var/lib: never beside `test`.
    TestPackages(xtask::dist::install_test::TestPackagesArgs),
    /// Run every fuzz target in fuzz/ for --seconds each, installing
    /// nightly and cargo-fuzz first when missing.
    Fuzz(xtask::fuzz::FuzzArgs),
    /// Check the dependencies' licences, bans and sources (deny.toml),
    /// installing cargo-deny first when missing.
    Deny,
    /// Check the dependencies against the RustSec advisories (needs the
    /// network to fetch the advisory database).
    AuditDeps,
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
        Task::Test { skip_windows, args } => {
            xtask::provision::ensure_test_tools(xtask::provision::WithoutRoot::Warn)?;
            cargo(&root, &["build", "--workspace", "--bins"])?;
            // Wine runs for the Linux tests too, with the agent's .exe
            // built, so an end-to-end test can drive the Windows agent.
            let server = if skip_windows {
                None
            } else {
                xtask::wine::build(&root)?;
                Some(start_wine(&root)?)
            };
            // Every test binary runs even after one fails, so a run shows
            // all of its failures, not only the first binary's.
            let mut test = vec!["test", "--workspace", "--no-fail-fast"];
            test.extend(args.iter().map(String::as_str));
            let mut linux = cargo_command(&root, &test);
            if let Some(server) = &server {
                let wine = server.wine();
                linux
                    .envs(wine.env())
                    .env(xtask::wine::PREFIX_VAR, wine.prefix());
            }
            run_cargo(linux, &test)?;
            match &server {
                Some(server) => xtask::wine::test(&root, server, &[]),
                None => Ok(()),
            }
        }
        Task::TestWindows { args } => {
            let server = start_wine(&root)?;
            xtask::wine::test(&root, &server, &args)
        }
        Task::Wine => {
            let server = start_wine(&root)?;
            for (name, value) in server.wine().env() {
                println!("export {name}={}", shell_quote(&value.to_string_lossy()));
            }
            server.leave_running();
            Ok(())
        }
        Task::Pg => xtask::pg::ensure_running(),
        Task::Provision { check } => xtask::provision::run(check),
        Task::Dist(args) => xtask::dist::run(&root, &args).map(drop),
        Task::TestPackages(args) => xtask::dist::install_test::run(&root, &args),
        Task::CheckTargets(args) => xtask::check_targets::run(&root, &args),
        Task::BenchAgent(args) => xtask::bench_agent::run(&root, &args),
        Task::BenchMemory(args) => xtask::bench_memory::run(&root, &args),
        Task::Loadgen(args) => xtask::loadgen::run(&root, &args),
        Task::LoadgenWorker => xtask::loadgen::run_worker(),
        Task::LoadgenAnchors => xtask::loadgen::run_anchors(),
        Task::Fuzz(args) => xtask::fuzz::run(&root, &args),
        Task::Deny => xtask::deps::deny(&root),
        Task::AuditDeps => xtask::deps::audit(&root),
    }
}

fn start_wine(root: &Path) -> Result<xtask::wine::WineServer> {
    xtask::wine::prepare(&xtask::target_dir(root))?.start()
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    run_cargo(cargo_command(root, args), args)
}

fn cargo_command(root: &Path, args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root);
    cmd
}

fn run_cargo(mut cmd: Command, args: &[&str]) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `text` in single quotes for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
