//! The re-link approval queue (issue 20), the same SQL on both backends.
//!
//! An enrollment under an ordinary token that claims the hardware identity
//! of an existing host gets a host of its own (the interim host) and one
//! pending request per host it matched ([`record`], in the enrollment's
//! transaction). An admin decides each request ([`decide`], one
//! transaction with its audit entry):
//!
//! - approve: the claimed host takes the enrollment's hardware identity and
//!   a certificate issued for the claimed host's id to the key the agent
//!   already holds (from the CSR kept with the request), so the host's
//!   previous certificate stops working at once; the interim host is
//!   merged into it (its tickets, jobs, change log and report keys move,
//!   its current state is dropped for the agent's next full inventory to
//!   replace) and removed; the duplicate-identity tickets are resolved with
//!   a note; other pending requests of the interim host become void. The
//!   agent still holds the interim certificate: when it next connects, the
//!   session hands it the new one ([`relinked_cert`]).
//! - deny: the request is closed and the new enrollment stays a host of its
//!   own (an admin who suspects it revokes it like any host); the
//!   duplicate-identity ticket gets a note and stays open for a technician.

use sqlx::QueryBuilder;

use super::tickets::{BackendSql, TicketConn};
use super::{Dialect, Value, push_values};
use crate::rules::DUPLICATE_IDENTITY_RULE;
use crate::rules::policy::Policy;
use crate::store::engine::tickets::update as update_ticket;
use crate::store::rows::Columns;
use crate::store::{
    AuditEntry, EnrollRequest, HostCert, ReissueCert, RelinkDecision, RelinkRefusal, RelinkRequest,
    StoreError, StoreResult, TicketChange,
};

/// How many decided requests `--all` lists.
const MAX_LISTED: i64 = 500;

const REQUEST_SELECT: &str = "SELECT r.id, r.claimed_host_id, \
     COALESCE(h.hostname, '') AS claimed_hostname, r.new_host_id, r.hostname, \
     r.hardware_uuid, r.hardware_serial, r.source_addr, r.requested_at_ms, r.status, \
     r.decided_at_ms, r.decided_by \
     FROM relink_requests r LEFT JOIN hosts h ON h.id = r.claimed_host_id";

fn request_row(r: &dyn Columns) -> StoreResult<RelinkRequest> {
    Ok(RelinkRequest {
        id: r.int("id")?,
        claimed_host_id: r.text("claimed_host_id")?,
        claimed_hostname: r.text("claimed_hostname")?,
        new_host_id: r.text("new_host_id")?,
        hostname: r.text("hostname")?,
        hardware_uuid: r.text("hardware_uuid")?,
        hardware_serial: r.text("hardware_serial")?,
        source_addr: r.text("source_addr")?,
        requested_at_ms: r.int("requested_at_ms")?,
        status: r.text("status")?,
        decided_at_ms: r.opt_int("decided_at_ms")?,
        decided_by: r.opt_text("decided_by")?,
    })
}

/// Records a pending request for each host in `claimed`, in the
/// enrollment's transaction on `conn`.
pub(crate) async fn record<B: BackendSql>(
    conn: &mut B::Connection,
    request: &EnrollRequest,
    claimed: &[String],
    new_host: &str,
    token_id: &str,
    new_cert_sha256: &str,
    now_ms: i64,
) -> StoreResult<()> {
    for host in claimed {
        let mut sql = QueryBuilder::<B>::new(
            "INSERT INTO relink_requests (claimed_host_id, new_host_id, hostname, \
             hardware_uuid, hardware_serial, source_addr, token_id, csr_der, new_cert_sha256, \
             requested_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(host),
                Value::Text(new_host),
                Value::Text(&request.hostname),
                Value::Text(&request.hardware_uuid),
                Value::Text(&request.hardware_serial),
                Value::Text(&request.source_addr),
                Value::Text(token_id),
                Value::Bytes(&request.csr_der),
                Value::Text(new_cert_sha256),
                Value::Int(now_ms),
            ],
        );
        sql.push(")");
        B::execute_in(&mut *conn, sql).await?;
    }
    Ok(())
}

/// The pending requests, oldest first; with `all`, every request, newest
/// first (at most [`MAX_LISTED`]).
pub(crate) async fn list<B: Dialect>(
    pool: &sqlx::Pool<B>,
    all: bool,
) -> StoreResult<Vec<RelinkRequest>> {
    let mut sql = QueryBuilder::<B>::new(REQUEST_SELECT);
    if all {
        sql.push(" ORDER BY r.id DESC LIMIT ");
        B::int(&mut sql, MAX_LISTED);
    } else {
        sql.push(" WHERE r.status = 'pending' ORDER BY r.id");
    }
    B::all(pool, sql, request_row).await
}

/// The host and certificate an approved request handed over, if the
/// certificate `sha256` is the one `new_host` (removed by the approval)
/// was issued at enrollment.
pub(crate) async fn relinked_cert<B: Dialect>(
    conn: &mut B::Connection,
    new_host: &str,
    sha256: &str,
) -> StoreResult<Option<(String, String)>> {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT claimed_host_id, relinked_cert_pem FROM relink_requests \
         WHERE status = 'approved' AND relinked_cert_pem IS NOT NULL AND new_host_id = ",
    );
    B::text(&mut sql, new_host);
    sql.push(" AND new_cert_sha256 = ");
    B::text(&mut sql, sha256);
    sql.push(" ORDER BY id DESC");
    let found = B::all_in(&mut *conn, sql, |r| {
        Ok((r.text("claimed_host_id")?, r.text("relinked_cert_pem")?))
    })
    .await?;
    Ok(found.into_iter().next())
}

/// Gives `host_id` the hardware identity and host name of `request` and the
/// certificate `cert`: the host's previous certificate, and any renewed one
/// still waiting to be presented, stop working. Used by a re-link token at
/// enrollment and by an approved request.
pub(crate) async fn take_over<B: Dialect>(
    conn: &mut B::Connection,
    host_id: &str,
    identity: (&str, &str, &str),
    cert: &HostCert,
    now_ms: i64,
) -> StoreResult<()> {
    let (hostname, hardware_uuid, hardware_serial) = identity;
    let mut sql = QueryBuilder::<B>::new(
        "UPDATE hosts SET next_cert_serial = NULL, next_cert_sha256 = NULL, \
         next_cert_ca_sha256 = NULL, enrolled_at_ms = ",
    );
    B::int(&mut sql, now_ms);
    for (column, value) in [
        ("hostname", hostname),
        ("hardware_uuid", hardware_uuid),
        ("hardware_serial", hardware_serial),
        ("cert_serial", &cert.serial_hex),
        ("cert_sha256", &cert.sha256_hex),
        ("cert_ca_sha256", &cert.ca_sha256),
    ] {
        sql.push(format!(", {column} = "));
        B::text(&mut sql, value);
    }
    sql.push(" WHERE id = ");
    B::text(&mut sql, host_id);
    B::execute_in(&mut *conn, sql).await?;
    Ok(())
}

/// Approves or denies the request `decision` names, in the transaction on
/// `conn`, which the caller commits only on `Ok(Ok(_))`. `reissue` signs
/// the claimed host's new certificate from the stored CSR.
pub(crate) async fn decide<B: BackendSql>(
    conn: &mut B::Connection,
    policy: &Policy,
    decision: &RelinkDecision,
    reissue: ReissueCert<'_>,
    now_ms: i64,
) -> StoreResult<Result<RelinkRequest, RelinkRefusal>> {
    let mut sql =
        QueryBuilder::<B>::new("SELECT id, csr_der, token_id FROM relink_requests WHERE id = ");
    B::int(&mut sql, decision.id);
    sql.push(B::LOCK_ROWS);
    let Some((_, csr_der, token_id)) = B::optional_in(&mut *conn, sql, |r| {
        Ok((r.int("id")?, r.bytes("csr_der")?, r.text("token_id")?))
    })
    .await?
    else {
        return Ok(Err(RelinkRefusal::NotFound(decision.id)));
    };
    let request = read::<B>(conn, decision.id).await?;
    if request.status != "pending" {
        return Ok(Err(RelinkRefusal::Decided(request)));
    }
    let claimed = request.claimed_host_id.as_str();
    let interim = request.new_host_id.as_str();
    if decision.approve {
        if !host_exists::<B>(conn, claimed).await? {
            return Ok(Err(RelinkRefusal::ClaimedHostGone(request)));
        }
        if !host_exists::<B>(conn, interim).await? {
            return Ok(Err(RelinkRefusal::NewHostGone(request)));
        }
    }
    // The hosts' evaluation locks (`postgres::lock_host`), in id order, so
    // no report of either is stored half before and half after the merge.
    let mut hosts = [claimed, interim];
    hosts.sort_unstable();
    for host in hosts {
        if let Some(lock) = B::one_at_a_time(&format!("host:{host}")) {
            B::execute_in(&mut *conn, lock).await?;
        }
    }
    let author = format!("{} (re-link request {})", decision.by, request.id);
    let (status, detail) = if decision.approve {
        let cert = reissue(&csr_der, claimed).map_err(StoreError::Issue)?;
        let by = (author.as_str(), &decision.audit);
        merge_host::<B>(conn, policy, interim, claimed, by, now_ms).await?;
        take_over::<B>(
            conn,
            claimed,
            (
                &request.hostname,
                &request.hardware_uuid,
                &request.hardware_serial,
            ),
            &cert,
            now_ms,
        )
        .await?;
        let note = format!(
            "an admin approved re-link request {}: the enrollment as {:?} from {} took over this host; its previous certificate no longer works",
            request.id, request.hostname, request.source_addr
        );
        for ticket in open_duplicate_tickets::<B>(conn, claimed).await? {
            update_ticket(
                &mut TicketConn::<B>(&mut *conn),
                policy,
                ticket,
                &TicketChange::Resolve(note.clone()),
                &author,
                &decision.audit,
                now_ms,
            )
            .await?
            .map_err(|refusal| StoreError::Conflict(format!("{refusal:?}")))?;
        }
        let mut sql = QueryBuilder::<B>::new("UPDATE relink_requests SET relinked_cert_pem = ");
        B::text(&mut sql, &cert.cert_pem);
        sql.push(" WHERE id = ");
        B::int(&mut sql, request.id);
        B::execute_in(&mut *conn, sql).await?;
        // The interim host is gone: nothing else can be decided about it.
        let mut sql =
            QueryBuilder::<B>::new("UPDATE relink_requests SET status = 'void', decided_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", decided_by = ");
        B::text(&mut sql, &decision.by);
        sql.push(" WHERE status = 'pending' AND id <> ");
        B::int(&mut sql, request.id);
        sql.push(" AND (new_host_id = ");
        B::text(&mut sql, interim);
        sql.push(" OR claimed_host_id = ");
        B::text(&mut sql, interim);
        sql.push(")");
        B::execute_in(&mut *conn, sql).await?;
        (
            "approved",
            format!(
                "request {}; token {token_id}; host {interim} ({:?}, from {}) took over this host with certificate serial {}; its previous certificate is superseded; host {interim} merged into it",
                request.id, request.hostname, request.source_addr, cert.serial_hex
            ),
        )
    } else {
        let note = format!(
            "an admin denied re-link request {}: host {interim} ({:?}, from {}) stays a separate host",
            request.id, request.hostname, request.source_addr
        );
        for ticket in open_duplicate_tickets::<B>(conn, claimed).await? {
            update_ticket(
                &mut TicketConn::<B>(&mut *conn),
                policy,
                ticket,
                &TicketChange::Note(note.clone()),
                &author,
                &decision.audit,
                now_ms,
            )
            .await?
            .map_err(|refusal| StoreError::Conflict(format!("{refusal:?}")))?;
        }
        (
            "denied",
            format!(
                "request {}; token {token_id}; host {interim} ({:?}, from {}) stays separate",
                request.id, request.hostname, request.source_addr
            ),
        )
    };
    let mut sql = QueryBuilder::<B>::new("UPDATE relink_requests SET status = ");
    B::text(&mut sql, status);
    sql.push(", decided_at_ms = ");
    B::int(&mut sql, now_ms);
    sql.push(", decided_by = ");
    B::text(&mut sql, &decision.by);
    sql.push(" WHERE id = ");
    B::int(&mut sql, request.id);
    B::execute_in(&mut *conn, sql).await?;
    super::audit::append::<B>(
        &mut *conn,
        &AuditEntry {
            action: if decision.approve {
                "enrollment.approve".into()
            } else {
                "enrollment.deny".into()
            },
            subject: claimed.to_owned(),
            detail,
            ..decision.audit.clone()
        },
        now_ms,
    )
    .await?;
    Ok(Ok(read::<B>(conn, request.id).await?))
}

async fn read<B: Dialect>(conn: &mut B::Connection, id: i64) -> StoreResult<RelinkRequest> {
    let mut sql = QueryBuilder::<B>::new(REQUEST_SELECT);
    sql.push(" WHERE r.id = ");
    B::int(&mut sql, id);
    B::optional_in(&mut *conn, sql, request_row)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("re-link request {id} vanished")))
}

async fn host_exists<B: Dialect>(conn: &mut B::Connection, host: &str) -> StoreResult<bool> {
    let mut sql = QueryBuilder::<B>::new("SELECT id FROM hosts WHERE id = ");
    B::text(&mut sql, host);
    Ok(B::optional_in(&mut *conn, sql, |r| r.text("id"))
        .await?
        .is_some())
}

async fn open_duplicate_tickets<B: Dialect>(
    conn: &mut B::Connection,
    host: &str,
) -> StoreResult<Vec<i64>> {
    open_tickets::<B>(conn, host, Some(DUPLICATE_IDENTITY_RULE)).await
}

pub(crate) async fn open_tickets<B: Dialect>(
    conn: &mut B::Connection,
    host: &str,
    rule: Option<&str>,
) -> StoreResult<Vec<i64>> {
    let mut sql = QueryBuilder::<B>::new("SELECT id FROM tickets WHERE host_id = ");
    B::text(&mut sql, host);
    sql.push(" AND status NOT IN ('resolved', 'closed')");
    if let Some(rule) = rule {
        sql.push(" AND rule = ");
        B::text(&mut sql, rule);
    }
    sql.push(" ORDER BY id");
    B::all_in(&mut *conn, sql, |r| r.int("id")).await
}

/// Merges host `from` into `into` and removes it: its open tickets are
/// resolved with a note (their rule state goes with the host), and its
/// tickets, jobs, change log, received-report keys and employee-report
/// keys move to `into`; what only describes its present (inventory,
/// software, facts, file systems, tags, health samples, rule state) is
/// dropped, because the agent's next full inventory replaces `into`'s.
async fn merge_host<B: BackendSql>(
    conn: &mut B::Connection,
    policy: &Policy,
    from: &str,
    into: &str,
    (author, audit): (&str, &AuditEntry),
    now_ms: i64,
) -> StoreResult<()> {
    let note = format!("host {from} was merged into host {into} by an approved re-link");
    for ticket in open_tickets::<B>(conn, from, None).await? {
        update_ticket(
            &mut TicketConn::<B>(&mut *conn),
            policy,
            ticket,
            &TicketChange::Resolve(note.clone()),
            author,
            audit,
            now_ms,
        )
        .await?
        .map_err(|refusal| StoreError::Conflict(format!("{refusal:?}")))?;
    }
    // Report keys are per spool, and the interim host's spool is the
    // agent's own, so none can collide with `into`'s; employee-report keys
    // are random, and a collision keeps `into`'s.
    for table in [
        "tickets",
        "jobs",
        "host_changes",
        "received_reports",
        "user_report_keys",
        "ticket_reporters",
    ] {
        let mut sql = QueryBuilder::<B>::new(format!("UPDATE {table} SET host_id = "));
        B::text(&mut sql, into);
        sql.push(" WHERE host_id = ");
        B::text(&mut sql, from);
        if table == "user_report_keys" {
            sql.push(
                " AND report_key NOT IN (SELECT report_key FROM user_report_keys WHERE host_id = ",
            );
            B::text(&mut sql, into);
            sql.push(")");
        }
        B::execute_in(&mut *conn, sql).await?;
    }
    let mut statements = vec![
        "DELETE FROM user_report_keys WHERE host_id = ",
        "DELETE FROM health_samples WHERE host_id = ",
        "DELETE FROM rule_states WHERE host_id = ",
        "DELETE FROM host_facts WHERE host_id = ",
        "DELETE FROM host_filesystems WHERE host_id = ",
        "DELETE FROM host_tags WHERE host_id = ",
    ];
    if super::postgres::<B>() {
        statements.push("DELETE FROM host_software WHERE host_id = ");
    } else {
        // SQLite keys software by a small host key (migration 0010) and
        // keeps the inventory beside the host row (0009).
        statements.extend([
            "DELETE FROM host_software WHERE host_key IN (SELECT key FROM host_keys WHERE host_id = ",
            "DELETE FROM host_keys WHERE host_id = ",
            "DELETE FROM host_inventories WHERE host_id = ",
        ]);
    }
    statements.push("DELETE FROM hosts WHERE id = ");
    for statement in statements {
        let mut sql = QueryBuilder::<B>::new(statement);
        B::text(&mut sql, from);
        if statement.ends_with("host_id = ") && statement.contains("IN (SELECT") {
            sql.push(")");
        }
        B::execute_in(&mut *conn, sql).await?;
    }
    Ok(())
}
