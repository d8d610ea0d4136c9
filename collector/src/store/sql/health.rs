//! Health history retention, the same SQL on both backends.

use std::future::Future;

use sqlx::{QueryBuilder, Transaction};

use super::{Dialect, SendFuture};
use crate::store::StoreResult;

/// Folds raw health samples older than `raw_before_ms` into hourly points,
/// in the transaction `begin` opens, and deletes points older than
/// `keep_after_ms`; (raw samples folded, points deleted).
pub(crate) fn downsample<'a, B: Dialect>(
    begin: impl Future<Output = StoreResult<Transaction<'static, B>>> + Send + 'a,
    raw_before_ms: i64,
    keep_after_ms: i64,
) -> SendFuture<'a, (u64, u64)> {
    Box::pin(async move {
        let mut tx = begin.await?;
        // Two replicas running retention at once would fold the same raw
        // rows twice; the second waits here and then finds them gone.
        if let Some(lock) = B::one_at_a_time("downsample") {
            B::execute_in(&mut tx, lock).await?;
        }
        // Hours are folded whole: only hours that ended before the cut.
        let cut = raw_before_ms - raw_before_ms.rem_euclid(3_600_000);
        let greatest = B::GREATEST;
        let mut sql = QueryBuilder::new(
            "INSERT INTO health_samples AS h (host_id, resolution_s, at_ms, samples, cpu_percent, \
             cpu_max_percent, memory_used_percent, disk_used_max_percent, temperature_max_celsius) \
             SELECT host_id, 3600, (at_ms / 3600000) * 3600000, COUNT(*), AVG(cpu_percent), \
             MAX(cpu_max_percent), AVG(memory_used_percent), MAX(disk_used_max_percent), \
             MAX(temperature_max_celsius) \
             FROM health_samples WHERE resolution_s = 0 AND at_ms < ",
        );
        B::int(&mut sql, cut);
        sql.push(format!(
            " GROUP BY host_id, at_ms / 3600000 \
             ON CONFLICT (host_id, resolution_s, at_ms) DO UPDATE SET \
             cpu_percent = (h.cpu_percent * h.samples + excluded.cpu_percent * excluded.samples) / (h.samples + excluded.samples), \
             memory_used_percent = (h.memory_used_percent * h.samples + excluded.memory_used_percent * excluded.samples) / (h.samples + excluded.samples), \
             cpu_max_percent = {greatest}(h.cpu_max_percent, excluded.cpu_max_percent), \
             disk_used_max_percent = {greatest}(h.disk_used_max_percent, excluded.disk_used_max_percent), \
             temperature_max_celsius = COALESCE({greatest}(h.temperature_max_celsius, excluded.temperature_max_celsius), h.temperature_max_celsius, excluded.temperature_max_celsius), \
             samples = h.samples + excluded.samples"
        ));
        B::execute_in(&mut tx, sql).await?;
        let mut sql =
            QueryBuilder::new("DELETE FROM health_samples WHERE resolution_s = 0 AND at_ms < ");
        B::int(&mut sql, cut);
        let folded = B::execute_in(&mut tx, sql).await?;
        let mut sql = QueryBuilder::new("DELETE FROM health_samples WHERE at_ms < ");
        B::int(&mut sql, keep_after_ms);
        let purged = B::execute_in(&mut tx, sql).await?;
        tx.commit().await?;
        Ok((folded, purged))
    })
}
