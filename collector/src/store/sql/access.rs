//! Who may call, the same SQL on both backends: API tokens and the
//! technicians behind them, and a host's current certificate.

use sqlx::{Pool, QueryBuilder, Transaction};
use std::future::Future;

use super::{Dialect, SendFuture, Value, push_values};
use crate::store::{AuditOf, NewApiToken, StoreError, StoreResult};

/// The SHA-256 of the host's current certificate; `None` for an unknown
/// host.
pub(crate) fn host_cert_sha256<'a, B: Dialect>(
    pool: &'a Pool<B>,
    host_id: &str,
) -> impl Future<Output = StoreResult<Option<String>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new("SELECT cert_sha256 FROM hosts WHERE id = ");
    B::text(&mut sql, host_id);
    B::optional(pool, sql, |r| r.text("cert_sha256"))
}

/// Adds the technician `name` with `role` unless one of that name exists
/// (whatever its role: the caller reads it back and decides).
pub(crate) async fn add_technician_if_absent<B: Dialect>(
    tx: &mut Transaction<'static, B>,
    name: &str,
    role: crate::store::Role,
    now_ms: i64,
) -> StoreResult<()> {
    let mut sql =
        QueryBuilder::new("INSERT INTO technicians (id, name, role, created_at_ms) VALUES (");
    push_values(
        &mut sql,
        &[
            Value::Text(&uuid::Uuid::new_v4().to_string()),
            Value::Text(name),
            Value::Text(role.as_str()),
            Value::Int(now_ms),
        ],
    );
    sql.push(") ON CONFLICT (name) DO NOTHING");
    B::execute_in(tx, sql).await?;
    Ok(())
}

/// Stores an API token in the transaction `begin` opens, creating its
/// technician if new; the technician's id. Insert-if-absent, then read:
/// two replicas creating the same technician at once both end up with the
/// one row.
pub(crate) fn create_api_token<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    token: &'a NewApiToken,
    audit: AuditOf<'a, String>,
    now_ms: i64,
) -> SendFuture<'a, String> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        add_technician_if_absent::<B>(&mut tx, &token.technician_name, token.role, now_ms).await?;
        let mut sql = QueryBuilder::new("SELECT id, role FROM technicians WHERE name = ");
        B::text(&mut sql, &token.technician_name);
        let found = B::optional_in(&mut tx, sql, |r| Ok((r.text("id")?, r.text("role")?))).await?;
        let Some((technician_id, role)) = found else {
            return Err(StoreError::Corrupt(format!(
                "technician {:?} vanished while its token was created",
                token.technician_name
            )));
        };
        if role != token.role.as_str() {
            return Err(StoreError::Conflict(format!(
                "technician {:?} exists with role {role}, not {}",
                token.technician_name, token.role
            )));
        }
        let mut sql = QueryBuilder::new(
            "INSERT INTO api_tokens (id, technician_id, token_sha256, created_at_ms, \
             expires_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(&token.token_id),
                Value::Text(&technician_id),
                Value::Text(&token.token_sha256),
                Value::Int(now_ms),
                Value::MaybeInt(token.expires_at_ms),
            ],
        );
        sql.push(")");
        B::execute_in(&mut tx, sql).await?;
        super::audit::append::<B>(&mut tx, &audit(&technician_id), now_ms).await?;
        tx.commit().await?;
        Ok(technician_id)
    })
}
