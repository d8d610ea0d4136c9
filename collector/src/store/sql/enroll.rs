//! Enrollment (D2), the same SQL on both backends: a one-time token is
//! checked and spent, the host id chosen, and the host certificate issued
//! and recorded, in the caller's transaction with its audit entry. Only a
//! re-link token (an admin's say, issue 20) re-links to an existing host;
//! hardware that matches a host under an ordinary token gets a new id,
//! raises a duplicate-identity ticket on the host it matched, and waits as
//! a re-link request for an admin to approve or deny (`relink.rs`).

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::tickets::{BackendSql, TicketConn};
use super::{Value, push_values};
use crate::rules::policy::Policy;
use crate::store::engine::tickets::{IdentityClaim, raise_duplicate_identity};
use crate::store::{
    AuditEntry, EnrollOutcome, EnrollRequest, HostCert, IssueCert, StoreError, StoreResult,
};

/// At most this many hosts sharing a claimed identity get its ticket.
const MAX_DUPLICATE_TICKETS: i64 = 16;

/// Enrolls in the transaction on `conn`, which the caller commits only on
/// [`EnrollOutcome::Enrolled`]. Two enrollments racing for a token's last
/// use cannot both spend it: the token row is locked on PostgreSQL, and
/// SQLite's write transaction holds the one write lock from its start.
pub(crate) fn enroll_in_tx<'a, B: BackendSql>(
    conn: &'a mut B::Connection,
    policy: &'a Policy,
    request: &'a EnrollRequest,
    now_ms: i64,
    issue: IssueCert<'a>,
) -> super::SendFuture<'a, EnrollOutcome> {
    Box::pin(enroll::<B>(conn, policy, request, now_ms, issue))
}

/// Why enrolling with the token hashing to `token_sha256` would be refused
/// at `now_ms`, or `None` when it is usable; read through `pool`, so it
/// neither locks nor spends the token. The enrollment transaction checks
/// again: a usable token may be spent meanwhile.
pub(crate) fn token_refusal<'a, B: crate::store::sql::Dialect>(
    pool: &'a Pool<B>,
    token_sha256: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<Option<EnrollOutcome>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT expires_at_ms, uses_left, revoked_at_ms FROM enrollment_tokens \
         WHERE token_sha256 = ",
    );
    B::text(&mut sql, token_sha256);
    async move {
        let token = B::optional(pool, sql, |r| {
            Ok((
                r.int("expires_at_ms")?,
                r.int("uses_left")?,
                r.opt_int("revoked_at_ms")?,
            ))
        })
        .await?;
        Ok(match token {
            None => Some(EnrollOutcome::UnknownToken),
            Some((_, _, Some(_))) => Some(EnrollOutcome::RevokedToken),
            Some((expires_at, _, _)) if expires_at <= now_ms => Some(EnrollOutcome::ExpiredToken),
            Some((_, uses_left, _)) if uses_left <= 0 => Some(EnrollOutcome::UsedToken),
            Some(_) => None,
        })
    }
}

async fn enroll<B: BackendSql>(
    conn: &mut B::Connection,
    policy: &Policy,
    request: &EnrollRequest,
    now_ms: i64,
    issue: IssueCert<'_>,
) -> StoreResult<EnrollOutcome> {
    let mut sql = QueryBuilder::new(
        "SELECT id, expires_at_ms, uses_left, relink_host_id, revoked_at_ms \
         FROM enrollment_tokens WHERE token_sha256 = ",
    );
    B::text(&mut sql, &request.token_sha256);
    sql.push(B::LOCK_ROWS);
    let token = B::optional_in(&mut *conn, sql, |r| {
        Ok((
            r.text("id")?,
            r.int("expires_at_ms")?,
            r.int("uses_left")?,
            r.opt_text("relink_host_id")?,
            r.opt_int("revoked_at_ms")?,
        ))
    })
    .await?;
    let Some((token_id, expires_at, uses_left, relink_host, revoked_at)) = token else {
        return Ok(EnrollOutcome::UnknownToken);
    };
    if revoked_at.is_some() {
        return Ok(EnrollOutcome::RevokedToken);
    }
    if expires_at <= now_ms {
        return Ok(EnrollOutcome::ExpiredToken);
    }
    if uses_left <= 0 {
        return Ok(EnrollOutcome::UsedToken);
    }
    let mut sql =
        QueryBuilder::new("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ");
    B::text(&mut sql, &token_id);
    B::execute_in(&mut *conn, sql).await?;

    if let Some(host_id) = relink_host {
        return relink::<B>(conn, request, &token_id, host_id, now_ms, issue).await;
    }
    let host_id = uuid::Uuid::new_v4().to_string();
    let cert = issue(&host_id).map_err(StoreError::Issue)?;
    let mut sql = QueryBuilder::new(
        "INSERT INTO hosts (id, hostname, hardware_uuid, hardware_serial, cert_serial, \
         cert_sha256, cert_ca_sha256, enrolled_at_ms) VALUES (",
    );
    push_values(
        &mut sql,
        &[
            Value::Text(&host_id),
            Value::Text(&request.hostname),
            Value::Text(&request.hardware_uuid),
            Value::Text(&request.hardware_serial),
            Value::Text(&cert.serial_hex),
            Value::Text(&cert.sha256_hex),
            Value::Text(&cert.ca_sha256),
            Value::Int(now_ms),
        ],
    );
    sql.push(")");
    B::execute_in(&mut *conn, sql).await?;
    // Hardware identifiers are claims an agent makes, so a match is never
    // proof: without a re-link token the claim gets its own host, the hosts
    // it matched get a ticket for a technician to judge, and an admin gets
    // a request to approve or deny (`deskpulse enrollments`).
    let matched = hosts_with_identity::<B>(conn, request, &host_id).await?;
    for existing in &matched {
        if let Some(lock) = B::one_at_a_time(&format!("host:{existing}")) {
            // The key of the host's evaluation lock (`postgres::lock_host`):
            // the ticket engine writes its rule state under that lock.
            B::execute_in(&mut *conn, lock).await?;
        }
        raise_duplicate_identity(
            &mut TicketConn::<B>(&mut *conn),
            policy,
            &IdentityClaim {
                host: existing,
                claimed_by_host: &host_id,
                claimed_hostname: &request.hostname,
                token_id: &token_id,
                hardware_uuid: &request.hardware_uuid,
                hardware_serial: &request.hardware_serial,
            },
            now_ms,
        )
        .await?;
    }
    super::relink::record::<B>(
        conn,
        request,
        &matched,
        &host_id,
        &token_id,
        &cert.sha256_hex,
        now_ms,
    )
    .await?;
    let duplicate = if matched.is_empty() {
        String::new()
    } else {
        format!("; duplicate of {}; awaiting approval", matched.join(", "))
    };
    let how = Enrolled {
        relinked: false,
        note: &duplicate,
    };
    let mut outcome = enrolled::<B>(conn, request, &token_id, host_id, cert, how, now_ms).await?;
    if let EnrollOutcome::Enrolled {
        awaiting_approval_for,
        ..
    } = &mut outcome
    {
        *awaiting_approval_for = matched;
    }
    Ok(outcome)
}

/// The hosts other than `new_host` whose hardware UUID or serial the
/// request claims, in id order (the order their locks are taken in).
async fn hosts_with_identity<B: BackendSql>(
    conn: &mut B::Connection,
    request: &EnrollRequest,
    new_host: &str,
) -> StoreResult<Vec<String>> {
    let mut sql = QueryBuilder::new("SELECT id FROM hosts WHERE id <> ");
    B::text(&mut sql, new_host);
    sql.push(" AND ((");
    for (i, (column, value)) in [
        ("hardware_uuid", &request.hardware_uuid),
        ("hardware_serial", &request.hardware_serial),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            sql.push(") OR (");
        }
        B::text(&mut sql, value);
        sql.push(format!(" <> '' AND {column} = "));
        B::text(&mut sql, value);
    }
    sql.push(")) ORDER BY id LIMIT ");
    B::int(&mut sql, MAX_DUPLICATE_TICKETS);
    B::all_in(&mut *conn, sql, |r| r.text("id")).await
}

/// Re-links the enrollment to `host_id`, as the admin who made the token
/// said: the host keeps its id and history, takes the hardware identity
/// the agent states, and its previous certificate stops working.
async fn relink<B: BackendSql>(
    conn: &mut B::Connection,
    request: &EnrollRequest,
    token_id: &str,
    host_id: String,
    now_ms: i64,
    issue: IssueCert<'_>,
) -> StoreResult<EnrollOutcome> {
    let mut sql = QueryBuilder::new("SELECT revoked_at_ms FROM hosts WHERE id = ");
    B::text(&mut sql, &host_id);
    match B::optional_in(&mut *conn, sql, |r| r.opt_int("revoked_at_ms")).await? {
        None => return Ok(EnrollOutcome::RelinkHostGone),
        // A revoked host comes back only as a new host (issue 20).
        Some(Some(_)) => return Ok(EnrollOutcome::RelinkHostRevoked),
        Some(None) => {}
    }
    let cert = issue(&host_id).map_err(StoreError::Issue)?;
    super::relink::take_over::<B>(
        conn,
        &host_id,
        (
            &request.hostname,
            &request.hardware_uuid,
            &request.hardware_serial,
        ),
        &cert,
        now_ms,
    )
    .await?;
    enrolled::<B>(
        conn,
        request,
        token_id,
        host_id,
        cert,
        Enrolled {
            relinked: true,
            note: " (re-link token)",
        },
        now_ms,
    )
    .await
}

/// How an enrollment went, for its audit entry.
struct Enrolled<'a> {
    /// A re-link token linked it to its existing host.
    relinked: bool,
    /// What the audit detail adds after "relinked true|false".
    note: &'a str,
}

/// The end of every enrollment: its audit entry and the outcome the agent
/// is answered with.
async fn enrolled<B: BackendSql>(
    conn: &mut B::Connection,
    request: &EnrollRequest,
    token_id: &str,
    host_id: String,
    cert: HostCert,
    how: Enrolled<'_>,
    now_ms: i64,
) -> StoreResult<EnrollOutcome> {
    super::audit::append::<B>(
        &mut *conn,
        &AuditEntry {
            technician_id: None,
            token_id: None,
            action: "host.enroll".into(),
            subject: host_id.clone(),
            detail: format!(
                "token {token_id}; hostname {:?}; from {}; relinked {}{}",
                request.hostname, request.source_addr, how.relinked, how.note
            ),
        },
        now_ms,
    )
    .await?;
    Ok(EnrollOutcome::Enrolled {
        relinked: how.relinked,
        host_id,
        cert_pem: cert.cert_pem,
        awaiting_approval_for: Vec::new(),
    })
}
