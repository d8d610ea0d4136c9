//! Notifications through the real binaries (issue 23): e-mail through a
//! real SMTP server on loopback (aiosmtpd, `tests/smtp/server.py`) with
//! STARTTLS and AUTH, or implicit TLS, trusting a CA the test makes; the
//! group address of a priority, a technician's own address for the tickets
//! assigned to them, and the employee who reported on resolution. An SMTP
//! server that is down is retried from the outbox and shown in `deskpulse
//! webhooks`, then delivered once it is up. Slack and Teams messages reach
//! a real HTTP listener. A fleet-wide problem made of several real agents'
//! tickets mails the group address once, as the problem. Bad settings and
//! arguments are one line each.

use std::time::Duration;

use deskpulse_tests::notify::{MailCa, SmtpServer, SmtpTls, http_receiver};
use deskpulse_tests::{Agent, AgentService, Collector, Run, bin, run, wait_for};
use tokio::net::TcpListener;

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).expect("json on stdout")
}

/// A collector that mails through the SMTP server on `port` (`--smtp-tls
/// tls`, trusting `ca`), as `mailer` with the password in `password_file`
/// when there is one.
fn mailing_collector(port: u16, tls: &str, ca: &MailCa, password_file: Option<&str>) -> Collector {
    let mut flags = vec![
        "--smtp-host".to_owned(),
        "127.0.0.1".to_owned(),
        "--smtp-port".to_owned(),
        port.to_string(),
        "--smtp-tls".to_owned(),
        tls.to_owned(),
        "--smtp-from".to_owned(),
        "Deskpulse <deskpulse@example.com>".to_owned(),
        "--smtp-ca-file".to_owned(),
        ca.ca_file().to_str().expect("utf-8 path").to_owned(),
    ];
    if let Some(file) = password_file {
        flags.extend([
            "--smtp-username".to_owned(),
            "mailer".to_owned(),
            "--smtp-password-file".to_owned(),
            file.to_owned(),
        ]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Collector::start_in(tempfile::tempdir().expect("data dir"), &flags)
}

fn new_ticket(collector: &Collector, token: &str, host: &str, title: &str, priority: &str) -> i64 {
    let out = collector
        .cli(
            token,
            &[
                "--json",
                "ticket",
                "new",
                host,
                "--title",
                title,
                "--priority",
                priority,
            ],
        )
        .expect_code(0);
    json(&out)["ticket"]["id"].as_i64().expect("ticket id")
}

#[test]
fn email_goes_through_starttls_with_auth_to_the_group_the_assignee_and_the_reporter() {
    let test = "email_goes_through_starttls_with_auth";
    let ca = MailCa::new();
    let Some(smtp) = SmtpServer::start(
        test,
        &ca,
        SmtpTls::Starttls,
        Some(("mailer", "s3cret-pass")),
        0,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("smtp.password");
    std::fs::write(&password_file, "s3cret-pass\n").expect("write password");
    let collector = mailing_collector(
        smtp.port,
        "starttls",
        &ca,
        Some(password_file.to_str().expect("utf-8 path")),
    );
    let admin = collector.admin_token();
    let alice = collector.api_token("alice", "technician");
    let agent = Agent::enrolled_to(&collector);
    let host = agent.host_id();

    // The P2 group address hears of new and escalated P2 tickets (and of
    // P2 problems, which this test makes none of); alice's
    // own address of every event of the tickets assigned to her; the
    // employee who reported, of the resolution.
    let group = json(
        &collector
            .cli(
                &admin,
                &[
                    "--json",
                    "webhooks",
                    "add",
                    "mailto:helpdesk-p2@example.com",
                    "--priority",
                    "p2",
                ],
            )
            .expect_code(0),
    );
    assert_eq!(group["format"], "email");
    assert_eq!(
        group["events"],
        serde_json::json!(["ticket.opened", "ticket.escalated", "problem.opened"])
    );
    assert_eq!(group["priorities"], serde_json::json!(["P2"]));
    collector
        .cli(
            &admin,
            &[
                "webhooks",
                "add",
                "mailto:alice@example.com",
                "--assignee",
                "alice",
            ],
        )
        .expect_code(0);
    collector
        .cli(&admin, &["webhooks", "add", "mailto:reporter"])
        .expect_code(0);

    // A P3 ticket reaches no group; a P2 one does.
    new_ticket(&collector, &alice, &host, "Slow logins on a P3 PC", "p3");
    let id = new_ticket(
        &collector,
        &alice,
        &host,
        "Printer jams on every page",
        "p2",
    );
    let mail = smtp
        .next_mail(Duration::from_secs(30))
        .expect("the group mail arrives");
    assert_eq!(mail.to, vec!["helpdesk-p2@example.com"]);
    assert_eq!(mail.from, "deskpulse@example.com");
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.user.as_deref(), Some("mailer"), "authenticated");
    let subject = mail.header("Subject").expect("subject");
    assert!(
        subject.starts_with(&format!("[Deskpulse #{id}] P2 ticket #{id} opened on ")),
        "{subject}"
    );
    assert!(subject.ends_with("Printer jams on every page"), "{subject}");
    assert_eq!(
        mail.header("To").as_deref(),
        Some("helpdesk-p2@example.com")
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Deskpulse <deskpulse@example.com>")
    );
    assert!(
        mail.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        mail.header_names()
    );
    assert!(
        mail.header("Message-ID")
            .is_some_and(|m| m.ends_with("@deskpulse>")),
        "{:?}",
        mail.header("Message-ID")
    );
    let body = mail.body();
    assert!(
        body.contains(&format!("Ticket #{id} was opened.")),
        "{body}"
    );
    assert!(
        body.contains("Title:          Printer jams on every page"),
        "{body}"
    );
    assert!(body.contains(&format!("({host})")), "{body}");
    assert!(body.contains("Priority:       P2"), "{body}");
    assert!(!body.contains("http"), "no links: {body}");

    // Assigned to alice: her own address hears of it.
    collector
        .cli(&alice, &["ticket", "assign", &id.to_string(), "alice"])
        .expect_code(0);
    let mail = smtp
        .next_mail(Duration::from_secs(30))
        .expect("the assignee's mail arrives");
    assert_eq!(mail.to, vec!["alice@example.com"]);
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains(&format!("#{id} updated"))),
        "{:?}",
        mail.header("Subject")
    );
    assert!(
        mail.body().contains("Assignee:       alice"),
        "{}",
        mail.body()
    );

    // Resolving mails alice, whose ticket it is; the reporter channel
    // skips it: a ticket a technician opened has no reporter's address.
    collector
        .cli(
            &alice,
            &[
                "ticket",
                "resolve",
                &id.to_string(),
                "--resolution",
                "Replaced the fuser unit",
            ],
        )
        .expect_code(0);
    let mail = smtp
        .next_mail(Duration::from_secs(30))
        .expect("the resolution mail arrives");
    assert_eq!(mail.to, vec!["alice@example.com"]);

    // An employee reports through the agent's service with their address;
    // resolving their ticket mails them, without the evidence or the address.
    let _service = AgentService::start_ready(&agent, &collector);
    let reported = agent
        .command(&[
            "report-issue",
            "Printer jams on every page",
            "--email",
            "emma@example.com",
        ])
        .expect_code(0);
    let report = reported.reported_ticket();
    let report_priority = json(
        &collector
            .cli(&admin, &["--json", "ticket", "show", &report])
            .expect_code(0),
    )["ticket"]["priority"]
        .as_str()
        .expect("priority")
        .to_owned();
    collector
        .cli(
            &alice,
            &[
                "ticket",
                "resolve",
                &report,
                "--resolution",
                "Replaced the fuser unit",
            ],
        )
        .expect_code(0);
    // The P2 group also hears of the report's opening if it is a P2.
    let group_hears_report = report_priority == "P2";
    let mails: Vec<_> = (0..1 + usize::from(group_hears_report))
        .map(|_| {
            smtp.next_mail(Duration::from_secs(30))
                .expect("the report's mails arrive")
        })
        .collect();
    let reporter = mails
        .iter()
        .find(|m| m.to == vec!["emma@example.com"])
        .unwrap_or_else(|| panic!("no mail to the reporter: {mails:?}"));
    let subject = reporter.header("Subject").expect("subject");
    assert!(
        subject.starts_with(&format!(
            "[Deskpulse #{report}] Your reported problem was resolved: "
        )) && subject.ends_with("Printer jams on every page"),
        "{subject}"
    );
    let body = reporter.body();
    assert!(body.contains("How:     Replaced the fuser unit"), "{body}");
    assert!(!body.contains("emma@example.com"), "{body}");

    // Every channel delivered; nothing failed. The server prints a mail
    // before it answers "250", and the deliverer records a pass's outcomes
    // once the pass ends, so the counts may lag the last mail a moment.
    let expected = vec![1 + u64::from(group_hears_report), 2, 1];
    let counts = |listed: &serde_json::Value| -> Vec<u64> {
        listed
            .as_array()
            .expect("list")
            .iter()
            .map(|w| w["delivered"].as_u64().expect("count"))
            .collect()
    };
    let mut listed = serde_json::Value::Null;
    let all_counted = wait_for(Duration::from_secs(10), || {
        listed = json(
            &collector
                .cli(&admin, &["--json", "webhooks"])
                .expect_code(0),
        );
        (counts(&listed) == expected).then_some(())
    });
    assert!(all_counted.is_some(), "delivered {listed}");
    assert!(!listed.to_string().contains("s3cret-pass"));
    assert!(!collector.logs().contains("s3cret-pass"));
    assert!(
        smtp.next_mail(Duration::from_millis(500)).is_none(),
        "no other mail"
    );
}

#[test]
fn smtp_down_is_retried_and_shown_then_delivered_over_implicit_tls() {
    let test = "smtp_down_is_retried_and_shown";
    let ca = MailCa::new();
    // A port the server will listen on later: start it once, then stop it.
    let Some(first) = SmtpServer::start(test, &ca, SmtpTls::Implicit, None, 0) else {
        return;
    };
    let port = first.port;
    first.stop();
    let collector = mailing_collector(port, "tls", &ca, None);
    let admin = collector.admin_token();
    let agent = Agent::enrolled_to(&collector);
    collector
        .cli(&admin, &["webhooks", "add", "mailto:oncall@example.com"])
        .expect_code(0);
    // The ticket is written at once: SMTP being down holds nothing up
    // (the bound leaves room for one debug CLI call over TLS on a loaded
    // machine; the write never waits for a delivery).
    let started = std::time::Instant::now();
    let id = new_ticket(&collector, &admin, &agent.host_id(), "VPN drops", "p1");
    assert!(started.elapsed() < Duration::from_secs(20));

    let failing = wait_for(Duration::from_secs(30), || {
        let list = json(
            &collector
                .cli(&admin, &["--json", "webhooks"])
                .expect_code(0),
        );
        (list[0]["last_attempts"] == 1).then_some(list)
    })
    .expect("a failed attempt is listed");
    let hook = &failing[0];
    assert_eq!(hook["pending"], 1, "{hook}");
    assert_eq!(hook["delivered"], 0, "{hook}");
    let error = hook["last_error"].as_str().expect("an error");
    assert!(
        error.starts_with(&format!("smtp 127.0.0.1:{port}: ")),
        "{error}"
    );
    assert!(hook["next_attempt"].is_string(), "{hook}");
    let table = collector.cli(&admin, &["webhooks"]).expect_code(0);
    assert!(table.stdout.contains("next try"), "{}", table.stdout);
    assert!(
        table.stdout.contains(&format!("smtp 127.0.0.1:{port}")),
        "{}",
        table.stdout
    );

    // Up again: a retry (the first 30 s ± 20 % after the failure; the
    // next, should the server not be up yet, twice as long) delivers it.
    let smtp = SmtpServer::start(test, &ca, SmtpTls::Implicit, None, port).expect("restarted");
    let mail = smtp
        .next_mail(Duration::from_secs(150))
        .expect("delivered by a retry");
    assert!(mail.tls);
    assert_eq!(mail.to, vec!["oncall@example.com"]);
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.starts_with(&format!("[Deskpulse #{id}] P1 ticket #{id} opened"))),
        "{:?}",
        mail.header("Subject")
    );
    let delivered = wait_for(Duration::from_secs(10), || {
        let list = json(
            &collector
                .cli(&admin, &["--json", "webhooks"])
                .expect_code(0),
        );
        (list[0]["delivered"] == 1).then_some(list)
    })
    .expect("listed as delivered");
    assert_eq!(delivered[0]["pending"], 0, "{delivered}");
    assert!(delivered[0]["last_error"].is_null(), "{delivered}");
    assert!(
        delivered[0]["last_attempts"].as_u64() >= Some(2),
        "{delivered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_teams_messages_reach_a_real_listener_unsigned() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut received = http_receiver(listener);
    let slack_url = format!("http://{addr}/services/T000/B000/slack-secret-path");
    let teams_url = format!("http://{addr}/webhookb2/teams-secret-path");
    let slack = json(
        &collector
            .cli(
                &admin,
                &[
                    "--json",
                    "webhooks",
                    "add",
                    &slack_url,
                    "--format",
                    "slack",
                    "--event",
                    "ticket.opened",
                ],
            )
            .expect_code(0),
    );
    assert_eq!(slack["format"], "slack");
    assert_eq!(
        slack["url"],
        format!("http://{addr}/…"),
        "the path is the secret"
    );
    collector
        .cli(
            &admin,
            &[
                "webhooks",
                "add",
                &teams_url,
                "--format",
                "teams",
                "--event",
                "ticket.opened",
            ],
        )
        .expect_code(0);
    let listed = collector.cli(&admin, &["webhooks"]).expect_code(0);
    assert!(!listed.stdout.contains("secret-path"), "{}", listed.stdout);

    let agent = Agent::enrolled_to(&collector);
    let id = new_ticket(
        &collector,
        &admin,
        &agent.host_id(),
        "Outlook <!channel> crashes",
        "p2",
    );
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let request = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("a message arrives")
            .expect("a request");
        assert!(
            !request.headers.contains_key("x-deskpulse-signature"),
            "not signed: {:?}",
            request.headers
        );
        assert_eq!(request.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        bodies.push(body);
    }
    let slack = bodies
        .iter()
        .find(|b| b.get("blocks").is_some())
        .expect("the Slack message");
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.starts_with(&format!("P2 ticket #{id} opened on ")),
        "{text}"
    );
    assert!(text.ends_with("Outlook &lt;!channel&gt; crashes"), "{text}");
    assert_eq!(slack["blocks"][0]["type"], "header");
    let teams = bodies
        .iter()
        .find(|b| b.get("attachments").is_some())
        .expect("the Teams message");
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(
        card["body"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("#{id} opened"))),
        "{card}"
    );
    let listed = wait_for(Duration::from_secs(10), || {
        let list = json(
            &collector
                .cli(&admin, &["--json", "webhooks"])
                .expect_code(0),
        );
        (list[0]["delivered"] == 1 && list[1]["delivered"] == 1).then_some(list)
    });
    assert!(listed.is_some(), "both listed as delivered");
}

#[test]
fn a_fleet_wide_problem_mails_the_group_address_once_and_not_an_assignee() {
    let test = "a_fleet_wide_problem_mails_the_group_address";
    let ca = MailCa::new();
    let Some(smtp) = SmtpServer::start(test, &ca, SmtpTls::Implicit, None, 0) else {
        return;
    };
    let collector = mailing_collector(smtp.port, "tls", &ca, None);
    let admin = collector.admin_token();
    collector
        .apply_rules(deskpulse_tests::MEMORY_PROBLEM_POLICY)
        .expect_code(0);
    // The group asks for problems only (its default would add every new
    // ticket's mail); alice's own address is for her tickets, and a problem
    // is nobody's.
    for args in [
        &[
            "webhooks",
            "add",
            "mailto:oncall@example.com",
            "--event",
            "problem.opened",
        ][..],
        &[
            "webhooks",
            "add",
            "mailto:alice@example.com",
            "--assignee",
            "alice",
        ][..],
    ] {
        collector.cli(&admin, args).expect_code(0);
    }
    let agents: Vec<Agent> = (0..3).map(|_| Agent::enrolled_to(&collector)).collect();
    for agent in &agents {
        agent.command(&["run", "--once"]).expect_code(0);
    }
    let problem = wait_for(Duration::from_secs(30), || {
        let listed = json(
            &collector
                .cli(&admin, &["--json", "problems"])
                .expect_code(0),
        );
        listed.as_array()?.first().cloned()
    })
    .expect("a problem of three hosts");
    let id = problem["id"].as_i64().expect("id");

    let mail = smtp
        .next_mail(Duration::from_secs(30))
        .expect("the problem's mail arrives");
    assert_eq!(mail.to, vec!["oncall@example.com"]);
    let subject = mail.header("Subject").expect("subject");
    let priority = problem["priority"].as_str().expect("priority");
    assert!(
        subject.starts_with(&format!(
            "[Deskpulse problem #{id}] {priority} problem #{id} opened on 3 hosts: "
        )),
        "{subject}"
    );
    let body = mail.body();
    assert!(
        body.starts_with(&format!("Problem #{id} was opened.")),
        "{body}"
    );
    assert!(body.contains("Hosts:    3"), "{body}");
    assert!(body.contains("Tickets:  3 (3 open)"), "{body}");
    // Nothing else: not alice, and not the group a second time.
    assert!(
        smtp.next_mail(Duration::from_secs(3)).is_none(),
        "one mail only"
    );
    let listed = json(
        &collector
            .cli(&admin, &["--json", "webhooks"])
            .expect_code(0),
    );
    assert_eq!(listed[0]["delivered"], 1, "{listed}");
    assert_eq!(listed[1]["delivered"], 0, "{listed}");
}

#[test]
fn bad_notification_settings_and_arguments_are_one_line_each() {
    let collector_bin =
        |args: &[&str]| run(std::process::Command::new(bin("deskpulse-collector")).args(args));
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().expect("utf-8 path");
    for (args, wanted) in [
        (
            &["--smtp-host", "smtp.example.com"][..],
            "smtp: from is required",
        ),
        (
            &[
                "--smtp-host",
                "smtp.example.com",
                "--smtp-from",
                "d@example.com",
                "--smtp-tls",
                "none",
            ],
            "allowed only to a loopback host",
        ),
        (&["--smtp-from", "d@example.com"], "smtp: host is required"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir];
        all.extend_from_slice(args);
        let out = collector_bin(&all).expect_code(2);
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", out.stderr);
        assert!(lines[0].contains(wanted), "{args:?}: {}", out.stderr);
    }
    // The config file's [smtp] table: an unknown key names itself.
    let file = dir.path().join("collector.toml");
    std::fs::write(
        &file,
        "[smtp]\nhost = \"smtp.example.com\"\npasword_file = \"x\"\n",
    )
    .expect("write");
    let out = collector_bin(&["serve", "--config", file.to_str().expect("path")]).expect_code(2);
    assert!(
        out.stderr.contains("unknown field `pasword_file`"),
        "{}",
        out.stderr
    );

    let collector = Collector::start();
    let admin = collector.admin_token();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "s\n").expect("write");
    let secret = secret.to_str().expect("utf-8 path");
    for args in [
        &["webhooks", "add", "mailto:not an address"][..],
        &[
            "webhooks",
            "add",
            "mailto:a@example.com\r\nBcc: b@example.com",
        ],
        &[
            "webhooks",
            "add",
            "https://h.example/x",
            "--format",
            "email",
        ],
        &[
            "webhooks",
            "add",
            "https://h.example/x",
            "--format",
            "pager",
        ],
        &[
            "webhooks",
            "add",
            "https://h.example/x",
            "--format",
            "slack",
            "--secret-file",
            secret,
        ],
        &[
            "webhooks",
            "add",
            "mailto:a@example.com",
            "--secret-file",
            secret,
        ],
        &[
            "webhooks",
            "add",
            "mailto:a@example.com",
            "--priority",
            "P9",
        ],
    ] {
        let out = collector.cli(&admin, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error") || out.stderr.starts_with("deskpulse: error"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}
