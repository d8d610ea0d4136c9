//! The agent's Windows installer: `deskpulse-agent.exe` built with the
//! `agent-release` profile for `x86_64-pc-windows-gnu` (mingw), a default
//! config for Windows, and `wixl -a x64` on
//! `packaging/msi/deskpulse-agent.wxs`.
//!
//! wixl (msitools 0.101) reads but drops a few WiX attributes, so msibuild
//! sets those columns afterwards, and each edit is read back (msibuild
//! exits 0 even when a query fails):
//! - the enrollment action's `HideTarget` bit, so its command line, which
//!   holds the token, stays out of the installer's log;
//! - the config's component `Permanent` and `NeverOverwrite`: kept on
//!   uninstall, an admin's edits kept on upgrade;
//! - same-version upgrades (`Upgrade` row inclusive of this version), so
//!   installing a rebuilt package over the installed one replaces it rather
//!   than adding a second product with the same service;
//! - the `ENROLL_*` properties as secure properties, passed to the
//!   elevated part of a managed install;
//! - `RemoveExistingProducts` right after `InstallValidate` (wixl puts it
//!   after `InstallFiles`): an upgrade removes the old product whole, then
//!   installs the new one. Under Wine the later placement left the exe
//!   behind at the next uninstall.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::linux::VERSION;
use super::tools::{self, MINGW_STRIP, MSIBUILD, WIXL};
use super::{AGENT_PROFILE, Artifact, Layout, WINDOWS_TARGET, artifact, cargo, output};

/// The package's file name.
pub fn msi_name() -> String {
    format!("deskpulse-agent-{VERSION}-x64.msi")
}

/// The `CustomAction` that enrolls, and the flag wixl leaves out.
const ENROLL_ACTION: &str = "EnrollAgent";
const HIDE_TARGET: u32 = 0x2000;
/// The config's component and its flags.
const CONFIG_COMPONENT: &str = "AgentConfig";
const PERMANENT: u32 = 0x10;
const NEVER_OVERWRITE: u32 = 0x80;
/// The upgrade row of older versions, and the bit that includes this one.
const UPGRADE_PROPERTY: &str = "WIX_UPGRADE_DETECTED";
const VERSION_MAX_INCLUSIVE: u32 = 0x200;
/// What `msiexec /i … PROP=value` passes on.
const ENROLL_PROPERTIES: [&str; 3] = ["ENROLL_URL", "ENROLL_TOKEN", "ENROLL_PIN"];

/// Builds `deskpulse-agent.exe` for Windows, installing the target and
/// mingw first when missing.
pub fn build(layout: &Layout) -> Result<()> {
    crate::wine::install_target()?;
    crate::check_targets::ensure_mingw()?;
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
            "--target",
            WINDOWS_TARGET,
        ],
    )
}

/// Stages the exe and the config, runs wixl and msibuild, and returns the
/// `.msi`.
pub fn package(layout: &Layout) -> Result<Artifact> {
    tools::debian_tools(&[WIXL, MSIBUILD, MINGW_STRIP])?;
    let stage = layout.stage_dir(AGENT_PROFILE, "deskpulse-agent-windows");
    let exe = super::stage_binary(
        &layout
            .profile_dir(AGENT_PROFILE, Some(WINDOWS_TARGET))
            .join("deskpulse-agent.exe"),
        &stage,
        MINGW_STRIP.program,
    )?;
    let config = stage.join("agent.toml");
    super::write_file(&config, windows_config_text().as_bytes())?;

    let msi = layout.out_dir().join(msi_name());
    let source = super::linux::packaging_file(&layout.root, "msi/deskpulse-agent.wxs");
    // wixl finds a Source only by a path relative to its working dir.
    super::run_checked(
        Command::new(WIXL.program)
            .args(["-a", "x64", "-D"])
            .arg(format!("Version={VERSION}"))
            .arg("-D")
            .arg(define("AgentExe", &exe)?)
            .arg("-D")
            .arg(define("AgentConfig", &config)?)
            .arg("-o")
            .arg(&msi)
            .arg(&source)
            .current_dir(&stage),
    )?;
    complete_tables(&msi)?;
    artifact(msi)
}

/// `NAME=FILE` with the file's name, relative to the stage wixl runs in.
fn define(name: &str, path: &Path) -> Result<String> {
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", path.display()))?;
    Ok(format!("{name}={file}"))
}

/// The agent's default config for Windows, as `service install` writes it
/// on a standard machine, with Windows line ends for Notepad. The state
/// dir is written out rather than left to the agent's default: under Wine
/// a service sees `%ProgramData%` as `C:\users\Public`, not the
/// `C:\ProgramData` of msiexec and the console, and would miss the
/// enrollment the installer made. (A machine whose ProgramData was moved
/// off `C:` needs `state_dir` edited.)
pub fn windows_config_text() -> String {
    let state_dir = Path::new(r"C:\ProgramData\Deskpulse\agent");
    deskpulse_agent::service::default_config_text(state_dir)
        .lines()
        .map(|line| format!("{line}\r\n"))
        .collect()
}

/// Sets what wixl left out (see the module doc), then reads it back.
fn complete_tables(msi: &Path) -> Result<()> {
    let action_type = cell(msi, "CustomAction", ENROLL_ACTION, "Type")?;
    let component = cell(msi, "Component", CONFIG_COMPONENT, "Attributes")?;
    let upgrade = row(msi, "Upgrade", UPGRADE_PROPERTY)?;
    let secure = cell(msi, "Property", "SecureCustomProperties", "Value")?;
    let remove_at = parse_number(&cell(
        msi,
        "InstallExecuteSequence",
        "InstallValidate",
        "Sequence",
    )?)? + 1;

    let action_type = parse_number(&action_type)? | HIDE_TARGET;
    let component = parse_number(&component)? | PERMANENT | NEVER_OVERWRITE;
    let upgrade_code = field(&upgrade, "UpgradeCode")?;
    let upgrade_max = field(&upgrade, "VersionMax")?;
    let upgrade_attributes = parse_number(&field(&upgrade, "Attributes")?)? | VERSION_MAX_INCLUSIVE;
    let mut secure: Vec<String> = secure.split(';').map(str::to_owned).collect();
    for property in ENROLL_PROPERTIES {
        if !secure.iter().any(|p| p == property) {
            secure.push(property.to_owned());
        }
    }
    let secure = secure.join(";");

    // Upgrade's columns up to Attributes are its key, which SQL here cannot
    // update: the row is deleted and inserted again.
    let queries = [
        format!("UPDATE CustomAction SET Type = {action_type} WHERE Action = '{ENROLL_ACTION}'"),
        format!(
            "UPDATE Component SET Attributes = {component} WHERE Component = '{CONFIG_COMPONENT}'"
        ),
        format!("DELETE FROM Upgrade WHERE ActionProperty = '{UPGRADE_PROPERTY}'"),
        format!(
            "INSERT INTO Upgrade (UpgradeCode, VersionMax, Attributes, ActionProperty) VALUES ('{upgrade_code}', '{upgrade_max}', {upgrade_attributes}, '{UPGRADE_PROPERTY}')"
        ),
        format!("UPDATE Property SET Value = '{secure}' WHERE Property = 'SecureCustomProperties'"),
        format!(
            "UPDATE InstallExecuteSequence SET Sequence = {remove_at} WHERE Action = 'RemoveExistingProducts'"
        ),
    ];
    // One msibuild per query, so that a failure names its query.
    for query in &queries {
        let out = Command::new(MSIBUILD.program)
            .arg(msi)
            .arg("-q")
            .arg(query)
            .output()
            .with_context(|| format!("running {}", MSIBUILD.program))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("failed") {
            bail!(
                "msibuild could not run `{query}` on {}: {}",
                msi.display(),
                super::last_line(&stderr)
            );
        }
    }

    let checks = [
        (
            cell(msi, "CustomAction", ENROLL_ACTION, "Type")?,
            action_type.to_string(),
        ),
        (
            cell(msi, "Component", CONFIG_COMPONENT, "Attributes")?,
            component.to_string(),
        ),
        (
            field(&row(msi, "Upgrade", UPGRADE_PROPERTY)?, "Attributes")?,
            upgrade_attributes.to_string(),
        ),
        (
            cell(msi, "Property", "SecureCustomProperties", "Value")?,
            secure,
        ),
        (
            cell(
                msi,
                "InstallExecuteSequence",
                "RemoveExistingProducts",
                "Sequence",
            )?,
            remove_at.to_string(),
        ),
    ];
    for (found, wanted) in checks {
        if found != wanted {
            bail!(
                "msibuild left {} with {found} where {wanted} was set",
                msi.display()
            );
        }
    }
    Ok(())
}

/// One table as `msiinfo export` prints it: the column names, then rows of
/// tab-separated cells (two lines of types and keys in between).
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn table(msi: &Path, name: &str) -> Result<Table> {
    let text = output(Command::new("msiinfo").args(["export"]).arg(msi).arg(name))?;
    parse_table(&text).with_context(|| format!("reading table {name} of {}", msi.display()))
}

fn parse_table(text: &str) -> Result<Table> {
    let mut lines = text.lines();
    let columns = lines
        .next()
        .context("no header line")?
        .split('\t')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .skip(2)
        .filter(|line| !line.is_empty())
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect();
    Ok(Table { columns, rows })
}

/// The row whose cells include `key` (an id or an ActionProperty), as
/// column → cell pairs.
fn row(msi: &Path, table_name: &str, key: &str) -> Result<Vec<(String, String)>> {
    let table = table(msi, table_name)?;
    let row = table
        .rows
        .iter()
        .find(|row| row.iter().any(|cell| cell == key))
        .with_context(|| format!("{table_name} has no row {key} in {}", msi.display()))?;
    Ok(table
        .columns
        .iter()
        .cloned()
        .zip(row.iter().cloned())
        .collect())
}

fn field(row: &[(String, String)], column: &str) -> Result<String> {
    row.iter()
        .find(|(name, _)| name == column)
        .map(|(_, value)| value.clone())
        .with_context(|| format!("no column {column}"))
}

fn cell(msi: &Path, table_name: &str, key: &str, column: &str) -> Result<String> {
    field(&row(msi, table_name, key)?, column)
}

fn parse_number(text: &str) -> Result<u32> {
    text.trim()
        .parse()
        .with_context(|| format!("{text:?} is not a number"))
}

/// Where the `.msi` is: for the install test.
pub fn msi_path(layout: &Layout) -> PathBuf {
    layout.out_dir().join(msi_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msiinfo_tables_parse_to_rows_by_column() {
        let text = "Action\tType\tSource\tTarget\tExtendedType\ns72\ti2\tS72\tS255\tI4\nCustomAction\tAction\nEnrollAgent\t3154\tAgentExe\tenroll --token \"[ENROLL_TOKEN]\"\t\n";
        let table = parse_table(text).expect("parses");
        assert_eq!(table.columns[1], "Type");
        assert_eq!(table.rows.len(), 1);
        assert_eq!(table.rows[0][1], "3154");
    }

    #[test]
    fn the_windows_config_names_the_state_dir_with_windows_line_ends() {
        let text = windows_config_text();
        assert!(text.ends_with("\r\n") && !text.contains("\n\n"), "{text:?}");
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(
            parsed.get("state_dir").and_then(toml::Value::as_str),
            Some(r"C:\ProgramData\Deskpulse\agent")
        );
    }
}
