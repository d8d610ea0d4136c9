//! The fleet's CAs and their rotation (issue 20, docs/ca-rotation.md), the
//! same SQL on both backends: one active CA, at most one old CA in its
//! overlap, any number retired; which CA issued each host's certificate.

use sqlx::{Pool, QueryBuilder};

use super::{Dialect, Value, push_values};
use crate::store::rows::Columns;
use crate::store::{AuditEntry, CaRetirement, CaState, FleetCa, StoreError, StoreResult};

const COLUMNS: &str = "c.sha256, c.cert_pem, c.sealed_key, c.sealed_by, c.state, \
     c.created_at_ms, c.expires_at_ms, c.retired_at_ms, \
     (SELECT COUNT(*) FROM hosts h WHERE h.cert_ca_sha256 = c.sha256) AS hosts";

fn row(r: &dyn Columns) -> StoreResult<FleetCa> {
    let state = r.text("state")?;
    Ok(FleetCa {
        sha256: r.text("sha256")?,
        cert_pem: r.text("cert_pem")?,
        sealed_key: r.opt_text("sealed_key")?,
        sealed_by: r.opt_text("sealed_by")?,
        state: CaState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("fleet CA state {state:?}")))?,
        created_at_ms: r.int("created_at_ms")?,
        expires_at_ms: r.int("expires_at_ms")?,
        retired_at_ms: r.opt_int("retired_at_ms")?,
        hosts: u64::try_from(r.int("hosts")?).unwrap_or(0),
    })
}

/// Every CA the fleet has had, oldest first, with the hosts each issued
/// the current certificate of.
pub(crate) async fn list<B: Dialect>(pool: &Pool<B>) -> StoreResult<Vec<FleetCa>> {
    let sql = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM fleet_cas c ORDER BY c.created_at_ms, c.sha256"
    ));
    B::all(pool, sql, row).await
}

fn insert<B: Dialect>(ca: &FleetCa) -> QueryBuilder<B> {
    let mut sql = QueryBuilder::new(
        "INSERT INTO fleet_cas (sha256, cert_pem, sealed_key, sealed_by, state, created_at_ms, \
         expires_at_ms, retired_at_ms) SELECT ",
    );
    push_values(
        &mut sql,
        &[
            Value::Text(&ca.sha256),
            Value::Text(&ca.cert_pem),
            Value::MaybeText(ca.sealed_key.as_deref()),
            Value::MaybeText(ca.sealed_by.as_deref()),
            Value::Text(ca.state.as_str()),
            Value::Int(ca.created_at_ms),
            Value::Int(ca.expires_at_ms),
            Value::MaybeInt(ca.retired_at_ms),
        ],
    );
    sql
}

/// Records `first` as the fleet's active CA when the store knows no CA yet
/// (a new fleet, or one from before CA rotation). True when it wrote.
pub(crate) async fn record_first<B: Dialect>(pool: &Pool<B>, first: &FleetCa) -> StoreResult<bool> {
    let mut sql = insert::<B>(first);
    sql.push(" WHERE NOT EXISTS (SELECT 1 FROM fleet_cas)");
    Ok(B::execute(pool, sql).await? == 1)
}

/// The active and old CAs, locked until the transaction on `conn` ends.
async fn in_force<B: Dialect>(conn: &mut B::Connection) -> StoreResult<Vec<(String, String)>> {
    let mut sql = QueryBuilder::new(
        "SELECT sha256, state FROM fleet_cas WHERE state IN ('active', 'old') ORDER BY state",
    );
    sql.push(B::LOCK_ROWS);
    B::all_in(conn, sql, |r| Ok((r.text("sha256")?, r.text("state")?))).await
}

/// In the transaction on `conn`: makes `new` the active CA and the active
/// one `expected_active` the old one, points the D2 fingerprint at `new`,
/// and appends `audit`. A conflict (nothing written) while another CA is
/// still in its overlap, or when the active CA is not `expected_active`.
pub(crate) async fn rotate<B: Dialect>(
    conn: &mut B::Connection,
    expected_active: &str,
    new: &FleetCa,
    audit: &AuditEntry,
    now_ms: i64,
) -> StoreResult<()> {
    super::audit::hold_head::<B>(&mut *conn).await?;
    let cas = in_force::<B>(&mut *conn).await?;
    if let Some((old, _)) = cas.iter().find(|(_, state)| state == "old") {
        return Err(StoreError::Conflict(format!(
            "a CA rotation is already in progress: the old CA {} is still trusted beside the \
             active one; finish it with `deskpulse-collector ca retire` before rotating again",
            short(old)
        )));
    }
    match cas.iter().find(|(_, state)| state == "active") {
        Some((active, _)) if active == expected_active => {}
        Some((active, _)) => {
            return Err(StoreError::Conflict(format!(
                "the fleet's active CA is {}, not this data dir's {}; run the command again",
                short(active),
                short(expected_active)
            )));
        }
        None => {
            return Err(StoreError::Corrupt(
                "the store records no active fleet CA".into(),
            ));
        }
    }
    let mut sql = QueryBuilder::new("UPDATE fleet_cas SET state = 'old' WHERE sha256 = ");
    B::text(&mut sql, expected_active);
    B::execute_in(&mut *conn, sql).await?;
    B::execute_in(&mut *conn, insert::<B>(new)).await?;
    let mut sql = QueryBuilder::new("UPDATE fleet_meta SET value = ");
    B::text(&mut sql, &new.sha256);
    sql.push(" WHERE key = 'ca_sha256'");
    B::execute_in(&mut *conn, sql).await?;
    super::audit::append::<B>(&mut *conn, audit, now_ms).await?;
    Ok(())
}

/// In the transaction on `conn`: retires the old CA unless hosts still
/// hold its certificates and `force` is false. A conflict when no CA is in
/// its overlap. The audit entry names `actor`, the CA and its host count.
pub(crate) async fn retire<B: Dialect>(
    conn: &mut B::Connection,
    force: bool,
    actor: &str,
    now_ms: i64,
) -> StoreResult<CaRetirement> {
    super::audit::hold_head::<B>(&mut *conn).await?;
    let cas = in_force::<B>(&mut *conn).await?;
    let Some((old, _)) = cas.into_iter().find(|(_, state)| state == "old") else {
        return Err(StoreError::Conflict(
            "nothing to retire: no old CA is in its overlap (`deskpulse-collector ca status` \
             lists the CAs)"
                .into(),
        ));
    };
    let mut sql = QueryBuilder::new("SELECT COUNT(*) AS n FROM hosts WHERE cert_ca_sha256 = ");
    B::text(&mut sql, &old);
    let hosts = B::optional_in(&mut *conn, sql, |r| r.int("n"))
        .await?
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    if hosts > 0 && !force {
        return Ok(CaRetirement::HostsRemain { sha256: old, hosts });
    }
    let mut sql = QueryBuilder::new("UPDATE fleet_cas SET state = 'retired', retired_at_ms = ");
    B::int(&mut sql, now_ms);
    sql.push(" WHERE sha256 = ");
    B::text(&mut sql, &old);
    B::execute_in(&mut *conn, sql).await?;
    let entry = AuditEntry {
        technician_id: None,
        token_id: None,
        action: "ca.retire".into(),
        subject: old.clone(),
        detail: format!(
            "by {actor}; {hosts} host(s) still held its certificates{}",
            if force { "; forced" } else { "" }
        ),
    };
    super::audit::append::<B>(&mut *conn, &entry, now_ms).await?;
    Ok(CaRetirement::Done { sha256: old, hosts })
}

/// The first 16 hex digits of a fingerprint, for messages.
pub fn short(sha256: &str) -> &str {
    sha256.get(..16).unwrap_or(sha256)
}
