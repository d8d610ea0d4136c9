//! The web console's rows (issue 22), the same SQL on both backends: local
//! accounts (a technician's password, as an Argon2id PHC string) and web
//! sessions (a cookie secret's SHA-256, its CSRF token, its expiry). Every
//! change to an account is audited in its own transaction; so is each
//! sign-in.

use std::future::Future;
use std::str::FromStr;

use sqlx::{Pool, QueryBuilder, Transaction};

use super::{Dialect, SendFuture, Value, push_values};
use crate::store::rows::Columns;
use crate::store::{
    AuditEntry, AuditOf, LocalUserLogin, LocalUserRow, NewLocalUser, NewWebSession, Role,
    StoreError, StoreResult, WebSessionRow,
};

use crate::store::WEB_SESSION_TOUCH_EVERY_MS as SESSION_TOUCH_EVERY_MS;

fn role_of(r: &dyn Columns) -> StoreResult<Role> {
    Role::from_str(&r.text("role")?).map_err(StoreError::Corrupt)
}

/// The subquery naming a technician's id by name.
fn push_technician_id<B: Dialect>(sql: &mut QueryBuilder<B>, name: &str) {
    sql.push("(SELECT id FROM technicians WHERE name = ");
    B::text(sql, name);
    sql.push(")");
}

/// Makes a local account, creating its technician if new; the technician's
/// id. An existing technician with another role, or one that already has
/// an account, is a conflict.
pub(crate) fn create_local_user<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    user: &'a NewLocalUser,
    audit: AuditOf<'a, String>,
    now_ms: i64,
) -> SendFuture<'a, String> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        super::access::add_technician_if_absent::<B>(&mut tx, &user.name, user.role, now_ms)
            .await?;
        let mut sql = QueryBuilder::new(
            "SELECT p.id, p.role, u.technician_id AS account FROM technicians p \
             LEFT JOIN local_users u ON u.technician_id = p.id WHERE p.name = ",
        );
        B::text(&mut sql, &user.name);
        let found = B::optional_in(&mut tx, sql, |r| {
            Ok((r.text("id")?, r.text("role")?, r.opt_text("account")?))
        })
        .await?;
        let Some((technician_id, role, account)) = found else {
            return Err(StoreError::Corrupt(format!(
                "technician {:?} vanished while its account was made",
                user.name
            )));
        };
        if role != user.role.as_str() {
            return Err(StoreError::Conflict(format!(
                "technician {:?} exists with role {role}, not {}",
                user.name, user.role
            )));
        }
        if account.is_some() {
            return Err(StoreError::Conflict(format!(
                "{:?} already has a local account; set a new password with \
                 `user password {}`",
                user.name, user.name
            )));
        }
        let mut sql = QueryBuilder::new(
            "INSERT INTO local_users (technician_id, password_hash, created_at_ms, \
             password_set_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(&technician_id),
                Value::Text(&user.password_hash),
                Value::Int(now_ms),
                Value::Int(now_ms),
            ],
        );
        sql.push(")");
        B::execute_in(&mut tx, sql).await?;
        super::audit::append::<B>(&mut tx, &audit(&technician_id), now_ms).await?;
        tx.commit().await?;
        Ok(technician_id)
    })
}

/// Deletes the password sessions of the technician named `name`: a new
/// password, or no account, ends them. Sessions signed in with an API token
/// stay; the token decides those.
fn end_password_sessions<B: Dialect>(name: &str) -> QueryBuilder<B> {
    let mut sql = QueryBuilder::new(
        "DELETE FROM web_sessions WHERE api_token_id IS NULL AND technician_id = ",
    );
    push_technician_id(&mut sql, name);
    sql
}

/// Sets the password of `name`'s local account and ends its password
/// sessions; false (nothing changed, nothing audited) when it has none.
pub(crate) fn set_local_password<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    name: &'a str,
    password_hash: &'a str,
    audit: &'a AuditEntry,
    now_ms: i64,
) -> SendFuture<'a, bool> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let mut sql = QueryBuilder::new("UPDATE local_users SET password_hash = ");
        B::text(&mut sql, password_hash);
        sql.push(", password_set_at_ms = ");
        B::int(&mut sql, now_ms);
        sql.push(" WHERE technician_id = ");
        push_technician_id(&mut sql, name);
        if B::execute_in(&mut tx, sql).await? == 0 {
            return Ok(false);
        }
        B::execute_in(&mut tx, end_password_sessions(name)).await?;
        super::audit::append::<B>(&mut tx, audit, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    })
}

/// Deletes `name`'s local account and ends its password sessions; the
/// technician, its API tokens and its history stay. False (nothing
/// audited) when it has none.
pub(crate) fn delete_local_user<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    name: &'a str,
    audit: &'a AuditEntry,
    now_ms: i64,
) -> SendFuture<'a, bool> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        B::execute_in(&mut tx, end_password_sessions(name)).await?;
        let mut sql = QueryBuilder::new("DELETE FROM local_users WHERE technician_id = ");
        push_technician_id(&mut sql, name);
        if B::execute_in(&mut tx, sql).await? == 0 {
            return Ok(false);
        }
        super::audit::append::<B>(&mut tx, audit, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    })
}

/// Every local account, by name.
pub(crate) fn local_users<B: Dialect>(
    pool: &Pool<B>,
) -> impl Future<Output = StoreResult<Vec<LocalUserRow>>> + Send + '_ {
    let sql = QueryBuilder::<B>::new(format!(
        "SELECT p.id, p.name, p.role, u.created_at_ms, u.password_set_at_ms \
         FROM local_users u JOIN technicians p ON p.id = u.technician_id ORDER BY p.name{}",
        B::BYTE_ORDER
    ));
    B::all(pool, sql, |r| {
        Ok(LocalUserRow {
            technician_id: r.text("id")?,
            name: r.text("name")?,
            role: role_of(r)?,
            created_at_ms: r.int("created_at_ms")?,
            password_set_at_ms: r.int("password_set_at_ms")?,
        })
    })
}

/// The local account named `name`, with its password hash.
pub(crate) fn local_user_login<'a, B: Dialect>(
    pool: &'a Pool<B>,
    name: &str,
) -> impl Future<Output = StoreResult<Option<LocalUserLogin>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT p.id, p.name, p.role, u.password_hash \
         FROM local_users u JOIN technicians p ON p.id = u.technician_id WHERE p.name = ",
    );
    B::text(&mut sql, name);
    B::optional(pool, sql, |r| {
        Ok(LocalUserLogin {
            technician_id: r.text("id")?,
            name: r.text("name")?,
            role: role_of(r)?,
            password_hash: r.text("password_hash")?,
        })
    })
}

/// Stores a new session with its sign-in's audit entry, and deletes the
/// sessions past their absolute expiry on the way.
pub(crate) fn create_web_session<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    session: &'a NewWebSession,
    audit: &'a AuditEntry,
    now_ms: i64,
) -> SendFuture<'a, ()> {
    Box::pin(async move {
        let mut tx = begin.await?;
        super::audit::hold_head::<B>(&mut tx).await?;
        let mut sql = QueryBuilder::new("DELETE FROM web_sessions WHERE expires_at_ms <= ");
        B::int(&mut sql, now_ms);
        B::execute_in(&mut tx, sql).await?;
        let mut sql = QueryBuilder::new(
            "INSERT INTO web_sessions (id, secret_sha256, technician_id, api_token_id, \
             csrf_token, created_at_ms, last_seen_at_ms, expires_at_ms) VALUES (",
        );
        push_values(
            &mut sql,
            &[
                Value::Text(&session.id),
                Value::Text(&session.secret_sha256),
                Value::Text(&session.technician_id),
                Value::MaybeText(session.api_token_id.as_deref()),
                Value::Text(&session.csrf_token),
                Value::Int(now_ms),
                Value::Int(now_ms),
                Value::Int(session.expires_at_ms),
            ],
        );
        sql.push(")");
        B::execute_in(&mut tx, sql).await?;
        super::audit::append::<B>(&mut tx, audit, now_ms).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// The session whose cookie secret hashes to `secret_sha256`, with the
/// technician's current name and role and whether its credential still
/// works at `now_ms`.
pub(crate) fn web_session<'a, B: Dialect>(
    pool: &'a Pool<B>,
    secret_sha256: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<Option<WebSessionRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT s.id, s.technician_id, p.name, p.role, s.api_token_id, s.csrf_token, \
         s.created_at_ms, s.last_seen_at_ms, s.expires_at_ms, \
         t.revoked_at_ms AS token_revoked_at_ms, t.expires_at_ms AS token_expires_at_ms, \
         u.technician_id AS account \
         FROM web_sessions s JOIN technicians p ON p.id = s.technician_id \
         LEFT JOIN api_tokens t ON t.id = s.api_token_id \
         LEFT JOIN local_users u ON u.technician_id = s.technician_id \
         WHERE s.secret_sha256 = ",
    );
    B::text(&mut sql, secret_sha256);
    async move {
        let found = B::optional(pool, sql, |r| {
            let api_token_id = r.opt_text("api_token_id")?;
            let token_state = (
                r.opt_int("token_revoked_at_ms")?,
                r.opt_int("token_expires_at_ms")?,
            );
            let has_account = r.opt_text("account")?.is_some();
            Ok((
                WebSessionRow {
                    id: r.text("id")?,
                    technician_id: r.text("technician_id")?,
                    name: r.text("name")?,
                    role: role_of(r)?,
                    api_token_id,
                    csrf_token: r.text("csrf_token")?,
                    created_at_ms: r.int("created_at_ms")?,
                    last_seen_at_ms: r.int("last_seen_at_ms")?,
                    expires_at_ms: r.int("expires_at_ms")?,
                    credential_valid: false,
                },
                token_state,
                has_account,
            ))
        })
        .await?;
        Ok(found.map(|(mut row, (revoked, expires), has_account)| {
            row.credential_valid = if row.api_token_id.is_some() {
                revoked.is_none() && expires.is_none_or(|at| at > now_ms)
            } else {
                has_account
            };
            row
        }))
    }
}

/// Records a session's use at `now_ms`, unless that was recorded less than
/// [`SESSION_TOUCH_EVERY_MS`] ago.
pub(crate) fn touch_web_session<'a, B: Dialect>(
    pool: &'a Pool<B>,
    id: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<u64>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new("UPDATE web_sessions SET last_seen_at_ms = ");
    B::int(&mut sql, now_ms);
    sql.push(" WHERE id = ");
    B::text(&mut sql, id);
    sql.push(" AND last_seen_at_ms <= ");
    B::int(&mut sql, now_ms.saturating_sub(SESSION_TOUCH_EVERY_MS));
    B::execute(pool, sql)
}

/// Deletes one session (signing out, or found expired).
pub(crate) fn delete_web_session<'a, B: Dialect>(
    pool: &'a Pool<B>,
    id: &str,
) -> impl Future<Output = StoreResult<u64>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new("DELETE FROM web_sessions WHERE id = ");
    B::text(&mut sql, id);
    B::execute(pool, sql)
}
