//! The generated systemd unit and launchd plist, and installing over an
//! existing installation without losing its config or state.

use std::path::{Path, PathBuf};

use super::*;

fn installation() -> Installation {
    Installation {
        binary: PathBuf::from("/usr/bin/deskpulse-agent"),
        config_file: PathBuf::from("/etc/deskpulse/agent.toml"),
        state_dir: PathBuf::from("/var/lib/deskpulse-agent"),
    }
}

#[test]
fn the_unit_is_hardened_and_runs_the_agent_without_a_shell() {
    let unit = systemd::unit_file(&Installation {
        binary: PathBuf::from("/opt/desk pulse/deskpulse-agent"),
        config_file: PathBuf::from("/etc/deskpulse/agent.toml"),
        state_dir: PathBuf::from("/var/lib/desk%pulse"),
    });
    for line in [
        "ExecStart=\"/opt/desk pulse/deskpulse-agent\" run --config /etc/deskpulse/agent.toml",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/desk%%pulse -/tmp -/var/tmp",
        "ConditionPathExists=/var/lib/desk%%pulse/enrollment.toml",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "MemoryMax=128M",
        "CPUQuota=25%",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from\n{unit}"
        );
    }
}

#[test]
fn the_plist_starts_the_binary_with_an_argument_array() {
    let xml = launchd::plist_xml(&installation()).expect("plist");
    let value = plist::Value::from_reader_xml(xml.as_slice()).expect("parses back");
    let daemon = value.as_dictionary().expect("a dictionary");
    assert_eq!(
        daemon.get("Label").and_then(|v| v.as_string()),
        Some(launchd::LABEL)
    );
    let arguments: Vec<&str> = daemon
        .get("ProgramArguments")
        .and_then(|v| v.as_array())
        .expect("ProgramArguments")
        .iter()
        .filter_map(|v| v.as_string())
        .collect();
    assert_eq!(
        arguments,
        [
            "/usr/bin/deskpulse-agent",
            "run",
            "--config",
            "/etc/deskpulse/agent.toml"
        ]
    );
    assert_eq!(
        daemon.get("RunAtLoad").and_then(|v| v.as_boolean()),
        Some(true)
    );
    // Kept alive only once enrolled.
    let keep_alive = daemon
        .get("KeepAlive")
        .and_then(|v| v.as_dictionary())
        .and_then(|d| d.get("PathState"))
        .and_then(|v| v.as_dictionary())
        .expect("KeepAlive's PathState");
    assert_eq!(
        keep_alive
            .get("/var/lib/deskpulse-agent/enrollment.toml")
            .and_then(|v| v.as_boolean()),
        Some(true),
        "{keep_alive:?}"
    );
    assert_eq!(keep_alive.len(), 1);
}

#[test]
fn installing_over_an_installation_keeps_its_config_and_state() {
    let root = tempfile::tempdir().expect("temp dir");
    let installation = installation();
    let config_file = root.path().join("etc/deskpulse/agent.toml");
    let unit = systemd::write_files(&installation, root.path()).expect("first install");
    assert!(
        unit.ends_with("etc/systemd/system/deskpulse-agent.service"),
        "{}",
        unit.display()
    );
    let config = std::fs::read_to_string(&config_file).expect("config written");
    assert!(config.contains("state_dir = "), "{config}");

    // The admin edits the config and the agent enrolls; then an upgrade.
    std::fs::write(&config_file, "state_dir = \"/elsewhere\"\n").expect("edit");
    let enrollment = root.path().join("var/lib/deskpulse-agent/enrollment.json");
    std::fs::write(&enrollment, "{}").expect("enrollment");
    systemd::write_files(&installation, root.path()).expect("upgrade");
    assert_eq!(
        std::fs::read_to_string(&config_file).expect("config"),
        "state_dir = \"/elsewhere\"\n"
    );
    assert!(enrollment.exists());

    let plist = launchd::write_files(&installation, root.path()).expect("launchd files");
    assert!(plist.ends_with("Library/LaunchDaemons/com.deskpulse.agent.plist"));
}

#[test]
fn the_default_config_names_the_state_dir_and_parses() {
    let text = default_config_text(Path::new("C:\\ProgramData\\Deskpulse\\agent"));
    let parsed: toml::Table = toml::from_str(&text).expect("parses");
    assert_eq!(
        parsed.get("state_dir").and_then(|v| v.as_str()),
        Some("C:\\ProgramData\\Deskpulse\\agent")
    );
}
