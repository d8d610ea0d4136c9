//! `deskpulse audit`: the audit log, newest first, filtered by host,
//! technician, action prefix and age; `--verify` asks the collector to walk
//! the hash chain and its signed anchors (D28). Kept apart from the other
//! commands so the CLI's dispatch grows by one arm.

use std::time::Duration;

use deskpulse_proto::v1::{AuditEntry, ListAuditRequest, VerifyAuditRequest};
use serde::Serialize;

use super::output::{print_json, table, time};
use super::{Client, call_failed, now_ms};
use crate::exit::{CommandResult, Failure};

/// The flags of `deskpulse audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only entries about this host (a host name, a host id, or a unique
    /// prefix of one).
    #[arg(long)]
    host: Option<String>,
    /// Only entries by this technician (a name, or "me").
    #[arg(long)]
    technician: Option<String>,
    /// Only actions starting with this, e.g. "diagnostic." or "api-token.".
    #[arg(long, value_name = "PREFIX")]
    action: Option<String>,
    /// How far back, e.g. 24h or 7d; default: all of it.
    #[arg(long, value_parser = super::parse_since)]
    since: Option<Duration>,
    /// At most this many entries.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Check the hash chain and its signed anchors instead of listing
    /// (admin); exits 1 naming the first problem.
    #[arg(long, conflicts_with_all = ["host", "technician", "action", "since"])]
    verify: bool,
}

/// The largest page asked for; the server's limit.
const PAGE: u32 = 1000;

/// One audit entry in `--json` output (docs/cli-json.md).
#[derive(Debug, Serialize)]
struct EntryJson<'a> {
    id: i64,
    seq: i64,
    at_ms: i64,
    at: String,
    technician: Option<&'a str>,
    technician_id: Option<&'a str>,
    token_id: Option<&'a str>,
    action: &'a str,
    subject: &'a str,
    hostname: Option<&'a str>,
    detail: &'a str,
    hash: &'a str,
}

fn some(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl<'a> From<&'a AuditEntry> for EntryJson<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Self {
            id: e.id,
            seq: e.seq,
            at_ms: e.at_unix_ms,
            at: time(e.at_unix_ms),
            technician: some(&e.technician),
            technician_id: some(&e.technician_id),
            token_id: some(&e.token_id),
            action: &e.action,
            subject: &e.subject,
            hostname: some(&e.hostname),
            detail: &e.detail,
            hash: &e.hash,
        }
    }
}

/// Runs `deskpulse audit`.
pub(super) async fn run(client: &mut Client, args: AuditArgs, json: bool) -> CommandResult {
    if args.verify {
        return verify(client, json).await;
    }
    let since_unix_ms = args.since.map_or(0, |since| {
        now_ms().saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    });
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut page_token = String::new();
    let truncated = loop {
        let left = args.limit - u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let page = client
            .list_audit(ListAuditRequest {
                host: args.host.clone().unwrap_or_default(),
                technician: args.technician.clone().unwrap_or_default(),
                action_prefix: args.action.clone().unwrap_or_default(),
                since_unix_ms,
                page_size: left.min(PAGE),
                page_token: page_token.clone(),
            })
            .await
            .map_err(call_failed)?
            .into_inner();
        entries.extend(page.entries);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break false;
        }
        if entries.len() >= args.limit as usize {
            break true;
        }
    };
    if json {
        return print_json(&serde_json::json!({
            "entries": entries.iter().map(EntryJson::from).collect::<Vec<_>>(),
            "truncated": truncated,
        }));
    }
    if entries.is_empty() {
        outln!("no audit entries match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                time(e.at_unix_ms),
                if e.technician.is_empty() {
                    "-".into()
                } else {
                    e.technician.clone()
                },
                e.action.clone(),
                // The host's name beside its id: ids alone say nothing to
                // a reader.
                if e.hostname.is_empty() {
                    e.subject.clone()
                } else {
                    format!("{} ({})", e.subject, e.hostname)
                },
                e.detail.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["id", "at", "who", "action", "subject", "detail"], &rows)
    );
    if truncated {
        errln!("more entries match; narrow with --since, --host or --action, or raise --limit");
    }
    Ok(())
}

async fn verify(client: &mut Client, json: bool) -> CommandResult {
    let v = client
        .verify_audit(VerifyAuditRequest {})
        .await
        .map_err(call_failed)?
        .into_inner();
    if json {
        print_json(&serde_json::json!({
            "ok": v.ok,
            "problem": some(&v.problem),
            "entries_checked": v.entries_checked,
            "anchors_checked": v.anchors_checked,
        }))?;
    } else if v.ok {
        outln!(
            "audit chain intact: {} entries, {} anchors",
            v.entries_checked,
            v.anchors_checked
        );
    }
    if v.ok {
        Ok(())
    } else {
        Err(Failure::runtime(v.problem))
    }
}
