//! The agent's config: one typed struct, layered file < environment
//! (`DESKPULSE_AGENT_*`) < flags. Unknown file keys are errors. The
//! environment is read through [`Env`] so tests pass a map.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The state dir when nothing says otherwise (D9).
#[cfg(target_os = "linux")]
pub const DEFAULT_STATE_DIR: &str = "/var/lib/deskpulse-agent";
/// The state dir when nothing says otherwise (D9).
#[cfg(target_os = "macos")]
pub const DEFAULT_STATE_DIR: &str = "/Library/Application Support/Deskpulse/agent";
/// The state dir when nothing says otherwise (D9).
#[cfg(windows)]
pub const DEFAULT_STATE_DIR: &str = r"C:\ProgramData\Deskpulse\agent";
/// The state dir when nothing says otherwise (D9).
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub const DEFAULT_STATE_DIR: &str = "/var/lib/deskpulse-agent";

/// The config file read when no flag or variable names one (D9). It is
/// optional: without it every setting has its default.
#[cfg(target_os = "macos")]
pub const DEFAULT_CONFIG_FILE: &str = "/Library/Application Support/Deskpulse/agent.toml";
/// The config file read when no flag or variable names one (D9). It is
/// optional: without it every setting has its default. `%ProgramData%`
/// moves it ([`default_config_file`]).
#[cfg(windows)]
pub const DEFAULT_CONFIG_FILE: &str = r"C:\ProgramData\Deskpulse\agent.toml";
/// The config file read when no flag or variable names one (D9). It is
/// optional: without it every setting has its default.
#[cfg(not(any(target_os = "macos", windows)))]
pub const DEFAULT_CONFIG_FILE: &str = "/etc/deskpulse/agent.toml";

/// The default config file of this OS. On Windows it follows
/// `%ProgramData%`, which an image may have moved off `C:`.
pub fn default_config_file(vars: &dyn Env) -> PathBuf {
    match program_data(vars) {
        Some(data) => data.join("Deskpulse").join("agent.toml"),
        None => PathBuf::from(DEFAULT_CONFIG_FILE),
    }
}

/// The default state dir of this OS (D9), following `%ProgramData%` on
/// Windows.
pub fn default_state_dir(vars: &dyn Env) -> PathBuf {
    match program_data(vars) {
        Some(data) => data.join("Deskpulse").join("agent"),
        None => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

fn program_data(vars: &dyn Env) -> Option<PathBuf> {
    if cfg!(windows) {
        vars.var("ProgramData").map(PathBuf::from)
    } else {
        None
    }
}

/// Where `disk_usage` may look when the config does not say: the system's
/// program and data directories, where a full disk's space goes. Never
/// `/` or `/etc` whole; secret stores inside these are refused and skipped
/// whatever the roots (`catalog::SECRET_STORES`).
#[cfg(target_os = "macos")]
pub const DEFAULT_DISK_USAGE_ROOTS: &[&str] = &[
    "/Applications",
    "/Library",
    "/Users",
    "/opt",
    "/usr/local",
    "/private/var",
    "/private/tmp",
    "/var",
    "/tmp",
];
/// Where `disk_usage` may look when the config does not say: the whole
/// system drive (secret stores inside it are refused and skipped whatever
/// the roots, `catalog::SECRET_STORES`).
#[cfg(windows)]
pub const DEFAULT_DISK_USAGE_ROOTS: &[&str] = &["C:\\"];
/// Where `disk_usage` may look when the config does not say: the system's
/// program and data directories, where a full disk's space goes. Never
/// `/` or `/etc` whole; secret stores inside these are refused and skipped
/// whatever the roots (`catalog::SECRET_STORES`).
#[cfg(not(any(target_os = "macos", windows)))]
pub const DEFAULT_DISK_USAGE_ROOTS: &[&str] = &[
    "/usr", "/opt", "/var", "/home", "/tmp", "/srv", "/boot", "/data", "/mnt", "/media",
];

/// The most `disk_usage_roots` one agent takes.
const MAX_DISK_USAGE_ROOTS: usize = 64;

/// A full inventory every six hours by default.
pub const DEFAULT_INVENTORY_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// A health sample every minute by default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);

/// A config error: one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads environment variables.
pub trait Env {
    /// The value of `key`, if set and not empty.
    fn var(&self, key: &str) -> Option<String>;

    /// The config file to read when neither `--config` nor
    /// `DESKPULSE_AGENT_CONFIG` names one; `None` reads none.
    fn default_config_file(&self) -> Option<PathBuf>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }

    fn default_config_file(&self) -> Option<PathBuf> {
        Some(default_config_file(self))
    }
}

/// A fixed set of variables and no default config file: what tests pass.
impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }

    fn default_config_file(&self) -> Option<PathBuf> {
        None
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags shared by the commands that read config.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentFlags {
    /// A TOML config file; keys: state_dir, system_root, inventory_interval,
    /// health_interval, log_format, [spool] health_max_mib,
    /// inventory_max_mib, results_max_mib, and [health] watch_services,
    /// posture_interval, smart_interval, updates_interval,
    /// services_interval, and [diagnostics] enable, disable,
    /// http_check_allow_loopback, disk_usage_roots, and
    /// reporter_email_domain [env:
    /// DESKPULSE_AGENT_CONFIG] [default: /etc/deskpulse/agent.toml,
    /// %ProgramData%\Deskpulse\agent.toml or /Library/Application
    /// Support/Deskpulse/agent.toml, when it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the agent keeps its key, certificates and status [env:
    /// DESKPULSE_AGENT_STATE_DIR]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The root under which file-based sources are read (D13) [env:
    /// DESKPULSE_AGENT_SYSTEM_ROOT] [default: /]
    #[arg(long, value_name = "DIR")]
    pub system_root: Option<PathBuf>,
    /// How often to send a full inventory, e.g. 6h [env:
    /// DESKPULSE_AGENT_INVENTORY_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    pub inventory_interval: Option<String>,
    /// How often to send a health sample, e.g. 60s [env:
    /// DESKPULSE_AGENT_HEALTH_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Log format on stderr [env: DESKPULSE_AGENT_LOG_FORMAT]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The spool's bounds in the config file, in MiB.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    health_max_mib: Option<u64>,
    inventory_max_mib: Option<u64>,
    results_max_mib: Option<u64>,
}

/// `[health]` in the config file: the watched services and the slow
/// probes' intervals (D24).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    watch_services: Option<Vec<String>>,
    posture_interval: Option<String>,
    smart_interval: Option<String>,
    updates_interval: Option<String>,
    services_interval: Option<String>,
}

/// `[diagnostics]` in the config file: catalog ids switched on or off on
/// top of the default (every read-only diagnostic on, every state-changing
/// one off).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiagnosticsFile {
    enable: Option<Vec<String>>,
    disable: Option<Vec<String>>,
    http_check_allow_loopback: Option<bool>,
    disk_usage_roots: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    state_dir: Option<PathBuf>,
    system_root: Option<PathBuf>,
    inventory_interval: Option<String>,
    health_interval: Option<String>,
    log_format: Option<LogFormat>,
    spool: Option<SpoolFile>,
    health: Option<HealthFile>,
    diagnostics: Option<DiagnosticsFile>,
    reporter_email_domain: Option<String>,
}

/// The resolved agent config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The state dir.
    pub state_dir: PathBuf,
    /// The system root for file-based sources.
    pub system_root: PathBuf,
    /// Full inventory interval.
    pub inventory_interval: Duration,
    /// Health sample interval.
    pub health_interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// The spool's bound per class.
    pub spool_limits: crate::spool::Limits,
    /// Watched services and slow probe intervals.
    pub health: crate::collect::HealthSettings,
    /// The catalog ids this agent runs, in catalog order; the agent's own
    /// allowlist (D25), whatever the collector asks.
    pub enabled_diagnostics: Vec<&'static str>,
    /// Whether `http_check` may connect to this PC's loopback addresses
    /// (off by default: a collector must not reach services that listen
    /// only locally).
    pub http_check_allow_loopback: bool,
    /// Where `disk_usage` may look ([`DEFAULT_DISK_USAGE_ROOTS`] unless
    /// `disk_usage_roots` says), checked against the resolved path.
    pub disk_usage_roots: Vec<String>,
    /// The domain an employee's OS user name is made an e-mail address
    /// with, for telling them when their ticket is resolved (issue 23);
    /// `report-issue --email` overrides it.
    pub reporter_email_domain: Option<String>,
}

const PREFIX: &str = "DESKPULSE_AGENT_";

fn interval(what: &str, text: &str, min: Duration) -> Result<Duration, ConfigError> {
    let value = humantime::parse_duration(text).map_err(|e| {
        ConfigError(format!(
            "{what} {text:?} is not a duration ({e}); try e.g. 60s"
        ))
    })?;
    if value < min {
        return Err(ConfigError(format!(
            "{what} {text:?} is too short; the minimum is {}",
            humantime::format_duration(min)
        )));
    }
    Ok(value)
}

/// Resolves the config: file < env < flags.
pub fn resolve(flags: &AgentFlags, vars: &dyn Env) -> Result<AgentConfig, ConfigError> {
    let var = |key: &str| vars.var(&format!("{PREFIX}{key}"));
    let file = match named_config_file(flags.config.as_deref(), vars) {
        Some(path) => read_file(&path)?,
        // The default file is optional: a PC without one runs on defaults.
        None => match vars.default_config_file() {
            Some(path) if path.exists() => read_file(&path)?,
            _ => AgentFile::default(),
        },
    };
    let state_dir = flags
        .state_dir
        .clone()
        .or_else(|| var("STATE_DIR").map(PathBuf::from))
        .or(file.state_dir)
        .unwrap_or_else(|| default_state_dir(vars));
    let system_root = flags
        .system_root
        .clone()
        .or_else(|| var("SYSTEM_ROOT").map(PathBuf::from))
        .or(file.system_root)
        .unwrap_or_else(|| PathBuf::from("/"));
    let inventory_interval = match flags
        .inventory_interval
        .clone()
        .or_else(|| var("INVENTORY_INTERVAL"))
        .or(file.inventory_interval)
    {
        Some(text) => interval("inventory interval", &text, Duration::from_secs(1))?,
        None => DEFAULT_INVENTORY_INTERVAL,
    };
    let health_interval = match flags
        .health_interval
        .clone()
        .or_else(|| var("HEALTH_INTERVAL"))
        .or(file.health_interval)
    {
        Some(text) => interval("health interval", &text, Duration::from_secs(1))?,
        None => DEFAULT_HEALTH_INTERVAL,
    };
    let log_format = match flags.log_format {
        Some(format) => format,
        None => match var("LOG_FORMAT").as_deref() {
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{PREFIX}LOG_FORMAT={other:?}: expected text or json"
                )));
            }
            None => file.log_format.unwrap_or_default(),
        },
    };
    let spool_limits = spool_limits(file.spool.unwrap_or_default(), &var)?;
    let health = health_settings(file.health.unwrap_or_default(), &var)?;
    let mut diagnostics = file.diagnostics.unwrap_or_default();
    let http_check_allow_loopback = match var("HTTP_CHECK_ALLOW_LOOPBACK").as_deref() {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(ConfigError(format!(
                "{PREFIX}HTTP_CHECK_ALLOW_LOOPBACK={:?}: expected true or false",
                other.chars().take(64).collect::<String>()
            )));
        }
        None => diagnostics.http_check_allow_loopback.unwrap_or(false),
    };
    let disk_usage_roots = disk_usage_roots(diagnostics.disk_usage_roots.take(), &var)?;
    let enabled_diagnostics = enabled_diagnostics(diagnostics, &var)?;
    let reporter_email_domain = match var("REPORTER_EMAIL_DOMAIN") {
        Some(domain) => Some((domain, format!("{PREFIX}REPORTER_EMAIL_DOMAIN"))),
        None => file
            .reporter_email_domain
            .map(|domain| (domain, "reporter_email_domain".to_owned())),
    }
    .map(|(domain, source)| {
        let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
        deskpulse_proto::email::check(&format!("user@{domain}"))
            .map(|_| domain.clone())
            .map_err(|_| {
                ConfigError(format!(
                    "{source}={:?}: expected a mail domain such as example.com",
                    domain.chars().take(64).collect::<String>()
                ))
            })
    })
    .transpose()?
    .filter(|domain| !domain.is_empty());
    Ok(AgentConfig {
        state_dir,
        system_root,
        inventory_interval,
        health_interval,
        log_format,
        spool_limits,
        health,
        enabled_diagnostics,
        http_check_allow_loopback,
        disk_usage_roots,
        reporter_email_domain,
    })
}

/// The `disk_usage` roots: `DESKPULSE_AGENT_DISK_USAGE_ROOTS` (comma
/// separated) when set, else `[diagnostics] disk_usage_roots`, else
/// [`DEFAULT_DISK_USAGE_ROOTS`]. Each must be absolute and no secret store
/// (`catalog::check_root`); a bad one stops the agent with one line.
fn disk_usage_roots(
    from_file: Option<Vec<String>>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let (roots, source) = match var("DISK_USAGE_ROOTS") {
        Some(text) => (
            text.split(',')
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
            format!("{PREFIX}DISK_USAGE_ROOTS"),
        ),
        None => match from_file {
            Some(roots) => (roots, "[diagnostics] disk_usage_roots".to_owned()),
            None => {
                return Ok(DEFAULT_DISK_USAGE_ROOTS
                    .iter()
                    .map(|r| (*r).to_owned())
                    .collect());
            }
        },
    };
    if roots.len() > MAX_DISK_USAGE_ROOTS {
        return Err(ConfigError(format!(
            "{source}: {} roots; at most {MAX_DISK_USAGE_ROOTS}",
            roots.len()
        )));
    }
    for root in &roots {
        deskpulse_proto::catalog::check_root(root)
            .map_err(|error| ConfigError(format!("{source}: {error}")))?;
    }
    Ok(roots)
}

/// The config file `--config` (`flag`) or `DESKPULSE_AGENT_CONFIG` names,
/// if either does; otherwise the default file applies.
pub fn named_config_file(flag: Option<&Path>, vars: &dyn Env) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| vars.var(&format!("{PREFIX}CONFIG")).map(PathBuf::from))
}

fn read_file(path: &Path) -> Result<AgentFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str::<AgentFile>(&text)
        .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.message())))
}

/// The enabled diagnostics: the catalog default, plus `enable`, minus
/// `disable`. Each list comes from `DESKPULSE_AGENT_DIAGNOSTICS_ENABLE` /
/// `_DISABLE` (comma-separated) when set, else from `[diagnostics]`. An id
/// the catalog does not have, or one in both lists, is an error: a typo
/// must not leave a diagnostic silently on or off.
fn enabled_diagnostics(
    file: DiagnosticsFile,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<&'static str>, ConfigError> {
    use deskpulse_proto::catalog;
    let list = |key: &str, name: &str, from_file: Option<Vec<String>>| {
        let (ids, source) = match var(key) {
            Some(text) => (
                text.split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect(),
                format!("{PREFIX}{key}"),
            ),
            None => (
                from_file.unwrap_or_default(),
                format!("[diagnostics] {name}"),
            ),
        };
        let mut out: Vec<&'static str> = Vec::new();
        for id in ids {
            let Some(spec) = catalog::spec(&id) else {
                let known: Vec<&str> = catalog::CATALOG.iter().map(|s| s.id).collect();
                return Err(ConfigError(format!(
                    "{source}: {:?} is not a diagnostic; the catalog has {}",
                    id.chars().take(64).collect::<String>(),
                    known.join(", ")
                )));
            };
            out.push(spec.id);
        }
        Ok(out)
    };
    let enable = list("DIAGNOSTICS_ENABLE", "enable", file.enable)?;
    let disable = list("DIAGNOSTICS_DISABLE", "disable", file.disable)?;
    if let Some(both) = enable.iter().find(|id| disable.contains(id)) {
        return Err(ConfigError(format!(
            "diagnostics: {both} is both enabled and disabled; say one"
        )));
    }
    let defaults = catalog::default_enabled();
    Ok(catalog::CATALOG
        .iter()
        .map(|s| s.id)
        .filter(|id| (defaults.contains(id) || enable.contains(id)) && !disable.contains(id))
        .collect())
}

/// The most services one agent watches.
const MAX_WATCHED: usize = 64;
/// The longest slow probe interval accepted.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(30 * 86_400);

/// A service name that is safe to look up as a file name and to print: a
/// letter or digit, then letters, digits and `_ . @ : -`, at most 128.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@:-".contains(c))
        && !name.contains("..")
}

/// `[health]` in the file < `DESKPULSE_AGENT_HEALTH_*`.
fn health_settings(
    file: HealthFile,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::collect::HealthSettings, ConfigError> {
    let defaults = crate::collect::HealthSettings::default();
    let (names, source) = match var("HEALTH_WATCH_SERVICES") {
        Some(text) => (
            text.split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            format!("{PREFIX}HEALTH_WATCH_SERVICES"),
        ),
        None => (
            file.watch_services.unwrap_or_default(),
            "[health] watch_services".to_owned(),
        ),
    };
    let mut watch_services: Vec<String> = Vec::new();
    for name in names {
        if !valid_service_name(&name) {
            return Err(ConfigError(format!(
                "{source}: {name:?} is not a service name (letters, digits and _ . @ : -, e.g. cups.service)"
            )));
        }
        if !watch_services.contains(&name) {
            watch_services.push(name);
        }
    }
    if watch_services.len() > MAX_WATCHED {
        return Err(ConfigError(format!(
            "{source}: {} services; watch at most {MAX_WATCHED}",
            watch_services.len()
        )));
    }
    let probe = |key: &str, what: &str, from_file: Option<String>, default: Duration| {
        let (text, what) = match (var(key), from_file) {
            (Some(text), _) => (text, format!("{PREFIX}{key}")),
            (None, Some(text)) => (text, what.to_owned()),
            (None, None) => return Ok(default),
        };
        let value = interval(&what, &text, Duration::from_secs(1))?;
        if value > MAX_PROBE_INTERVAL {
            return Err(ConfigError(format!(
                "{what} {text:?} is too long; the maximum is 30days"
            )));
        }
        Ok(value)
    };
    Ok(crate::collect::HealthSettings {
        watch_services,
        posture_interval: probe(
            "HEALTH_POSTURE_INTERVAL",
            "[health] posture_interval",
            file.posture_interval,
            defaults.posture_interval,
        )?,
        smart_interval: probe(
            "HEALTH_SMART_INTERVAL",
            "[health] smart_interval",
            file.smart_interval,
            defaults.smart_interval,
        )?,
        updates_interval: probe(
            "HEALTH_UPDATES_INTERVAL",
            "[health] updates_interval",
            file.updates_interval,
            defaults.updates_interval,
        )?,
        services_interval: probe(
            "HEALTH_SERVICES_INTERVAL",
            "[health] services_interval",
            file.services_interval,
            defaults.services_interval,
        )?,
    })
}

/// Spool bounds: `[spool]` in the file < `DESKPULSE_AGENT_SPOOL_*_MAX_MIB`.
fn spool_limits(
    file: SpoolFile,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::spool::Limits, ConfigError> {
    let defaults = crate::spool::Limits::default();
    let mib = |key: &str, from_file: Option<u64>, default: u64| -> Result<u64, ConfigError> {
        let (value, source) = match var(key) {
            Some(text) => (
                text.trim().parse::<u64>().map_err(|_| {
                    ConfigError(format!(
                        "{PREFIX}{key}={text:?}: expected a whole number of MiB, e.g. 16"
                    ))
                })?,
                format!("{PREFIX}{key}"),
            ),
            None => match from_file {
                Some(v) => (
                    v,
                    format!(
                        "[spool] {}",
                        key.trim_start_matches("SPOOL_").to_ascii_lowercase()
                    ),
                ),
                None => return Ok(default),
            },
        };
        if !(1..=4096).contains(&value) {
            return Err(ConfigError(format!(
                "{source} = {value} MiB is out of range; use 1 to 4096"
            )));
        }
        Ok(value << 20)
    };
    Ok(crate::spool::Limits {
        health_bytes: mib(
            "SPOOL_HEALTH_MAX_MIB",
            file.health_max_mib,
            defaults.health_bytes,
        )?,
        inventory_bytes: mib(
            "SPOOL_INVENTORY_MAX_MIB",
            file.inventory_max_mib,
            defaults.inventory_bytes,
        )?,
        results_bytes: mib(
            "SPOOL_RESULTS_MAX_MIB",
            file.results_max_mib,
            defaults.results_bytes,
        )?,
    })
}

#[cfg(test)]
mod tests;
