//! Inventory and fleet queries through the real CLI: this machine's agent
//! reports, and `deskpulse inventory` and `deskpulse hosts` filters find it.

use deskpulse_tests::{Agent, Collector};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn reported() -> (Collector, Agent, String) {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
    let token = collector.admin_token();
    (collector, agent, token)
}

fn host_ids(collector: &Collector, token: &str, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["--json", "hosts"];
    args.extend_from_slice(filters);
    let out = collector.cli(token, &args).expect_code(0);
    json(&out.stdout)
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|h| h["host_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn one_section_of_the_inventory_as_json_and_text() {
    let (collector, agent, token) = reported();
    let host = agent.host_id();
    let out = collector
        .cli(
            &token,
            &["inventory", &host, "--section", "software", "--json"],
        )
        .expect_code(0);
    let v = json(&out.stdout);
    assert_eq!(v["host_id"], host.as_str());
    let sections = v["sections"].as_object().expect("sections");
    assert_eq!(sections.keys().collect::<Vec<_>>(), ["software"]);
    let packages = v["sections"]["software"]["packages"]
        .as_array()
        .expect("packages");
    if std::path::Path::new("/var/lib/dpkg/status").exists() {
        assert!(
            packages.iter().any(|p| p["name"] == "dpkg"),
            "dpkg lists itself"
        );
    }

    let hardware = collector
        .cli(
            &token,
            &["inventory", &host, "--section", "hardware", "--json"],
        )
        .expect_code(0);
    let keys: Vec<String> = json(&hardware.stdout)["sections"]
        .as_object()
        .expect("sections")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 6, "hardware is six sections: {keys:?}");

    let text = collector.cli(&token, &["inventory", &host]).expect_code(0);
    for heading in [
        "[os]",
        "[cpu]",
        "[memory]",
        "[storage]",
        "[network]",
        "[software]",
    ] {
        assert!(
            text.stdout.contains(heading),
            "{heading} in {}",
            text.stdout
        );
    }

    let bad = collector
        .cli(&token, &["inventory", &host, "--section", "disks"])
        .expect_code(2);
    assert!(bad.stderr.contains("unknown section"), "{}", bad.stderr);
}

#[test]
fn hosts_filters_find_this_machine_and_only_when_they_match() {
    let (collector, agent, token) = reported();
    let host = agent.host_id();
    let inventory = json(
        &collector
            .cli(&token, &["inventory", &host, "--json"])
            .expect_code(0)
            .stdout,
    );
    let me = vec![host.clone()];
    let none: Vec<String> = Vec::new();

    if let Some(pkg) = inventory["sections"]["software"]["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["ecosystem"] == "dpkg"))
    {
        let name = pkg["name"].as_str().expect("name");
        let version = pkg["version"].as_str().expect("version");
        assert_eq!(host_ids(&collector, &token, &["--software", name]), me);
        assert_eq!(
            host_ids(
                &collector,
                &token,
                &["--software", &format!("{name}={version}")]
            ),
            me
        );
        assert_eq!(
            host_ids(
                &collector,
                &token,
                &["--software", &format!("{name}<{version}")]
            ),
            none
        );
        assert_eq!(
            host_ids(
                &collector,
                &token,
                &["--software", &format!("{name}<99999:0")]
            ),
            me
        );
    }
    if let Some(ip) = inventory["sections"]["network"]["interfaces"]
        .as_array()
        .and_then(|nics| {
            nics.iter()
                .find_map(|n| n["ipv4"].as_array()?.first()?.as_str())
        })
    {
        let ip = ip.split('/').next().expect("address");
        assert_eq!(host_ids(&collector, &token, &["--ip", ip]), me);
    }
    assert_eq!(
        host_ids(&collector, &token, &["--ip", "203.0.113.250"]),
        none
    );
    assert_eq!(
        host_ids(&collector, &token, &["--user", "root"]),
        me,
        "root is a local account"
    );
    assert_eq!(
        host_ids(&collector, &token, &["--user", "nobody-here"]),
        none
    );
    assert_eq!(
        host_ids(&collector, &token, &["--offline"]),
        me,
        "run --once said goodbye"
    );
    assert_eq!(
        host_ids(&collector, &token, &["--disk-free-below", "100"]),
        me
    );

    collector
        .cli(&token, &["host", "tag", &host, "criticality=high"])
        .expect_code(0);
    assert_eq!(
        host_ids(&collector, &token, &["--tag", "criticality=high"]),
        me
    );
    assert_eq!(
        host_ids(&collector, &token, &["--tag", "criticality=low"]),
        none
    );
    let show = json(
        &collector
            .cli(&token, &["--json", "host", "show", &host])
            .expect_code(0)
            .stdout,
    );
    assert_eq!(show["tags"][0], "criticality=high");

    for (args, needle) in [
        (vec!["hosts", "--software", "openssl<<3"], "--software"),
        (vec!["hosts", "--ip", "10.1.2"], "not an IP address"),
        (vec!["hosts", "--mac", "zz:zz"], "not a MAC address"),
        (vec!["hosts", "--disk-free-below", "150"], "at most 100"),
        (vec!["hosts", "--tag", "novalue"], "key=value"),
    ] {
        let out = collector.cli(&token, &args).expect_code(2);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

/// Issue 21: `--software` ignores case, takes `*` globs and names the
/// versions it matched; `--os` finds the codename; the OS line names the
/// version once.
#[test]
fn software_globs_name_their_versions_and_the_os_line_carries_the_codename() {
    let (collector, agent, token) = reported();
    let host = agent.host_id();
    let inventory = json(
        &collector
            .cli(&token, &["inventory", &host, "--json"])
            .expect_code(0)
            .stdout,
    );
    let me = vec![host.clone()];
    if let Some(pkg) = inventory["sections"]["software"]["packages"]
        .as_array()
        .and_then(|p| {
            p.iter().find(|p| {
                p["ecosystem"] == "dpkg" && p["name"].as_str().is_some_and(|n| n.len() > 3)
            })
        })
    {
        let name = pkg["name"].as_str().expect("name");
        let version = pkg["version"].as_str().expect("version");
        assert_eq!(
            host_ids(&collector, &token, &["--software", &name.to_uppercase()]),
            me,
            "any case"
        );
        // `*` may match nothing; few names share this one's shape, so the
        // 20 packages a host shows hold it.
        let glob = format!("{}*{}", name[..1].to_uppercase(), &name[1..]);
        let found = json(
            &collector
                .cli(&token, &["--json", "hosts", "--software", &glob])
                .expect_code(0)
                .stdout,
        );
        let software = found[0]["software"].as_array().expect("software");
        assert!(
            software
                .iter()
                .any(|s| s["name"] == name && s["version"] == version && s["ecosystem"] == "dpkg"),
            "{glob}: {software:?}"
        );
        let table = collector
            .cli(&token, &["hosts", "--software", name])
            .expect_code(0);
        assert!(table.stdout.starts_with("HOSTNAME"), "{}", table.stdout);
        assert!(table.stdout.contains("INSTALLED"), "{}", table.stdout);
        assert!(
            table.stdout.contains(&format!("{name} {version}")),
            "{}",
            table.stdout
        );
        assert_eq!(
            host_ids(
                &collector,
                &token,
                &["--software", &format!("{glob}={version}")]
            ),
            me,
            "a glob still takes a version rule"
        );
        assert_eq!(
            host_ids(
                &collector,
                &token,
                &["--software", &format!("{glob}<{version}")]
            ),
            Vec::<String>::new(),
            "a glob still takes a version rule"
        );
    }

    let text = collector.cli(&token, &["inventory", &host]).expect_code(0);
    let os_line = text
        .stdout
        .lines()
        .skip_while(|l| *l != "[os]")
        .nth(1)
        .expect("an [os] line");
    assert!(!os_line.contains("(("), "{os_line}");
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if let Some(codename) = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .filter(|c| !c.is_empty())
        && os_release
            .lines()
            .any(|l| l.starts_with("VERSION=") && l.contains(codename))
    {
        assert!(os_line.contains(&format!("({codename})")), "{os_line}");
        assert_eq!(host_ids(&collector, &token, &["--os", codename]), me);
        assert_eq!(
            host_ids(&collector, &token, &["--os", &codename.to_uppercase()]),
            me
        );
    }
    assert_eq!(
        host_ids(&collector, &token, &["--os", "no-such-codename"]),
        Vec::<String>::new()
    );
}
