//! The agent for macOS: a tarball per architecture
//! (`deskpulse-agent-VERSION-TRIPLE.tar.gz`) with the binary, the launchd
//! plist that `deskpulse-agent service install` writes, the default
//! config, and the `pkgbuild` recipe of `packaging/macos/` (a `.pkg` cannot
//! be built on Linux).
//!
//! The binary is cross-built with cargo-zigbuild (the venv of
//! `check-targets`). zig brings macOS's libSystem but not the frameworks
//! the agent links (CoreFoundation, IOKit, Security), so linking needs a
//! macOS SDK named by `SDKROOT` (cargo-zigbuild then passes its
//! frameworks to zig). Our Linux machines have none: there `dist` leaves
//! macOS out unless asked (`--only macos`), and then says what is missing
//! in one line. `--skip-build` packs binaries built elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use deskpulse_agent::service::{Installation, launchd};

use super::linux::VERSION;
use super::{AGENT_PROFILE, Artifact, Layout, artifact, run_checked, write_file};
use crate::check_targets::CrossTarget;

/// Where the `.pkg` (and a by-hand install) puts the binary: on every
/// user's PATH, so employees can run `report-issue` and `status`.
pub const BINARY: &str = "/usr/local/bin/deskpulse-agent";
/// The agent's macOS defaults (the agent's constants are compiled for the
/// OS they run on; xtask runs on Linux).
pub const CONFIG_FILE: &str = "/Library/Application Support/Deskpulse/agent.toml";
pub const STATE_DIR: &str = "/Library/Application Support/Deskpulse/agent";

const TARGETS: [CrossTarget; 2] = [CrossTarget::MacosArm, CrossTarget::MacosIntel];

/// The installation the plist describes.
pub fn installation() -> Installation {
    Installation {
        binary: PathBuf::from(BINARY),
        config_file: PathBuf::from(CONFIG_FILE),
        state_dir: PathBuf::from(STATE_DIR),
    }
}

/// The launchd plist, as `service install` on a Mac writes it.
pub fn plist_text() -> Result<Vec<u8>> {
    launchd::plist_xml(&installation()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The tarball's name for `triple`.
pub fn tarball_name(triple: &str) -> String {
    format!("deskpulse-agent-{VERSION}-{triple}.tar.gz")
}

/// Builds (unless `skip_build`) and packs both architectures.
pub fn package(layout: &Layout, skip_build: bool) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::new();
    for target in TARGETS {
        if !skip_build {
            build(layout, target)?;
        }
        artifacts.push(pack(layout, target)?);
    }
    Ok(artifacts)
}

fn build(layout: &Layout, target: CrossTarget) -> Result<()> {
    let Some(sdk) = std::env::var_os("SDKROOT").filter(|v| !v.is_empty()) else {
        bail!(
            "linking the macOS agent needs Apple's frameworks: set SDKROOT to a macOS SDK (none on this machine; `cargo xtask check-targets` lints the macOS code without one), or pack binaries built on a Mac with --skip-build"
        );
    };
    if !Path::new(&sdk).join("System/Library/Frameworks").is_dir() {
        bail!(
            "SDKROOT={} holds no System/Library/Frameworks",
            Path::new(&sdk).display()
        );
    }
    crate::check_targets::add_rustup_targets(&[target])?;
    let venv_bin = crate::check_targets::ensure_zigbuild(&layout.target_dir)?;
    let mut build = crate::check_targets::zigbuild_command(&venv_bin)?;
    build
        .args(["build", "--profile", AGENT_PROFILE, "-p", "deskpulse-agent"])
        .args(["--bin", "deskpulse-agent", "--target", target.triple()])
        .current_dir(&layout.root);
    eprintln!("dist: cargo zigbuild for {}", target.triple());
    run_checked(&mut build)
}

/// The tarball: a directory named after it, holding the binary, the plist,
/// the default config, the pkgbuild recipe and its postinstall script.
fn pack(layout: &Layout, target: CrossTarget) -> Result<Artifact> {
    let name = tarball_name(target.triple());
    let dir_name = name.trim_end_matches(".tar.gz");
    let stage = layout
        .stage_dir(AGENT_PROFILE, "deskpulse-agent-macos")
        .join(dir_name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let binary = layout
        .profile_dir(AGENT_PROFILE, Some(target.triple()))
        .join("deskpulse-agent");
    std::fs::create_dir_all(&stage)?;
    std::fs::copy(&binary, stage.join("deskpulse-agent")).with_context(|| {
        format!(
            "copying {} (build it first, or drop --skip-build)",
            binary.display()
        )
    })?;
    write_file(
        &stage.join(format!("{}.plist", launchd::LABEL)),
        &plist_text()?,
    )?;
    write_file(
        &stage.join("agent.toml"),
        deskpulse_agent::service::default_config_text(Path::new(STATE_DIR)).as_bytes(),
    )?;
    write_file(&stage.join("VERSION"), format!("{VERSION}\n").as_bytes())?;
    let packaging = super::linux::packaging_file(&layout.root, "macos");
    copy_executable(&packaging.join("build-pkg.sh"), &stage.join("build-pkg.sh"))?;
    copy_executable(
        &packaging.join("scripts/postinstall"),
        &stage.join("scripts/postinstall"),
    )?;

    let tarball = layout.out_dir().join(&name);
    let parent = stage
        .parent()
        .context("the stage has a parent dir")?
        .to_path_buf();
    run_checked(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&parent)
            .arg(dir_name),
    )?;
    artifact(tarball)
}

fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plist_runs_the_installed_binary_with_the_mac_config() {
        let text = String::from_utf8(plist_text().expect("plist")).expect("utf-8");
        assert!(
            text.contains("<string>/usr/local/bin/deskpulse-agent</string>"),
            "{text}"
        );
        assert!(
            text.contains("<string>/Library/Application Support/Deskpulse/agent.toml</string>"),
            "{text}"
        );
    }
}
