//! Where the CLI connects and with what: flags (`--collector`, `--token`,
//! `--ca-file`), then env (`DESKPULSE_URL`, `DESKPULSE_TOKEN`,
//! `DESKPULSE_CA_FILE`), then `~/.config/deskpulse/cli.toml` (D8), which
//! `deskpulse login` writes (`login.rs`).

use std::path::PathBuf;

use serde::Deserialize;
use tonic::transport::Uri;

use crate::config::Env;

/// The connection flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionFlags {
    /// The collector, https://HOST:PORT [env: DESKPULSE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub collector: Option<String>,
    /// The API token [env: DESKPULSE_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The collector's CA certificate, PEM [env: DESKPULSE_CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `cli.toml`'s shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliFile {
    collector: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The collector's URL.
    pub collector: Uri,
    /// The API token.
    pub token: String,
    /// The CA file.
    pub ca_file: PathBuf,
}

/// The config file path: `$XDG_CONFIG_HOME/deskpulse/cli.toml`, else
/// `$HOME/.config/deskpulse/cli.toml`.
pub fn config_path(env: &dyn Env) -> Option<PathBuf> {
    let base = env.var("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| {
        env.var("HOME")
            .map(|home| PathBuf::from(home).join(".config"))
    })?;
    Some(base.join("deskpulse").join("cli.toml"))
}

/// Resolves flags < env < file into settings, or a one-line usage error.
pub fn resolve(flags: &ConnectionFlags, env: &dyn Env) -> Result<Settings, String> {
    let path = config_path(env);
    let file = match &path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<CliFile>(&text)
                .map_err(|e| format!("config file {}: {}", path.display(), e.message()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CliFile::default(),
            Err(e) => return Err(format!("cannot read config file {}: {e}", path.display())),
        },
        None => CliFile::default(),
    };
    let shown = path.as_ref().map_or_else(
        || "~/.config/deskpulse/cli.toml".to_owned(),
        |path| path.display().to_string(),
    );
    let where_ = |flag: &str, var: &str, key: &str| {
        format!("pass {flag}, set {var}, or set `{key}` in {shown} (`deskpulse login` writes it)")
    };
    let url = flags
        .collector
        .clone()
        .or_else(|| env.var("DESKPULSE_URL"))
        .or(file.collector)
        .ok_or_else(|| {
            format!(
                "no collector URL: {}",
                where_("--collector", "DESKPULSE_URL", "collector")
            )
        })?;
    let collector = parse_url(&url)?;
    let token = flags
        .token
        .clone()
        .or_else(|| env.var("DESKPULSE_TOKEN"))
        .or(file.token)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!(
                "no API token: {}",
                where_("--token", "DESKPULSE_TOKEN", "token")
            )
        })?;
    let ca_file = flags
        .ca_file
        .clone()
        .or_else(|| env.var("DESKPULSE_CA_FILE").map(PathBuf::from))
        .or(file.ca_file)
        .ok_or_else(|| {
            format!(
                "no CA file: {}",
                where_("--ca-file", "DESKPULSE_CA_FILE", "ca_file")
            )
        })?;
    Ok(Settings {
        collector,
        token,
        ca_file,
    })
}

/// The collector URL, checked: https, a host and a port.
pub(super) fn parse_url(url: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("collector URL {url:?} {why}; expected https://HOST:PORT");
    let uri: Uri = url.parse().map_err(|_| bad("does not parse"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must use https"));
    }
    match uri.authority() {
        Some(authority) if authority.port_u16().is_some() => Ok(uri),
        Some(_) => Err(bad("has no port")),
        None => Err(bad("has no host")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let home = tempfile::tempdir().expect("temp dir");
        let dir = home.path().join(".config/deskpulse");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("cli.toml"),
            "collector = \"https://file:1\"\ntoken = \"file-token\"\nca_file = \"/file/ca.pem\"\n",
        )
        .expect("write");
        let home_str = home.path().to_string_lossy().to_string();
        let vars = env(&[("HOME", &home_str), ("DESKPULSE_TOKEN", "env-token")]);
        let settings = resolve(&ConnectionFlags::default(), &vars).expect("resolves");
        assert_eq!(settings.collector.to_string(), "https://file:1/");
        assert_eq!(settings.token, "env-token");
        assert_eq!(settings.ca_file, PathBuf::from("/file/ca.pem"));
        let flags = ConnectionFlags {
            collector: Some("https://flag:2".into()),
            ..ConnectionFlags::default()
        };
        assert_eq!(
            resolve(&flags, &vars)
                .expect("resolves")
                .collector
                .to_string(),
            "https://flag:2/"
        );
    }

    #[test]
    fn missing_and_bad_settings_say_how_to_fix_them() {
        let error = resolve(&ConnectionFlags::default(), &env(&[])).expect_err("no url");
        assert!(
            error.contains("no collector URL: pass --collector"),
            "{error}"
        );
        let flags = ConnectionFlags {
            collector: Some("http://x:1".into()),
            token: Some("t".into()),
            ca_file: Some("ca.pem".into()),
        };
        let error = resolve(&flags, &env(&[])).expect_err("http");
        assert!(error.contains("must use https"), "{error}");
        let flags = ConnectionFlags {
            collector: Some("https://x:1".into()),
            ..ConnectionFlags::default()
        };
        let error = resolve(&flags, &env(&[])).expect_err("no token");
        assert!(error.contains("no API token"), "{error}");
    }
}
