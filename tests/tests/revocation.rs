//! Revocation (issue 20) with the real binaries on loopback: `host revoke`
//! ends a live agent session at once and the host's certificate is refused
//! from then on, also by the replica the agent does not talk to (PostgreSQL);
//! a revoked or expired API token is refused and ends an open CLI stream; a
//! revoked enrollment token enrolls nothing; and every refusal is one line.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_tests::{Agent, AgentService, Collector, postgres_database, test_hello, wait_for};

/// The log line of a session refused for a revoked host.
const REFUSED_REVOKED: &str = "refused a certificate of a revoked host";

/// Opens a session with `identity`; the refusal's message, if refused.
async fn session_refusal(collector: &Collector, identity: (&str, &str)) -> Option<String> {
    let channel = collector.channel(Some(identity)).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(test_hello()).await.expect("queue hello");
    let result = AgentServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    result.err().map(|status| {
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        status.message().to_owned()
    })
}

/// Waits until `collector` shows `host` with `presence`.
fn wait_presence(collector: &Collector, token: &str, host: &str, presence: &str) {
    wait_for(Duration::from_secs(30), || {
        let out = collector.cli(token, &["--json", "hosts"]);
        let hosts: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        hosts
            .as_array()?
            .iter()
            .any(|h| h["host_id"] == host && h["presence"] == presence)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{host} is {presence}; logs:\n{}", collector.logs()));
}

/// The agent's last error once it mentions `word`.
fn agent_error_with(agent: &Agent, word: &str) -> String {
    wait_for(Duration::from_secs(30), || {
        let line = agent.command(&["status", "--json"]).json();
        line["last_error"]
            .as_str()
            .filter(|e| e.contains(word))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("the agent's status never said {word:?}"))
}

fn token_id(collector: &Collector, token: &str) -> String {
    let me = collector
        .cli(token, &["--json", "whoami"])
        .expect_code(0)
        .json();
    me["token_id"].as_str().expect("token_id").to_owned()
}

/// A `deskpulse run … --wait` on an offline host: a stream that stays open
/// until the job finishes or the stream is cut.
fn open_stream(collector: &Collector, token: &str, host: &str) -> Child {
    let mut child = collector
        .cli_command(
            token,
            &[
                "run",
                host,
                "tcp_connect",
                "--param",
                "host=127.0.0.1",
                "--param",
                "port=9",
                "--wait",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deskpulse run");
    // The first event (the job as queued) says the stream is open.
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("waiting for") {
        match stderr.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!(
                "the stream ended before it waited: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    child.stderr = Some(stderr);
    child
}

/// Waits for a stream opened by [`open_stream`] to end; its code and the
/// last line of its stderr.
fn stream_end(mut child: Child) -> (Option<i32>, String) {
    let status = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the open stream did not end");
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (status.code(), last)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_revoke_cuts_the_live_session_and_the_agent_is_refused_after() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let service = AgentService::start(&agent, &[]);
    wait_presence(&collector, &admin, &host, "online");

    // A technician may not revoke.
    let alice = collector.api_token("alice", "technician");
    let refused = collector
        .cli(&alice, &["host", "revoke", &host])
        .expect_code(1);
    assert!(
        refused.error_line().contains("needs the admin role"),
        "{}",
        refused.stderr
    );

    let out = collector
        .cli(
            &admin,
            &["host", "revoke", &host, "--reason", "laptop stolen"],
        )
        .expect_code(0);
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);

    // The live session ends at once, with one line the agent keeps.
    let said = agent_error_with(&agent, "revoked");
    assert!(said.contains("enroll again with a fresh token"), "{said}");
    assert!(
        collector
            .logs()
            .contains("the host was revoked; ending its session"),
        "{}",
        collector.logs()
    );
    wait_presence(&collector, &admin, &host, "offline");

    // `host show` says so, in text and JSON.
    let shown = collector
        .cli(&admin, &["host", "show", &host])
        .expect_code(0);
    assert!(
        shown.stdout.contains("REVOKED") && shown.stdout.contains("laptop stolen"),
        "{}",
        shown.stdout
    );
    let shown = collector
        .cli(&admin, &["--json", "host", "show", &host])
        .expect_code(0)
        .json();
    assert!(shown["revoked_at"].is_string(), "{shown}");
    assert_eq!(shown["revoked_by"], "admin");
    assert_eq!(shown["revoke_reason"], "laptop stolen");

    // The certificate is refused from now on, with one line.
    let (cert, key) = agent.identity();
    let refusal = session_refusal(&collector, (&cert, &key))
        .await
        .expect("a revoked host's certificate is refused");
    assert!(
        refusal.contains("revoked") && refusal.contains("fresh token"),
        "{refusal}"
    );

    // The agent does not retry in a loop: restarted, it tries once, says
    // so, and waits (an hour) before it looks again.
    assert_eq!(service.stop(), Some(0));
    // The probe's refusal is logged as it is sent: count once the log has
    // taken it, and it stays the same for half a second.
    let refused_so_far = || collector.logs().matches(REFUSED_REVOKED).count();
    let before = wait_for(Duration::from_secs(10), || {
        let now = refused_so_far();
        std::thread::sleep(Duration::from_millis(500));
        (now > 0 && refused_so_far() == now).then_some(now)
    })
    .expect("the probe's refusal is logged");
    let service = AgentService::start(&agent, &[]);
    wait_for(Duration::from_secs(30), || {
        (collector.logs().matches(REFUSED_REVOKED).count() > before).then_some(())
    })
    .expect("the restarted agent is refused");
    // Its backoff starts at 1 s: a retry loop would show within 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let after = collector.logs().matches(REFUSED_REVOKED).count();
    assert_eq!(after, before + 1, "the agent retries in a loop");
    agent_error_with(&agent, "revoked");
    assert_eq!(service.stop(), Some(0));

    // Twice, unknown, ambiguous: one line each.
    let again = collector
        .cli(&admin, &["host", "revoke", &host])
        .expect_code(1);
    assert!(
        again.error_line().contains("already revoked"),
        "{}",
        again.stderr
    );
    let unknown = collector
        .cli(&admin, &["host", "revoke", "no-such-pc"])
        .expect_code(1);
    assert!(
        unknown.error_line().contains("no host matches"),
        "{}",
        unknown.stderr
    );
    assert_eq!(unknown.stderr.lines().count(), 1, "{}", unknown.stderr);

    // A re-link token cannot bring a revoked host back; a fresh ordinary
    // token enrolls the PC as a new host, with `--force` since its state
    // dir is still enrolled as the revoked one.
    let relink = collector
        .admin(&["enroll-token", "create", "--relink", &host])
        .expect_code(2);
    assert!(relink.stderr.contains("was revoked"), "{}", relink.stderr);
    agent
        .enroll_again(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let new_host = agent.host_id();
    assert_ne!(new_host, host, "a revoked host comes back as a new host");
    agent.command(&["run", "--once"]).expect_code(0);

    // Two hosts with one name (both agents run on this machine).
    let twin = Agent::new();
    twin.enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let hostname = shown["hostname"].as_str().expect("hostname").to_owned();
    let ambiguous = collector
        .cli(&admin, &["host", "revoke", &hostname])
        .expect_code(1);
    assert!(
        ambiguous.error_line().contains("use a host id"),
        "{}",
        ambiguous.stderr
    );

    // Audited once, with the reason.
    let audit = collector
        .cli(&admin, &["--json", "audit", "--action", "host.revoke"])
        .expect_code(0)
        .json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["subject"], host.as_str());
    assert!(
        entries[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("laptop stolen")),
        "{audit}"
    );
    collector.cli(&admin, &["audit", "--verify"]).expect_code(0);
}

#[test]
fn revoking_on_one_replica_ends_the_session_held_by_the_other() {
    let Some(database) = postgres_database("revocation") else {
        return;
    };
    let a = Collector::start_in(
        tempfile::tempdir().expect("data dir"),
        &["--database", &database.url],
    );
    let b_dir = tempfile::tempdir().expect("data dir");
    deskpulse_tests::run(
        std::process::Command::new(deskpulse_tests::bin("deskpulse-collector"))
            .args(["ca", "import", "--database", &database.url, "--data-dir"])
            .arg(b_dir.path())
            .arg("--cert")
            .arg(a.data_dir.path().join("ca.pem"))
            .arg("--key")
            .arg(a.data_dir.path().join("ca.key")),
    )
    .expect_code(0);
    let b = Collector::start_in(b_dir, &["--database", &database.url]);
    let admin = a.admin_token();
    let agent = Agent::new();
    agent.enroll(&a, &a.enrollment_token(1)).expect_code(0);
    let host = agent.host_id();
    let _service = AgentService::start(&agent, &[]);
    wait_presence(&b, &admin, &host, "online");

    // Revoked through B; the stream is on A.
    let out = b
        .cli(&admin, &["--json", "host", "revoke", &host])
        .expect_code(0)
        .json();
    assert_eq!(out["host_id"], host.as_str());
    let said = agent_error_with(&agent, "revoked");
    assert!(said.contains("fresh token"), "{said}");
    assert!(
        a.logs()
            .contains("the host was revoked; ending its session"),
        "A cut the session:\n{}",
        a.logs()
    );
    wait_presence(&a, &admin, &host, "offline");
}

#[test]
fn a_revoked_api_token_is_refused_at_once_and_ends_an_open_cli_stream() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let alice = collector.api_token("alice", "technician");
    let alice_id = token_id(&collector, &alice);

    // The list: every token, never a secret; last use recorded.
    let list = collector.cli(&admin, &["--json", "tokens"]).expect_code(0);
    assert!(!list.stdout.contains(&alice), "a secret is listed");
    let tokens = list.json();
    let row = tokens
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["id"] == alice_id.as_str())
        .expect("alice's token is listed")
        .clone();
    assert_eq!(row["technician"], "alice");
    assert_eq!(row["role"], "technician");
    assert_eq!(row["state"], "active");
    assert!(row["last_used"].is_string(), "whoami used it: {row}");
    assert!(row["expires_at"].is_null(), "{row}");
    let table = collector.cli(&admin, &["tokens"]).expect_code(0);
    assert!(table.stdout.contains("last used"), "{}", table.stdout);

    // Only admins list or revoke.
    let refused = collector
        .cli(&alice, &["token", "revoke", &alice_id])
        .expect_code(1);
    assert!(
        refused.error_line().contains("needs the admin role"),
        "{}",
        refused.stderr
    );

    let stream = open_stream(&collector, &alice, &host);
    collector
        .cli(&admin, &["token", "revoke", &alice_id])
        .expect_code(0);
    let (code, last) = stream_end(stream);
    assert_eq!(code, Some(1), "{last}");
    assert!(last.contains("API token revoked"), "{last}");

    let whoami = collector.cli(&alice, &["whoami"]).expect_code(1);
    assert!(
        whoami.error_line().contains("API token revoked"),
        "{}",
        whoami.stderr
    );
    let tokens = collector
        .cli(&admin, &["--json", "tokens"])
        .expect_code(0)
        .json();
    let row = tokens
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["id"] == alice_id.as_str())
        .expect("still listed")
        .clone();
    assert_eq!(row["state"], "revoked");
    assert_eq!(row["revoked_by"], "admin");
    let again = collector
        .cli(&admin, &["token", "revoke", &alice_id])
        .expect_code(1);
    assert!(
        again.error_line().contains("already revoked"),
        "{}",
        again.stderr
    );
    let unknown = collector
        .cli(&admin, &["token", "revoke", "no-such-token"])
        .expect_code(1);
    assert!(
        unknown.error_line().contains("no API token"),
        "{}",
        unknown.stderr
    );

    // The last working admin token is not revoked by mistake; once there
    // is another, it may be.
    let admin_id = token_id(&collector, &admin);
    let last = collector
        .cli(&admin, &["token", "revoke", &admin_id])
        .expect_code(1);
    assert!(
        last.error_line().contains("last working admin token")
            && last
                .error_line()
                .contains("deskpulse-collector token create"),
        "{}",
        last.stderr
    );
    let second = collector.api_token("root2", "admin");
    collector
        .cli(&second, &["token", "revoke", &admin_id])
        .expect_code(0);
    collector.cli(&admin, &["whoami"]).expect_code(1);

    let audit = collector
        .cli(
            &second,
            &["--json", "audit", "--action", "api-token.revoke"],
        )
        .expect_code(0)
        .json();
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(2),
        "{audit}"
    );
}

#[test]
fn an_expired_api_token_is_refused_and_ends_its_open_stream() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();

    let bad = collector
        .admin(&[
            "token",
            "create",
            "--name",
            "bob",
            "--role",
            "viewer",
            "--expires",
            "soon",
        ])
        .expect_code(2);
    assert!(bad.stderr.contains("--expires"), "{}", bad.stderr);

    let out = collector
        .admin(&[
            "token",
            "create",
            "--name",
            "bob",
            "--role",
            "technician",
            "--expires",
            "5s",
        ])
        .expect_code(0);
    assert!(out.stderr.contains("expires"), "{}", out.stderr);
    let bob = out.stdout.trim().to_owned();
    let stream = open_stream(&collector, &bob, &host);
    let (code, last) = stream_end(stream);
    assert_eq!(code, Some(1), "{last}");
    assert!(last.contains("API token expired at"), "{last}");

    let whoami = collector.cli(&bob, &["whoami"]).expect_code(1);
    assert!(
        whoami.error_line().contains("API token expired at"),
        "{}",
        whoami.stderr
    );
    let tokens = collector
        .cli(&admin, &["--json", "tokens"])
        .expect_code(0)
        .json();
    let row = tokens
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["technician"] == "bob")
        .expect("bob's token is listed")
        .clone();
    assert_eq!(row["state"], "expired", "{row}");
    assert!(row["expires_at"].is_string(), "{row}");
}

#[test]
fn a_revoked_enrollment_token_enrolls_nothing() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let created = collector
        .cli(&admin, &["enroll-token", "create", "--uses", "3"])
        .expect_code(0);
    let secret = created.stdout.trim().to_owned();

    let list = collector
        .cli(&admin, &["--json", "enroll-token", "list"])
        .expect_code(0);
    assert!(!list.stdout.contains(&secret), "a secret is listed");
    let tokens = list.json();
    let row = tokens.as_array().expect("a list")[0].clone();
    assert_eq!(row["state"], "usable", "{row}");
    assert_eq!(row["uses_left"], 3);
    assert_eq!(row["uses_allowed"], 3);
    assert!(row["relink_host_id"].is_null(), "{row}");
    let id = row["id"].as_str().expect("id").to_owned();

    let alice = collector.api_token("alice", "technician");
    collector
        .cli(&alice, &["enroll-token", "list"])
        .expect_code(1);

    collector
        .cli(&admin, &["enroll-token", "revoke", &id])
        .expect_code(0);
    let agent = Agent::new();
    let refused = agent.enroll(&collector, &secret);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("revoked"), "{}", refused.stderr);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );

    let tokens = collector
        .cli(&admin, &["--json", "enroll-token", "list"])
        .expect_code(0)
        .json();
    let row = tokens.as_array().expect("a list")[0].clone();
    assert_eq!(row["state"], "revoked", "{row}");
    assert_eq!(row["uses_left"], 3, "nothing was spent");
    let again = collector
        .cli(&admin, &["enroll-token", "revoke", &id])
        .expect_code(1);
    assert!(
        again.error_line().contains("already revoked"),
        "{}",
        again.stderr
    );
    let unknown = collector
        .cli(&admin, &["enroll-token", "revoke", "nope"])
        .expect_code(1);
    assert!(
        unknown.error_line().contains("no enrollment token"),
        "{}",
        unknown.stderr
    );

    // A re-link token shows the host it re-links.
    let good = Agent::new();
    good.enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = good.host_id();
    collector
        .admin(&["enroll-token", "create", "--relink", &host])
        .expect_code(0);
    let tokens = collector
        .cli(&admin, &["--json", "enroll-token", "list"])
        .expect_code(0)
        .json();
    let relink = tokens
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["relink_host_id"] == host.as_str())
        .expect("the re-link token is listed")
        .clone();
    assert!(relink["relink_hostname"].is_string(), "{relink}");
    let audit = collector
        .cli(
            &admin,
            &["--json", "audit", "--action", "enrollment-token.revoke"],
        )
        .expect_code(0)
        .json();
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(1),
        "{audit}"
    );
}
