//! Automatic triage (issue 23) with the real collector and a real agent: a
//! small ext4 disk is filled until a rule fires, and the ticket arrives
//! with the output of the diagnostics its rule names, run on the PC
//! through the normal job path: listed as requested by `triage`, audited,
//! and printed by `deskpulse ticket show` as a technician reads it. Needs
//! root (it loop-mounts the disk); without it the test says so and passes,
//! except under `CI=true`, where it fails.

use deskpulse_tests::triage::{LoopDisk, Setup, inject_and_wait, notes};

#[test]
fn a_full_disk_ticket_arrives_with_its_triage_output() {
    let Some(disk) = LoopDisk::mount(48) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true: this test needs root and loop devices"
        );
        println!("SKIPPED: needs root, loop devices and mkfs.ext4");
        return;
    };
    let setup = Setup::start();
    let (id, timing) = inject_and_wait(&setup, &disk).expect("a ticket with its triage output");
    println!(
        "fault -> ticket {:?}, -> triage attached {:?}",
        timing.to_ticket, timing.to_triage
    );

    let shown = setup.ticket_show(id);
    let log = notes(&shown);
    let mount = disk.path().to_string_lossy().into_owned();
    assert!(
        log.iter()
            .any(|n| n.starts_with(&format!("triage: running disk_usage path={mount}"))),
        "{log:#?}"
    );
    let disk_usage = log
        .iter()
        .find(|n| n.starts_with("diagnostic job ") && n.contains(": disk_usage "))
        .expect("the disk_usage output in the worklog");
    assert!(disk_usage.contains("completed exit 0"), "{disk_usage}");
    assert!(
        disk_usage.contains(&format!("{mount}/downloads")),
        "the directory that filled it is named: {disk_usage}"
    );
    let top = log
        .iter()
        .find(|n| n.starts_with("diagnostic job ") && n.contains(": top_processes "))
        .expect("the top_processes output in the worklog");
    assert!(top.contains("completed exit 0"), "{top}");

    // As a technician reads it.
    let text = setup
        .collector
        .cli(&setup.token, &["ticket", "show", &id.to_string()])
        .expect_code(0)
        .stdout;
    assert!(text.contains("triage: running disk_usage"), "{text}");
    assert!(text.contains(&format!("{mount}/downloads")), "{text}");

    // The runs are ordinary jobs, asked by triage and audited.
    let jobs = setup
        .collector
        .cli(&setup.token, &["jobs", "--json"])
        .expect_code(0)
        .json();
    let triage: Vec<&serde_json::Value> = jobs
        .as_array()
        .expect("a list")
        .iter()
        .filter(|j| j["requested_by"] == "triage" && j["ticket_id"] == id)
        .collect();
    assert_eq!(triage.len(), 2, "{jobs:#}");
    let audit = setup
        .collector
        .cli(&setup.token, &["audit", "--json"])
        .expect_code(0)
        .stdout;
    assert!(
        audit.contains(&format!("for ticket {id}, triage of rule small-disk-full")),
        "{audit}"
    );
}

#[test]
fn a_triage_that_changes_state_or_is_unknown_is_refused_with_its_line() {
    let collector = deskpulse_tests::Collector::start();
    let token = collector.admin_token();
    let rules = tempfile::NamedTempFile::new().expect("rules file");
    std::fs::write(
        rules.path(),
        "[[rule]]\nname = \"fix-it\"\nmetric = \"service_down\"\nop = \"==\"\nthreshold = 1\n\
         severity = \"high\"\ntriage = [\"restart_service service={subject}\"]\n\n\
         [[rule]]\nname = \"guess\"\nmetric = \"cpu_percent\"\nop = \">\"\nthreshold = 99\n\
         severity = \"low\"\ntriage = [\"defrag\"]\n",
    )
    .expect("write");
    let path = rules.path().to_string_lossy().into_owned();
    let refused = collector
        .cli(&token, &["rules", "apply", &path])
        .expect_code(1);
    assert!(
        refused.stderr.contains(
            "line 1: rule fix-it: triage may run only read-only diagnostics; restart_service changes state on the PC"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("line 9: rule guess: triage names unknown diagnostic \"defrag\""),
        "{}",
        refused.stderr
    );
    // Nothing was applied; the defaults' triage is in force and listed.
    let rules = collector
        .cli(&token, &["rules", "--json"])
        .expect_code(0)
        .json();
    let disk = rules["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == "disk-full")
        .expect("the default disk-full");
    assert_eq!(
        disk["triage"],
        serde_json::json!(["disk_usage path={subject}"])
    );
    assert!(
        !rules["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["name"] == "fix-it"),
        "nothing applied"
    );
}
