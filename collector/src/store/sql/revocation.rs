//! Revocation (issue 20), the same SQL on both backends: hosts, API tokens
//! and enrollment tokens revoked in one transaction with their audit entry;
//! API token checks with expiry and a cheap last-use stamp; the token lists;
//! and what was revoked lately, which every replica's revocation poll reads.
//!
//! Every revoking transaction takes the audit head first, as every audited
//! transaction does; that serialises revocations fleet-wide, so two admins
//! revoking the last two admin tokens at once cannot both succeed.

use std::future::Future;
use std::str::FromStr;

use sqlx::{Pool, QueryBuilder, Transaction};

use super::tickets::{BackendSql, TicketConn};
use super::{Dialect, SendFuture};
use crate::rules::policy::Policy;
use crate::store::{
    ApiTokenRow, AuditEntry, Caller, EnrollmentTokenRow, RetireOutcome, RevokeOutcome, Revoked,
    Role, StoreError, StoreResult, TicketChange, TokenCheck,
};

/// A token's last use is written at most this often: one write a minute per
/// token, not one per request.
pub(crate) const LAST_USE_EVERY_MS: i64 = 60_000;

/// What the API token hashing to `token_sha256` is at `now_ms`.
pub(crate) fn check_token<'a, B: Dialect>(
    pool: &'a Pool<B>,
    token_sha256: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<TokenCheck>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT t.id AS token_id, p.id AS technician_id, p.name, p.role, t.revoked_at_ms, \
         t.expires_at_ms, t.last_used_at_ms \
         FROM api_tokens t JOIN technicians p ON p.id = t.technician_id \
         WHERE t.token_sha256 = ",
    );
    B::text(&mut sql, token_sha256);
    async move {
        let found = B::optional(pool, sql, |r| {
            let caller = Caller {
                technician_id: r.text("technician_id")?,
                name: r.text("name")?,
                role: Role::from_str(&r.text("role")?).map_err(StoreError::Corrupt)?,
                token_id: r.text("token_id")?,
                expires_at_ms: r.opt_int("expires_at_ms")?,
                last_used_at_ms: r.opt_int("last_used_at_ms")?,
            };
            Ok((caller, r.opt_int("revoked_at_ms")?))
        })
        .await?;
        Ok(match found {
            None => TokenCheck::Unknown,
            Some((_, Some(_))) => TokenCheck::Revoked,
            Some((caller, None)) => match caller.expires_at_ms {
                Some(expiry) if expiry <= now_ms => TokenCheck::Expired(expiry),
                _ => TokenCheck::Valid(caller),
            },
        })
    }
}

/// Records that `token_id` was used at `now_ms`, unless that was recorded
/// less than [`LAST_USE_EVERY_MS`] ago (then nothing is written).
pub(crate) fn touch_token<'a, B: Dialect>(
    pool: &'a Pool<B>,
    token_id: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<u64>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new("UPDATE api_tokens SET last_used_at_ms = ");
    B::int(&mut sql, now_ms);
    sql.push(" WHERE id = ");
    B::text(&mut sql, token_id);
    sql.push(" AND (last_used_at_ms IS NULL OR last_used_at_ms <= ");
    B::int(&mut sql, now_ms.saturating_sub(LAST_USE_EVERY_MS));
    sql.push(")");
    B::execute(pool, sql)
}

/// Every API token, oldest first.
pub(crate) fn api_tokens<B: Dialect>(
    pool: &Pool<B>,
) -> impl Future<Output = StoreResult<Vec<ApiTokenRow>>> + Send + '_ {
    let sql = QueryBuilder::<B>::new(
        "SELECT t.id, p.name, p.role, t.created_at_ms, t.last_used_at_ms, t.expires_at_ms, \
         t.revoked_at_ms, t.revoked_by \
         FROM api_tokens t JOIN technicians p ON p.id = t.technician_id \
         ORDER BY t.created_at_ms, t.id",
    );
    B::all(pool, sql, |r| {
        Ok(ApiTokenRow {
            id: r.text("id")?,
            technician: r.text("name")?,
            role: Role::from_str(&r.text("role")?).map_err(StoreError::Corrupt)?,
            created_at_ms: r.int("created_at_ms")?,
            last_used_at_ms: r.opt_int("last_used_at_ms")?,
            expires_at_ms: r.opt_int("expires_at_ms")?,
            revoked_at_ms: r.opt_int("revoked_at_ms")?,
            revoked_by: r.opt_text("revoked_by")?,
        })
    })
}

/// The newest `limit` enrollment tokens, newest first.
pub(crate) fn enrollment_tokens<B: Dialect>(
    pool: &Pool<B>,
    limit: u32,
) -> impl Future<Output = StoreResult<Vec<EnrollmentTokenRow>>> + Send + '_ {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT e.id, e.created_by, e.created_at_ms, e.expires_at_ms, e.uses_allowed, \
         e.uses_left, e.relink_host_id, h.hostname AS relink_hostname, e.revoked_at_ms, \
         e.revoked_by \
         FROM enrollment_tokens e LEFT JOIN hosts h ON h.id = e.relink_host_id \
         ORDER BY e.created_at_ms DESC, e.id LIMIT ",
    );
    B::int(&mut sql, i64::from(limit));
    B::all(pool, sql, |r| {
        Ok(EnrollmentTokenRow {
            id: r.text("id")?,
            created_by: r.text("created_by")?,
            created_at_ms: r.int("created_at_ms")?,
            expires_at_ms: r.int("expires_at_ms")?,
            uses_allowed: r.int("uses_allowed")?,
            uses_left: r.int("uses_left")?,
            relink_host: match r.opt_text("relink_host_id")? {
                Some(id) => Some((id, r.opt_text("relink_hostname")?)),
                None => None,
            },
            revoked_at_ms: r.opt_int("revoked_at_ms")?,
            revoked_by: r.opt_text("revoked_by")?,
        })
    })
}

/// What one revocation changes: the table, the row, and who did it.
pub(crate) struct Revocation<'a> {
    /// The row's id.
    pub id: &'a str,
    /// Who: a technician name, or "local-admin".
    pub by: &'a str,
    /// The reason (hosts only).
    pub reason: &'a str,
    /// The audit entry that commits with it.
    pub audit: &'a AuditEntry,
}

/// Revokes a host in the transaction `begin` opens: its current and any
/// renewed certificate waiting are refused from the commit on.
pub(crate) fn revoke_host<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    revocation: Revocation<'a>,
    now_ms: i64,
) -> SendFuture<'a, RevokeOutcome> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let mut sql = QueryBuilder::<B>::new("SELECT revoked_at_ms FROM hosts WHERE id = ");
        B::text(&mut sql, revocation.id);
        sql.push(B::LOCK_ROWS);
        match B::optional_in(&mut tx, sql, |r| r.opt_int("revoked_at_ms")).await? {
            None => return Ok(RevokeOutcome::Unknown),
            Some(Some(at)) => return Ok(RevokeOutcome::AlreadyRevoked(at)),
            Some(None) => {}
        }
        // The renewed certificate waiting, if any, goes too: it would
        // otherwise become current on first use.
        let mut sql = QueryBuilder::<B>::new("UPDATE hosts SET revoked_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", revoked_by = ");
        B::text(&mut sql, revocation.by);
        sql.push(", revoked_reason = ");
        B::text(&mut sql, revocation.reason);
        sql.push(
            ", next_cert_serial = NULL, next_cert_sha256 = NULL, next_cert_ca_sha256 = NULL \
             WHERE id = ",
        );
        B::text(&mut sql, revocation.id);
        B::execute_in(&mut tx, sql).await?;
        super::audit::append::<B>(&mut tx, revocation.audit, now_ms).await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked)
    })
}

/// Retires a host in the transaction `begin` opens (issue 21): it leaves
/// the fleet lists, its certificates are revoked as by [`revoke_host`]
/// unless they were already, its rule states go (no timer or offline rule
/// touches it again), and each open ticket gets the reason as a note and
/// is closed, each change audited as a technician's; then the retirement's
/// own entry, naming the tickets closed. The host's evaluation lock comes
/// first, as the ingest path takes it, then the audit head.
pub(crate) fn retire_host<'a, B: BackendSql>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    policy: &'a Policy,
    retirement: Revocation<'a>,
    now_ms: i64,
) -> SendFuture<'a, RetireOutcome> {
    Box::pin(async move {
        let host = retirement.id;
        let mut tx = begin.await?;
        if let Some(lock) = B::one_at_a_time(&format!("host:{host}")) {
            B::execute_in(&mut tx, lock).await?;
        }
        super::audit::hold_head::<B>(&mut tx).await?;
        let mut sql =
            QueryBuilder::<B>::new("SELECT retired_at_ms, revoked_at_ms FROM hosts WHERE id = ");
        B::text(&mut sql, host);
        sql.push(B::LOCK_ROWS);
        let found = B::optional_in(&mut tx, sql, |r| {
            Ok((r.opt_int("retired_at_ms")?, r.opt_int("revoked_at_ms")?))
        })
        .await?;
        let revoked = match found {
            None => return Ok(RetireOutcome::Unknown),
            Some((Some(at), _)) => return Ok(RetireOutcome::AlreadyRetired(at)),
            Some((None, revoked)) => revoked.is_some(),
        };
        let mut sql = QueryBuilder::<B>::new("UPDATE hosts SET retired_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", retired_by = ");
        B::text(&mut sql, retirement.by);
        sql.push(", retired_reason = ");
        B::text(&mut sql, retirement.reason);
        if !revoked {
            sql.push(", revoked_at_ms = ");
            B::int(&mut sql, now_ms);
            sql.push(", revoked_by = ");
            B::text(&mut sql, retirement.by);
            sql.push(", revoked_reason = ");
            B::text(&mut sql, &format!("retired: {}", retirement.reason));
        }
        sql.push(
            ", next_cert_serial = NULL, next_cert_sha256 = NULL, next_cert_ca_sha256 = NULL \
             WHERE id = ",
        );
        B::text(&mut sql, host);
        B::execute_in(&mut tx, sql).await?;
        let mut sql = QueryBuilder::<B>::new("DELETE FROM rule_states WHERE host_id = ");
        B::text(&mut sql, host);
        B::execute_in(&mut tx, sql).await?;
        let why = if retirement.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", retirement.reason)
        };
        let note = format!("the host was retired by {}{why}", retirement.by);
        let closed = super::relink::open_tickets::<B>(&mut tx, host, None).await?;
        for &ticket in &closed {
            for change in [
                TicketChange::Note(note.clone()),
                TicketChange::Status("closed".into()),
            ] {
                crate::store::engine::tickets::update(
                    &mut TicketConn::<B>(&mut tx),
                    policy,
                    ticket,
                    &change,
                    retirement.by,
                    retirement.audit,
                    now_ms,
                )
                .await?
                .map_err(|refusal| StoreError::Conflict(format!("{refusal:?}")))?;
            }
        }
        let listed: Vec<String> = closed.iter().map(i64::to_string).collect();
        let entry = AuditEntry {
            detail: format!(
                "{}; open tickets closed: {}",
                retirement.audit.detail,
                if listed.is_empty() {
                    "none".into()
                } else {
                    listed.join(", ")
                }
            ),
            ..retirement.audit.clone()
        };
        super::audit::append::<B>(&mut tx, &entry, now_ms).await?;
        tx.commit().await?;
        Ok(RetireOutcome::Retired(closed))
    })
}

/// Revokes an API token in the transaction `begin` opens, unless it is the
/// last working admin token.
pub(crate) fn revoke_api_token<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    revocation: Revocation<'a>,
    now_ms: i64,
) -> SendFuture<'a, RevokeOutcome> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let mut sql = QueryBuilder::<B>::new(
            "SELECT t.revoked_at_ms, t.expires_at_ms, p.role FROM api_tokens t \
             JOIN technicians p ON p.id = t.technician_id WHERE t.id = ",
        );
        B::text(&mut sql, revocation.id);
        let found = B::optional_in(&mut tx, sql, |r| {
            Ok((
                r.opt_int("revoked_at_ms")?,
                r.opt_int("expires_at_ms")?,
                r.text("role")?,
            ))
        })
        .await?;
        let (expires_at, role) = match found {
            None => return Ok(RevokeOutcome::Unknown),
            Some((Some(at), _, _)) => return Ok(RevokeOutcome::AlreadyRevoked(at)),
            Some((None, expires_at, role)) => (expires_at, role),
        };
        let working = expires_at.is_none_or(|at| at > now_ms);
        if working && role == Role::Admin.as_str() {
            let mut sql = QueryBuilder::<B>::new(
                "SELECT COUNT(*) AS n FROM api_tokens t JOIN technicians p \
                 ON p.id = t.technician_id WHERE p.role = 'admin' AND t.revoked_at_ms IS NULL \
                 AND (t.expires_at_ms IS NULL OR t.expires_at_ms > ",
            );
            B::int(&mut sql, now_ms);
            sql.push(") AND t.id <> ");
            B::text(&mut sql, revocation.id);
            let others = B::optional_in(&mut tx, sql, |r| r.int("n")).await?;
            if others.unwrap_or(0) == 0 {
                return Ok(RevokeOutcome::LastAdmin);
            }
        }
        let mut sql = QueryBuilder::<B>::new("UPDATE api_tokens SET revoked_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", revoked_by = ");
        B::text(&mut sql, revocation.by);
        sql.push(" WHERE revoked_at_ms IS NULL AND id = ");
        B::text(&mut sql, revocation.id);
        B::execute_in(&mut tx, sql).await?;
        super::audit::append::<B>(&mut tx, revocation.audit, now_ms).await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked)
    })
}

/// Revokes an enrollment token in the transaction `begin` opens.
pub(crate) fn revoke_enrollment_token<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    revocation: Revocation<'a>,
    now_ms: i64,
) -> SendFuture<'a, RevokeOutcome> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let mut sql =
            QueryBuilder::<B>::new("SELECT revoked_at_ms FROM enrollment_tokens WHERE id = ");
        B::text(&mut sql, revocation.id);
        sql.push(B::LOCK_ROWS);
        match B::optional_in(&mut tx, sql, |r| r.opt_int("revoked_at_ms")).await? {
            None => return Ok(RevokeOutcome::Unknown),
            Some(Some(at)) => return Ok(RevokeOutcome::AlreadyRevoked(at)),
            Some(None) => {}
        }
        let mut sql = QueryBuilder::<B>::new("UPDATE enrollment_tokens SET revoked_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(", revoked_by = ");
        B::text(&mut sql, revocation.by);
        sql.push(" WHERE id = ");
        B::text(&mut sql, revocation.id);
        B::execute_in(&mut tx, sql).await?;
        super::audit::append::<B>(&mut tx, revocation.audit, now_ms).await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked)
    })
}

/// The hosts and API tokens revoked at or after `since_ms`: what every
/// replica's revocation poll cuts, in case it missed the notification.
pub(crate) fn revoked_since<B: Dialect>(
    pool: &Pool<B>,
    since_ms: i64,
) -> SendFuture<'_, Vec<Revoked>> {
    Box::pin(async move {
        let mut sql = QueryBuilder::<B>::new("SELECT id FROM hosts WHERE revoked_at_ms >= ");
        B::int(&mut sql, since_ms);
        let mut revoked = B::all(pool, sql, |r| Ok(Revoked::Host(r.text("id")?))).await?;
        let mut sql = QueryBuilder::<B>::new("SELECT id FROM api_tokens WHERE revoked_at_ms >= ");
        B::int(&mut sql, since_ms);
        revoked.extend(B::all(pool, sql, |r| Ok(Revoked::ApiToken(r.text("id")?))).await?);
        Ok(revoked)
    })
}
