//! `deskpulse enrollments pending|approve|deny` (issue 20): the re-link
//! approval queue. An enrollment under an ordinary token that claimed an
//! existing host's hardware identity got a host of its own and waits here;
//! an admin approves it (it takes over the host it claimed, whose previous
//! certificate stops working) or denies it (it stays a separate host).
//! Kept apart from the other commands so the CLI's dispatch grows by one
//! arm.

use deskpulse_proto::v1::{DecideRelinkRequest, ListRelinkRequestsRequest, RelinkRequest};
use serde::Serialize;

use super::output::{print_json, table, time};
use super::{Client, call_failed};
use crate::exit::CommandResult;

/// The subcommands of `deskpulse enrollments`.
#[derive(Debug, clap::Subcommand)]
pub enum EnrollmentsCommand {
    /// Enrollments that claimed an existing host's hardware identity and
    /// wait for an admin's say, oldest first (technician or admin).
    Pending {
        /// Also the decided ones (approved, denied, void), newest first.
        #[arg(long)]
        all: bool,
    },
    /// Approve a request: the new enrollment takes over the host it
    /// claimed, with its id and history; that host's previous certificate
    /// stops working, and the new enrollment's own host is merged into it
    /// (admin).
    Approve {
        /// The request id, as `deskpulse enrollments pending` lists it.
        id: i64,
    },
    /// Deny a request: the new enrollment stays a separate host, and the
    /// duplicate-identity ticket stays open for a technician (admin).
    Deny {
        /// The request id.
        id: i64,
    },
}

/// One request in `--json` output (docs/cli-json.md).
#[derive(Debug, Serialize)]
struct RequestJson<'a> {
    id: i64,
    status: &'a str,
    claimed_host_id: &'a str,
    claimed_hostname: &'a str,
    new_host_id: &'a str,
    hostname: &'a str,
    hardware_uuid: &'a str,
    hardware_serial: &'a str,
    source_address: &'a str,
    requested_at_ms: i64,
    requested_at: String,
    decided_at: Option<String>,
    decided_by: Option<&'a str>,
}

impl<'a> From<&'a RelinkRequest> for RequestJson<'a> {
    fn from(r: &'a RelinkRequest) -> Self {
        Self {
            id: r.id,
            status: &r.status,
            claimed_host_id: &r.claimed_host_id,
            claimed_hostname: &r.claimed_hostname,
            new_host_id: &r.new_host_id,
            hostname: &r.hostname,
            hardware_uuid: &r.hardware_uuid,
            hardware_serial: &r.hardware_serial,
            source_address: &r.source_address,
            requested_at_ms: r.requested_at_unix_ms,
            requested_at: time(r.requested_at_unix_ms),
            decided_at: (r.decided_at_unix_ms > 0).then(|| time(r.decided_at_unix_ms)),
            decided_by: (!r.decided_by.is_empty()).then_some(r.decided_by.as_str()),
        }
    }
}

fn identity(r: &RelinkRequest) -> String {
    match (r.hardware_serial.is_empty(), r.hardware_uuid.is_empty()) {
        (false, false) => format!("serial {} / uuid {}", r.hardware_serial, r.hardware_uuid),
        (false, true) => format!("serial {}", r.hardware_serial),
        (true, false) => format!("uuid {}", r.hardware_uuid),
        (true, true) => "-".into(),
    }
}

/// Runs `deskpulse enrollments …`.
pub(super) async fn run(
    client: &mut Client,
    command: EnrollmentsCommand,
    json: bool,
) -> CommandResult {
    let (id, approve) = match command {
        EnrollmentsCommand::Pending { all } => return list(client, all, json).await,
        EnrollmentsCommand::Approve { id } => (id, true),
        EnrollmentsCommand::Deny { id } => (id, false),
    };
    let request = DecideRelinkRequest { id };
    let decided = if approve {
        client.approve_relink_request(request).await
    } else {
        client.deny_relink_request(request).await
    }
    .map_err(call_failed)?
    .into_inner();
    if json {
        return print_json(&RequestJson::from(&decided));
    }
    if approve {
        outln!(
            "approved re-link request {}: host {} ({}) is now the enrollment as {} from {}; its previous certificate no longer works, and host {} was merged into it",
            decided.id,
            decided.claimed_host_id,
            decided.claimed_hostname,
            decided.hostname,
            decided.source_address,
            decided.new_host_id
        );
    } else {
        outln!(
            "denied re-link request {}: host {} ({} from {}) stays separate from host {}",
            decided.id,
            decided.new_host_id,
            decided.hostname,
            decided.source_address,
            decided.claimed_host_id
        );
    }
    Ok(())
}

async fn list(client: &mut Client, all: bool, json: bool) -> CommandResult {
    let requests = client
        .list_relink_requests(ListRelinkRequestsRequest { all })
        .await
        .map_err(call_failed)?
        .into_inner()
        .requests;
    if json {
        return print_json(&requests.iter().map(RequestJson::from).collect::<Vec<_>>());
    }
    if requests.is_empty() {
        outln!(
            "{}",
            if all {
                "no re-link requests"
            } else {
                "no re-link requests are pending"
            }
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            let claimed = if r.claimed_hostname.is_empty() {
                format!("{} (gone)", r.claimed_host_id)
            } else {
                format!("{} ({})", r.claimed_host_id, r.claimed_hostname)
            };
            let mut row = vec![
                r.id.to_string(),
                claimed,
                r.new_host_id.clone(),
                r.hostname.clone(),
                identity(r),
                r.source_address.clone(),
                time(r.requested_at_unix_ms),
            ];
            if all {
                row.insert(1, r.status.clone());
            }
            row
        })
        .collect();
    let mut header = vec![
        "id",
        "claims host",
        "new host",
        "hostname",
        "hardware",
        "from",
        "at",
    ];
    if all {
        header.insert(1, "status");
    }
    out!("{}", table(&header, &rows));
    Ok(())
}
