//! Contract tests of automatic triage (issue 23): a rule that fires queues
//! its read-only diagnostics as audited jobs for its ticket, in the
//! transaction that opens it; what the host's agent does not enable is
//! noted, not queued; the result lands in the ticket's worklog; an offline
//! ticket gets the host's last health and changes instead of runs.

use super::{TestDb, apply_valid_policy, desktop_host, disk_sample, enrolled_host, result_report};
use crate::store::{AuditQuery, JobQuery, SessionOpen, TRIAGE_REQUESTER};

pub(super) async fn a_rule_that_fires_queues_its_triage_as_audited_jobs_for_its_ticket(db: TestDb) {
    let store = db.store.clone();
    apply_valid_policy(
        &store,
        r#"
[[rule]]
name = "disk-full"
metric = "disk_used_percent"
op = ">"
threshold = 90
recover = 85
severity = "high"
triage = ["disk_usage path={subject} depth=2", "service_status service=cron", "top_processes sort=memory"]
"#,
        1,
    )
    .await;
    let host = enrolled_host(&store).await;
    // The agent enables two of the three.
    store
        .session_opened(
            &SessionOpen {
                host_id: host.clone(),
                replica: "r1".into(),
                agent_version: "1".into(),
                health_interval_secs: 60,
                catalog_version: 1,
                enabled_diagnostics: vec!["disk_usage".into(), "top_processes".into()],
                unavailable_diagnostics: Vec::new(),
            },
            500,
        )
        .await
        .expect("session");
    store
        .store_reports(&[disk_sample(&host, 1, 1_000, 95.0)], 1_000)
        .await
        .expect("store");

    let jobs = store
        .list_jobs(&JobQuery {
            host_id: Some(host.clone()),
            state: None,
            limit: 10,
        })
        .await
        .expect("jobs");
    let mut made: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.diagnostic.clone(), j.params_text.clone()))
        .collect();
    made.sort();
    assert_eq!(made.len(), 2, "{made:?}");
    assert_eq!(made[0].0, "disk_usage");
    assert!(
        made[0].1.contains("path=/") && made[0].1.contains("depth=2"),
        "{made:?}"
    );
    assert_eq!(made[1].0, "top_processes");
    let ticket = jobs[0].ticket_id.expect("attached to the ticket");
    assert!(jobs.iter().all(|j| j.ticket_id == Some(ticket)
        && j.requested_by == TRIAGE_REQUESTER
        && j.state == "queued"));
    let queued = store.queued_triage_jobs(0, 10).await.expect("queued");
    assert_eq!(queued.len(), 2);
    assert!(
        store
            .queued_triage_jobs(2_000, 10)
            .await
            .expect("queued")
            .is_empty()
    );

    let (row, log) = store.ticket(ticket).await.expect("read").expect("ticket");
    assert_eq!(row.rule, "disk-full");
    let notes: Vec<&str> = log.iter().map(|e| e.note.as_str()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("triage: running disk_usage path=/")),
        "{notes:#?}"
    );
    assert!(
        notes.contains(
            &"triage: service_status service=cron not run: the agent on this PC does not enable it; its own config decides"
        ),
        "{notes:#?}"
    );

    // Each run is audited as asked by the rule's triage, by no technician.
    let audit = store
        .list_audit(&AuditQuery {
            action_prefix: Some("diagnostic.request".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert!(audit.iter().all(|e| {
        e.technician_id.is_none()
            && e.detail
                .contains(&format!("for ticket {ticket}, triage of rule disk-full"))
    }));

    // The result comes back and is attached to the ticket.
    let disk = jobs
        .iter()
        .find(|j| j.diagnostic == "disk_usage")
        .expect("disk");
    store.job_sent(&disk.id, 1_100).await.expect("sent");
    store
        .store_reports(&[result_report(&host, 1, &disk.id, "completed")], 2_500)
        .await
        .expect("result");
    let (_, log) = store.ticket(ticket).await.expect("read").expect("ticket");
    let last = &log.last().expect("worklog").note;
    assert!(
        last.starts_with(&format!("diagnostic job {}: disk_usage", disk.id)),
        "{last}"
    );

    // The same condition holding on adds no second round of triage.
    store
        .store_reports(&[disk_sample(&host, 2, 61_000, 96.0)], 61_000)
        .await
        .expect("store");
    let again = store
        .list_jobs(&JobQuery {
            host_id: Some(host.clone()),
            state: None,
            limit: 10,
        })
        .await
        .expect("jobs");
    assert_eq!(again.len(), 2);
}

pub(super) async fn an_offline_ticket_gets_the_last_health_and_changes_instead_of_runs(db: TestDb) {
    let store = db.store.clone();
    let min = 60_000;
    let desktop = desktop_host(&store).await;
    store
        .store_reports(&[disk_sample(&desktop, 2, 0, 42.0)], 0)
        .await
        .expect("store");
    assert_eq!(
        store.advance_rule_timers(11 * min).await.expect("timers"),
        1
    );
    let jobs = store
        .list_jobs(&JobQuery {
            host_id: Some(desktop.clone()),
            state: None,
            limit: 10,
        })
        .await
        .expect("jobs");
    assert!(jobs.is_empty(), "nothing runs on an offline PC: {jobs:?}");
    let tickets = store
        .list_tickets(&super::open_tickets())
        .await
        .expect("list");
    let (_, log) = store
        .ticket(tickets[0].id)
        .await
        .expect("read")
        .expect("ticket");
    let note = log
        .iter()
        .map(|e| e.note.as_str())
        .find(|n| n.starts_with("triage: the PC is offline"))
        .expect("the offline triage note");
    assert!(
        note.contains("last health (11m before): CPU 5%, memory 40%, fullest disk 42%"),
        "{note}"
    );
    assert!(note.contains("no inventory changes recorded"), "{note}");
}
