//! Remote diagnostics end to end (issue 7) with the real binaries: the
//! collector, the `deskpulse` CLI and an enrolled `deskpulse-agent run`
//! service on loopback. An online run streams the agent's output; a request
//! for an offline host is queued and runs when the agent reconnects; and
//! the agent refuses what its own config disables even when the collector
//! delivers it (a request queued before the agent's config changed reaches
//! the agent without the collector's early check).

use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, require_tool, wait_for};

fn job(collector: &Collector, token: &str, id: &str) -> serde_json::Value {
    let out = collector
        .cli(token, &["--json", "job", "show", id])
        .expect_code(0);
    serde_json::from_str(&out.stdout).expect("json")
}

fn finished(collector: &Collector, token: &str, id: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(60), || {
        let job = job(collector, token, id);
        (!matches!(job["state"].as_str(), Some("queued" | "sent"))).then_some(job)
    })
    .expect("the job finishes")
}

#[test]
fn an_online_run_streams_the_real_agents_output() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let _service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    let host = agent.host_id();
    let port = collector.addr.port().to_string();

    let out = collector
        .cli(
            &alice,
            &[
                "run",
                &host,
                "tcp_connect",
                "--param",
                "host=127.0.0.1",
                "--param",
                &format!("port={port}"),
            ],
        )
        .expect_code(0);
    assert!(
        out.stdout.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("completed, exit status 0"),
        "{}",
        out.stdout
    );

    // The agent runs the real ping (iputils).
    if !require_tool("ping", "an_online_run_streams_the_real_agents_output") {
        return;
    }
    let out = collector
        .cli(
            &alice,
            &[
                "--json",
                "run",
                &host,
                "ping",
                "--param",
                "host=127.0.0.1",
                "--param",
                "count=2",
            ],
        )
        .expect_code(0);
    let ping: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(ping["state"], "completed", "{ping}");
    assert_eq!(ping["exit_code"], 0, "{ping}");
    assert!(
        ping["output"].as_str().unwrap_or("").contains("127.0.0.1"),
        "{ping}"
    );

    // A closed port: the diagnostic ran and says so; its own status is 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port().to_string();
    drop(closed);
    let out = collector.cli(
        &alice,
        &[
            "--json",
            "run",
            &host,
            "tcp_connect",
            "--param",
            "host=127.0.0.1",
            "--param",
            &format!("port={closed_port}"),
        ],
    );
    let refused: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(refused["state"], "completed", "{refused}");
    assert_eq!(refused["exit_code"], 1, "{refused}");
}

#[test]
fn a_queued_request_runs_when_the_agent_reconnects() {
    if !require_tool("ping", "a_queued_request_runs_when_the_agent_reconnects") {
        return;
    }
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let out = collector
        .cli(
            &alice,
            &[
                "--json",
                "run",
                &host,
                "ping",
                "--param",
                "host=127.0.0.1",
                "--param",
                "count=1",
            ],
        )
        .expect_code(0);
    let queued: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(queued["state"], "queued");
    let id = queued["id"].as_str().expect("id").to_owned();

    let _service = AgentService::start(&agent, &[]);
    let done = finished(&collector, &alice, &id);
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        done["output"].as_str().unwrap_or("").contains("127.0.0.1"),
        "{done}"
    );
}

#[test]
fn the_agent_refuses_a_diagnostic_its_config_disables_even_when_delivered() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    // The agent first connects with the defaults, so the collector believes
    // ping is enabled.
    let service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    service.stop();
    // Queued while offline; then the agent comes back with ping disabled.
    let out = collector
        .cli(
            &alice,
            &["--json", "run", &host, "ping", "--param", "host=127.0.0.1"],
        )
        .expect_code(0);
    let queued: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let id = queued["id"].as_str().expect("id").to_owned();
    let _service = AgentService::start_with_env(
        &agent,
        &[],
        &[("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "ping")],
    );
    let done = finished(&collector, &alice, &id);
    assert_eq!(done["state"], "refused", "{done}");
    assert!(
        done["reason"].as_str().unwrap_or("").contains("ping"),
        "{done}"
    );
    assert_eq!(done["output"], "", "nothing ran");
    // Now the collector knows, and refuses early with a clear line.
    let out = collector.cli(&alice, &["run", &host, "ping", "--param", "host=127.0.0.1"]);
    assert_eq!(out.code, 1);
    assert!(
        out.error_line().contains("does not enable ping"),
        "{}",
        out.stderr
    );
}

/// Issue 20: once the agent's hourly refusal budget is spent, a refused
/// request still gets its final answer, so `deskpulse run --wait` returns
/// with a clear refusal instead of waiting until the request expires. The
/// budget is spent the way a flood would spend it: requests queued while
/// the agent was away, refused by its config when it comes back.
#[test]
fn deskpulse_run_returns_a_refusal_after_the_agents_refusal_budget_is_spent() {
    const BUDGET: usize = 120; // diagnostics::REFUSALS_PER_HOUR
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    service.stop();
    let ping = ["run", &host, "ping", "--param", "host=127.0.0.1"];
    for _ in 0..BUDGET {
        collector
            .cli(&alice, &[&["--json"][..], &ping, &["--no-wait"]].concat())
            .expect_code(0);
    }
    let mut waiting = collector
        .cli_command(&alice, &[&["--json"][..], &ping, &["--wait"]].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deskpulse run --wait");
    // Its job is queued before the agent says Hello with ping disabled
    // (after that the collector refuses ping early).
    wait_for(Duration::from_secs(30), || {
        let jobs = collector.cli(&alice, &["--json", "jobs", "--limit", "200"]);
        let jobs: serde_json::Value = serde_json::from_str(&jobs.stdout).ok()?;
        (jobs.as_array()?.len() > BUDGET).then_some(())
    })
    .expect("the waiting request is queued");
    let _service = AgentService::start_with_env(
        &agent,
        &[],
        &[("DESKPULSE_AGENT_DIAGNOSTICS_DISABLE", "ping")],
    );
    let returned = wait_for(Duration::from_secs(120), || {
        waiting.try_wait().expect("try_wait")
    });
    if returned.is_none() {
        let _ = waiting.kill();
        let _ = waiting.wait();
        let jobs = collector.cli(&alice, &["--json", "jobs", "--limit", "200"]);
        let states: Vec<String> = serde_json::from_str::<serde_json::Value>(&jobs.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|j| format!("{} {}", j["state"], j["reason"]))
            .collect();
        panic!(
            "deskpulse run --wait still waits 120 s after the agent came back; jobs: {:?} {}",
            &states[..states.len().min(3)],
            jobs.stderr
        );
    }
    let out = waiting.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let done: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(done["state"], "refused", "{done}");
    assert!(
        done["reason"].as_str().unwrap_or("").contains(&format!(
            "refused more than {BUDGET} diagnostic requests this hour"
        )),
        "{done}"
    );
    assert_eq!(done["output"], "", "nothing ran");
}

/// Issue 21: an agent whose `PATH` holds no `ping` says so when it
/// connects; the catalog for its host shows why, and queuing ping there is
/// refused with that line, while diagnostics done in Rust stay runnable.
#[test]
fn a_diagnostic_whose_program_is_missing_is_listed_unavailable_and_refused() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let empty = tempfile::tempdir().expect("an empty PATH dir");
    let path = empty.path().to_str().expect("utf-8 temp path");
    let _service = AgentService::start_with_env(&agent, &[], &[("PATH", path)]);
    agent.wait_service_connected();

    let out = collector
        .cli(&alice, &["diagnostics", &host])
        .expect_code(0);
    let line = |id: &str| {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no {id} row: {}", out.stdout))
            .to_owned()
    };
    assert!(
        line("ping").contains("unavailable: ping is not installed"),
        "{}",
        out.stdout
    );
    assert!(
        line("traceroute").contains("unavailable: tracepath is not installed"),
        "{}",
        out.stdout
    );
    assert!(
        !line("tcp_connect").contains("unavailable"),
        "{}",
        out.stdout
    );

    let out = collector
        .cli(&alice, &["--json", "diagnostics", &host])
        .expect_code(0);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let entry = |id: &str| {
        listed["diagnostics"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no {id}: {listed}"))
    };
    assert_eq!(
        entry("ping")["unavailable_on_host"],
        "ping is not installed"
    );
    assert_eq!(entry("ping")["enabled_on_host"], true);
    assert!(entry("dns_lookup")["unavailable_on_host"].is_null());

    let out = collector.cli(&alice, &["run", &host, "ping", "--param", "host=127.0.0.1"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.error_line()
            .contains("is unavailable: ping is not installed"),
        "{}",
        out.stderr
    );
    let jobs = collector
        .cli(&alice, &["--json", "jobs", "--host", &host])
        .expect_code(0);
    assert_eq!(jobs.stdout.trim(), "[]", "nothing was queued");
}

/// Issue 21: `disk_usage` reaches `/usr` with the default roots, through a
/// real collector and agent; `/etc` is outside them, and refused by the
/// agent (the collector cannot know an agent's roots).
#[test]
fn disk_usage_lists_usr_and_the_agent_refuses_what_its_roots_leave_out() {
    let collector = Collector::start();
    let agent = Agent::enrolled_to(&collector);
    let alice = collector.api_token("alice", "technician");
    let _service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    let host = agent.host_id();

    let out = collector
        .cli(
            &alice,
            &["--json", "run", &host, "disk_usage", "--param", "path=/usr"],
        )
        .expect_code(0);
    let usr: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(usr["state"], "completed", "{usr}");
    let output = usr["output"].as_str().unwrap_or("");
    assert!(output.starts_with("filesystem: "), "{usr}");
    assert!(
        output
            .lines()
            .any(|l| l.trim_end().ends_with("/usr/lib") || l.trim_end().ends_with("/usr/share")),
        "{usr}"
    );

    let out = collector.cli(
        &alice,
        &["--json", "run", &host, "disk_usage", "--param", "path=/etc"],
    );
    let etc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(etc["state"], "failed", "{etc}");
    assert!(
        etc["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not under this agent's disk_usage_roots"),
        "{etc}"
    );
    assert_eq!(etc["output"], "", "nothing listed");
    // A secret store stays refused before it leaves the technician's PC:
    // the CLI runs the catalog's check, a usage error (exit 2).
    let out = collector.cli(
        &alice,
        &["run", &host, "disk_usage", "--param", "path=/etc/ssh"],
    );
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("secret store"), "{}", out.stderr);
}
