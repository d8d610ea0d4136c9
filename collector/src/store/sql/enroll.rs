//! Enrollment (D2), the same SQL on both backends: a one-time token is
//! checked and spent, the hardware finds the host it enrolled as before or
//! gets a new id, and the host certificate is issued and recorded, in the
//! caller's transaction with its audit entry.

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::{Dialect, Value, push_values};
use crate::store::{AuditEntry, EnrollOutcome, EnrollRequest, IssueCert, StoreError, StoreResult};

/// Enrolls in the transaction on `conn`, which the caller commits only on
/// [`EnrollOutcome::Enrolled`]. Two enrollments racing for a token's last
/// use cannot both spend it: the token row is locked on PostgreSQL, and
/// SQLite's write transaction holds the one write lock from its start.
pub(crate) fn enroll_in_tx<'a, B: Dialect>(
    conn: &'a mut B::Connection,
    request: &'a EnrollRequest,
    now_ms: i64,
    issue: IssueCert<'a>,
) -> super::SendFuture<'a, EnrollOutcome> {
    Box::pin(enroll::<B>(conn, request, now_ms, issue))
}

/// Why enrolling with the token hashing to `token_sha256` would be refused
/// at `now_ms`, or `None` when it is usable; read through `pool`, so it
/// neither locks nor spends the token. The enrollment transaction checks
/// again: a usable token may be spent meanwhile.
pub(crate) fn token_refusal<'a, B: Dialect>(
    pool: &'a Pool<B>,
    token_sha256: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<Option<EnrollOutcome>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT expires_at_ms, uses_left FROM enrollment_tokens WHERE token_sha256 = ",
    );
    B::text(&mut sql, token_sha256);
    async move {
        let token = B::optional(pool, sql, |r| {
            Ok((r.int("expires_at_ms")?, r.int("uses_left")?))
        })
        .await?;
        Ok(match token {
            None => Some(EnrollOutcome::UnknownToken),
            Some((expires_at, _)) if expires_at <= now_ms => Some(EnrollOutcome::ExpiredToken),
            Some((_, uses_left)) if uses_left <= 0 => Some(EnrollOutcome::UsedToken),
            Some(_) => None,
        })
    }
}

async fn enroll<B: Dialect>(
    conn: &mut B::Connection,
    request: &EnrollRequest,
    now_ms: i64,
    issue: IssueCert<'_>,
) -> StoreResult<EnrollOutcome> {
    let mut sql = QueryBuilder::new(
        "SELECT id, expires_at_ms, uses_left FROM enrollment_tokens WHERE token_sha256 = ",
    );
    B::text(&mut sql, &request.token_sha256);
    sql.push(B::LOCK_ROWS);
    let token = B::optional_in(&mut *conn, sql, |r| {
        Ok((r.text("id")?, r.int("expires_at_ms")?, r.int("uses_left")?))
    })
    .await?;
    let Some((token_id, expires_at, uses_left)) = token else {
        return Ok(EnrollOutcome::UnknownToken);
    };
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

    let mut sql = QueryBuilder::new("SELECT id FROM hosts WHERE (");
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
    sql.push(") ORDER BY enrolled_at_ms DESC LIMIT 1");
    let known = B::optional_in(&mut *conn, sql, |r| r.text("id")).await?;
    let relinked = known.is_some();
    let host_id = known.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let cert = issue(&host_id).map_err(StoreError::Issue)?;
    let sql = if relinked {
        let mut sql = QueryBuilder::new("UPDATE hosts SET hostname = ");
        B::text(&mut sql, &request.hostname);
        sql.push(", cert_serial = ");
        B::text(&mut sql, &cert.serial_hex);
        sql.push(", cert_sha256 = ");
        B::text(&mut sql, &cert.sha256_hex);
        sql.push(", enrolled_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(" WHERE id = ");
        B::text(&mut sql, &host_id);
        sql
    } else {
        let mut sql = QueryBuilder::new(
            "INSERT INTO hosts (id, hostname, hardware_uuid, hardware_serial, cert_serial, \
             cert_sha256, enrolled_at_ms) VALUES (",
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
                Value::Int(now_ms),
            ],
        );
        sql.push(")");
        sql
    };
    B::execute_in(&mut *conn, sql).await?;
    super::audit::append::<B>(
        &mut *conn,
        &AuditEntry {
            technician_id: None,
            token_id: None,
            action: "host.enroll".into(),
            subject: host_id.clone(),
            detail: format!(
                "token {token_id}; hostname {:?}; relinked {relinked}",
                request.hostname
            ),
        },
        now_ms,
    )
    .await?;
    Ok(EnrollOutcome::Enrolled {
        host_id,
        cert_pem: cert.cert_pem,
        relinked,
    })
}
