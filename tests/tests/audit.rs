//! End to end, the audit log (D28): audited admin and security actions
//! through the real binaries show up in `deskpulse audit`, the chain
//! verifies through the API and on the data dir, and an edit made straight
//! in the SQLite file is caught and named by row.

use deskpulse_tests::{Agent, Collector, Run};

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).expect("json on stdout")
}

fn actions(list: &serde_json::Value) -> Vec<String> {
    list["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_owned())
        .collect()
}

#[test]
fn audited_actions_are_listed_verified_and_a_database_edit_is_named() {
    let collector = Collector::start();
    let admin = collector.admin_token();
    let alice = collector.api_token("alice", "technician");
    let viewer = collector.api_token("vic", "viewer");
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    collector
        .cli(&alice, &["host", "tag", &host, "criticality=high"])
        .expect_code(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"cpu-saturated\"\nenabled = false\n",
    )
    .expect("write rules");
    collector
        .cli(&admin, &["rules", "apply", rules.to_str().expect("utf-8")])
        .expect_code(0);

    // Any role may read the log, newest first, with who did what.
    let all = json(&collector.cli(&viewer, &["--json", "audit"]).expect_code(0));
    assert_eq!(
        actions(&all),
        [
            "policy.apply",
            "host.tag",
            "host.enroll",
            "enrollment-token.create",
            "api-token.create",
            "api-token.create",
            "api-token.create",
        ]
    );
    let tag = &all["entries"][1];
    assert_eq!(tag["technician"], "alice");
    assert_eq!(tag["subject"], host.as_str());
    assert_eq!(tag["detail"], "criticality=high");
    assert!(tag["token_id"].is_string() && tag["at"].is_string());
    assert_eq!(all["truncated"], false);

    // Filters: by host (the host's entries only), action prefix, limit.
    let on_host = json(
        &collector
            .cli(&viewer, &["--json", "audit", "--host", &host])
            .expect_code(0),
    );
    assert_eq!(actions(&on_host), ["host.tag", "host.enroll"]);
    let tokens = json(
        &collector
            .cli(&viewer, &["--json", "audit", "--action", "api-token."])
            .expect_code(0),
    );
    // The initial admin's token is audited too, when the data dir is made.
    assert_eq!(
        actions(&tokens),
        ["api-token.create", "api-token.create", "api-token.create"]
    );
    let by_alice = json(
        &collector
            .cli(&viewer, &["--json", "audit", "--technician", "alice"])
            .expect_code(0),
    );
    assert_eq!(actions(&by_alice), ["host.tag"]);
    let mine = json(
        &collector
            .cli(&alice, &["--json", "audit", "--technician", "me"])
            .expect_code(0),
    );
    assert_eq!(actions(&mine), ["host.tag"]);
    let newest = json(
        &collector
            .cli(
                &viewer,
                &["--json", "audit", "--limit", "2", "--since", "1h"],
            )
            .expect_code(0),
    );
    assert_eq!(actions(&newest), ["policy.apply", "host.tag"]);
    assert_eq!(newest["truncated"], true);
    let table = collector.cli(&viewer, &["audit"]).expect_code(0);
    assert!(
        table
            .stdout
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("id"))
            && table.stdout.contains("criticality=high"),
        "{}",
        table.stdout
    );

    // Verification is for admins; the chain is intact, and anchored
    // (admin commands and admin RPCs anchor the head at once).
    let refused = collector.cli(&alice, &["audit", "--verify"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.error_line().contains("admin"), "{}", refused.stderr);
    let ok = collector.cli(&admin, &["audit", "--verify"]).expect_code(0);
    let line = ok.stdout.trim();
    assert!(
        line.starts_with("audit chain intact: 7 entries, ") && !line.ends_with(" 0 anchors"),
        "{line}"
    );
    let ok = collector.admin(&["audit", "verify"]).expect_code(0);
    assert!(
        ok.stdout.starts_with("audit chain intact: 7 entries"),
        "{}",
        ok.stdout
    );

    // Someone with the database file rewrites what alice did.
    let db = rusqlite::Connection::open(collector.data_dir.path().join("deskpulse.db"))
        .expect("open the database file");
    db.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    let id: i64 = db
        .query_row(
            "SELECT id FROM audit_log WHERE action = 'host.tag'",
            [],
            |r| r.get(0),
        )
        .expect("the tag entry");
    db.execute(
        "UPDATE audit_log SET detail = 'criticality=low' WHERE id = ?1",
        [id],
    )
    .expect("edit");
    drop(db);
    let expected = format!("audit row {id}: hash does not match its contents (edited?)");

    let caught = collector.cli(&admin, &["audit", "--verify"]);
    assert_eq!(caught.code, 1, "{}", caught.stderr);
    assert!(
        caught.error_line().ends_with(&expected),
        "{}",
        caught.stderr
    );
    assert_eq!(caught.stderr.lines().count(), 1, "{}", caught.stderr);
    let caught = collector.cli(&admin, &["--json", "audit", "--verify"]);
    assert_eq!(caught.code, 1);
    let report = json(&caught);
    assert_eq!(report["ok"], false);
    assert_eq!(report["problem"], expected.as_str());

    // The server-side command sees it too, with the collector stopped.
    let data_dir = collector.into_data_dir();
    let caught = deskpulse_tests::run(
        std::process::Command::new(deskpulse_tests::bin("deskpulse-collector"))
            .args(["audit", "verify", "--data-dir"])
            .arg(data_dir.path()),
    );
    assert_eq!(caught.code, 1, "{}", caught.stderr);
    assert!(
        caught.error_line().ends_with(&expected),
        "{}",
        caught.stderr
    );
}

/// Someone with the database file recomputes every hash after changing a
/// row, with the documented algorithm, and moves the head: the chain is
/// consistent again, but the heads signed into the anchor file are not in it.
#[test]
fn a_consistently_rewritten_chain_fails_on_the_anchors() {
    use deskpulse_collector::audit::chain::{GENESIS, Link, entry_hash};

    let collector = Collector::start();
    collector.api_token("alice", "technician");
    collector.api_token("bob", "technician");
    collector.enrollment_token(2);
    let data_dir = collector.into_data_dir();

    let db = rusqlite::Connection::open(data_dir.path().join("deskpulse.db"))
        .expect("open the database file");
    type Row = (
        i64,
        i64,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
    );
    let rows: Vec<Row> = db
        .prepare(
            "SELECT seq, at_ms, actor_technician_id, actor_token_id, action, subject, detail \
             FROM audit_log ORDER BY seq",
        )
        .expect("prepare")
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    // The initial admin token (seq 1), alice, bob, the enrollment token.
    assert_eq!(rows.len(), 4);
    let mut prev = GENESIS.to_owned();
    for (seq, at_ms, tech, token, action, subject, detail) in rows {
        let detail = if seq == 2 {
            "by local-admin; technician mallory".to_owned()
        } else {
            detail
        };
        let hash = entry_hash(&Link {
            seq,
            at_ms,
            technician_id: tech.as_deref(),
            token_id: token.as_deref(),
            action: &action,
            subject: &subject,
            detail: &detail,
            prev_hash: &prev,
        });
        db.execute(
            "UPDATE audit_log SET detail = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![detail, prev, hash, seq],
        )
        .expect("rewrite");
        prev = hash;
    }
    db.execute("UPDATE audit_head SET hash = ?1 WHERE id = 1", [&prev])
        .expect("head");
    drop(db);

    let caught = deskpulse_tests::run(
        std::process::Command::new(deskpulse_tests::bin("deskpulse-collector"))
            .args(["audit", "verify", "--data-dir"])
            .arg(data_dir.path()),
    );
    assert_eq!(caught.code, 1, "{}", caught.stderr);
    let line = caught.error_line();
    assert!(
        line.contains("anchor at seq 2 (") && line.ends_with("the chain was rewritten"),
        "{}",
        caught.stderr
    );
}

#[test]
fn a_technicians_ticket_changes_are_audited_with_the_host_named() {
    let collector = Collector::start();
    let alice = collector.api_token("alice", "technician");
    let viewer = collector.api_token("vic", "viewer");
    let agent = Agent::new();
    agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    let host = agent.host_id();
    let new = json(
        &collector
            .cli(
                &alice,
                &["--json", "ticket", "new", &host, "--title", "printer jams"],
            )
            .expect_code(0),
    );
    let id = new["ticket"]["id"].as_i64().expect("ticket id").to_string();
    let hostname = new["ticket"]["hostname"]
        .as_str()
        .expect("hostname")
        .to_owned();
    collector
        .cli(&alice, &["ticket", "note", &id, "swapped the fuser"])
        .expect_code(0);
    collector
        .cli(
            &alice,
            &["ticket", "resolve", &id, "--resolution", "new fuser"],
        )
        .expect_code(0);

    let listed = json(
        &collector
            .cli(&viewer, &["--json", "audit", "--action", "ticket."])
            .expect_code(0),
    );
    assert_eq!(
        actions(&listed),
        ["ticket.resolve", "ticket.note", "ticket.create"]
    );
    let subject = format!("ticket {id} on host {host}");
    for (entry, detail) in listed["entries"].as_array().expect("entries").iter().zip([
        "resolved: new fuser",
        "swapped the fuser",
        "printer jams",
    ]) {
        assert_eq!(entry["technician"], "alice", "{entry}");
        assert_eq!(entry["subject"], subject.as_str(), "{entry}");
        assert_eq!(entry["hostname"], hostname.as_str(), "{entry}");
        assert_eq!(entry["detail"], detail, "{entry}");
    }
    // The table names the host beside its id, and `--host` takes the name.
    let text = collector
        .cli(
            &viewer,
            &["audit", "--host", &hostname, "--action", "ticket."],
        )
        .expect_code(0);
    assert!(
        text.stdout.contains(&format!("{subject} ({hostname})")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("alice"), "{}", text.stdout);
}
