//! The collector's process config: defaults, file < env < flags, unknown
//! keys and bad values as one-line errors, history retention, and the
//! default file read by `serve` and the admin commands.

use std::collections::HashMap;
use std::io::Write;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let config = resolve_serve(&ServeFlags::default(), &vars(&[])).expect("resolves");
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.store.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(
        config.store.database_url,
        "sqlite:///var/lib/deskpulse-collector/deskpulse.db"
    );
    assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
}

#[test]
fn flags_beat_env_and_env_beats_file() {
    let f = file(
        "listen = \"127.0.0.1:1000\"\ndata_dir = \"/from/file\"\nhostnames = [\"file.example\"]\n",
    );
    let mut flags = ServeFlags {
        config: Some(f.path().to_path_buf()),
        ..ServeFlags::default()
    };
    let env = vars(&[
        ("DESKPULSE_COLLECTOR_LISTEN", "127.0.0.1:2000"),
        ("DESKPULSE_COLLECTOR_HOSTNAMES", "a.example, b.example"),
    ]);
    let config = resolve_serve(&flags, &env).expect("resolves");
    assert_eq!(config.listen.to_string(), "127.0.0.1:2000");
    assert_eq!(config.store.data_dir, PathBuf::from("/from/file"));
    assert_eq!(config.hostnames, vec!["a.example", "b.example"]);

    flags.listen = Some("127.0.0.1:3000".into());
    flags.store.data_dir = Some("/from/flag".into());
    let config = resolve_serve(&flags, &env).expect("resolves");
    assert_eq!(config.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(config.store.data_dir, PathBuf::from("/from/flag"));
}

#[test]
fn an_unknown_key_names_the_key() {
    let f = file("listne = \"127.0.0.1:1\"\n");
    let flags = ServeFlags {
        config: Some(f.path().to_path_buf()),
        ..ServeFlags::default()
    };
    let error = resolve_serve(&flags, &vars(&[])).expect_err("unknown key");
    assert!(
        error.to_string().contains("unknown field `listne`"),
        "{error}"
    );
    assert!(!error.to_string().contains('\n'), "one line: {error}");
}

#[test]
fn bad_values_get_one_line_errors() {
    let flags = ServeFlags {
        listen: Some("nonsense".into()),
        ..ServeFlags::default()
    };
    let error = resolve_serve(&flags, &vars(&[])).expect_err("bad listen");
    assert!(
        error.to_string().contains("\"nonsense\" is not IP:PORT"),
        "{error}"
    );

    let error = resolve_serve(
        &ServeFlags::default(),
        &vars(&[("DESKPULSE_COLLECTOR_DATABASE", "mysql://x")]),
    )
    .expect_err("bad url");
    assert!(
        error.to_string().contains("unsupported database URL"),
        "{error}"
    );

    let error = resolve_serve(
        &ServeFlags::default(),
        &vars(&[("DESKPULSE_COLLECTOR_SHUTDOWN_GRACE", "soon")]),
    )
    .expect_err("bad duration");
    assert!(error.to_string().contains("not a duration"), "{error}");

    let missing = ServeFlags {
        config: Some("/nonexistent/collector.toml".into()),
        ..ServeFlags::default()
    };
    let error = resolve_serve(&missing, &vars(&[])).expect_err("missing file");
    assert!(
        error.to_string().contains("cannot read config file"),
        "{error}"
    );
}

#[test]
fn history_retention_is_layered_and_checked() {
    let config = resolve_serve(&ServeFlags::default(), &vars(&[])).expect("defaults");
    assert_eq!(config.retention.changes, DEFAULT_CHANGE_RETENTION);
    assert_eq!(config.retention.health_raw, DEFAULT_HEALTH_RAW_RETENTION);
    assert_eq!(config.retention.health, DEFAULT_HEALTH_RETENTION);

    let f = file("change_retention = \"30d\"\nhealth_retention = \"400d\"\n");
    let flags = ServeFlags {
        config: Some(f.path().to_path_buf()),
        health_raw_retention: Some("2d".into()),
        ..ServeFlags::default()
    };
    let env = vars(&[("DESKPULSE_COLLECTOR_CHANGE_RETENTION", "60d")]);
    let retention = resolve_serve(&flags, &env).expect("resolves").retention;
    assert_eq!(retention.changes, Duration::from_secs(60 * 86_400));
    assert_eq!(retention.health_raw, Duration::from_secs(2 * 86_400));
    assert_eq!(retention.health, Duration::from_secs(400 * 86_400));

    let short = ServeFlags {
        change_retention: Some("2h".into()),
        ..ServeFlags::default()
    };
    let err = resolve_serve(&short, &vars(&[])).expect_err("too short");
    assert_eq!(
        err.to_string(),
        "change retention \"2h\" is too short; the minimum is 1d"
    );
    let inverted = ServeFlags {
        health_raw_retention: Some("30d".into()),
        health_retention: Some("7d".into()),
        ..ServeFlags::default()
    };
    let err = resolve_serve(&inverted, &vars(&[])).expect_err("inverted");
    assert_eq!(
        err.to_string(),
        "health retention must be at least the health raw retention"
    );
}

/// Variables plus a default config file, as the process environment has.
struct WithDefaultFile(HashMap<String, String>, PathBuf);

impl Env for WithDefaultFile {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn default_config_file(&self) -> Option<PathBuf> {
        Some(self.1.clone())
    }
}

#[test]
fn the_default_file_and_the_variable_are_read_by_serve_and_admin_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let default = dir.path().join("collector.toml");
    // Missing: defaults.
    let env = WithDefaultFile(HashMap::new(), default.clone());
    let config = resolve_serve(&ServeFlags::default(), &env).expect("no file is fine");
    assert_eq!(config.store.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

    std::fs::write(&default, "data_dir = \"/srv/deskpulse\"\n").expect("write");
    let config = resolve_serve(&ServeFlags::default(), &env).expect("default file");
    assert_eq!(config.store.data_dir, PathBuf::from("/srv/deskpulse"));
    let store = resolve_store_flags(&StoreFlags::default(), &env).expect("admin commands");
    assert_eq!(store.data_dir, PathBuf::from("/srv/deskpulse"));

    let named = dir.path().join("other.toml");
    std::fs::write(&named, "data_dir = \"/srv/other\"\n").expect("write");
    let mut vars = HashMap::new();
    vars.insert(
        "DESKPULSE_COLLECTOR_CONFIG".to_owned(),
        named.display().to_string(),
    );
    let env = WithDefaultFile(vars, default.clone());
    let store = resolve_store_flags(&StoreFlags::default(), &env).expect("named file");
    assert_eq!(store.data_dir, PathBuf::from("/srv/other"));

    std::fs::write(&default, "data_dir = 3\n").expect("write");
    let env = WithDefaultFile(HashMap::new(), default);
    let error = resolve_store_flags(&StoreFlags::default(), &env).expect_err("broken file");
    assert!(error.0.starts_with("config file "), "{error}");
}
