//! The web console end to end (issue 22): a real collector on loopback
//! with `--web-listen`, a real agent whose employee reports a problem with
//! markup in its text, and a technician who signs in with a local account
//! made by `deskpulse-collector user create`, works the ticket and finds
//! its resolution in the knowledge base; a viewer signed in with an API
//! token is refused what the role does not allow. Requests go over real
//! TLS: HTTP/1.1 to the console's own address, and HTTP/2 (curl, as a
//! browser would) to the TLS port the agents and the CLI use. On a host's
//! page, its charts' data is the agent's real health history, and a
//! technician runs `tcp_connect` on the real agent against a listener on
//! loopback and reads its output as it streams; a viewer's run is refused.

use std::process::Command;
use std::time::Duration;

use deskpulse_tests::web::{WebClient, csrf_token, form_value, sign_in_nonce};
use deskpulse_tests::{Agent, AgentService, Collector, require_tool, run, wait_for};

/// What an employee could type that a browser would run if a page wrote
/// it unescaped.
const PAYLOAD: &str = "printer <script>alert(1)</script><img src=x onerror=alert(2)> jams";

/// Signs `client` in with the sign-in form's `fields`; the page it lands
/// on must be the queue.
fn sign_in(client: &mut WebClient, fields: &str) {
    let page = client.get("/sign-in");
    assert_eq!(page.status, 200);
    let nonce = sign_in_nonce(&page.body);
    let signed = client.post("/sign-in", &format!("nonce={nonce}&{fields}"));
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(signed.header("location"), Some("/"));
    let session = signed
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-deskpulse="))
        .expect("a session cookie")
        .to_owned();
    for part in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(part), "{session} lacks {part}");
    }
}

#[test]
fn a_technician_works_an_employee_ticket_in_the_console_and_a_viewer_cannot() {
    let collector = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--web-listen", "127.0.0.1:0"],
    );
    let web_addr = collector.web_addr.expect("the console's address");
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let _service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    agent.command(&["report-issue", PAYLOAD]).expect_code(0);
    let admin = collector.admin_token();
    let ticket = wait_for(Duration::from_secs(30), || {
        let out = collector.cli(&admin, &["--json", "tickets", "--status", "open"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["rule"] == "user-report")
            .and_then(|t| t["id"].as_i64())
    })
    .expect("a user-report ticket");

    // Signed out, every page goes to sign-in, with the security headers.
    let mut tech = WebClient::new(web_addr, &collector.ca_file());
    let away = tech.get("/");
    assert_eq!(away.status, 303);
    assert_eq!(away.header("location"), Some("/sign-in"));
    let csp = away.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(away.header("x-frame-options"), Some("DENY"));
    assert_eq!(away.header("referrer-policy"), Some("no-referrer"));

    collector.create_user("wes", "technician", "a long enough password");
    sign_in(
        &mut tech,
        "method=password&name=wes&password=a+long+enough+password",
    );
    let queue = tech.get("/");
    assert_eq!(queue.status, 200);
    assert!(queue.body.contains("wes (technician)"));
    assert!(
        queue.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the employee's text is shown as text"
    );
    assert!(!queue.body.contains("<script>alert") && !queue.body.contains("<img src=x"));
    let page = tech.get(&format!("/tickets/{ticket}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("What fired it"));
    assert!(!page.body.contains("<script>alert") && !page.body.contains("<img src=x"));
    let csrf = csrf_token(&page.body);

    let note = format!("/tickets/{ticket}/note");
    let refused = tech.post(&note, "value=no+token");
    assert_eq!(refused.status, 403, "a form without its CSRF token");
    let noted = tech.post(&note, &format!("value=looking+at+it&csrf={csrf}"));
    assert_eq!(noted.status, 303);
    let resolution = "cleared the paper path and restarted the spooler";
    let resolved = tech.post(
        &format!("/tickets/{ticket}/resolve"),
        &format!("value={}&csrf={csrf}", form_value(resolution)),
    );
    assert_eq!(resolved.status, 303, "{}", resolved.body);
    let page = tech.get(&format!("/tickets/{ticket}"));
    assert!(page.body.contains("looking at it") && page.body.contains(resolution));
    let kb = tech.get("/kb?q=spooler");
    assert!(kb.body.contains(resolution), "the resolution is in the KB");

    // The API sees the same change, made by wes.
    let shown = collector.cli(&admin, &["--json", "ticket", "show", &ticket.to_string()]);
    assert!(shown.stdout.contains("\"resolved\""), "{}", shown.stdout);
    assert!(shown.stdout.contains("wes"), "{}", shown.stdout);

    // A viewer reads the ticket, sees no action, and a forged one is refused.
    let viewer_token = collector.api_token("val", "viewer");
    let mut viewer = WebClient::new(web_addr, &collector.ca_file());
    sign_in(
        &mut viewer,
        &format!("method=token&token={}", form_value(&viewer_token)),
    );
    let page = viewer.get(&format!("/tickets/{ticket}"));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(&format!("/tickets/{ticket}/reopen")));
    let csrf = csrf_token(&page.body);
    let forged = viewer.post(
        &format!("/tickets/{ticket}/reopen"),
        &format!("csrf={csrf}"),
    );
    assert_eq!(forged.status, 403);
    assert!(
        forged.body.contains("needs the technician role"),
        "{}",
        forged.body
    );
    assert_eq!(
        viewer.get("/audit").status,
        403,
        "the audit log is for admins"
    );

    // Signing out ends the session.
    let csrf = csrf_token(&tech.get("/").body);
    let out = tech.post("/sign-out", &format!("csrf={csrf}"));
    assert_eq!(out.header("location"), Some("/sign-in"));
    assert_eq!(tech.get("/").header("location"), Some("/sign-in"));

    // The TLS port serves the console too, over HTTP/2 as browsers speak it.
    if require_tool("curl", "the console on the TLS port") {
        let out = run(Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg("--cacert")
            .arg(collector.ca_file())
            .arg(format!("{}/sign-in", collector.url())));
        assert_eq!(out.stdout.trim(), "2 200", "{}", out.stderr);
    }
}

#[test]
fn a_host_page_charts_real_health_and_runs_tcp_connect_on_the_real_agent() {
    let collector = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--web-listen", "127.0.0.1:0"],
    );
    let web_addr = collector.web_addr.expect("the console's address");
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let _service = AgentService::start(&agent, &[]);
    agent.wait_service_connected();
    let host = agent.host_id();

    let token = collector.api_token("tess", "technician");
    let mut tech = WebClient::new(web_addr, &collector.ca_file());
    sign_in(
        &mut tech,
        &format!("method=token&token={}", form_value(&token)),
    );
    let page = tech.get(&format!("/hosts/{host}"));
    assert_eq!(page.status, 200, "{}", page.body);
    for part in [
        "id=\"run-diagnostic\"",
        "<option value=\"tcp_connect\"",
        "class=\"chart\"",
        "id=\"live-output\"",
    ] {
        assert!(page.body.contains(part), "the host page lacks {part}");
    }
    let csrf = csrf_token(&page.body);

    // The charts' data is the health the agent reported (every second).
    let points = wait_for(Duration::from_secs(30), || {
        let data = tech.get(&format!("/hosts/{host}/health?range=24h"));
        let data: serde_json::Value = serde_json::from_str(&data.body).ok()?;
        let points = data["points"].as_array()?.clone();
        (points.len() >= 2).then_some(points)
    })
    .expect("health history in the chart data");
    assert!(
        points
            .iter()
            .all(|p| p["cpu_percent"].is_number() && p["memory_used_percent"].as_f64() > Some(0.0)),
        "{points:?}"
    );

    // Every inventory section, once the agent's inventory is in.
    wait_for(Duration::from_secs(30), || {
        let page = tech.get(&format!("/hosts/{host}"));
        ["system", "os", "network", "software"]
            .iter()
            .all(|section| page.body.contains(&format!("data-section=\"{section}\"")))
            .then_some(())
    })
    .expect("the inventory's sections on the host page");

    // tcp_connect against a listener here, its output streamed as it comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    let port = listener.local_addr().expect("its address").port();
    let run = tech.request(
        "POST",
        &format!("/hosts/{host}/run"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/x-ndjson"),
            ("x-csrf-token", &csrf),
        ],
        &format!("diagnostic=tcp_connect&host=127.0.0.1&port={port}"),
    );
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(run.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = run
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l:?}")))
        .collect();
    assert_eq!(
        lines.first().map(|l| &l["job"]["diagnostic"]),
        Some(&serde_json::json!("tcp_connect"))
    );
    let finished = &lines.last().expect("lines")["finished"];
    assert_eq!(finished["state"], "completed", "{}", run.body);
    assert_eq!(finished["exit_code"], 0, "{}", run.body);
    let wanted = format!("connected to 127.0.0.1:{port}");
    assert!(
        finished["output"]
            .as_str()
            .is_some_and(|o| o.contains(&wanted)),
        "{}",
        run.body
    );
    assert!(
        lines
            .iter()
            .any(|l| l["output"].as_str().is_some_and(|o| o.contains(&wanted))),
        "the output arrived live before the result: {}",
        run.body
    );
    let page = tech.get(&format!("/hosts/{host}"));
    assert!(
        page.body.contains(&format!("port={port}")),
        "the job is listed"
    );

    // A viewer sees no form, and a forged run is refused.
    let viewer_token = collector.api_token("val", "viewer");
    let mut viewer = WebClient::new(web_addr, &collector.ca_file());
    sign_in(
        &mut viewer,
        &format!("method=token&token={}", form_value(&viewer_token)),
    );
    let page = viewer.get(&format!("/hosts/{host}"));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"run-diagnostic\""));
    let csrf = csrf_token(&page.body);
    let forged = viewer.post(
        &format!("/hosts/{host}/run"),
        &format!("csrf={csrf}&diagnostic=tcp_connect&host=127.0.0.1&port={port}"),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(
        forged.body.contains("needs the technician role"),
        "{}",
        forged.body
    );
    drop(listener);
}
