//! `cargo xtask dist`: the packages that install Deskpulse as a native
//! service (issue 18), built into `target/dist/`:
//! - Linux: the agent built alone with the `agent-release` profile (small,
//!   stripped; alone so that no feature of the collector's dependencies is
//!   unified into it), the collector and the `deskpulse` CLI with
//!   `--release`, stripped here; a `.deb` (cargo-deb) and an `.rpm`
//!   (cargo-generate-rpm) of each ([`linux`]);
//! - Windows: the agent's `.msi`, built by `wixl` from
//!   `packaging/msi/deskpulse-agent.wxs` ([`msi`]);
//! - macOS: a tarball per architecture with the binary, the launchd plist
//!   and a `pkgbuild` recipe ([`macos`]); only with `--only macos`, since
//!   linking needs an Apple SDK (`SDKROOT`), or with `--skip-build` to pack
//!   binaries built on a Mac.
//!
//! The packaging tools' metadata lives where they look for it: the crates'
//! `[package.metadata.deb]` and `[package.metadata.generate-rpm]`, with the
//! maintainer scripts, the collector's unit and default config under
//! `packaging/`. What the agent itself defines (its systemd unit, its
//! launchd plist, its default config) is generated from the agent's
//! library, so a package ships exactly what `deskpulse-agent service
//! install` would write. Generated files and stripped binaries are staged in
//! `<profile dir>/dist/<package>/`, which both tools name
//! `target/release/dist/<package>/` (their prefix for the build profile's
//! output dir).
//!
//! The tools are provisioned as `check-targets` provisions its own:
//! cargo-deb and cargo-generate-rpm at pinned versions with `cargo install
//! --locked` into `target/dist-tools`, wixl, msitools and rpm from Debian's
//! packages when running as root.
//!
//! `cargo xtask test-packages` installs what this builds ([`install_test`]).

pub mod install_test;
pub mod linux;
pub mod macos;
pub mod msi;
pub mod tools;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The agent's size-optimised profile (see the workspace Cargo.toml).
pub const AGENT_PROFILE: &str = "agent-release";
/// The collector's and the CLI's profile.
pub const SERVER_PROFILE: &str = "release";
/// The Windows target the `.msi` is built for.
pub const WINDOWS_TARGET: &str = crate::wine::TARGET;

/// What `dist` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    /// The agent's and the collector's `.deb`.
    Deb,
    /// The agent's and the collector's `.rpm`.
    Rpm,
    /// The agent's Windows installer.
    Msi,
    /// The agent's macOS tarballs.
    Macos,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Deb, Kind::Rpm, Kind::Msi, Kind::Macos];
    /// What `dist` builds unless told: macOS needs an Apple SDK to link
    /// ([`macos`]), which Linux machines lack.
    pub const DEFAULT: [Kind; 3] = [Kind::Deb, Kind::Rpm, Kind::Msi];
}

/// Options of `cargo xtask dist`.
#[derive(Debug, Clone, clap::Args)]
pub struct DistArgs {
    /// Build only these, comma separated [default: deb,rpm,msi; macos needs
    /// SDKROOT, or --skip-build with binaries built on a Mac].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub only: Vec<Kind>,
    /// Package the binaries already built instead of running cargo build.
    #[arg(long)]
    pub skip_build: bool,
}

impl DistArgs {
    /// The kinds asked for, [`Kind::DEFAULT`] when none was named.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = if self.only.is_empty() {
            Kind::DEFAULT.to_vec()
        } else {
            self.only.clone()
        };
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Where everything goes: the workspace, cargo's target dir, and the
/// output dir of the packages.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The workspace root.
    pub root: PathBuf,
    /// Cargo's target dir.
    pub target_dir: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            target_dir: std::path::absolute(crate::target_dir(root))
                .unwrap_or_else(|_| crate::target_dir(root)),
        }
    }

    /// The packages: `target/dist/`.
    pub fn out_dir(&self) -> PathBuf {
        self.target_dir.join("dist")
    }

    /// Cargo's output dir for `profile`, for `target` when cross-building.
    pub fn profile_dir(&self, profile: &str, target: Option<&str>) -> PathBuf {
        let dir = if profile == "dev" { "debug" } else { profile };
        match target {
            Some(target) => self.target_dir.join(target).join(dir),
            None => self.target_dir.join(dir),
        }
    }

    /// Where `package`'s generated files and stripped binaries are staged
    /// (`target/release/dist/PACKAGE/` in the tools' metadata).
    pub fn stage_dir(&self, profile: &str, package: &str) -> PathBuf {
        self.profile_dir(profile, None).join("dist").join(package)
    }
}

/// One package built, for the closing table.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Builds the packages asked for and prints them with their sizes.
pub fn run(root: &Path, args: &DistArgs) -> Result<Vec<Artifact>> {
    let layout = Layout::new(root);
    let kinds = args.kinds();
    let out = layout.out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let mut artifacts = Vec::new();

    let linux: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| matches!(k, Kind::Deb | Kind::Rpm))
        .collect();
    if !linux.is_empty() {
        if !args.skip_build {
            linux::build(&layout)?;
        }
        artifacts.extend(linux::package(&layout, &linux)?);
    }
    if kinds.contains(&Kind::Msi) {
        if !args.skip_build {
            msi::build(&layout)?;
        }
        artifacts.push(msi::package(&layout)?);
    }
    if kinds.contains(&Kind::Macos) {
        artifacts.extend(macos::package(&layout, args.skip_build)?);
    }

    print!("{}", sizes_table(&artifacts));
    println!(
        "dist: {} package(s) in {} ({:.0} s)",
        artifacts.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(artifacts)
}

/// `NAME  SIZE` lines, the binaries inside the packages included.
fn sizes_table(artifacts: &[Artifact]) -> String {
    let mut table = String::new();
    for artifact in artifacts {
        let name = artifact
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(table, "{name:<48} {:>10}", human_size(artifact.bytes));
    }
    table
}

/// `4.2 MiB`: the unit a package size is read in.
pub fn human_size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // sizes of a few MiB
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1.0 {
        format!("{mib:.2} MiB")
    } else {
        format!("{:.1} KiB", mib * 1024.0)
    }
}

/// An artifact from its path, with its size.
fn artifact(path: PathBuf) -> Result<Artifact> {
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("{} was not made", path.display()))?
        .len();
    Ok(Artifact { path, bytes })
}

/// `cargo ARGS` in the workspace, failing unless it succeeds.
fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(root);
    eprintln!("dist: cargo {}", args.join(" "));
    run_checked(&mut cmd)
}

/// Runs `cmd` with its output shown, failing unless it exits 0.
fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; on failure the error carries the last
/// line of its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            last_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last non-empty line of a program's message.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

/// `program arg arg` for messages.
fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Copies a built binary into the stage and strips it (a no-op for one the
/// profile stripped already).
fn stage_binary(from: &Path, to_dir: &Path, strip_program: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(to_dir).with_context(|| format!("creating {}", to_dir.display()))?;
    let name = from
        .file_name()
        .with_context(|| format!("{} has no file name", from.display()))?;
    let to = to_dir.join(name);
    std::fs::copy(from, &to).with_context(|| {
        format!(
            "copying {} (build it first, or drop --skip-build)",
            from.display()
        )
    })?;
    run_checked(Command::new(strip_program).arg(&to))?;
    Ok(to)
}

/// Writes `text` to `path`, creating its directory.
fn write_file(path: &Path, text: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_mib_or_kib() {
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.50 MiB");
        assert_eq!(human_size(2048), "2.0 KiB");
    }

    #[test]
    fn kinds_default_to_the_linux_and_windows_packages_deduplicated() {
        let args = DistArgs {
            only: vec![Kind::Msi, Kind::Deb, Kind::Msi],
            skip_build: false,
        };
        assert_eq!(args.kinds(), vec![Kind::Deb, Kind::Msi]);
        let all = DistArgs {
            only: vec![],
            skip_build: false,
        };
        assert_eq!(all.kinds(), Kind::DEFAULT.to_vec());
    }

    #[test]
    fn the_stage_is_under_the_profile_dir() {
        let layout = Layout {
            root: PathBuf::from("/w"),
            target_dir: PathBuf::from("/w/target"),
        };
        assert_eq!(
            layout.stage_dir(AGENT_PROFILE, "deskpulse-agent"),
            PathBuf::from("/w/target/agent-release/dist/deskpulse-agent")
        );
        assert_eq!(
            layout.profile_dir(AGENT_PROFILE, Some(WINDOWS_TARGET)),
            PathBuf::from("/w/target/x86_64-pc-windows-gnu/agent-release")
        );
    }
}
