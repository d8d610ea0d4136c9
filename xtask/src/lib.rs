//! Development tasks behind `cargo xtask …`, as a library so tests can call
//! them.
//!
//! # Layout
//! - [`bench_agent`]: what the agent costs, beside the peer agents.
//! - [`bench_memory`]: what hostile inventories cost the collector.
//! - [`check_targets`]: clippy for the agent on Windows and macOS targets,
//!   provisioning the cross tools it needs.
//! - [`codegen`]: compiles `proto/` into the committed Rust.
//! - [`demo`]: builds everything and shows a collector, an agent and the CLI
//!   working together on loopback.
//! - [`deps`]: the dependency policy (`deny.toml`) through cargo-deny:
//!   licences, bans and sources (`deny`), advisories (`audit-deps`).
//! - [`dist`]: the packages (.deb, .rpm, .msi, macOS tarballs), and their
//!   install tests (`test-packages`).
//! - [`fuzz`]: the cargo-fuzz targets in `fuzz/`, each run for N seconds.
//! - [`loadgen`]: simulates a fleet of agents against a collector and
//!   measures it.
//! - [`pg`]: starts a local PostgreSQL for the tests when none answers.
//! - [`provision`]: the programs the tests run, and their Debian packages,
//!   installed as root (`provision`, and first thing in `test`).
//! - [`wine`]: a Wine prefix for our Windows binaries, and the agent's
//!   tests run in it (`test-windows`).

pub mod bench_agent;
pub mod bench_memory;
pub mod check_targets;
pub mod codegen;
pub mod demo;
pub mod deps;
pub mod dist;
pub mod fuzz;
pub mod loadgen;
pub mod pg;
pub mod provision;
pub mod wine;

use std::path::{Path, PathBuf};

/// The workspace root, found from this crate's manifest dir.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target dir: `CARGO_TARGET_DIR`, or `target/` in the workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}
