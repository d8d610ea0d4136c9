//! `deskpulse problems`, `problem show ID` and `problem resolve ID
//! --resolution TEXT` (issue 23): fleet-wide problems, the tickets of one
//! rule (or the same employee report) from many hosts. Kept apart from the
//! other commands so the CLI's dispatch grows by two arms. JSON in
//! `docs/cli-json.md`.

use deskpulse_proto::v1::{
    GetProblemRequest, GetProblemResponse, ListProblemsRequest, Problem, ResolveProblemRequest,
};
use serde::Serialize;

use super::output::{iso, print_json, table, ticket_json, time};
use super::terminal::inert;
use super::{Client, call_failed};
use crate::exit::{CommandResult, Failure};

/// The subcommands of `deskpulse problem`.
#[derive(Debug, clap::Subcommand)]
pub enum ProblemCommand {
    /// A problem: its tickets and hosts, the changes its hosts share, and
    /// its timeline.
    Show {
        /// The problem id, as `deskpulse problems` lists it.
        id: i64,
    },
    /// Resolve a problem and each of its open tickets with the same
    /// resolution (technician or admin); the tickets carry it into the
    /// knowledge base.
    Resolve {
        /// The problem id.
        id: i64,
        /// What fixed it, e.g. "rolled openssl back to 3.0.14", as
        /// `ticket resolve` takes it.
        #[arg(long)]
        resolution: String,
    },
}

/// `deskpulse problems` arguments.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// open or resolved; both when omitted.
    #[arg(long, value_parser = parse_status)]
    status: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

fn parse_status(text: &str) -> Result<String, String> {
    let status = text.trim().to_ascii_lowercase();
    if matches!(status.as_str(), "open" | "resolved") {
        Ok(status)
    } else {
        Err(format!(
            "{text:?} is not a problem status; expected open or resolved"
        ))
    }
}

/// One problem in `--json` output.
#[derive(Debug, Serialize)]
struct ProblemJson<'a> {
    id: i64,
    kind: &'a str,
    key: &'a str,
    title: &'a str,
    status: &'a str,
    priority: &'a str,
    hosts: i64,
    tickets: i64,
    open_tickets: i64,
    opened_at: Option<String>,
    updated_at: Option<String>,
    resolved_at: Option<String>,
    resolved_by: Option<&'a str>,
    resolution: Option<&'a str>,
    common_change: Option<&'a str>,
}

fn some(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl<'a> From<&'a Problem> for ProblemJson<'a> {
    fn from(p: &'a Problem) -> Self {
        Self {
            id: p.id,
            kind: &p.kind,
            key: &p.key,
            title: &p.title,
            status: &p.status,
            priority: &p.priority,
            hosts: p.hosts,
            tickets: p.tickets,
            open_tickets: p.open_tickets,
            opened_at: iso(p.opened_at_unix_ms),
            updated_at: iso(p.updated_at_unix_ms),
            resolved_at: iso(p.resolved_at_unix_ms),
            resolved_by: some(&p.resolved_by),
            resolution: some(&p.resolution),
            common_change: some(&p.common_change),
        }
    }
}

/// "rule cpu-test" or "report: outlook wont start".
fn what(p: &Problem) -> String {
    match p.kind.as_str() {
        "rule" => format!("rule {}", p.key),
        _ => format!("report: {}", p.key),
    }
}

/// Runs `deskpulse problems`.
pub(super) async fn list(client: &mut Client, args: ListArgs, json: bool) -> CommandResult {
    let problems = client
        .list_problems(ListProblemsRequest {
            status: args.status.unwrap_or_default(),
            limit: args.limit,
        })
        .await
        .map_err(call_failed)?
        .into_inner()
        .problems;
    if json {
        return print_json(&problems.iter().map(ProblemJson::from).collect::<Vec<_>>());
    }
    if problems.is_empty() {
        outln!("no problems");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = problems
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                what(p),
                p.hosts.to_string(),
                p.priority.clone(),
                format!("{} ({} open)", p.status, p.open_tickets),
                time(p.opened_at_unix_ms),
                if p.common_change.is_empty() {
                    "-".into()
                } else {
                    p.common_change.clone()
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "id",
                "what",
                "hosts",
                "priority",
                "status",
                "opened",
                "common change"
            ],
            &rows
        )
    );
    Ok(())
}

/// Runs `deskpulse problem …`.
pub(super) async fn run(client: &mut Client, command: ProblemCommand, json: bool) -> CommandResult {
    let detail = match command {
        ProblemCommand::Show { id } => client.get_problem(GetProblemRequest { id }).await,
        ProblemCommand::Resolve { id, resolution } => {
            if resolution.trim().is_empty() {
                return Err(Failure::usage(
                    "problem resolve needs the resolution: deskpulse problem resolve ID --resolution \"what fixed it\"",
                ));
            }
            client
                .resolve_problem(ResolveProblemRequest { id, resolution })
                .await
        }
    }
    .map_err(call_failed)?
    .into_inner();
    show(&detail, json)
}

fn show(detail: &GetProblemResponse, json: bool) -> CommandResult {
    let p = detail.problem.clone().unwrap_or_default();
    if json {
        return print_json(&serde_json::json!({
            "problem": ProblemJson::from(&p),
            "tickets": detail.tickets.iter().map(ticket_json).collect::<Vec<_>>(),
            "common_changes": detail.common_changes.iter().map(|c| serde_json::json!({
                "section": c.section,
                "item": c.item,
                "new_value": some(&c.new_value),
                "added": c.added,
                "hosts": c.hosts,
                "of_hosts": c.of_hosts,
                "text": c.text,
            })).collect::<Vec<_>>(),
            "timeline": detail.timeline.iter().map(|w| serde_json::json!({
                "at": iso(w.at_unix_ms),
                "author": w.author,
                "note": w.note,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut out = String::new();
    let mut field =
        |name: &str, value: String| out.push_str(&format!("{name:<15}{}\n", inert(&value)));
    field("problem", format!("#{} {}", p.id, p.title));
    field("what", what(&p));
    field(
        "status",
        format!(
            "{} {}, {} of {} tickets open",
            p.priority, p.status, p.open_tickets, p.tickets
        ),
    );
    field("hosts", p.hosts.to_string());
    field("opened", time(p.opened_at_unix_ms));
    if !p.resolution.is_empty() {
        field(
            "resolved",
            format!(
                "{} by {}: {}",
                time(p.resolved_at_unix_ms),
                p.resolved_by,
                p.resolution
            ),
        );
    }
    if detail.common_changes.is_empty() {
        field(
            "in common",
            "no change shared by a third of its hosts".into(),
        );
    }
    for change in &detail.common_changes {
        field("in common", change.text.clone());
    }
    out!("{out}");
    let rows: Vec<Vec<String>> = detail
        .tickets
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.hostname.clone(),
                t.priority.clone(),
                t.status.clone(),
                time(t.opened_at_unix_ms),
                t.title.clone(),
            ]
        })
        .collect();
    outln!("\ntickets");
    out!(
        "{}",
        table(
            &["id", "host", "priority", "status", "opened", "title"],
            &rows
        )
    );
    outln!("\ntimeline");
    for entry in &detail.timeline {
        outln!(
            "{}  {}  {}",
            time(entry.at_unix_ms),
            inert(&entry.author),
            inert(&entry.note)
        );
    }
    Ok(())
}
