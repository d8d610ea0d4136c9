//! Who may call, the same SQL on both backends: the technician behind an
//! API token, and a host's current certificate.

use std::future::Future;
use std::str::FromStr;

use sqlx::{Pool, QueryBuilder};

use super::Dialect;
use crate::store::{Caller, Role, StoreError, StoreResult};

/// The technician whose unrevoked token hashes to `token_sha256`.
pub(crate) fn caller<'a, B: Dialect>(
    pool: &'a Pool<B>,
    token_sha256: &str,
) -> impl Future<Output = StoreResult<Option<Caller>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT t.id AS token_id, p.id AS technician_id, p.name, p.role \
         FROM api_tokens t JOIN technicians p ON p.id = t.technician_id \
         WHERE t.revoked_at_ms IS NULL AND t.token_sha256 = ",
    );
    B::text(&mut sql, token_sha256);
    B::optional(pool, sql, |r| {
        Ok(Caller {
            technician_id: r.text("technician_id")?,
            name: r.text("name")?,
            role: Role::from_str(&r.text("role")?).map_err(StoreError::Corrupt)?,
            token_id: r.text("token_id")?,
        })
    })
}

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
