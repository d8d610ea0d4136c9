//! `cargo xtask deny` and `cargo xtask audit-deps`: the dependency policy
//! in `deny.toml`, checked by cargo-deny (pinned, installed into
//! `target/dist-tools` when missing). `deny` checks licences, bans and
//! sources, which need nothing but `Cargo.lock` and the registry cache, and
//! runs in CI; `audit-deps` checks the RustSec advisories, whose database
//! it must fetch, so it is run by hand where the network reaches it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::dist::Layout;
use crate::dist::tools::{CargoTool, cargo_tool_with};

/// The cargo-deny release checked here.
pub const CARGO_DENY: CargoTool = CargoTool {
    name: "cargo-deny",
    version: "0.20.2",
};

/// cargo-deny's own release profile asks for fat LTO and one codegen unit:
/// minutes more to build for a tool that runs for seconds.
pub const CHEAP_RELEASE: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
];

/// `cargo deny check licenses bans sources`.
pub fn deny(root: &Path) -> Result<()> {
    run_deny(root, &["licenses", "bans", "sources"])
}

/// `cargo deny check advisories`: fetches the advisory database first.
pub fn audit(root: &Path) -> Result<()> {
    run_deny(root, &["advisories"]).context(
        "the advisory check needs the RustSec database from the network; \
         see SECURITY.md (Dependencies)",
    )
}

fn run_deny(root: &Path, checks: &[&str]) -> Result<()> {
    let layout = Layout::new(root);
    let deny = cargo_tool_with(&layout, CARGO_DENY, &CHEAP_RELEASE)?;
    let status = Command::new(&deny)
        .args([
            "deny",
            "--log-level",
            "error",
            "check",
            "--hide-inclusion-graph",
        ])
        .args(checks)
        .current_dir(root)
        .status()
        .with_context(|| format!("running {}", deny.display()))?;
    if !status.success() {
        bail!("cargo deny check {} failed ({status})", checks.join(" "));
    }
    Ok(())
}
