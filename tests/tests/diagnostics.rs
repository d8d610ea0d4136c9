//! Remote diagnostics end to end (issue 7) with the real binaries: the
//! collector, the `deskpulse` CLI and an enrolled `deskpulse-agent run`
//! service on loopback. An online run streams the agent's output; a request
//! for an offline host is queued and runs when the agent reconnects; and
//! the agent refuses what its own config disables even when the collector
//! delivers it (a request queued before the agent's config changed reaches
//! the agent without the collector's early check).

use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, require_tool, wait_for};

fn enrolled(collector: &Collector) -> Agent {
    let agent = Agent::new();
    agent
        .enroll(collector, &collector.enrollment_token(1))
        .expect_code(0);
    agent
}

fn connected(agent: &Agent) {
    wait_for(Duration::from_secs(30), || {
        let out = agent.command(&["status", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (s["service_running"] == true && s["connected"] == true).then_some(())
    })
    .expect("the agent service connects");
}

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
    let agent = enrolled(&collector);
    let alice = collector.api_token("alice", "technician");
    let _service = AgentService::start(&agent, &[]);
    connected(&agent);
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
    let agent = enrolled(&collector);
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
    let agent = enrolled(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    // The agent first connects with the defaults, so the collector believes
    // ping is enabled.
    let service = AgentService::start(&agent, &[]);
    connected(&agent);
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
    let agent = enrolled(&collector);
    let alice = collector.api_token("alice", "technician");
    let host = agent.host_id();
    let service = AgentService::start(&agent, &[]);
    connected(&agent);
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
