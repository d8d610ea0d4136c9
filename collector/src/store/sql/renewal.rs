//! Host certificate renewal, the same SQL on both backends: a renewed
//! certificate is recorded beside the current one, and becomes current the
//! first time the agent presents it.

use sqlx::QueryBuilder;

use super::Dialect;
use crate::store::{AuditEntry, CertStanding, HostCert, StoreResult};

/// Records `next` as the host's renewed certificate if `presented_sha256`
/// is still its current one, with the audit entry, in the transaction on
/// `conn`. False (nothing written) when it is not current.
pub(crate) async fn record<B: Dialect>(
    conn: &mut B::Connection,
    host_id: &str,
    presented_sha256: &str,
    next: &HostCert,
    now_ms: i64,
) -> StoreResult<bool> {
    let mut sql = QueryBuilder::<B>::new("UPDATE hosts SET next_cert_serial = ");
    B::text(&mut sql, &next.serial_hex);
    sql.push(", next_cert_sha256 = ");
    B::text(&mut sql, &next.sha256_hex);
    sql.push(", next_cert_ca_sha256 = ");
    B::text(&mut sql, &next.ca_sha256);
    sql.push(" WHERE id = ");
    B::text(&mut sql, host_id);
    sql.push(" AND cert_sha256 = ");
    B::text(&mut sql, presented_sha256);
    // A revoked host is renewed nothing (issue 20).
    sql.push(" AND revoked_at_ms IS NULL");
    if B::execute_in(&mut *conn, sql).await? == 0 {
        return Ok(false);
    }
    super::audit::append::<B>(
        &mut *conn,
        &AuditEntry {
            technician_id: None,
            token_id: None,
            action: "host.cert.renew".into(),
            subject: host_id.to_owned(),
            detail: format!("serial {}; sha256 {}", next.serial_hex, next.sha256_hex),
        },
        now_ms,
    )
    .await?;
    Ok(true)
}

/// Where the certificate `sha256` stands for the host, in the transaction
/// on `conn`; a renewed certificate presented for the first time is made
/// current here, which retires the one it renewed.
pub(crate) async fn present<B: Dialect>(
    conn: &mut B::Connection,
    host_id: &str,
    sha256: &str,
) -> StoreResult<CertStanding> {
    let mut sql = QueryBuilder::<B>::new(
        "UPDATE hosts SET cert_serial = next_cert_serial, cert_sha256 = next_cert_sha256, \
         cert_ca_sha256 = next_cert_ca_sha256, next_cert_serial = NULL, \
         next_cert_sha256 = NULL, next_cert_ca_sha256 = NULL WHERE id = ",
    );
    B::text(&mut sql, host_id);
    sql.push(" AND next_cert_sha256 = ");
    B::text(&mut sql, sha256);
    sql.push(" AND revoked_at_ms IS NULL");
    if B::execute_in(&mut *conn, sql).await? == 1 {
        return Ok(CertStanding::Renewed);
    }
    let mut sql =
        QueryBuilder::<B>::new("SELECT cert_sha256, revoked_at_ms FROM hosts WHERE id = ");
    B::text(&mut sql, host_id);
    let current = B::optional_in(&mut *conn, sql, |r| {
        Ok((r.text("cert_sha256")?, r.opt_int("revoked_at_ms")?))
    })
    .await?;
    if current.is_none()
        && let Some((host_id, cert_pem)) =
            super::relink::relinked_cert::<B>(conn, host_id, sha256).await?
    {
        return Ok(CertStanding::Relinked { host_id, cert_pem });
    }
    Ok(standing(current, sha256))
}

/// Where `sha256` stands given the host's current certificate and
/// revocation (`None`: no such host). A revoked host's certificates are all
/// refused, whichever is presented.
pub(crate) fn standing(current: Option<(String, Option<i64>)>, sha256: &str) -> CertStanding {
    match current {
        None => CertStanding::UnknownHost,
        Some((_, Some(at_ms))) => CertStanding::Revoked { at_ms },
        Some((current, None)) if current == sha256 => CertStanding::Current,
        Some(_) => CertStanding::Superseded,
    }
}
