//! The packaging tools, installed when missing: cargo-deb and
//! cargo-generate-rpm at pinned versions (`cargo install --locked` into
//! `target/dist-tools`, so that a new release cannot change a package
//! unseen), and Debian's packages for the rest, through apt-get as root
//! (otherwise a one-line error names the command).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use super::{Layout, run_checked};

/// A cargo subcommand installed from crates.io.
#[derive(Debug, Clone, Copy)]
pub struct CargoTool {
    pub name: &'static str,
    pub version: &'static str,
}

/// The versions checked here.
pub const CARGO_DEB: CargoTool = CargoTool {
    name: "cargo-deb",
    version: "3.8.0",
};
pub const CARGO_GENERATE_RPM: CargoTool = CargoTool {
    name: "cargo-generate-rpm",
    version: "0.21.1",
};

/// A program from a Debian package.
#[derive(Debug, Clone, Copy)]
pub struct DebianTool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const WIXL: DebianTool = DebianTool {
    program: "wixl",
    package: "wixl",
};
/// msibuild edits the tables wixl cannot express (see `msi`).
pub const MSIBUILD: DebianTool = DebianTool {
    program: "msibuild",
    package: "msitools",
};
pub const RPM: DebianTool = DebianTool {
    program: "rpm",
    package: "rpm",
};
pub const PLISTUTIL: DebianTool = DebianTool {
    program: "plistutil",
    package: "libplist-utils",
};
pub const SYSTEMD_ANALYZE: DebianTool = DebianTool {
    program: "systemd-analyze",
    package: "systemd",
};
pub const STRIP: DebianTool = DebianTool {
    program: "strip",
    package: "binutils",
};
pub const MINGW_STRIP: DebianTool = DebianTool {
    program: "x86_64-w64-mingw32-strip",
    package: "binutils-mingw-w64-x86-64",
};

/// The path of `tool`, installed into `target/dist-tools` first when it is
/// missing or another version.
pub fn cargo_tool(layout: &Layout, tool: CargoTool) -> Result<PathBuf> {
    cargo_tool_with(layout, tool, &[])
}

/// `cargo_tool`, with `env` set for `cargo install` (e.g. a tool's own
/// release profile made cheaper to build).
pub fn cargo_tool_with(layout: &Layout, tool: CargoTool, env: &[(&str, &str)]) -> Result<PathBuf> {
    let root = layout.target_dir.join("dist-tools");
    let bin = root.join("bin").join(tool.name);
    if reports_version(&bin, tool.version) {
        return Ok(bin);
    }
    eprintln!(
        "dist: installing {} {} into {}",
        tool.name,
        tool.version,
        root.display()
    );
    let mut install = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    install
        .args([
            "install",
            "--locked",
            "--quiet",
            "--version",
            tool.version,
            "--root",
        ])
        .arg(&root)
        .arg(tool.name)
        // Its build must not land in (and lock) the workspace's target dir.
        .env_remove("CARGO_TARGET_DIR")
        .envs(env.iter().copied());
    run_checked(&mut install)?;
    if !reports_version(&bin, tool.version) {
        bail!(
            "{} does not report version {} after installing it",
            bin.display(),
            tool.version
        );
    }
    Ok(bin)
}

/// True when `program --version` runs and names `version`.
fn reports_version(program: &Path, version: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|word| word == version)
        })
}

/// Installs the Debian packages of the programs not on PATH.
pub fn debian_tools(tools: &[DebianTool]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|tool| !on_path(tool.program))
        .map(|tool| tool.package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!("packaging tools are missing: run `sudo apt-get update && sudo {install}`");
    }
    eprintln!("dist: {install}");
    for args in [
        vec!["update", "-qq"],
        [
            &["install", "-y", "-qq", "--no-install-recommends"][..],
            &missing[..],
        ]
        .concat(),
    ] {
        run_checked(
            Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    for tool in tools {
        if !on_path(tool.program) {
            bail!(
                "{} is installed but {} is not on PATH",
                tool.package,
                tool.program
            );
        }
    }
    Ok(())
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[allow(unsafe_code)] // geteuid(2) has no arguments and cannot fail
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
