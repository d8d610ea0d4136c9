//! Revocation from the CLI (issue 20), all admin: `host revoke HOST
//! [--reason TEXT]`, `host retire HOST [--reason TEXT]` (issue 21), `tokens`, `token revoke ID`, `enroll-token list` and
//! `enroll-token revoke ID`. Kept apart from the other commands so the
//! CLI's dispatch grows by a few arms; the JSON shapes are in
//! `docs/cli-json.md`.

use deskpulse_proto::v1::{
    ApiToken, EnrollmentToken, ListApiTokensRequest, ListEnrollmentTokensRequest,
    RetireHostRequest, RevokeApiTokenRequest, RevokeEnrollmentTokenRequest, RevokeHostRequest,
    Role,
};
use serde::Serialize;

use super::output::{iso, print_json, table, time};
use super::{Client, call_failed, now_ms};
use crate::exit::CommandResult;

/// `deskpulse token …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Revoke an API token (admin): refused at once, and its open streams
    /// (a `run` in progress) end. The last working admin token cannot be
    /// revoked; make another first with `deskpulse-collector token create
    /// --role admin` on the server.
    Revoke {
        /// The token id, as `deskpulse tokens` lists it.
        id: String,
    },
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Viewer) => "viewer",
        Ok(Role::Technician) => "technician",
        Ok(Role::Admin) => "admin",
        _ => "unknown",
    }
}

fn api_token_state(token: &ApiToken, now: i64) -> &'static str {
    if token.revoked_at_unix_ms > 0 {
        "revoked"
    } else if token.expires_at_unix_ms > 0 && token.expires_at_unix_ms <= now {
        "expired"
    } else {
        "active"
    }
}

fn enrollment_token_state(token: &EnrollmentToken, now: i64) -> &'static str {
    if token.revoked_at_unix_ms > 0 {
        "revoked"
    } else if token.expires_at_unix_ms <= now {
        "expired"
    } else if token.uses_left == 0 {
        "used"
    } else {
        "usable"
    }
}

/// One API token in `--json` output.
#[derive(Debug, Serialize)]
struct ApiTokenJson<'a> {
    id: &'a str,
    technician: &'a str,
    role: &'static str,
    state: &'static str,
    created_at: Option<String>,
    last_used: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    revoked_by: Option<&'a str>,
}

impl<'a> ApiTokenJson<'a> {
    fn new(token: &'a ApiToken, now: i64) -> Self {
        Self {
            id: &token.id,
            technician: &token.technician,
            role: role_name(token.role),
            state: api_token_state(token, now),
            created_at: iso(token.created_at_unix_ms),
            last_used: iso(token.last_used_at_unix_ms),
            expires_at: iso(token.expires_at_unix_ms),
            revoked_at: iso(token.revoked_at_unix_ms),
            revoked_by: some(&token.revoked_by),
        }
    }
}

/// One enrollment token in `--json` output.
#[derive(Debug, Serialize)]
struct EnrollmentTokenJson<'a> {
    id: &'a str,
    state: &'static str,
    created_by: &'a str,
    created_at: Option<String>,
    expires_at: Option<String>,
    uses_allowed: u32,
    uses_left: u32,
    relink_host_id: Option<&'a str>,
    relink_hostname: Option<&'a str>,
    revoked_at: Option<String>,
    revoked_by: Option<&'a str>,
}

impl<'a> EnrollmentTokenJson<'a> {
    fn new(token: &'a EnrollmentToken, now: i64) -> Self {
        Self {
            id: &token.id,
            state: enrollment_token_state(token, now),
            created_by: &token.created_by,
            created_at: iso(token.created_at_unix_ms),
            expires_at: iso(token.expires_at_unix_ms),
            uses_allowed: token.uses_allowed,
            uses_left: token.uses_left,
            relink_host_id: some(&token.relink_host_id),
            relink_hostname: some(&token.relink_hostname),
            revoked_at: iso(token.revoked_at_unix_ms),
            revoked_by: some(&token.revoked_by),
        }
    }
}

fn some(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn or_dash(text: Option<String>) -> String {
    text.unwrap_or_else(|| "-".into())
}

/// `deskpulse host revoke HOST [--reason TEXT]`.
pub async fn revoke_host(
    client: &mut Client,
    host: String,
    reason: Option<String>,
    json: bool,
) -> CommandResult {
    let revoked = client
        .revoke_host(RevokeHostRequest {
            host,
            reason: reason.unwrap_or_default(),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    if json {
        return print_json(&serde_json::json!({
            "host_id": revoked.host_id,
            "hostname": revoked.hostname,
            "revoked_at": iso(revoked.revoked_at_unix_ms),
        }));
    }
    outln!(
        "revoked {} ({}) at {}: its certificate is refused and its session ends on every replica; \
         to bring the PC back, enroll it again with a fresh token (it becomes a new host)",
        revoked.hostname,
        revoked.host_id,
        time(revoked.revoked_at_unix_ms)
    );
    Ok(())
}

/// `deskpulse host retire HOST [--reason TEXT]`.
pub async fn retire_host(
    client: &mut Client,
    host: String,
    reason: Option<String>,
    json: bool,
) -> CommandResult {
    let retired = client
        .retire_host(RetireHostRequest {
            host,
            reason: reason.unwrap_or_default(),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    if json {
        return print_json(&serde_json::json!({
            "host_id": retired.host_id,
            "hostname": retired.hostname,
            "retired_at": iso(retired.retired_at_unix_ms),
            "closed_tickets": retired.closed_tickets,
        }));
    }
    let closed = match retired.closed_tickets.as_slice() {
        [] => "no open tickets".to_owned(),
        ids => format!(
            "closed ticket{} {}",
            if ids.len() == 1 { "" } else { "s" },
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    outln!(
        "retired {} ({}) at {}: {closed}; it is out of the fleet lists (`hosts --retired` lists it) \
         and its certificate is revoked, so the PC comes back only by enrolling again",
        retired.hostname,
        retired.host_id,
        time(retired.retired_at_unix_ms)
    );
    Ok(())
}

/// `deskpulse tokens`.
pub async fn tokens(client: &mut Client, json: bool) -> CommandResult {
    let list = client
        .list_api_tokens(ListApiTokensRequest {})
        .await
        .map_err(call_failed)?
        .into_inner();
    let now = now_ms();
    if json {
        let tokens: Vec<ApiTokenJson<'_>> = list
            .tokens
            .iter()
            .map(|t| ApiTokenJson::new(t, now))
            .collect();
        return print_json(&tokens);
    }
    if list.tokens.is_empty() {
        outln!("no API tokens");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.technician.clone(),
                role_name(t.role).into(),
                api_token_state(t, now).into(),
                time(t.created_at_unix_ms),
                time(t.last_used_at_unix_ms),
                or_dash(iso(t.expires_at_unix_ms)),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "id",
                "technician",
                "role",
                "state",
                "created",
                "last used",
                "expires"
            ],
            &rows
        )
    );
    Ok(())
}

/// `deskpulse token revoke ID`.
pub async fn token(client: &mut Client, command: TokenCommand, json: bool) -> CommandResult {
    let TokenCommand::Revoke { id } = command;
    let token = client
        .revoke_api_token(RevokeApiTokenRequest { id })
        .await
        .map_err(call_failed)?
        .into_inner();
    if json {
        return print_json(&ApiTokenJson::new(&token, now_ms()));
    }
    outln!(
        "revoked API token {} of {} ({}): refused from now on, and its open streams end",
        token.id,
        token.technician,
        role_name(token.role)
    );
    Ok(())
}

/// `deskpulse enroll-token list [--limit N]`.
pub async fn enrollment_tokens(client: &mut Client, limit: u32, json: bool) -> CommandResult {
    let list = client
        .list_enrollment_tokens(ListEnrollmentTokensRequest { limit })
        .await
        .map_err(call_failed)?
        .into_inner();
    let now = now_ms();
    if json {
        let tokens: Vec<EnrollmentTokenJson<'_>> = list
            .tokens
            .iter()
            .map(|t| EnrollmentTokenJson::new(t, now))
            .collect();
        return print_json(&tokens);
    }
    if list.tokens.is_empty() {
        outln!("no enrollment tokens");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .tokens
        .iter()
        .map(|t| {
            let relink = match (t.relink_host_id.as_str(), t.relink_hostname.as_str()) {
                ("", _) => "-".to_owned(),
                (id, "") => format!("{id} (gone)"),
                (id, name) => format!("{name} ({id})"),
            };
            vec![
                t.id.clone(),
                enrollment_token_state(t, now).into(),
                time(t.created_at_unix_ms),
                time(t.expires_at_unix_ms),
                format!("{}/{}", t.uses_left, t.uses_allowed),
                relink,
                t.created_by.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "id",
                "state",
                "created",
                "expires",
                "uses left",
                "re-links",
                "by"
            ],
            &rows
        )
    );
    Ok(())
}

/// `deskpulse enroll-token revoke ID`.
pub async fn revoke_enrollment_token(client: &mut Client, id: String, json: bool) -> CommandResult {
    let token = client
        .revoke_enrollment_token(RevokeEnrollmentTokenRequest { id })
        .await
        .map_err(call_failed)?
        .into_inner();
    if json {
        return print_json(&EnrollmentTokenJson::new(&token, now_ms()));
    }
    outln!(
        "revoked enrollment token {}: it enrolls nothing from now on",
        token.id
    );
    Ok(())
}
