//! The agent as a service: the local socket answers `status`, `run --once`
//! refuses while the service holds the state dir (D12), presence follows the
//! stream and the goodbye (D18), and the agent reconnects after the
//! collector comes back.

use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, wait_for};

fn json(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text).ok()
}

fn status(agent: &Agent) -> serde_json::Value {
    let out = agent.command(&["status", "--json"]).expect_code(0);
    json(&out.stdout).unwrap_or_else(|| panic!("status --json is JSON: {}", out.stdout))
}

fn presence(collector: &Collector, token: &str) -> (String, String) {
    let out = collector.cli(token, &["--json", "hosts"]).expect_code(0);
    let hosts = json(&out.stdout).expect("json");
    let host = &hosts[0];
    (
        host["presence"].as_str().unwrap_or_default().to_owned(),
        host["hostname"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn the_service_reports_answers_status_and_says_goodbye() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let token = collector.admin_token();

    let not_running = status(&agent);
    assert_eq!(not_running["enrolled"], true);
    assert_eq!(not_running["service_running"], false);

    let service = AgentService::start(&agent, &[]);
    let live = wait_for(Duration::from_secs(30), || {
        let s = status(&agent);
        (s["service_running"] == true
            && s["connected"] == true
            && s["last_success_unix_ms"].is_i64())
        .then_some(s)
    })
    .expect("the service connects and gets a report acknowledged");
    assert_eq!(live["host_id"], agent.host_id().as_str());

    let text = agent.command(&["status"]).expect_code(0);
    assert!(
        text.stdout.contains("running, connected"),
        "{}",
        text.stdout
    );

    let refused = agent.command(&["run", "--once"]).expect_code(1);
    assert!(
        refused
            .error_line()
            .contains("another deskpulse-agent is running"),
        "{}",
        refused.stderr
    );

    assert_eq!(presence(&collector, &token).0, "online");
    assert_eq!(service.stop(), Some(0));

    let (now, hostname) = presence(&collector, &token);
    assert_eq!(now, "offline", "a goodbye makes the host offline at once");
    let show = collector
        .cli(&token, &["--json", "host", "show", &hostname])
        .expect_code(0);
    let show = json(&show.stdout).expect("json");
    assert_eq!(show["goodbye_reason"], "service-stop");
    let after = status(&agent);
    assert_eq!(after["service_running"], false);
    assert!(
        after["last_success_unix_ms"].is_i64(),
        "the saved status keeps the last success: {after}"
    );
}

#[test]
fn the_service_reconnects_when_the_collector_comes_back() {
    let collector = Collector::start();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let addr = collector.addr.to_string();
    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(30), || {
        (status(&agent)["connected"] == true).then_some(())
    })
    .expect("connects");

    // Stop the collector; the agent notices and records the error.
    let data_dir = collector.into_data_dir();
    let down = wait_for(Duration::from_secs(30), || {
        let s = status(&agent);
        (s["connected"] == false && s["last_error"].is_string()).then_some(s)
    })
    .expect("the agent notices the collector is gone");
    assert_eq!(down["service_running"], true);

    // Same data dir, same port: the agent comes back by itself.
    let revived = Collector::start_on(data_dir, &addr, &[]);
    wait_for(Duration::from_secs(90), || {
        (status(&agent)["connected"] == true).then_some(())
    })
    .expect("the agent reconnects after the collector returns");
    let token = revived.admin_token();
    assert_eq!(presence(&revived, &token).0, "online");
    assert_eq!(service.stop(), Some(0));
}
