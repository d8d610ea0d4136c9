//! Nothing lost (issue 5), with real processes: reports collected while the
//! collector is down survive `kill -9` of the agent and arrive exactly once;
//! a torn spool tail is skipped and logged; a collector killed in a burst
//! keeps every report it acknowledged; a full spool drops old health first
//! and says so; package changes reach the change log through inventory
//! deltas, and a delta on the wrong base is healed by a resync.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deskpulse_agent::spool::{Limits, Spool};
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::{FilesystemUsage, HealthSample};
use deskpulse_tests::{
    Agent, AgentService, Collector, SpoolView, health_history_ms, received_seqs, wait_for,
};

fn status(agent: &Agent) -> serde_json::Value {
    let out = agent.command(&["status", "--json"]).expect_code(0);
    serde_json::from_str(&out.stdout).expect("status --json is JSON")
}

fn waiting_health(agent: &Agent) -> u64 {
    status(agent)["spool"]["health"]["records"]
        .as_u64()
        .unwrap_or(0)
}

fn spool_of(agent: &Agent) -> SpoolView {
    SpoolView::read(agent.state_dir.path())
}

fn enrolled() -> (Collector, Agent) {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    (collector, agent)
}

#[test]
fn offline_reports_survive_kill_9_and_arrive_exactly_once() {
    let (collector, agent) = enrolled();
    let addr = collector.addr.to_string();
    let data_dir = collector.into_data_dir();

    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(60), || {
        (waiting_health(&agent) >= 4).then_some(())
    })
    .expect("health samples pile up in the spool while the collector is down");
    service.kill_9();
    let before = spool_of(&agent);
    assert!(before.health().len() >= 4, "{:?}", before.records);

    let service = AgentService::start(&agent, &[]);
    let collector = Collector::start_on(data_dir, &addr, &[]);
    let host = agent.host_id();
    wait_for(Duration::from_secs(90), || {
        (before.stored(collector.data_dir.path(), &host) == before.waiting()).then_some(())
    })
    .expect("every report collected before the kill arrives");
    assert_eq!(service.stop(), Some(0));

    let token = collector.admin_token();
    let shown = collector
        .cli(&token, &["--json", "host", "show", &host, "--health", "1h"])
        .expect_code(0);
    let detail: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    let history = detail["health_history"].as_array().expect("health_history");
    assert!(history.len() >= before.health().len(), "{history:?}");
    let text = collector
        .cli(&token, &["host", "show", &host, "--health", "1h"])
        .expect_code(0);
    assert!(text.stdout.contains("health trend"), "{}", text.stdout);
    assert!(text.stdout.contains("cpu peak"), "{}", text.stdout);

    let after = spool_of(&agent);
    assert_eq!(after.id, before.id, "the spool survived both restarts");
    let got = received_seqs(collector.data_dir.path(), &host, &before.id);
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "each report is stored once");
    assert!(
        after.next_seq > before.next_seq,
        "the restarted agent went on"
    );
}

#[test]
fn a_torn_spool_tail_is_skipped_logged_and_the_rest_sent() {
    let (collector, agent) = enrolled();
    let addr = collector.addr.to_string();
    let data_dir = collector.into_data_dir();
    for _ in 0..3 {
        let out = agent.command(&["run", "--once"]);
        assert_ne!(out.code, 0, "the collector is down");
    }
    let before = spool_of(&agent);
    let log = agent.state_dir.path().join("spool/records.log");
    // Half a record, as a kill in mid-write leaves it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(b"DPSR\x02\0\0\0\xff\x01\0\0\x12\x34"))
        .expect("tear the tail");

    let collector = Collector::start_on(data_dir, &addr, &[]);
    let out = agent.command(&["run", "--once"]).expect_code(0);
    assert!(
        out.stderr
            .contains("spool: skipped torn or corrupt records; the intact ones are kept"),
        "{}",
        out.stderr
    );
    let stored = before.stored(collector.data_dir.path(), &agent.host_id());
    assert_eq!(before.health().len(), 3);
    for seq in &before.health() {
        assert!(
            stored.contains(seq),
            "health seq {seq} was kept and sent: {stored:?}"
        );
    }
}

#[test]
fn a_collector_killed_mid_burst_keeps_every_acknowledged_report() {
    let (collector, agent) = enrolled();
    let addr = collector.addr.to_string();
    let data_dir = collector.into_data_dir();
    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(60), || {
        (waiting_health(&agent) >= 6).then_some(())
    })
    .expect("a backlog builds up");
    // The backlog is read with the agent stopped, so the check below knows
    // when each report was collected.
    assert_eq!(service.stop(), Some(0));
    let backlog = spool_of(&agent);
    let service = AgentService::start(&agent, &[]);

    let collector = Collector::start_on(data_dir, &addr, &[]);
    wait_for(Duration::from_secs(60), || {
        status(&agent)["last_success_unix_ms"]
            .is_i64()
            .then_some(())
    })
    .expect("the backlog starts to be acknowledged");
    let data_dir = collector.kill_9();
    assert_eq!(service.stop(), Some(0));

    let left = spool_of(&agent);
    let stored = backlog.stored(data_dir.path(), &agent.host_id());
    // Health samples only: the restart's fresh inventory supersedes the
    // unsent one, which leaves the spool without an acknowledgement.
    let acknowledged: Vec<u64> = backlog
        .health()
        .into_iter()
        .filter(|s| !left.records.contains_key(s))
        .collect();
    assert!(!acknowledged.is_empty());
    for seq in acknowledged {
        assert!(
            stored.contains(&seq),
            "seq {seq} was acknowledged but is not in the database: backlog {:?}, left {:?}",
            backlog.records,
            left.records
        );
    }
}

#[test]
fn a_full_spool_thins_old_health_and_reports_the_drops() {
    let (collector, agent) = enrolled();
    let host = agent.host_id();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    // Five and a half days of samples ten minutes apart, about 1.4 MiB:
    // past a 1 MiB bound.
    let last_old_ms = now_ms - 600_000;
    {
        let (mut spool, _) = Spool::open(&agent.state_dir.path().join("spool"), Limits::default())
            .expect("open spool");
        let sample = HealthSample {
            cpu_percent: 5.0,
            filesystems: (0..60)
                .map(|i| FilesystemUsage {
                    mount_point: format!("/srv/volume-{i:02}"),
                    used_percent: 50.0,
                    available_bytes: 1 << 30,
                })
                .collect(),
            ..HealthSample::default()
        };
        for i in 0..800i64 {
            spool
                .push(
                    Payload::Health(sample.clone()),
                    now_ms - (800 - i) * 600_000,
                )
                .expect("push");
        }
    }

    // Thinning happens offline, so no old sample is already in flight.
    let addr = collector.addr.to_string();
    let data_dir = collector.into_data_dir();
    let service = AgentService::start_with_env(
        &agent,
        &[],
        &[("DESKPULSE_AGENT_SPOOL_HEALTH_MAX_MIB", "1")],
    );
    wait_for(Duration::from_secs(60), || {
        (status(&agent)["spool"]["dropped"]["health_thinned"].as_u64() > Some(0)).then_some(())
    })
    .expect("the agent thins its spool while offline");
    let collector = Collector::start_on(data_dir, &addr, &[]);
    let token = collector.admin_token();
    let (shown, old) = wait_for(Duration::from_secs(90), || {
        let out = collector
            .cli(&token, &["--json", "host", "show", &host])
            .expect_code(0);
        let detail: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        let thinned = detail["spool"]["health_thinned"].as_u64().unwrap_or(0) > 0;
        let history = health_history_ms(collector.data_dir.path(), &host);
        let old = history.range(..=last_old_ms).count();
        (thinned && history.contains(&last_old_ms)).then_some((detail, old))
    })
    .expect("the collector learns of the thinned samples, and the newest old sample is intact");
    assert_eq!(service.stop(), Some(0));
    assert!(old < 800, "some old samples were thinned: {old} arrived");
    let text = collector
        .cli(&token, &["host", "show", &host])
        .expect_code(0);
    assert!(
        text.stdout.contains("health samples thinned")
            && text.stdout.contains("reports waiting to be sent"),
        "{}",
        text.stdout
    );
    assert!(shown["spool_at"].is_string());
}

fn dpkg_status(packages: &[(&str, &str)]) -> String {
    packages
        .iter()
        .map(|(name, version)| {
            format!(
                "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\nMaintainer: Debian <x@lists.debian.org>\n\n"
            )
        })
        .collect()
}

#[test]
fn package_changes_reach_the_change_log_and_a_bad_base_resyncs() {
    let (collector, agent) = enrolled();
    let root = tempfile::tempdir().expect("system root");
    let status_file = root.path().join("var/lib/dpkg/status");
    std::fs::create_dir_all(status_file.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    std::fs::write(
        root.path().join("etc/os-release"),
        "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n",
    )
    .expect("os-release");
    let root_arg = root.path().to_str().expect("utf-8");
    std::fs::write(
        &status_file,
        dpkg_status(&[
            ("bash", "5.2.15-2"),
            ("curl", "7.88.1-10"),
            ("vim", "2:9.0.1378-2"),
        ]),
    )
    .expect("status");
    agent
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);

    std::fs::write(
        &status_file,
        dpkg_status(&[
            ("bash", "5.2.15-2+b1"),
            ("curl", "7.88.1-10"),
            ("htop", "3.2.2-2"),
        ]),
    )
    .expect("status");
    agent
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);

    let token = collector.admin_token();
    let host = agent.host_id();
    let out = collector
        .cli(
            &token,
            &[
                "--json",
                "changes",
                &host,
                "--section",
                "software",
                "--since",
                "1h",
            ],
        )
        .expect_code(0);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let changes: Vec<(String, String, String, String)> = list["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("-").to_owned();
            (s("item"), s("kind"), s("old"), s("new"))
        })
        .collect();
    let expect = |item: &str, kind: &str, old: &str, new: &str| {
        assert!(
            changes.contains(&(item.into(), kind.into(), old.into(), new.into())),
            "{item} {kind} {old} -> {new} missing from {changes:?}"
        );
    };
    expect(
        "package dpkg/bash:amd64",
        "changed",
        "5.2.15-2",
        "5.2.15-2+b1",
    );
    expect("package dpkg/htop:amd64", "added", "-", "3.2.2-2");
    expect("package dpkg/vim:amd64", "removed", "2:9.0.1378-2", "-");
    assert_eq!(changes.len(), 3, "{changes:?}");

    let fleet = collector
        .cli(&token, &["changes", "--since", "24h"])
        .expect_code(0);
    assert!(fleet.stdout.contains("first inventory"), "{}", fleet.stdout);
    let shown = collector
        .cli(&token, &["host", "show", &host])
        .expect_code(0);
    assert!(
        shown.stdout.contains("5.2.15-2 -> 5.2.15-2+b1"),
        "{}",
        shown.stdout
    );

    // A base the collector never had: the delta does not fit, the collector
    // asks for a full inventory, and the run still succeeds.
    std::fs::write(agent.state_dir.path().join("inventory/base.pb"), b"").expect("base");
    std::fs::write(
        &status_file,
        dpkg_status(&[
            ("bash", "5.2.15-2+b1"),
            ("curl", "7.88.1-10"),
            ("htop", "3.2.2-2"),
            ("tmux", "3.3a-3"),
        ]),
    )
    .expect("status");
    agent
        .command(&["run", "--once", "--system-root", root_arg])
        .expect_code(0);
    assert!(
        collector.logs().contains("asking for a full inventory"),
        "{}",
        collector.logs()
    );
    let out = collector
        .cli(&token, &["--json", "hosts", "--software", "tmux"])
        .expect_code(0);
    assert!(
        out.stdout.contains(&host),
        "the resynced inventory is stored: {}",
        out.stdout
    );
}

#[test]
fn bad_change_queries_are_one_line_errors() {
    let (collector, _agent) = enrolled();
    let token = collector.admin_token();
    let out = collector.cli(&token, &["changes", "--since", "soon"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid value 'soon' for '--since"),
        "{}",
        out.stderr
    );
    let out = collector.cli(&token, &["changes", "--section", "disks"]);
    assert_eq!(out.code, 2);
    let out = collector.cli(&token, &["changes", "no-such-host"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.error_line().contains("no-such-host"), "{}", out.stderr);
}
