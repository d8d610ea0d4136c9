//! The job reads, the same SQL on both backends.

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::Dialect;
use crate::store::rows::{JOB_COLUMNS, job_row};
use crate::store::{HostDiagnostics, JobQuery, JobRow, StoreResult};

fn select() -> String {
    format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN hosts h ON h.id = j.host_id WHERE ")
}

/// One job by id.
pub(crate) fn get<'a, B: Dialect>(
    pool: &'a Pool<B>,
    id: &str,
) -> impl Future<Output = StoreResult<Option<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    sql.push("j.id = ");
    B::text(&mut sql, id);
    B::optional(pool, sql, |r| job_row(r))
}

/// Jobs, newest first.
pub(crate) fn list<'a, B: Dialect>(
    pool: &'a Pool<B>,
    query: &JobQuery,
) -> impl Future<Output = StoreResult<Vec<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    sql.push("1 = 1");
    if let Some(host) = &query.host_id {
        sql.push(" AND j.host_id = ");
        B::text(&mut sql, host);
    }
    if let Some(state) = &query.state {
        sql.push(" AND j.state = ");
        B::text(&mut sql, state);
    }
    sql.push(" ORDER BY j.created_at_ms DESC, j.id LIMIT ");
    B::int(&mut sql, i64::from(query.limit));
    B::all(pool, sql, |r| job_row(r))
}

/// Jobs still to deliver to a host, oldest first.
pub(crate) fn deliverable<'a, B: Dialect>(
    pool: &'a Pool<B>,
    host: &str,
    now_ms: i64,
) -> impl Future<Output = StoreResult<Vec<JobRow>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(select());
    sql.push("j.host_id = ");
    B::text(&mut sql, host);
    sql.push(" AND j.state IN ('queued', 'sent') AND j.cancel_requested = ");
    B::flag(&mut sql, false);
    sql.push(" AND j.expires_at_ms > ");
    B::int(&mut sql, now_ms);
    sql.push(" ORDER BY j.created_at_ms, j.id");
    B::all(pool, sql, |r| job_row(r))
}

/// What a host's agent said about diagnostics; `None` for an unknown host.
pub(crate) fn host_diagnostics<'a, B: Dialect>(
    pool: &'a Pool<B>,
    host: &str,
) -> impl Future<Output = StoreResult<Option<HostDiagnostics>>> + Send + 'a {
    let mut sql = QueryBuilder::<B>::new(
        "SELECT catalog_version, enabled_diagnostics FROM hosts WHERE id = ",
    );
    B::text(&mut sql, host);
    B::optional(pool, sql, |r| {
        Ok(HostDiagnostics {
            catalog_version: u32::try_from(r.int("catalog_version")?).unwrap_or(0),
            enabled: r
                .text("enabled_diagnostics")?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    })
}
