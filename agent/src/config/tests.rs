//! The agent config: defaults, file < env < flags, the default file per OS,
//! and one-line errors for unknown keys, bad spool bounds, probe intervals
//! and diagnostics lists.

use std::collections::HashMap;
use std::io::Write;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

#[test]
fn defaults() {
    let config = resolve(&AgentFlags::default(), &vars(&[])).expect("resolves");
    assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(config.system_root, PathBuf::from("/"));
    assert_eq!(config.inventory_interval, DEFAULT_INVENTORY_INTERVAL);
    assert_eq!(config.health_interval, DEFAULT_HEALTH_INTERVAL);
}

#[test]
fn file_then_env_then_flags() {
    let f = config_file(
        "state_dir = \"/file\"\nhealth_interval = \"30s\"\ninventory_interval = \"1h\"\n",
    );
    let mut flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let env = vars(&[("DESKPULSE_AGENT_HEALTH_INTERVAL", "20s")]);
    let config = resolve(&flags, &env).expect("resolves");
    assert_eq!(config.state_dir, PathBuf::from("/file"));
    assert_eq!(config.health_interval, Duration::from_secs(20));
    assert_eq!(config.inventory_interval, Duration::from_secs(3600));
    flags.health_interval = Some("10s".into());
    assert_eq!(
        resolve(&flags, &env).expect("resolves").health_interval,
        Duration::from_secs(10)
    );
}

#[test]
fn unknown_keys_and_bad_values_are_one_line_errors() {
    let f = config_file("health_intreval = \"30s\"\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let error = resolve(&flags, &vars(&[])).expect_err("unknown key");
    assert!(
        error.0.contains("unknown field `health_intreval`"),
        "{error}"
    );
    assert!(!error.0.contains('\n'));

    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_HEALTH_INTERVAL", "often")]),
    )
    .expect_err("bad duration");
    assert!(error.0.contains("not a duration"), "{error}");

    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_HEALTH_INTERVAL", "10ms")]),
    )
    .expect_err("too short");
    assert!(error.0.contains("too short"), "{error}");
}

#[test]
fn spool_bounds_from_file_then_env() {
    let defaults = resolve(&AgentFlags::default(), &vars(&[])).expect("resolves");
    assert_eq!(defaults.spool_limits, crate::spool::Limits::default());
    let f = config_file("[spool]\nhealth_max_mib = 8\nresults_max_mib = 2\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let env = vars(&[("DESKPULSE_AGENT_SPOOL_HEALTH_MAX_MIB", "4")]);
    let limits = resolve(&flags, &env).expect("resolves").spool_limits;
    assert_eq!(limits.health_bytes, 4 << 20, "env beats the file");
    assert_eq!(limits.results_bytes, 2 << 20);
    assert_eq!(
        limits.inventory_bytes,
        crate::spool::Limits::default().inventory_bytes
    );
}

#[test]
fn bad_spool_bounds_are_one_line_errors() {
    let bad_env = vars(&[("DESKPULSE_AGENT_SPOOL_INVENTORY_MAX_MIB", "lots")]);
    let err = resolve(&AgentFlags::default(), &bad_env).expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "DESKPULSE_AGENT_SPOOL_INVENTORY_MAX_MIB=\"lots\": expected a whole number of MiB, e.g. 16"
    );
    let f = config_file("[spool]\nhealth_max_mib = 0\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let err = resolve(&flags, &vars(&[])).expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "[spool] health_max_mib = 0 MiB is out of range; use 1 to 4096"
    );
    let f = config_file("[spool]\nhealth_max = 3\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let err = resolve(&flags, &vars(&[]))
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("unknown field `health_max`"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn health_settings_from_file_then_env() {
    let defaults = resolve(&AgentFlags::default(), &vars(&[])).expect("resolves");
    assert_eq!(defaults.health, crate::collect::HealthSettings::default());
    assert_eq!(defaults.health.posture_interval, Duration::from_secs(600));
    assert_eq!(
        defaults.health.smart_interval,
        Duration::from_secs(6 * 3600)
    );

    let f = config_file(
        "[health]\nwatch_services = [\"cups.service\", \"sshd\", \"cups.service\"]\nposture_interval = \"5m\"\nsmart_interval = \"1h\"\n",
    );
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let config = resolve(&flags, &vars(&[])).expect("resolves");
    assert_eq!(config.health.watch_services, ["cups.service", "sshd"]);
    assert_eq!(config.health.posture_interval, Duration::from_secs(300));
    assert_eq!(config.health.smart_interval, Duration::from_secs(3600));
    assert_eq!(
        config.health.updates_interval,
        Duration::from_secs(6 * 3600)
    );

    let env = vars(&[
        (
            "DESKPULSE_AGENT_HEALTH_WATCH_SERVICES",
            "NetworkManager.service, cron",
        ),
        ("DESKPULSE_AGENT_HEALTH_UPDATES_INTERVAL", "2h"),
        ("DESKPULSE_AGENT_HEALTH_SERVICES_INTERVAL", "30s"),
    ]);
    let config = resolve(&flags, &env).expect("resolves");
    assert_eq!(
        config.health.watch_services,
        ["NetworkManager.service", "cron"]
    );
    assert_eq!(config.health.updates_interval, Duration::from_secs(7200));
    assert_eq!(config.health.services_interval, Duration::from_secs(30));
}

#[test]
fn unsafe_service_names_and_bad_probe_intervals_are_one_line_errors() {
    for bad in ["../etc/passwd", "cups service", "-x", "a/b", "x\ny", ""] {
        let f = config_file(&format!(
            "[health]\nwatch_services = [{}]\n",
            toml::Value::String(bad.into())
        ));
        let flags = AgentFlags {
            config: Some(f.path().to_path_buf()),
            ..AgentFlags::default()
        };
        let error = resolve(&flags, &vars(&[])).expect_err(bad);
        assert!(
            error.0.contains("[health] watch_services") && error.0.contains("not a service name"),
            "{error}"
        );
        assert!(!error.0.contains('\n'), "{error}");
    }
    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_HEALTH_WATCH_SERVICES", "ok.service,$(id)")]),
    )
    .expect_err("env");
    assert!(
        error.0.contains("DESKPULSE_AGENT_HEALTH_WATCH_SERVICES"),
        "{error}"
    );

    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_HEALTH_SMART_INTERVAL", "90days")]),
    )
    .expect_err("too long");
    assert!(error.0.contains("too long"), "{error}");
    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_HEALTH_POSTURE_INTERVAL", "soon")]),
    )
    .expect_err("not a duration");
    assert!(
        error.0.contains("DESKPULSE_AGENT_HEALTH_POSTURE_INTERVAL"),
        "{error}"
    );
}

#[test]
fn diagnostics_default_to_every_read_only_one() {
    let config = resolve(&AgentFlags::default(), &vars(&[])).expect("resolves");
    assert_eq!(
        config.enabled_diagnostics,
        deskpulse_proto::catalog::default_enabled()
    );
    assert!(!config.enabled_diagnostics.contains(&"restart_service"));
}

#[test]
fn diagnostics_enable_and_disable_from_file_then_env() {
    let f = config_file("[diagnostics]\nenable = [\"flush_dns\"]\ndisable = [\"ping\"]\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let config = resolve(&flags, &vars(&[])).expect("resolves");
    assert!(config.enabled_diagnostics.contains(&"flush_dns"));
    assert!(!config.enabled_diagnostics.contains(&"ping"));
    assert!(config.enabled_diagnostics.contains(&"traceroute"));
    // The env list replaces the file's list of the same name.
    let env = vars(&[
        (
            "DESKPULSE_AGENT_DIAGNOSTICS_ENABLE",
            "restart_service, clear_temp",
        ),
        ("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "dns_lookup"),
    ]);
    let config = resolve(&flags, &env).expect("resolves");
    assert!(config.enabled_diagnostics.contains(&"restart_service"));
    assert!(config.enabled_diagnostics.contains(&"clear_temp"));
    assert!(!config.enabled_diagnostics.contains(&"flush_dns"));
    assert!(config.enabled_diagnostics.contains(&"ping"));
    assert!(!config.enabled_diagnostics.contains(&"dns_lookup"));
}

#[test]
fn unknown_or_contradictory_diagnostics_are_one_line_errors() {
    let f = config_file("[diagnostics]\nenable = [\"shell\"]\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let error = resolve(&flags, &vars(&[])).expect_err("unknown id");
    assert!(
        error
            .0
            .starts_with("[diagnostics] enable: \"shell\" is not a diagnostic"),
        "{error}"
    );
    assert!(!error.0.contains('\n'));
    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "pnig")]),
    )
    .expect_err("unknown id");
    assert!(
        error
            .0
            .contains("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE: \"pnig\""),
        "{error}"
    );
    let error = resolve(
        &AgentFlags::default(),
        &vars(&[
            ("DESKPULSE_AGENT_DIAGNOSTICS_ENABLE", "ping"),
            ("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "ping"),
        ]),
    )
    .expect_err("both");
    assert!(error.0.contains("both enabled and disabled"), "{error}");
    let f = config_file("[diagnostics]\nenabled = [\"ping\"]\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let error = resolve(&flags, &vars(&[])).expect_err("unknown key");
    assert!(error.0.contains("unknown field `enabled`"), "{error}");
}

#[test]
fn disk_usage_roots_default_to_the_data_directories_and_may_be_set() {
    let config = resolve(&AgentFlags::default(), &vars(&[])).expect("resolves");
    assert_eq!(config.disk_usage_roots, DEFAULT_DISK_USAGE_ROOTS);
    #[cfg(target_os = "linux")]
    for root in ["/usr", "/opt", "/var", "/home", "/tmp"] {
        assert!(config.disk_usage_roots.iter().any(|r| r == root), "{root}");
    }
    let f = config_file("[diagnostics]\ndisk_usage_roots = [\"/srv/shares\", \"/usr\"]\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let config = resolve(&flags, &vars(&[])).expect("resolves");
    assert_eq!(config.disk_usage_roots, ["/srv/shares", "/usr"]);
    let env = vars(&[("DESKPULSE_AGENT_DISK_USAGE_ROOTS", "/data, /opt")]);
    let config = resolve(&flags, &env).expect("resolves");
    assert_eq!(config.disk_usage_roots, ["/data", "/opt"], "env over file");
}

#[test]
fn bad_disk_usage_roots_are_one_line_errors() {
    for (file, expected) in [
        (
            "[diagnostics]\ndisk_usage_roots = [\"usr\"]\n",
            "[diagnostics] disk_usage_roots: \"usr\" must be an absolute path",
        ),
        (
            "[diagnostics]\ndisk_usage_roots = [\"/etc/ssh\"]\n",
            "[diagnostics] disk_usage_roots: \"/etc/ssh\" is a secret store (/etc/ssh)",
        ),
        (
            "[diagnostics]\ndisk_usage_roots = [\"/var/../root\"]\n",
            "must be an absolute path without . or ..",
        ),
        (
            "[diagnostics]\ndisk_usage_roots = \"/usr\"\n",
            "invalid type: string \"/usr\", expected a sequence",
        ),
    ] {
        let f = config_file(file);
        let flags = AgentFlags {
            config: Some(f.path().to_path_buf()),
            ..AgentFlags::default()
        };
        let error = resolve(&flags, &vars(&[])).expect_err(file);
        assert!(error.0.contains(expected), "{file}: {error}");
        assert!(!error.0.contains('\n'), "{error}");
    }
    let many = (0..65)
        .map(|i| format!("/d{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let error = resolve(
        &AgentFlags::default(),
        &vars(&[("DESKPULSE_AGENT_DISK_USAGE_ROOTS", &many)]),
    )
    .expect_err("too many");
    assert!(
        error
            .0
            .contains("DESKPULSE_AGENT_DISK_USAGE_ROOTS: 65 roots; at most 64"),
        "{error}"
    );
}

/// Variables plus a default config file, as the process environment has.
struct WithDefaultFile(HashMap<String, String>, PathBuf);

impl Env for WithDefaultFile {
    fn var(&self, key: &str) -> Option<String> {
        self.0.var(key)
    }

    fn default_config_file(&self) -> Option<PathBuf> {
        Some(self.1.clone())
    }
}

#[test]
fn the_default_file_is_read_when_nothing_names_one() {
    let f = config_file("state_dir = \"/from/default\"\n");
    let env = WithDefaultFile(vars(&[]), f.path().to_path_buf());
    let config = resolve(&AgentFlags::default(), &env).expect("resolves");
    assert_eq!(config.state_dir, PathBuf::from("/from/default"));

    // A file named by the variable or the flag replaces it entirely.
    let named = config_file("health_interval = \"30s\"\n");
    let env = WithDefaultFile(
        vars(&[(
            "DESKPULSE_AGENT_CONFIG",
            named.path().to_str().expect("utf-8"),
        )]),
        f.path().to_path_buf(),
    );
    let config = resolve(&AgentFlags::default(), &env).expect("resolves");
    assert_eq!(config.state_dir, default_state_dir(&env));
    assert_eq!(config.health_interval, Duration::from_secs(30));
}

#[test]
fn a_missing_default_file_means_defaults_but_a_broken_one_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = WithDefaultFile(vars(&[]), dir.path().join("agent.toml"));
    let config = resolve(&AgentFlags::default(), &env).expect("resolves");
    assert_eq!(config.state_dir, default_state_dir(&env));

    let broken = config_file("state_dir = 3\n");
    let env = WithDefaultFile(vars(&[]), broken.path().to_path_buf());
    let error = resolve(&AgentFlags::default(), &env).expect_err("broken default file");
    assert!(error.0.starts_with("config file "), "{error}");
    assert!(!error.0.contains('\n'), "{error}");
}

#[cfg(windows)]
#[test]
fn windows_defaults_follow_program_data() {
    let env = vars(&[("ProgramData", r"D:\Data")]);
    assert_eq!(
        default_config_file(&env),
        PathBuf::from(r"D:\Data\Deskpulse\agent.toml")
    );
    assert_eq!(
        default_state_dir(&env),
        PathBuf::from(r"D:\Data\Deskpulse\agent")
    );
}

#[test]
fn the_reporter_email_domain_comes_from_file_then_env_and_junk_is_one_line() {
    let f = config_file("reporter_email_domain = \"@Corp.Example\"\n");
    let flags = AgentFlags {
        config: Some(f.path().to_path_buf()),
        ..AgentFlags::default()
    };
    let config = resolve(&flags, &vars(&[])).expect("resolves");
    assert_eq!(
        config.reporter_email_domain.as_deref(),
        Some("corp.example")
    );
    let env = vars(&[("DESKPULSE_AGENT_REPORTER_EMAIL_DOMAIN", "mail.example.org")]);
    let config = resolve(&flags, &env).expect("resolves");
    assert_eq!(
        config.reporter_email_domain.as_deref(),
        Some("mail.example.org")
    );
    assert_eq!(
        resolve(&AgentFlags::default(), &vars(&[]))
            .expect("ok")
            .reporter_email_domain,
        None
    );
    for junk in ["localhost", "exa mple.com", "a@b.com"] {
        let env = vars(&[("DESKPULSE_AGENT_REPORTER_EMAIL_DOMAIN", junk)]);
        let error = resolve(&AgentFlags::default(), &env)
            .expect_err(junk)
            .to_string();
        assert!(
            error.contains("REPORTER_EMAIL_DOMAIN") && !error.contains('\n'),
            "{error}"
        );
    }
    // The address an employee's report carries.
    assert_eq!(
        crate::issue::reporter_email(None, r"OFFICE\Ana", Some("corp.example")),
        Ok(Some("ana@corp.example".to_owned()))
    );
    assert_eq!(
        crate::issue::reporter_email(None, "uid 1001", Some("corp.example")),
        Ok(None)
    );
    assert_eq!(crate::issue::reporter_email(None, "ana", None), Ok(None));
    assert!(crate::issue::reporter_email(Some("not an address"), "ana", None).is_err());
}
