//! Development tasks behind `cargo xtask …`, as a library so tests can call
//! them.
//!
//! # Layout
//! - [`bench_agent`]: what the agent costs, beside the peer agents.
//! - [`check_targets`]: clippy for the agent on Windows and macOS targets,
//!   provisioning the cross tools it needs.
//! - [`codegen`]: compiles `proto/` into the committed Rust.
//! - [`demo`]: builds everything and shows a collector, an agent and the CLI
//!   working together on loopback.
//! - [`loadgen`]: simulates a fleet of agents against a collector and
//!   measures it.
//! - [`pg`]: starts a local PostgreSQL for the tests when none answers.

pub mod bench_agent;
pub mod check_targets;
pub mod codegen;
pub mod demo;
pub mod loadgen;
pub mod pg;

use std::path::{Path, PathBuf};

/// The workspace root, found from this crate's manifest dir.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
