//! `deskpulse login` and `logout` on the config file: modes, kept keys,
//! and nothing written when the file or the CA is wrong.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_file_is_private_and_keeps_the_keys_it_had() {
    let home = tempfile::tempdir().expect("temp dir");
    let dir = home.path().join("config/deskpulse");
    let path = dir.join("cli.toml");
    let mut table = toml::Table::new();
    table.insert("token".into(), toml::Value::String("dpt_one".into()));
    write_table(&path, &table).expect("first write");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);

    // A dir made wider by hand is narrowed; keys login does not set stay.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(&path, "collector = \"https://a:1\"\nfuture_key = 7\n").expect("write");
    let mut table = read_table(&path).expect("read");
    table.insert("token".into(), toml::Value::String("dpt_two".into()));
    write_table(&path, &table).expect("second write");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    let back = read_table(&path).expect("read back");
    assert_eq!(back["future_key"].as_integer(), Some(7));
    assert_eq!(back["token"].as_str(), Some("dpt_two"));
}

#[test]
fn logout_removes_only_the_token() {
    let home = tempfile::tempdir().expect("temp dir");
    let env: HashMap<String, String> = [(
        "XDG_CONFIG_HOME".to_owned(),
        home.path().to_string_lossy().into_owned(),
    )]
    .into();
    let path = settings::config_path(&env).expect("path");
    let mut table = toml::Table::new();
    for (key, value) in [
        ("collector", "https://c:7443"),
        ("ca_file", "/etc/ca.pem"),
        ("token", "dpt_x"),
    ] {
        table.insert(key.into(), toml::Value::String(value.into()));
    }
    write_table(&path, &table).expect("write");
    logout(&env, true).expect("logout");
    let left = read_table(&path).expect("read");
    assert!(!left.contains_key("token"), "{left}");
    assert_eq!(left["collector"].as_str(), Some("https://c:7443"));
    // Nothing to remove is not an error.
    logout(&env, true).expect("logout again");
}

#[test]
fn a_broken_file_or_ca_is_one_line_and_nothing_is_written() {
    let home = tempfile::tempdir().expect("temp dir");
    let path = home.path().join("cli.toml");
    std::fs::write(&path, "token = \n").expect("write");
    let error = read_table(&path).expect_err("not TOML");
    assert!(error.message.contains("fix or remove it"), "{error}");
    assert!(!error.message.contains('\n'), "{error}");

    let missing = checked_ca_file(&home.path().join("nope.pem")).expect_err("no CA");
    assert!(
        missing.message.starts_with("cannot read CA file"),
        "{missing}"
    );
    let not_pem = checked_ca_file(&path).expect_err("not PEM");
    assert!(
        not_pem.message.contains("holds no PEM certificate"),
        "{not_pem}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "token = \n");
}
