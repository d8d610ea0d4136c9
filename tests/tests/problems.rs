//! Fleet-wide problems (issue 23) end to end: a real collector and four
//! real agents on loopback, each sending its own health sample, fire one
//! low-threshold rule; the tickets group under one problem, which
//! `deskpulse problems` lists and `problem show` shows (tables and JSON),
//! and `problem resolve` resolves with every ticket. Bad input: an unknown
//! problem, a resolve without text, a viewer resolving, a `[problems]`
//! section with bad values (each error with its line).

use std::time::Duration;

use deskpulse_tests::{Agent, Collector, MEMORY_PROBLEM_POLICY, wait_for};

fn problems(collector: &Collector, token: &str) -> Vec<serde_json::Value> {
    collector
        .cli(token, &["--json", "problems"])
        .expect_code(0)
        .json()
        .as_array()
        .cloned()
        .expect("array")
}

#[test]
fn tickets_of_one_rule_on_several_real_agents_group_into_one_problem_resolved_at_once() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    collector.apply_rules(MEMORY_PROBLEM_POLICY).expect_code(0);
    let agents: Vec<Agent> = (0..4)
        .map(|_| {
            let agent = Agent::new();
            agent
                .enroll(&collector, &collector.enrollment_token(1))
                .expect_code(0);
            agent
        })
        .collect();
    // Two hosts: two tickets and no problem yet.
    for agent in &agents[..2] {
        agent.command(&["run", "--once"]).expect_code(0);
    }
    let open_tickets = |n: usize| {
        wait_for(Duration::from_secs(30), || {
            let listed = collector
                .cli(&admin, &["--json", "tickets", "--status", "open"])
                .expect_code(0)
                .json();
            // Only the rule's: a default rule may fire on the test machine.
            let ours = listed
                .as_array()
                .expect("array")
                .iter()
                .filter(|t| t["rule"] == "memory-in-use")
                .count();
            (ours == n).then_some(())
        })
        .unwrap_or_else(|| panic!("{n} open tickets"))
    };
    open_tickets(2);
    assert!(problems(&collector, &admin).is_empty());
    assert_eq!(
        collector.cli(&admin, &["problems"]).expect_code(0).stdout,
        "no problems\n"
    );
    // The third makes the problem; the fourth joins it.
    for agent in &agents[2..] {
        agent.command(&["run", "--once"]).expect_code(0);
    }
    open_tickets(4);
    let listed = problems(&collector, &admin);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let problem = &listed[0];
    assert_eq!(problem["kind"], "rule");
    assert_eq!(problem["key"], "memory-in-use");
    assert_eq!(problem["status"], "open");
    assert_eq!(problem["hosts"], 4);
    assert_eq!(problem["open_tickets"], 4);
    let id = problem["id"].as_i64().expect("id").to_string();

    let table = collector.cli(&admin, &["problems"]).expect_code(0).stdout;
    assert!(table.contains("rule memory-in-use"), "{table}");
    assert!(table.contains("open (4 open)"), "{table}");

    let shown = collector
        .cli(&admin, &["--json", "problem", "show", &id])
        .expect_code(0)
        .json();
    let tickets = shown["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 4);
    let mut hosts: Vec<String> = tickets
        .iter()
        .map(|t| t["host_id"].as_str().expect("host").to_owned())
        .collect();
    hosts.sort();
    let mut enrolled: Vec<String> = agents.iter().map(Agent::host_id).collect();
    enrolled.sort();
    assert_eq!(hosts, enrolled);
    assert!(
        shown["timeline"][0]["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("opened: 3 hosts")),
        "{shown}"
    );
    let text = collector
        .cli(&admin, &["problem", "show", &id])
        .expect_code(0)
        .stdout;
    assert!(text.contains("rule memory-in-use"), "{text}");
    assert!(text.contains("tickets"), "{text}");
    // `ticket show` names the problem.
    let ticket_id = tickets[0]["id"].as_i64().expect("id").to_string();
    let ticket = collector
        .cli(&admin, &["--json", "ticket", "show", &ticket_id])
        .expect_code(0)
        .json();
    assert_eq!(ticket["ticket"]["problem_id"].to_string(), id);

    // Bad input: a viewer may not resolve; no text; an unknown id.
    let viewer = collector.api_token("vera", "viewer");
    let refused = collector.cli(
        &viewer,
        &["problem", "resolve", &id, "--resolution", "fixed"],
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.error_line().contains("resolving a problem"),
        "{}",
        refused.stderr
    );
    let no_text = collector.cli(&admin, &["problem", "resolve", &id]);
    assert_eq!(no_text.code, 2);
    assert!(
        no_text.stderr.contains("--resolution <RESOLUTION>"),
        "{}",
        no_text.stderr
    );
    let blank = collector.cli(&admin, &["problem", "resolve", &id, "--resolution", " "]);
    assert_eq!(blank.code, 2);
    assert_eq!(
        blank.error_line(),
        "deskpulse: error: problem resolve needs the resolution: deskpulse problem resolve ID --resolution \"what fixed it\""
    );
    let unknown = collector.cli(&admin, &["problem", "show", "9999"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.error_line().contains("no problem 9999"),
        "{}",
        unknown.stderr
    );
    let bad_status = collector.cli(&admin, &["problems", "--status", "gone"]);
    assert_eq!(bad_status.code, 2);

    let resolved = collector
        .cli(
            &admin,
            &[
                "--json",
                "problem",
                "resolve",
                &id,
                "--resolution",
                "raised the memory rule's threshold",
            ],
        )
        .expect_code(0)
        .json();
    assert_eq!(resolved["problem"]["status"], "resolved");
    assert_eq!(resolved["problem"]["open_tickets"], 0);
    for ticket in resolved["tickets"].as_array().expect("tickets") {
        assert_eq!(ticket["status"], "resolved");
        assert_eq!(ticket["resolution"], "raised the memory rule's threshold");
    }
    let again = collector.cli(
        &admin,
        &["problem", "resolve", &id, "--resolution", "twice"],
    );
    assert_eq!(again.code, 1);
    assert!(
        again.error_line().contains("already resolved"),
        "{}",
        again.stderr
    );
    // The knowledge base finds the tickets by the problem's resolution.
    let kb = collector
        .cli(&admin, &["--json", "kb", "search", "threshold"])
        .expect_code(0)
        .json();
    assert_eq!(kb.as_array().map(Vec::len), Some(4), "{kb}");
}

#[test]
fn a_problems_section_with_bad_values_is_refused_with_its_line() {
    let collector = Collector::start();
    let refused = collector
        .apply_rules("[tickets]\nquiet = \"15m\"\n\n[problems]\nhosts = 1\n")
        .expect_code(1);
    assert!(
        refused
            .stderr
            .contains("line 4: problems.hosts must be between 2 and 100000, not 1"),
        "{}",
        refused.stderr
    );
    let refused = collector
        .apply_rules("[problems]\nwindow = \"soon\"\n")
        .expect_code(1);
    assert!(
        refused
            .stderr
            .contains("line 1: problems.window \"soon\" is not a duration"),
        "{}",
        refused.stderr
    );
    let refused = collector
        .apply_rules("[problems]\nhots = 3\n")
        .expect_code(1);
    assert!(
        refused
            .stderr
            .contains("line 1: problems: unknown field `hots`"),
        "{}",
        refused.stderr
    );
    // Exported and applied back unchanged.
    collector
        .apply_rules("[problems]\nhosts = 25\nwindow = \"30m\"\n")
        .expect_code(0);
    let exported = collector
        .cli(&collector.admin_token(), &["rules", "export"])
        .expect_code(0)
        .stdout;
    assert!(
        exported.contains(
            "[problems]\nenabled = true\nhosts = 25\nwindow = \"30m\"\nchanges_window = \"2h\""
        ),
        "{exported}"
    );
}
