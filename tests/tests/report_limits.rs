//! The agent's per-user report limit (issue 20, item 8), with real agent
//! processes on the local socket: a burst of 300 reports from one user
//! spools at most the limit and refuses the rest in one line each; the same
//! text again is answered "already sent" with the earlier report's
//! reference, which the ticket carries; and restarting the service does not
//! reset the limit (the ledger is kept in the state dir).

use std::sync::Mutex;
use std::time::Duration;

use deskpulse_tests::{Agent, AgentService, Collector, Run, wait_for};

/// Reports in the burst.
const BURST: usize = 300;
/// Reports one user may send in an hour (`issue::ledger::LIMIT`).
const LIMIT: usize = 10;
const REFUSED: &str = "you have sent 10 reports in the last 60 minutes and your help desk has them all; this one was not sent: try again in ";

fn report(agent: &Agent, text: &str) -> Run {
    agent.command(&["report-issue", text])
}

fn user_report_tickets(collector: &Collector, token: &str) -> Vec<serde_json::Value> {
    let out = collector.cli(token, &["--json", "tickets", "--status", "open"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|list| list.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["rule"] == "user-report")
        .collect()
}

#[test]
fn a_burst_of_reports_is_held_to_the_limit_duplicates_fold_and_a_restart_resets_nothing() {
    let collector = Collector::start();
    let token = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let service = AgentService::start_ready(&agent, &collector);

    let first = report(&agent, "The printer is on fire").expect_code(0);
    let number = first.reported_ticket();
    let again = report(&agent, "The printer is on fire").expect_code(0);
    let said = again.stdout.trim().to_owned();
    assert!(
        said.starts_with(&format!(
            "already sent: you reported the same thing moments ago (ticket #{number}, reference "
        )) && said.ends_with("); your help desk has it, so it was not sent again"),
        "{said}"
    );
    let reference = said
        .split("reference ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("a reference")
        .to_owned();

    // The burst, eight clients at a time.
    let texts: Mutex<Vec<String>> =
        Mutex::new((0..BURST).map(|n| format!("Problem number {n}")).collect());
    let outcomes: Mutex<Vec<Run>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let Some(text) = texts.lock().expect("texts").pop() else {
                        return;
                    };
                    let run = report(&agent, &text);
                    outcomes.lock().expect("outcomes").push(run);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().expect("outcomes");
    let reported = outcomes.iter().filter(|r| r.code == 0).count();
    let refused: Vec<&Run> = outcomes.iter().filter(|r| r.code == 1).collect();
    println!(
        "{BURST} reports in a burst: {reported} reported, {} refused",
        refused.len()
    );
    assert_eq!(reported, LIMIT - 1, "the printer report counts too");
    assert_eq!(refused.len(), BURST - (LIMIT - 1));
    for run in &refused {
        let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        assert!(lines[0].contains(REFUSED), "{}", lines[0]);
    }

    // Exactly the admitted reports reach the help desk, the printer once,
    // its ticket naming the reference the employee was given.
    let tickets = wait_for(Duration::from_secs(60), || {
        let tickets = user_report_tickets(&collector, &token);
        (tickets.len() >= LIMIT).then_some(tickets)
    })
    .expect("the admitted reports' tickets");
    assert_eq!(tickets.len(), LIMIT);
    let printer = tickets
        .iter()
        .find(|t| {
            t["title"]
                .as_str()
                .is_some_and(|t| t.ends_with("The printer is on fire"))
        })
        .expect("the printer ticket");
    assert_eq!(printer["evidence"]["reference"], reference.as_str());
    assert_eq!(printer["occurrences"], 1, "{printer}");

    // A restart (or a reconnect) resets nothing.
    assert_eq!(service.stop(), Some(0));
    let service = AgentService::start_ready(&agent, &collector);
    let after = report(&agent, "Something new after the restart").expect_code(1);
    assert!(after.stderr.contains(REFUSED), "{}", after.stderr);
    let repeated = report(&agent, "The printer is on fire").expect_code(0);
    assert!(
        repeated
            .stdout
            .contains(&format!("(ticket #{number}, reference {reference})")),
        "{}",
        repeated.stdout
    );
    // The offline path (the service stopped, a user who may open the
    // spool) is held to the same ledger.
    assert_eq!(service.stop(), Some(0));
    let offline = report(&agent, "Reported while the service is stopped").expect_code(1);
    assert!(offline.stderr.contains(REFUSED), "{}", offline.stderr);
    assert_eq!(user_report_tickets(&collector, &token).len(), LIMIT);
}
