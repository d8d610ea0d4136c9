//! The agent for macOS: a tarball per architecture
//! (`deskpulse-agent-VERSION-TRIPLE.tar.gz`) with the binary, the launchd
//! plist that `deskpulse-agent service install` writes, the default
//! config, and the `pkgbuild` recipe of `packaging/macos/` (a `.pkg` cannot
//! be built on Linux).
//!
//! The binary is cross-built with cargo-zigbuild (the venv of
//! `check-targets`). zig brings macOS's libSystem but no Apple SDK, so the
//! frameworks the agent links (CoreFoundation, IOKit, Security) are given
//! to the linker as text stubs listing the symbols it uses
//! ([`framework_stubs`]): a stub only names what the real framework
//! exports, which the Mac's dynamic loader then binds.

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
    crate::check_targets::add_rustup_targets(&[target])?;
    let venv_bin = crate::check_targets::ensure_zigbuild(&layout.target_dir)?;
    let stubs = framework_stubs(layout)?;
    let mut build = crate::check_targets::zigbuild_command(&venv_bin)?;
    build
        .args(["build", "--profile", AGENT_PROFILE, "-p", "deskpulse-agent"])
        .args(["--bin", "deskpulse-agent", "--target", target.triple()])
        .env(
            rustflags_var(target),
            format!("-C link-arg=-F{}", stubs.display()),
        )
        .current_dir(&layout.root);
    eprintln!("dist: cargo zigbuild for {}", target.triple());
    run_checked(&mut build)
}

/// `CARGO_TARGET_<TRIPLE>_RUSTFLAGS`: flags for this target only, so the
/// host's build scripts are not rebuilt with them.
fn rustflags_var(target: CrossTarget) -> String {
    format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        target.triple().to_uppercase().replace('-', "_")
    )
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

/// A framework the agent links, and the symbols of it that the agent's
/// dependencies use (those the linker asked for; one per line in
/// `packaging/macos/frameworks/NAME.symbols`).
struct Framework {
    name: &'static str,
    install_name: &'static str,
}

const FRAMEWORKS: [Framework; 3] = [
    Framework {
        name: "CoreFoundation",
        install_name: "/System/Library/Frameworks/CoreFoundation.framework/Versions/A/CoreFoundation",
    },
    Framework {
        name: "IOKit",
        install_name: "/System/Library/Frameworks/IOKit.framework/Versions/A/IOKit",
    },
    Framework {
        name: "Security",
        install_name: "/System/Library/Frameworks/Security.framework/Versions/A/Security",
    },
];

/// Writes `NAME.framework/NAME.tbd` for each framework under
/// `target/macos-frameworks` and returns that dir (for `-F`).
fn framework_stubs(layout: &Layout) -> Result<PathBuf> {
    let dir = layout.target_dir.join("macos-frameworks");
    let symbols_dir = super::linux::packaging_file(&layout.root, "macos/frameworks");
    for framework in FRAMEWORKS {
        let list = symbols_dir.join(format!("{}.symbols", framework.name));
        let text = std::fs::read_to_string(&list)
            .with_context(|| format!("reading {}", list.display()))?;
        let symbols: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        if symbols.is_empty() {
            bail!("{} lists no symbol", list.display());
        }
        write_file(
            &dir.join(format!("{0}.framework/{0}.tbd", framework.name)),
            tbd(framework.install_name, &symbols).as_bytes(),
        )?;
    }
    Ok(dir)
}

/// A text-based stub (TAPI v4) of a dylib for both Mac architectures.
fn tbd(install_name: &str, symbols: &[&str]) -> String {
    let targets = "[ x86_64-macos, arm64-macos ]";
    format!(
        "--- !tapi-tbd\ntbd-version: 4\ntargets: {targets}\ninstall-name: '{install_name}'\nexports:\n  - targets: {targets}\n    symbols: [ {} ]\n...\n",
        symbols.join(", ")
    )
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

    #[test]
    fn stubs_name_the_framework_and_its_symbols() {
        let text = tbd("/S/IOKit", &["_IOServiceMatching", "_kIOMasterPortDefault"]);
        assert!(text.starts_with("--- !tapi-tbd\n"));
        assert!(text.contains("install-name: '/S/IOKit'"));
        assert!(text.contains("symbols: [ _IOServiceMatching, _kIOMasterPortDefault ]"));
    }
}
