//! `deskpulse login` and `deskpulse logout`: the CLI's own config file,
//! `cli.toml` ([`settings::config_path`]), written so that no API token
//! has to go on a command line or in a shell's environment.
//!
//! `login` takes the collector and the CA file as every command does
//! (flags, then env, then the file), reads the token from the terminal
//! without echo (or one line of stdin when stdin is not a terminal), and
//! asks the collector who the token belongs to (`WhoAmI`, over the real
//! TLS channel). Only then does it store the collector, the CA file's
//! absolute path and the token: the file 0600 in a 0700 dir, replaced
//! atomically ([`crate::atomic_file`]), its other keys kept. Any failure
//! before that writes nothing. `logout` removes the token and keeps the
//! rest.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use deskpulse_proto::v1::WhoAmIRequest;

use super::settings::{self, ConnectionFlags, Settings};
use super::terminal::err;
use crate::config::Env;
use crate::exit::{CommandResult, Failure};

/// The modes of the config dir and file: the token is a secret.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// `deskpulse login`.
pub fn login(flags: &ConnectionFlags, env: &dyn Env, json: bool) -> CommandResult {
    if flags.token.is_some() {
        return Err(Failure::usage(
            "login reads the token from the terminal or stdin, never from the command line: leave out --token",
        ));
    }
    let path = config_file(env)?;
    let mut table = read_table(&path)?;
    let from_file = |key: &str| {
        table
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
    };
    let url = flags
        .collector
        .clone()
        .or_else(|| env.var("DESKPULSE_URL"))
        .or_else(|| from_file("collector"))
        .ok_or_else(|| {
            Failure::usage("login needs the collector: --collector https://HOST:PORT")
        })?;
    let collector = settings::parse_url(&url).map_err(Failure::usage)?;
    let ca_file = flags
        .ca_file
        .clone()
        .or_else(|| env.var("DESKPULSE_CA_FILE").map(PathBuf::from))
        .or_else(|| from_file("ca_file").map(PathBuf::from))
        .ok_or_else(|| {
            Failure::usage("login needs the collector's CA certificate: --ca-file FILE")
        })?;
    let ca_file = checked_ca_file(&ca_file)?;
    let token = read_token(&url)?;

    let settings = Settings {
        collector,
        token: token.clone(),
        ca_file: ca_file.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    let me = runtime.block_on(async {
        let mut client = super::connect(&settings).await?;
        client
            .who_am_i(WhoAmIRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                Failure::runtime(format!(
                    "the collector at {url} refused the token: {}; nothing was saved",
                    deskpulse_proto::client::describe_status(&status)
                ))
            })
    })?;

    let ca_text = ca_file.to_str().ok_or_else(|| {
        Failure::usage(format!(
            "the CA file's path {} is not UTF-8, so cli.toml cannot hold it",
            ca_file.display()
        ))
    })?;
    table.insert("collector".into(), toml::Value::String(url.clone()));
    table.insert("ca_file".into(), toml::Value::String(ca_text.to_owned()));
    table.insert("token".into(), toml::Value::String(token));
    write_table(&path, &table)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "collector": url,
                "name": me.name,
                "token_id": me.token_id,
                "config_file": path,
            })
        );
    } else {
        outln!(
            "logged in to {url} as {} (token {}); saved in {}",
            me.name,
            me.token_id,
            path.display()
        );
    }
    Ok(())
}

/// `deskpulse logout`: the token leaves the config file; the collector
/// and CA file stay for the next `login`.
pub fn logout(env: &dyn Env, json: bool) -> CommandResult {
    let path = config_file(env)?;
    let mut table = read_table(&path)?;
    let removed = table.remove("token").is_some();
    if removed {
        write_table(&path, &table)?;
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({ "removed": removed, "config_file": path })
        );
    } else if removed {
        outln!("removed the API token from {}", path.display());
    } else {
        outln!("no API token was saved in {}", path.display());
    }
    Ok(())
}

fn config_file(env: &dyn Env) -> CommandResult<PathBuf> {
    settings::config_path(env).ok_or_else(|| {
        Failure::usage("no place for the config file: set HOME (or XDG_CONFIG_HOME)")
    })
}

/// The config file's keys, or an empty table when there is no file yet. A
/// file that is not TOML is left alone: fixing it is the user's call.
fn read_table(path: &Path) -> CommandResult<toml::Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.parse::<toml::Table>().map_err(|e| {
            Failure::usage(format!(
                "config file {}: {}; fix or remove it",
                path.display(),
                e.message()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(Failure::runtime(format!(
            "cannot read config file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the table to `path` (0600) in its dir (made 0700, and narrowed
/// to 0700 if it was wider), replacing the file in one rename.
fn write_table(path: &Path, table: &toml::Table) -> CommandResult {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    let dir = path.parent().unwrap_or(Path::new("."));
    let cannot = |what: &str, e: std::io::Error| {
        Failure::runtime(format!("cannot {what} {}: {e}", dir.display()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| cannot("create", e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| cannot("read", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| cannot("make private", e))?;
    }
    let text = toml::to_string(table)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
    crate::atomic_file::write_atomic(path, text.as_bytes(), FILE_MODE).map_err(Failure::runtime)
}

/// The CA file as an absolute path, checked to hold a PEM certificate, so
/// that the saved settings work from any directory.
fn checked_ca_file(path: &Path) -> CommandResult<PathBuf> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read CA file {}: {e}", path.display())))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Failure::usage(format!(
            "CA file {} holds no PEM certificate (use the collector's ca.pem)",
            path.display()
        )));
    }
    std::fs::canonicalize(path)
        .map_err(|e| Failure::usage(format!("cannot resolve CA file {}: {e}", path.display())))
}

/// The API token: typed at the terminal without echo, or the first line
/// of stdin when stdin is not a terminal (scripts, tests).
fn read_token(url: &str) -> CommandResult<String> {
    let line = read_secret_line(&format!("API token for {url}: "))
        .map_err(|e| Failure::runtime(format!("cannot read the token: {e}")))?;
    let token = line.trim();
    if token.is_empty() {
        return Err(Failure::usage(
            "no token given: type it at the prompt, or pipe it on stdin",
        ));
    }
    Ok(token.to_owned())
}

/// One line of a secret: typed at `prompt` without echo when stdin is a
/// terminal, else read from stdin. Only the line ending is removed.
pub fn read_secret_line(prompt: &str) -> std::io::Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        err(prompt);
        let _echo_off = EchoOff::on(&stdin);
        stdin.lock().read_line(&mut line)?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let kept = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(kept);
    Ok(line)
}

/// Whether stdin is a terminal (a secret is then typed, and can be asked
/// for twice).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's echo turned off while the token is typed (the newline
/// still shows), and turned back on when dropped.
struct EchoOff {
    saved: Option<rustix::termios::Termios>,
}

impl EchoOff {
    fn on(stdin: &std::io::Stdin) -> Self {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let Ok(saved) = tcgetattr(stdin) else {
            return Self { saved: None };
        };
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        if tcsetattr(stdin, OptionalActions::Flush, &quiet).is_err() {
            return Self { saved: None };
        }
        Self { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

#[cfg(test)]
mod tests;
