//! The SQL of automatic triage (`engine::triage`), the same on both
//! backends: the ticket transaction lent to the job state machine, what a
//! host's agent said about its diagnostics, and its latest health point.

use sqlx::QueryBuilder;

use super::jobs::{HOST_DIAGNOSTICS_COLUMNS, JobConn, host_diagnostics_row};
use super::tickets::{BackendSql, TicketConn};
use crate::store::engine::jobs::JobTx;
use crate::store::engine::triage::TriageTx;
use crate::store::rows::{HEALTH_POINT_COLUMNS, health_point_row};
use crate::store::{HealthPoint, HostDiagnostics, NewJob, StoreResult};

impl<B: BackendSql> TriageTx for TicketConn<'_, B> {
    async fn insert_job(&mut self, job: &NewJob, now_ms: i64) -> StoreResult<()> {
        JobConn::<B>(self.0).insert_job(job, now_ms).await
    }

    async fn diagnostics_of(&mut self, host: &str) -> StoreResult<Option<HostDiagnostics>> {
        let mut sql = QueryBuilder::<B>::new(format!(
            "SELECT {HOST_DIAGNOSTICS_COLUMNS} FROM hosts WHERE id = "
        ));
        B::text(&mut sql, host);
        B::optional_in(self.0, sql, |r| host_diagnostics_row(r)).await
    }

    async fn last_health_point(&mut self, host: &str) -> StoreResult<Option<HealthPoint>> {
        // Raw samples are kept for a day and hours after that, so the
        // newest row of either resolution is the latest the host sent.
        let mut sql = QueryBuilder::<B>::new(format!(
            "SELECT {HEALTH_POINT_COLUMNS} FROM health_samples \
             WHERE resolution_s IN (0, 3600) AND host_id = "
        ));
        B::text(&mut sql, host);
        sql.push(" ORDER BY at_ms DESC, resolution_s LIMIT 1");
        B::optional_in(self.0, sql, |r| health_point_row(r)).await
    }
}
