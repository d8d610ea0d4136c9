//! `deskpulse run`, `jobs`, `job show|cancel` and `diagnostics`: remote
//! diagnostics from the technician's side. Parameters are checked here
//! against the catalog before any connection (a usage error, exit 2), again
//! by the collector, and finally by the agent.

use std::time::Duration;

use clap::Subcommand;
use deskpulse_proto::catalog;
use deskpulse_proto::v1::job_event::Kind as Event;
use deskpulse_proto::v1::{
    DiagnosticParam, GetJobRequest, Job, ListDiagnosticsRequest, ListDiagnosticsResponse,
    ListJobsRequest, RunDiagnosticRequest,
};
use serde_json::json;

use super::output::{iso, print_json, table, time};
use super::terminal::LiveText;
use super::{Client, call_failed};
use crate::exit::{CommandResult, Failure};

/// `deskpulse run HOST DIAGNOSTIC ...`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A host name, a host id, or a unique prefix of an id.
    host: String,
    /// The diagnostic, e.g. ping; `deskpulse diagnostics` lists them.
    diagnostic: String,
    /// A parameter as key=value, e.g. --param host=10.0.0.1; repeat for
    /// more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// Attach the result to this ticket.
    #[arg(long, value_name = "ID")]
    ticket: Option<i64>,
    /// Wait for the result even while the host is offline.
    #[arg(long, conflicts_with = "no_wait")]
    wait: bool,
    /// Do not wait for the output, even while the host is online.
    #[arg(long)]
    no_wait: bool,
    /// How long the request waits for an offline host, 1m to 7d.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
}

/// `deskpulse job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job with its output.
    Show {
        /// The job id, or a unique start of it (at least 4 characters).
        id: String,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// The job id, or a unique start of it (at least 4 characters).
        id: String,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e}; try e.g. 24h"))?;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(7 * 24 * 3600) {
        return Err("must be between 1m and 7d".into());
    }
    Ok(ttl)
}

impl RunArgs {
    /// Checks the diagnostic and its parameters against the catalog, before
    /// any I/O.
    pub fn check(&self) -> Result<(), Failure> {
        catalog::parse(&self.diagnostic, &self.params)
            .map(|_| ())
            .map_err(Failure::usage)
    }
}

/// A job as JSON (documented in docs/cli-json.md).
pub fn job_json(job: &Job) -> serde_json::Value {
    json!({
        "id": job.id,
        "host_id": job.host_id,
        "hostname": job.hostname,
        "diagnostic": job.diagnostic,
        "params": job.params,
        "risk": job.risk,
        "requested_by": job.requested_by,
        "ticket_id": (job.ticket_id != 0).then_some(job.ticket_id),
        "state": job.state,
        "created_at": iso(job.created_at_unix_ms),
        "expires_at": iso(job.expires_at_unix_ms),
        "sent_at": iso(job.sent_at_unix_ms),
        "started_at": iso(job.started_at_unix_ms),
        "finished_at": iso(job.finished_at_unix_ms),
        "exit_code": job.has_exit_code.then_some(job.exit_code),
        "reason": (!job.reason.is_empty()).then_some(&job.reason),
        "output": String::from_utf8_lossy(&job.output),
        "truncated": job.truncated,
        "cancel_requested": job.cancel_requested,
    })
}

/// One line saying how a job stands.
fn summary(job: &Job) -> String {
    let took = if job.finished_at_unix_ms > 0 && job.started_at_unix_ms > 0 {
        format!(
            ", took {} ms",
            job.finished_at_unix_ms - job.started_at_unix_ms
        )
    } else {
        String::new()
    };
    match job.state.as_str() {
        "completed" => format!(
            "job {}: {} on {} completed, exit status {}{took}{}",
            job.id,
            job.diagnostic,
            job.hostname,
            job.exit_code,
            if job.truncated {
                " (output cut at its cap)"
            } else {
                ""
            }
        ),
        "queued" => format!(
            "job {} queued: {} is offline; {} runs when its agent reconnects, until {}",
            job.id,
            job.hostname,
            job.diagnostic,
            time(job.expires_at_unix_ms)
        ),
        "sent" => format!(
            "job {} sent to {}; `deskpulse job show {}` shows the result",
            job.id, job.hostname, job.id
        ),
        state => format!(
            "job {}: {} on {} {state}{}{took}",
            job.id,
            job.diagnostic,
            job.hostname,
            if job.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", job.reason)
            }
        ),
    }
}

/// Exit 0 for a completed job or one still queued or sent, 1 otherwise,
/// with the job's summary as the error line.
fn outcome(job: &Job) -> CommandResult {
    if matches!(job.state.as_str(), "completed" | "queued" | "sent") {
        Ok(())
    } else {
        Err(Failure::runtime(summary(job)))
    }
}

/// `deskpulse run`: streams live output while the host is online (D27).
pub async fn run(client: &mut Client, args: RunArgs, json_out: bool) -> CommandResult {
    let mut stream = client
        .run_diagnostic(RunDiagnosticRequest {
            host: args.host,
            diagnostic: args.diagnostic,
            params: args
                .params
                .into_iter()
                .map(|(key, value)| DiagnosticParam { key, value })
                .collect(),
            ticket_id: args.ticket.unwrap_or(0),
            ttl_secs: args.ttl.as_secs(),
            wait: args.wait,
            no_wait: args.no_wait,
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut last: Option<Job> = None;
    let mut printed_live = false;
    let mut live = LiveText::default();
    while let Some(event) = stream.message().await.map_err(call_failed)? {
        match event.kind {
            Some(Event::Job(job)) => {
                if !json_out && last.is_none() && job.state == "queued" && args.wait {
                    errln!(
                        "waiting for {} to reconnect (Ctrl-C stops waiting; the job stays queued)",
                        job.hostname
                    );
                }
                last = Some(job);
            }
            Some(Event::Output(chunk)) if !json_out => {
                printed_live = true;
                live.write(&chunk);
            }
            _ => {}
        }
    }
    let job = last.ok_or_else(|| Failure::runtime("the collector sent no job"))?;
    if json_out {
        print_json(&job_json(&job))?;
        return outcome(&job);
    }
    if !printed_live && !job.output.is_empty() {
        live.write(&job.output);
    }
    live.finish();
    if (printed_live || !job.output.is_empty()) && !live.ends_with_newline() {
        outln!();
    }
    outln!("{}", summary(&job));
    outcome(&job)
}

/// `deskpulse jobs`.
pub async fn list(
    client: &mut Client,
    host: Option<String>,
    state: Option<String>,
    limit: u32,
    json_out: bool,
) -> CommandResult {
    let jobs = client
        .list_jobs(ListJobsRequest {
            host: host.unwrap_or_default(),
            state: state.unwrap_or_default(),
            limit,
        })
        .await
        .map_err(call_failed)?
        .into_inner()
        .jobs;
    if json_out {
        return print_json(&serde_json::Value::Array(
            jobs.iter().map(job_json).collect(),
        ));
    }
    if jobs.is_empty() {
        outln!("no jobs match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.hostname.clone(),
                format!("{} {}", j.diagnostic, j.params).trim().to_owned(),
                j.state.clone(),
                if j.has_exit_code {
                    j.exit_code.to_string()
                } else {
                    String::new()
                },
                j.requested_by.clone(),
                time(j.created_at_unix_ms),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["job", "host", "diagnostic", "state", "exit", "by", "asked"],
            &rows
        )
    );
    Ok(())
}

/// `deskpulse job show|cancel`.
pub async fn job(client: &mut Client, command: JobCommand, json_out: bool) -> CommandResult {
    let job = match command {
        JobCommand::Show { id } => client.get_job(GetJobRequest { id }).await,
        JobCommand::Cancel { id } => client.cancel_job(GetJobRequest { id }).await,
    }
    .map_err(call_failed)?
    .into_inner();
    if json_out {
        return print_json(&job_json(&job));
    }
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{name:<13}{}\n", super::terminal::inert(&value)))
    };
    field("job", job.id.clone());
    field("host", format!("{} ({})", job.hostname, job.host_id));
    field(
        "diagnostic",
        format!("{} {} ({})", job.diagnostic, job.params, job.risk),
    );
    field("state", job.state.clone());
    if job.has_exit_code {
        field("exit status", job.exit_code.to_string());
    }
    if !job.reason.is_empty() {
        field("reason", job.reason.clone());
    }
    field("asked by", job.requested_by.clone());
    if job.ticket_id != 0 {
        field("ticket", job.ticket_id.to_string());
    }
    field("asked", time(job.created_at_unix_ms));
    field("expires", time(job.expires_at_unix_ms));
    for (name, at) in [
        ("sent", job.sent_at_unix_ms),
        ("started", job.started_at_unix_ms),
        ("finished", job.finished_at_unix_ms),
    ] {
        if at > 0 {
            field(name, time(at));
        }
    }
    if job.cancel_requested && !matches!(job.state.as_str(), "cancelled") {
        field("cancel", "asked; the agent stops it when told".into());
    }
    out!("{out}");
    if !job.output.is_empty() {
        outln!(
            "output{}:",
            if job.truncated {
                " (cut at its cap)"
            } else {
                ""
            }
        );
        let mut text = LiveText::default();
        text.write(&job.output);
        text.finish();
        if !text.ends_with_newline() {
            outln!();
        }
    }
    Ok(())
}

/// `deskpulse diagnostics [HOST]`.
pub async fn catalog(client: &mut Client, host: Option<String>, json_out: bool) -> CommandResult {
    let reply: ListDiagnosticsResponse = client
        .list_diagnostics(ListDiagnosticsRequest {
            host: host.clone().unwrap_or_default(),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let for_host = host.is_some();
    if json_out {
        return print_json(&json!({
            "catalog_version": reply.catalog_version,
            "host_id": for_host.then_some(&reply.host_id),
            "hostname": for_host.then_some(&reply.hostname),
            "host_catalog_version": for_host.then_some(reply.host_catalog_version),
            "diagnostics": reply.diagnostics.iter().map(|d| json!({
                "id": d.id,
                "description": d.description,
                "risk": d.risk,
                "timeout_secs": d.timeout_secs,
                "output_cap_bytes": d.output_cap_bytes,
                "role": d.role,
                "params": d.params.iter().map(|p| json!({"name": p.name, "help": p.help})).collect::<Vec<_>>(),
                "enabled_on_host": for_host.then_some(d.enabled_on_host),
                "unavailable_on_host": (for_host && !d.unavailable_on_host.is_empty())
                    .then_some(&d.unavailable_on_host),
            })).collect::<Vec<_>>(),
        }));
    }
    if for_host {
        if reply.host_catalog_version == 0 {
            outln!(
                "{} has not reported its diagnostics yet (it has not connected since enrolling)",
                reply.hostname
            );
        } else {
            outln!(
                "{} ({}): agent catalog version {}; the agent's own config decides what runs",
                reply.hostname,
                reply.host_id,
                reply.host_catalog_version
            );
        }
    }
    let rows: Vec<Vec<String>> = reply
        .diagnostics
        .iter()
        .map(|d| {
            let params: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
            let mut row = vec![
                d.id.clone(),
                d.risk.clone(),
                d.role.clone(),
                params.join(","),
                d.description.clone(),
            ];
            if for_host {
                // Enabled but not runnable there: why, as its agent said.
                let enabled = match (d.enabled_on_host, d.unavailable_on_host.as_str()) {
                    (false, _) => "no".to_owned(),
                    (true, "") => "yes".to_owned(),
                    (true, why) => format!("unavailable: {why}"),
                };
                row.insert(1, enabled);
            }
            row
        })
        .collect();
    let header: &[&str] = if for_host {
        &["diagnostic", "enabled", "risk", "role", "params", "what"]
    } else {
        &["diagnostic", "risk", "role", "params", "what"]
    };
    out!("{}", table(header, &rows));
    Ok(())
}
