//! Process configuration for `deskpulse-collector` (D7): one typed struct,
//! layered file < environment (`DESKPULSE_COLLECTOR_*`) < flags. Fleet policy
//! is not here: it lives in the store so every replica sees the same.
//!
//! The environment is read through [`Env`] so tests pass a map instead of
//! changing the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the collector keeps its state when nothing says otherwise (D9).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/deskpulse-collector";
/// The default listen address: every interface, one TLS port (D1).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";
/// How long shutdown waits for streams and writes to drain.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The config file read when neither `--config` nor
/// `DESKPULSE_COLLECTOR_CONFIG` names one, if it exists (D9).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/deskpulse/collector.toml";

/// A config error: the one line to print before exiting with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads environment variables.
pub trait Env {
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;

    /// The config file to read when nothing names one; tests read none.
    fn default_config_file(&self) -> Option<PathBuf> {
        None
    }
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }

    fn default_config_file(&self) -> Option<PathBuf> {
        Some(PathBuf::from(DEFAULT_CONFIG_FILE))
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
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

/// Where the store is: the data dir and, optionally, a database URL.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreFlags {
    /// The data dir: CA, server certificate, initial admin token and the
    /// embedded database [env: DESKPULSE_COLLECTOR_DATA_DIR] [default:
    /// /var/lib/deskpulse-collector]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB; default is
    /// SQLite in the data dir, sqlite://DIR/deskpulse.db
    /// [env: DESKPULSE_COLLECTOR_DATABASE]
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

/// Flags of `deskpulse-collector serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeFlags {
    /// A TOML config file; its keys are those of the flags, with underscores
    /// (listen, metrics_listen, web_listen, data_dir, database, hostnames, log_format,
    /// shutdown_grace, change_retention, health_raw_retention,
    /// health_retention, max_connections, and an [smtp] table: host, port, tls,
    /// from, username, password_file, ca_file) [env: DESKPULSE_COLLECTOR_CONFIG] [default:
    /// /etc/deskpulse/collector.toml, when it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address of the single TLS port [env: DESKPULSE_COLLECTOR_LISTEN]
    /// [default: 0.0.0.0:7443]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics over plain HTTP on this address, at
    /// /metrics; off unless set [env: DESKPULSE_COLLECTOR_METRICS_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Serve the web console on this address too (TLS with the server
    /// certificate, HTTP/1.1 and HTTP/2); it is always on the TLS port
    /// [env: DESKPULSE_COLLECTOR_WEB_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub web_listen: Option<String>,
    #[command(flatten)]
    pub store: StoreFlags,
    /// An extra name for the server certificate; repeat for more. localhost,
    /// 127.0.0.1 and ::1 are always included [env:
    /// DESKPULSE_COLLECTOR_HOSTNAMES, comma separated]
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostnames: Vec<String>,
    /// Log format on stderr [env: DESKPULSE_COLLECTOR_LOG_FORMAT]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// How long shutdown waits for streams to drain, e.g. 10s [env:
    /// DESKPULSE_COLLECTOR_SHUTDOWN_GRACE]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// How long the change log keeps entries, e.g. 365d [env:
    /// DESKPULSE_COLLECTOR_CHANGE_RETENTION] [default: 365d]
    #[arg(long, value_name = "DURATION")]
    pub change_retention: Option<String>,
    /// How long health samples are kept as sent; older ones are folded into
    /// hourly points, e.g. 7d [env: DESKPULSE_COLLECTOR_HEALTH_RAW_RETENTION]
    /// [default: 7d]
    #[arg(long, value_name = "DURATION")]
    pub health_raw_retention: Option<String>,
    /// How long health history is kept at all, e.g. 90d [env:
    /// DESKPULSE_COLLECTOR_HEALTH_RETENTION] [default: 90d]
    #[arg(long, value_name = "DURATION")]
    pub health_retention: Option<String>,
    /// The most connections open on the TLS port at once [env:
    /// DESKPULSE_COLLECTOR_MAX_CONNECTIONS] [default: the open-file limit
    /// less 256 kept for the store and files]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    #[command(flatten)]
    pub smtp: crate::mail::SmtpFlags,
}

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    listen: Option<String>,
    metrics_listen: Option<String>,
    web_listen: Option<String>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    hostnames: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    shutdown_grace: Option<String>,
    change_retention: Option<String>,
    health_raw_retention: Option<String>,
    health_retention: Option<String>,
    max_connections: Option<usize>,
    smtp: Option<crate::mail::config::SmtpFile>,
}

/// Where the store lives, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The database URL.
    pub database_url: String,
}

/// The resolved `serve` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The TLS port's address.
    pub listen: SocketAddr,
    /// Where /metrics is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web console is served besides the TLS port, if anywhere.
    pub web_listen: Option<SocketAddr>,
    /// The store.
    pub store: StoreConfig,
    /// Extra server certificate names.
    pub hostnames: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Shutdown drain limit.
    pub shutdown_grace: Duration,
    /// How long history is kept.
    pub retention: Retention,
    /// The connection cap asked for; checked against the open-file limit
    /// at start (`server::admission`).
    pub max_connections: Option<usize>,
    /// The SMTP server e-mail notifications go through, if any.
    pub smtp: Option<crate::mail::SmtpConfig>,
}

/// How long the collector keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Change-log entries.
    pub changes: Duration,
    /// Health samples as sent, before they are folded into hourly points.
    pub health_raw: Duration,
    /// Health history of any resolution.
    pub health: Duration,
}

const ENV_PREFIX: &str = "DESKPULSE_COLLECTOR_";
/// Change-log entries are kept a year unless configured otherwise.
pub const DEFAULT_CHANGE_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Health samples are kept as sent for a week, then hourly.
pub const DEFAULT_HEALTH_RAW_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Health history is kept 90 days.
pub const DEFAULT_HEALTH_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

fn env(env: &dyn Env, key: &str) -> Option<String> {
    env.var(&format!("{ENV_PREFIX}{key}"))
}

/// The sqlite URL for the embedded database in `data_dir`.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("deskpulse.db").display())
}

fn check_database_url(url: &str) -> Result<(), ConfigError> {
    crate::store::check_url(url).map_err(ConfigError)
}

/// Resolves the store location from file values, env and flags.
fn resolve_store(
    flags: &StoreFlags,
    file_data_dir: Option<PathBuf>,
    file_database: Option<String>,
    vars: &dyn Env,
) -> Result<StoreConfig, ConfigError> {
    let data_dir = flags
        .data_dir
        .clone()
        .or_else(|| env(vars, "DATA_DIR").map(PathBuf::from))
        .or(file_data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError("the data dir must not be empty".into()));
    }
    let database_url = flags
        .database
        .clone()
        .or_else(|| env(vars, "DATABASE"))
        .or(file_database)
        .unwrap_or_else(|| default_database_url(&data_dir));
    check_database_url(&database_url)?;
    Ok(StoreConfig {
        data_dir,
        database_url,
    })
}

/// Resolves the store location for admin commands: their flags, the
/// environment, then the data dir and database of the config file that
/// `serve` reads, so they find the store the service uses.
pub fn resolve_store_flags(flags: &StoreFlags, vars: &dyn Env) -> Result<StoreConfig, ConfigError> {
    let file = read_config_file(None, vars)?;
    resolve_store(flags, file.data_dir, file.database, vars)
}

/// The config file: the one `flag` or `DESKPULSE_COLLECTOR_CONFIG` names
/// (which must exist), else the default one when it exists, else none.
fn read_config_file(flag: Option<&PathBuf>, vars: &dyn Env) -> Result<ServeFile, ConfigError> {
    let path = match flag
        .cloned()
        .or_else(|| env(vars, "CONFIG").map(PathBuf::from))
    {
        Some(path) => path,
        None => match vars.default_config_file() {
            Some(path) if path.exists() => path,
            _ => return Ok(ServeFile::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str::<ServeFile>(&text).map_err(|e| {
        let msg = e.message().trim().to_owned();
        ConfigError(format!("config file {}: {msg}", path.display()))
    })
}

fn parse_duration(what: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        ConfigError(format!(
            "{what}: {value:?} is not a duration ({e}); try e.g. 10s"
        ))
    })
}

/// Resolves `serve`'s config: file < env < flags.
pub fn resolve_serve(flags: &ServeFlags, vars: &dyn Env) -> Result<ServeConfig, ConfigError> {
    let file = read_config_file(flags.config.as_ref(), vars)?;
    let listen_text = flags
        .listen
        .clone()
        .or_else(|| env(vars, "LISTEN"))
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
        ConfigError(format!(
            "listen address {listen_text:?} is not IP:PORT, e.g. 0.0.0.0:7443"
        ))
    })?;
    let metrics_listen = flags
        .metrics_listen
        .clone()
        .or_else(|| env(vars, "METRICS_LISTEN"))
        .or(file.metrics_listen)
        .map(|text| {
            text.parse::<SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "metrics listen address {text:?} is not IP:PORT, e.g. 127.0.0.1:9464"
                ))
            })
        })
        .transpose()?;
    if metrics_listen == Some(listen) && listen.port() != 0 {
        return Err(ConfigError(format!(
            "the metrics address {listen} is the TLS port's; give it its own port"
        )));
    }
    let web_listen = flags
        .web_listen
        .clone()
        .or_else(|| env(vars, "WEB_LISTEN"))
        .or(file.web_listen)
        .map(|text| {
            text.parse::<SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "web listen address {text:?} is not IP:PORT, e.g. 0.0.0.0:8443"
                ))
            })
        })
        .transpose()?;
    if let Some(web) = web_listen
        && web.port() != 0
        && (web == listen || Some(web) == metrics_listen)
    {
        return Err(ConfigError(format!(
            "the web console address {web} is taken by another of the collector's ports; \
             give it its own port"
        )));
    }
    let store = resolve_store(&flags.store, file.data_dir, file.database, vars)?;
    let hostnames = if !flags.hostnames.is_empty() {
        flags.hostnames.clone()
    } else if let Some(list) = env(vars, "HOSTNAMES") {
        list.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        file.hostnames.unwrap_or_default()
    };
    let log_format = match flags.log_format {
        Some(format) => format,
        None => match env(vars, "LOG_FORMAT").as_deref() {
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{ENV_PREFIX}LOG_FORMAT={other:?}: expected text or json"
                )));
            }
            None => file.log_format.unwrap_or_default(),
        },
    };
    let shutdown_grace = match flags
        .shutdown_grace
        .clone()
        .or_else(|| env(vars, "SHUTDOWN_GRACE"))
        .or(file.shutdown_grace)
    {
        Some(text) => parse_duration("shutdown grace", &text)?,
        None => DEFAULT_SHUTDOWN_GRACE,
    };
    let retention_of = |what: &str,
                        flag: &Option<String>,
                        key: &str,
                        from_file: Option<String>,
                        default: Duration|
     -> Result<Duration, ConfigError> {
        let Some(text) = flag.clone().or_else(|| env(vars, key)).or(from_file) else {
            return Ok(default);
        };
        let value = parse_duration(what, &text)?;
        if value < Duration::from_secs(24 * 3600) {
            return Err(ConfigError(format!(
                "{what} {text:?} is too short; the minimum is 1d"
            )));
        }
        Ok(value)
    };
    let retention = Retention {
        changes: retention_of(
            "change retention",
            &flags.change_retention,
            "CHANGE_RETENTION",
            file.change_retention,
            DEFAULT_CHANGE_RETENTION,
        )?,
        health_raw: retention_of(
            "health raw retention",
            &flags.health_raw_retention,
            "HEALTH_RAW_RETENTION",
            file.health_raw_retention,
            DEFAULT_HEALTH_RAW_RETENTION,
        )?,
        health: retention_of(
            "health retention",
            &flags.health_retention,
            "HEALTH_RETENTION",
            file.health_retention,
            DEFAULT_HEALTH_RETENTION,
        )?,
    };
    if retention.health < retention.health_raw {
        return Err(ConfigError(
            "health retention must be at least the health raw retention".into(),
        ));
    }
    let max_connections = match flags
        .max_connections
        .clone()
        .or_else(|| env(vars, "MAX_CONNECTIONS"))
    {
        Some(text) => Some(text.trim().parse::<usize>().map_err(|_| {
            ConfigError(format!(
                "max connections {text:?} is not a whole number, e.g. 4000"
            ))
        })?),
        None => file.max_connections,
    };
    let smtp = crate::mail::config::resolve(&flags.smtp, file.smtp, vars)?;
    Ok(ServeConfig {
        smtp,
        max_connections,
        retention,
        listen,
        metrics_listen,
        web_listen,
        store,
        hostnames,
        log_format,
        shutdown_grace,
    })
}

#[cfg(test)]
mod tests;
