//! The Slack, Teams and e-mail texts from stored payloads: their shape,
//! the `change` and `suggestions` parts when present, graceful reading of
//! what is missing, and hostile text kept inert.

use super::*;

fn payload(event: &str, extra: serde_json::Value) -> String {
    let mut value = serde_json::json!({
        "event": event,
        "delivery_id": "d-1",
        "occurred_at": "2026-11-24T10:00:00.000Z",
        "ticket": {
            "id": 17, "title": "disk-full: / is 95% full", "host_id": "h-1",
            "hostname": "pc-0142", "rule": "disk-full", "subject": "/",
            "status": "new", "priority": "P1", "severity": "high",
            "assignee": null, "escalation": 0, "occurrences": 1, "flaps": 0,
            "opened_at": "2026-11-24T10:00:00.000Z", "updated_at": "2026-11-24T10:00:00.000Z",
            "resolved_at": null, "response_due": "2026-11-24T10:15:00.000Z",
            "resolution_due": "2026-11-24T14:00:00.000Z", "resolution": null
        }
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        map.extend(extra);
    }
    value.to_string()
}

const EVIDENCE: &str = r#"{"metric":"disk_used_percent","op":">","threshold":90,"value":95.2,
    "subject":"/","sample_at_ms":1795514400000,"samples":[[1,2]],"reporter_email":"emma@example.com"}"#;

fn stored(event: &str, extra: serde_json::Value) -> Stored {
    Stored::parse(&stored_body(&payload(event, extra), EVIDENCE))
}

#[test]
fn the_evidence_summary_keeps_scalar_facts_without_the_reporter_address() {
    let lines = evidence_summary(EVIDENCE);
    assert!(
        lines.contains(&"metric: disk_used_percent".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"sample_at_ms: 2026-11-24T10:00:00.000Z".to_owned()),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("samples") || l.contains("emma")),
        "{lines:?}"
    );
    assert!(evidence_summary("not json").is_empty());
}

#[test]
fn slack_messages_carry_text_and_plain_text_blocks() {
    let message: serde_json::Value =
        serde_json::from_str(&slack(&stored("ticket.opened", serde_json::json!({}))))
            .expect("json");
    assert_eq!(
        message["text"],
        "P1 ticket #17 opened on pc-0142: disk-full: / is 95% full"
    );
    let blocks = message["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    let fields = blocks[1]["fields"].as_array().expect("fields");
    assert!(
        fields.iter().any(|f| f["text"] == "Host: pc-0142 (h-1)"),
        "{fields:?}"
    );
    assert!(fields.len() <= 10, "Slack takes at most 10 fields");
    assert!(
        blocks[2]["text"]["text"]
            .as_str()
            .expect("evidence")
            .contains("value: 95.2")
    );
    assert_eq!(blocks.last().expect("context")["type"], "context");
    // No block of type mrkdwn: agent text is never formatted or linked.
    assert!(!message.to_string().contains("mrkdwn"));
}

#[test]
fn teams_messages_are_one_adaptive_card() {
    let message: serde_json::Value =
        serde_json::from_str(&teams(&stored("ticket.escalated", serde_json::json!({}))))
            .expect("json");
    assert_eq!(message["type"], "message");
    let attachment = &message["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["body"][0]["text"],
        "P1 ticket #17 escalated (level 0) on pc-0142: disk-full: / is 95% full"
    );
    let facts = card["body"][1]["facts"].as_array().expect("facts");
    assert!(
        facts
            .iter()
            .any(|f| f["title"] == "Priority" && f["value"] == "P1 (high)")
    );
}

#[test]
fn a_change_and_suggestions_are_shown_when_the_payload_has_them() {
    let extra = serde_json::json!({
        "change": {"kind": "assign", "by": "alice", "from": null, "to": "bob", "note": null},
        "suggestions": [
            {"ticket_id": 12, "title": "disk-full: / is 97% full", "resolution": "Rotated the logs"},
            "a bare string suggestion"
        ]
    });
    let view = stored("ticket.updated", extra);
    assert_eq!(
        headline(&view.payload),
        "P1 ticket #17 updated (assign) on pc-0142: disk-full: / is 95% full"
    );
    let body = mail_body(&view, Reader::HelpDesk);
    assert!(
        body.contains("Change:") && body.contains("assign by alice: bob"),
        "{body}"
    );
    assert!(
        body.contains("- #12 disk-full: / is 97% full: Rotated the logs"),
        "{body}"
    );
    assert!(body.contains("- a bare string suggestion"), "{body}");
    let slack = slack(&view);
    assert!(slack.contains("Suggested fixes"), "{slack}");
    let teams = teams(&view);
    assert!(teams.contains("Rotated the logs"), "{teams}");
}

#[test]
fn missing_or_odd_payloads_still_render() {
    for body in [
        "",
        "null",
        "{}",
        r#"{"ticket": 5}"#,
        r#"{"payload": {"ticket": {"id": "x"}}}"#,
    ] {
        let stored = Stored::parse(body);
        assert!(!slack(&stored).is_empty());
        assert!(!teams(&stored).is_empty());
        assert!(mail_subject(&stored, Reader::HelpDesk).starts_with("[Deskpulse #"));
    }
}

#[test]
fn hostile_text_stays_on_one_line_without_mentions_or_links() {
    let mut value: serde_json::Value =
        serde_json::from_str(&payload("ticket.opened", serde_json::json!({}))).expect("json");
    value["ticket"]["title"] =
        "<!channel> <https://evil.example|click>\r\nBcc: victim@example.com".into();
    let stored = Stored::parse(&stored_body(&value.to_string(), "{}"));
    let slack: serde_json::Value = serde_json::from_str(&slack(&stored)).expect("json");
    let text = slack["text"].as_str().expect("text");
    assert!(!text.contains('<') && !text.contains('\n'), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(text.contains("https[:]//evil.example"), "{text}");
    let subject = mail_subject(&stored, Reader::HelpDesk);
    assert!(
        !subject.contains('\r') && !subject.contains('\n'),
        "{subject}"
    );
    assert!(subject.chars().count() <= 180);
}

#[test]
fn the_reporter_hears_the_resolution_without_the_evidence() {
    let mut value: serde_json::Value =
        serde_json::from_str(&payload("ticket.resolved", serde_json::json!({}))).expect("json");
    value["ticket"]["resolution"] = "Replaced the printer's fuser".into();
    value["ticket"]["title"] = "Printer jams on every page".into();
    let stored = Stored::parse(&stored_body(&value.to_string(), EVIDENCE));
    let subject = mail_subject(&stored, Reader::Reporter);
    assert_eq!(
        subject,
        "[Deskpulse #17] Your reported problem was resolved: Printer jams on every page"
    );
    let body = mail_body(&stored, Reader::Reporter);
    assert!(body.contains("Ticket:  #17"), "{body}");
    assert!(
        body.contains("How:     Replaced the printer's fuser"),
        "{body}"
    );
    assert!(!body.contains("disk_used_percent"), "{body}");
    let desk = mail_body(&stored, Reader::HelpDesk);
    assert!(
        desk.contains("Evidence:\n  metric: disk_used_percent"),
        "{desk}"
    );
}

/// A problem event as the problem engine writes it (`webhooks::problems`).
fn problem_stored(event: crate::model::TicketEvent, resolution: Option<&str>) -> Stored {
    let problem = crate::webhooks::problems::ProblemPayload {
        id: 7,
        kind: "rule".into(),
        key: "disk-full".into(),
        title: "disk-full on 45 hosts".into(),
        status: if resolution.is_some() {
            "resolved"
        } else {
            "open"
        }
        .into(),
        priority: "P1".into(),
        hosts: 45,
        tickets: 45,
        open_tickets: if resolution.is_some() { 0 } else { 45 },
        opened_at: "2026-11-24T10:00:00.000Z".into(),
        updated_at: "2026-11-24T10:00:00.000Z".into(),
        resolved_at: None,
        resolved_by: resolution.map(|_| "bob".to_owned()),
        resolution: resolution.map(str::to_owned),
    };
    let body = crate::webhooks::problems::payload(event, "d-9", 1_795_514_400_000, &problem);
    Stored::parse(&stored_body(&body, ""))
}

#[test]
fn a_problem_shows_its_priority_hosts_and_tickets_in_every_format() {
    use crate::model::TicketEvent;
    let opened = problem_stored(TicketEvent::ProblemOpened, None);
    assert_eq!(
        mail_subject(&opened, Reader::HelpDesk),
        "[Deskpulse problem #7] P1 problem #7 opened on 45 hosts: disk-full on 45 hosts"
    );
    let body = mail_body(&opened, Reader::HelpDesk);
    assert!(body.starts_with("Problem #7 was opened.\n\n"), "{body}");
    assert!(body.contains("Tickets:  45 (45 open)"), "{body}");
    assert!(!body.contains("Ticket #0"), "{body}");
    assert!(!body.contains("Evidence"), "{body}");

    let slack: serde_json::Value = serde_json::from_str(&slack(&opened)).expect("json");
    assert_eq!(
        slack["text"],
        "P1 problem #7 opened on 45 hosts: disk-full on 45 hosts"
    );
    let teams: serde_json::Value = serde_json::from_str(&teams(&opened)).expect("json");
    let facts = &teams["attachments"][0]["content"]["body"][1]["facts"];
    assert_eq!(facts[0]["title"], "Problem");
    assert_eq!(facts[0]["value"], "#7");

    let resolved = problem_stored(
        TicketEvent::ProblemResolved,
        Some("rolled openssl back to 3.0.14"),
    );
    let body = mail_body(&resolved, Reader::HelpDesk);
    assert!(body.starts_with("Problem #7 was resolved.\n\n"), "{body}");
    assert!(
        body.contains("Resolution:  rolled openssl back to 3.0.14"),
        "{body}"
    );
    assert!(body.contains("Resolved by: bob"), "{body}");
}
