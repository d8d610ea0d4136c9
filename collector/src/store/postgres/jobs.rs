//! Diagnostic jobs on PostgreSQL. SKELETON: stubs with the SQLite module's
//! signatures, to be replaced by the port of `sqlite/jobs.rs`.

use sqlx::{PgPool, Postgres, Transaction};

use super::pending;
use crate::store::{HostDiagnostics, JobQuery, JobResult, JobRow, NewJob, StoreResult};

pub async fn create(_pool: &PgPool, _job: &NewJob, _now_ms: i64) -> StoreResult<JobRow> {
    Err(pending("jobs::create"))
}

pub async fn get(_pool: &PgPool, _id: &str) -> StoreResult<Option<JobRow>> {
    Err(pending("jobs::get"))
}

pub async fn list(_pool: &PgPool, _query: &JobQuery) -> StoreResult<Vec<JobRow>> {
    Err(pending("jobs::list"))
}

pub async fn deliverable(_pool: &PgPool, _host: &str, _now_ms: i64) -> StoreResult<Vec<JobRow>> {
    Err(pending("jobs::deliverable"))
}

pub async fn sent(_pool: &PgPool, _id: &str, _now_ms: i64) -> StoreResult<()> {
    Err(pending("jobs::sent"))
}

pub async fn cancel(_pool: &PgPool, _id: &str, _now_ms: i64) -> StoreResult<Option<JobRow>> {
    Err(pending("jobs::cancel"))
}

pub async fn expire(_pool: &PgPool, _now_ms: i64) -> StoreResult<Vec<JobRow>> {
    Err(pending("jobs::expire"))
}

pub async fn finish(
    _tx: &mut Transaction<'static, Postgres>,
    _host: &str,
    _result: &JobResult,
    _now_ms: i64,
) -> StoreResult<()> {
    Err(pending("jobs::finish"))
}

pub async fn host_diagnostics(_pool: &PgPool, _host: &str) -> StoreResult<HostDiagnostics> {
    Err(pending("jobs::host_diagnostics"))
}
