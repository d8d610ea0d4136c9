//! The Linux packages: the binaries built and staged with what the agent
//! generates (its systemd unit and default config), then a `.deb` by
//! cargo-deb and an `.rpm` by cargo-generate-rpm for the agent and for the
//! collector (with the `deskpulse` CLI). The tools read the crates'
//! `[package.metadata.deb]` and `[package.metadata.generate-rpm]`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use deskpulse_agent::service::{self, Installation};

use super::tools::{self, CARGO_DEB, CARGO_GENERATE_RPM, STRIP};
use super::{AGENT_PROFILE, Artifact, Kind, Layout, SERVER_PROFILE, artifact, cargo};

/// Where the agent's package installs it.
pub const AGENT_BINARY: &str = "/usr/bin/deskpulse-agent";
/// The packages' names, as in the crates' metadata.
pub const AGENT_PACKAGE: &str = "deskpulse-agent";
pub const COLLECTOR_PACKAGE: &str = "deskpulse-collector";
/// The packages' version and revision: the workspace's version, first
/// packaging of it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = "1";

/// The agent as its packages install it: the unit and the default config
/// are generated from this, as `service install` would write them.
pub fn agent_installation() -> Installation {
    Installation {
        binary: PathBuf::from(AGENT_BINARY),
        config_file: PathBuf::from(deskpulse_agent::config::DEFAULT_CONFIG_FILE),
        state_dir: PathBuf::from(deskpulse_agent::config::DEFAULT_STATE_DIR),
    }
}

/// Builds the Linux binaries: the agent alone (no feature unification with
/// the collector's dependencies), then the collector and the CLI.
pub fn build(layout: &Layout) -> Result<()> {
    cargo(
        &layout.root,
        &[
            "build",
            "--profile",
            AGENT_PROFILE,
            "-p",
            "deskpulse-agent",
            "--bin",
            "deskpulse-agent",
        ],
    )?;
    cargo(
        &layout.root,
        &["build", "--release", "-p", "deskpulse-collector", "--bins"],
    )
}

/// Stages the files and builds the `.deb`s and/or `.rpm`s asked for.
pub fn package(layout: &Layout, kinds: &[Kind]) -> Result<Vec<Artifact>> {
    tools::debian_tools(&[STRIP])?;
    stage_agent(layout)?;
    stage_collector(layout)?;
    let out = layout.out_dir();
    let mut artifacts = Vec::new();
    if kinds.contains(&Kind::Deb) {
        let cargo_deb = tools::cargo_tool(layout, CARGO_DEB)?;
        for (package, profile) in [
            (AGENT_PACKAGE, AGENT_PROFILE),
            (COLLECTOR_PACKAGE, SERVER_PROFILE),
        ] {
            let path = out.join(deb_name(package));
            super::run_checked(
                Command::new(&cargo_deb)
                    .args(["--no-build", "--no-strip", "--quiet", "-p", package])
                    .args(["--profile", profile, "--deb-revision", REVISION, "-o"])
                    .arg(&path)
                    .current_dir(&layout.root),
            )?;
            artifacts.push(artifact(path)?);
        }
    }
    if kinds.contains(&Kind::Rpm) {
        let generate_rpm = tools::cargo_tool(layout, CARGO_GENERATE_RPM)?;
        for (package, crate_dir, profile) in [
            (AGENT_PACKAGE, "agent", AGENT_PROFILE),
            (COLLECTOR_PACKAGE, "collector", SERVER_PROFILE),
        ] {
            let path = out.join(rpm_name(package));
            // Run from the workspace root: the metadata's relative paths
            // are the root's (packaging/...), and "target/release/" is the
            // profile's dir under --target-dir.
            super::run_checked(
                Command::new(&generate_rpm)
                    .args(["generate-rpm", "-p", crate_dir, "--profile", profile])
                    .arg("--target-dir")
                    .arg(&layout.target_dir)
                    .arg("-o")
                    .arg(&path)
                    .current_dir(&layout.root),
            )?;
            artifacts.push(artifact(path)?);
        }
    }
    Ok(artifacts)
}

/// `deskpulse-agent_0.1.0-1_amd64.deb`.
pub fn deb_name(package: &str) -> String {
    format!("{package}_{VERSION}-{REVISION}_amd64.deb")
}

/// `deskpulse-agent-0.1.0-1.x86_64.rpm`.
pub fn rpm_name(package: &str) -> String {
    format!("{package}-{VERSION}-{REVISION}.x86_64.rpm")
}

/// The agent's stage: the binary, its unit and its default config.
fn stage_agent(layout: &Layout) -> Result<PathBuf> {
    let stage = layout.stage_dir(AGENT_PROFILE, AGENT_PACKAGE);
    super::stage_binary(
        &layout
            .profile_dir(AGENT_PROFILE, None)
            .join("deskpulse-agent"),
        &stage,
        STRIP.program,
    )?;
    let installation = agent_installation();
    super::write_file(
        &stage.join(service::systemd::unit_name()),
        service::systemd::unit_file(&installation).as_bytes(),
    )?;
    super::write_file(
        &stage.join("agent.toml"),
        service::default_config_text(&installation.state_dir).as_bytes(),
    )?;
    Ok(stage)
}

/// The collector's stage: its two binaries, stripped (the release profile
/// keeps symbols for profiling).
fn stage_collector(layout: &Layout) -> Result<PathBuf> {
    let stage = layout.stage_dir(SERVER_PROFILE, COLLECTOR_PACKAGE);
    let built = layout.profile_dir(SERVER_PROFILE, None);
    for binary in ["deskpulse-collector", "deskpulse"] {
        super::stage_binary(&built.join(binary), &stage, STRIP.program)?;
    }
    Ok(stage)
}

/// The packaging files of the repository (`packaging/...`).
pub fn packaging_file(root: &Path, relative: &str) -> PathBuf {
    root.join("packaging").join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_follow_each_format() {
        assert_eq!(
            deb_name("deskpulse-agent"),
            format!("deskpulse-agent_{VERSION}-1_amd64.deb")
        );
        assert_eq!(
            rpm_name("deskpulse-collector"),
            format!("deskpulse-collector-{VERSION}-1.x86_64.rpm")
        );
    }

    #[test]
    fn the_packaged_unit_runs_the_installed_binary_with_the_default_config() {
        let unit = service::systemd::unit_file(&agent_installation());
        assert!(
            unit.contains(
                "ExecStart=/usr/bin/deskpulse-agent run --config /etc/deskpulse/agent.toml"
            ),
            "{unit}"
        );
        assert!(
            unit.contains("ReadWritePaths=/var/lib/deskpulse-agent"),
            "{unit}"
        );
    }

    /// The collector's default config must stay in step with its keys: an
    /// unknown key stops `serve`.
    #[test]
    fn the_packaged_collector_config_resolves() {
        let root = crate::workspace_root();
        let flags = deskpulse_collector::config::ServeFlags {
            config: Some(packaging_file(&root, "collector/collector.toml")),
            ..Default::default()
        };
        let env = std::collections::HashMap::<String, String>::new();
        let config = deskpulse_collector::config::resolve_serve(&flags, &env)
            .expect("packaging/collector/collector.toml resolves");
        assert_eq!(config.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(
            config.store.data_dir,
            PathBuf::from(deskpulse_collector::config::DEFAULT_DATA_DIR)
        );
    }
}
