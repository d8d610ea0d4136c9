//! The ingest write path on SQLite: one batch of reports in one transaction,
//! written with a fixed number of set-based statements per kind of report
//! instead of several statements per report.
//!
//! sqlx hands every statement to its worker thread, about 115 µs here
//! (STACK-NOTES "Measured ceilings"), so the statement count, not SQLite's
//! own work, bounded the per-report path near 1,000 health reports/s. Rows
//! go in as one JSON text per statement, unpacked by SQLite's `json_each`:
//! one bind, SQL text that does not vary with the batch size (so sqlx keeps
//! it prepared), and no bind-variable limit to chunk under.
//!
//! Order within a batch: inventories and deltas first (in batch order, so a
//! host's later report sees its earlier one), then health samples (in batch
//! order per host, so rule states step in sample order), then the rare
//! kinds one by one. A host's last-seen time is set once per batch.

use std::collections::{HashMap, HashSet};

use sqlx::{Row, Sqlite, Transaction};

use super::{fleet, inventory};
use crate::rules::policy::Policy;
use crate::store::rows::json_rows;
use crate::store::sql::tickets;
use crate::store::{IncomingReport, ReportOutcome, ReportPayload, StoreResult};

type Tx = Transaction<'static, Sqlite>;

/// Stores a batch of reports in `tx`; one outcome per report, in order.
pub(super) async fn store_reports(
    tx: &mut Tx,
    policy: &Policy,
    reports: &[IncomingReport],
    now_ms: i64,
) -> StoreResult<Vec<ReportOutcome>> {
    let fresh = claim(tx, reports, now_ms).await?;
    let mut outcomes: Vec<ReportOutcome> = fresh
        .iter()
        .map(|&f| {
            if f {
                ReportOutcome::Stored
            } else {
                ReportOutcome::Duplicate
            }
        })
        .collect();
    let fresh_of = |keep: fn(&ReportPayload) -> bool| -> Vec<(usize, &IncomingReport)> {
        reports
            .iter()
            .enumerate()
            .filter(|(i, r)| fresh[*i] && keep(&r.payload))
            .collect()
    };

    let inventories = fresh_of(|p| {
        matches!(
            p,
            ReportPayload::Inventory { .. } | ReportPayload::InventoryDelta { .. }
        )
    });
    let only: Vec<&IncomingReport> = inventories.iter().map(|(_, r)| *r).collect();
    let stored = inventory::store_batch(tx, policy, &only, now_ms).await?;
    for ((i, _), outcome) in inventories.iter().zip(stored) {
        outcomes[*i] = outcome;
    }

    let health: Vec<&IncomingReport> = fresh_of(|p| matches!(p, ReportPayload::Health { .. }))
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    store_health(tx, policy, &health, now_ms).await?;

    for (_, report) in fresh_of(|p| {
        matches!(
            p,
            ReportPayload::DiagnosticResult(_) | ReportPayload::UserIssue { .. }
        )
    }) {
        tickets::store_event::<Sqlite>(tx, policy, report, now_ms).await?;
    }

    let hosts: HashSet<&str> = reports.iter().map(|r| r.host_id.as_str()).collect();
    let hosts: Vec<&str> = hosts.into_iter().collect();
    sqlx::query(
        "UPDATE hosts SET last_seen_at_ms = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
    )
    .bind(now_ms)
    .bind(json_rows(&hosts)?)
    .execute(&mut **tx)
    .await?;
    Ok(outcomes)
}

/// Records every report's idempotency key (D14) in one statement; true for
/// each report seen for the first time. The second of two equal keys in one
/// batch is a duplicate, as it would be in the next batch. Then forgets the
/// keys the agents no longer hold.
async fn claim(tx: &mut Tx, reports: &[IncomingReport], now_ms: i64) -> StoreResult<Vec<bool>> {
    let keys = reports
        .iter()
        .map(|r| {
            Ok((
                r.host_id.as_str(),
                r.spool_id.as_str(),
                super::seq_i64(r.seq)?,
            ))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // RETURNING yields only the rows actually inserted, not the ignored ones.
    let rows = sqlx::query(
        "INSERT OR IGNORE INTO received_reports (host_id, spool_id, seq, received_at_ms) \
         SELECT value->>0, value->>1, value->>2, ?2 FROM json_each(?1) \
         RETURNING host_id, spool_id, seq",
    )
    .bind(json_rows(&keys)?)
    .bind(now_ms)
    .fetch_all(&mut **tx)
    .await?;
    let forget = crate::store::forgettable_keys(reports)
        .into_iter()
        .map(|(host, spool, below)| Ok((host, spool, super::seq_i64(below)?)))
        .collect::<StoreResult<Vec<_>>>()?;
    if !forget.is_empty() {
        // Keeps the table to the reports still in flight, so it stays small
        // and each batch dirties few of its pages.
        sqlx::query(
            "DELETE FROM received_reports WHERE (host_id, spool_id, seq) IN \
             (SELECT r.host_id, r.spool_id, r.seq FROM json_each(?1) AS j \
              JOIN received_reports AS r ON r.host_id = j.value->>0 \
              AND r.spool_id = j.value->>1 AND r.seq < j.value->>2)",
        )
        .bind(json_rows(&forget)?)
        .execute(&mut **tx)
        .await?;
    }
    let mut new: HashSet<(String, String, i64)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(keys
        .iter()
        .map(|(h, s, q)| new.remove(&((*h).to_owned(), (*s).to_owned(), *q)))
        .collect())
}

/// Stores health samples: the history rows, rule evaluation (D21), and each
/// host's latest sample and free space: the one received last (at `now_ms`),
/// unless one was stored at a later receive time.
async fn store_health(
    tx: &mut Tx,
    policy: &Policy,
    reports: &[&IncomingReport],
    now_ms: i64,
) -> StoreResult<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let mut history = Vec::with_capacity(reports.len());
    let mut samples = Vec::with_capacity(reports.len());
    // Per host, the batch's last sample: the latest is the one received
    // last, never the one claiming the latest time (a PC's clock may lie,
    // `crate::clockskew`), and a batch is in the order received.
    let mut newest: HashMap<&str, &IncomingReport> = HashMap::new();
    for report in reports {
        let ReportPayload::Health {
            reading, readings, ..
        } = &report.payload
        else {
            continue;
        };
        history.push((
            report.host_id.as_str(),
            report.collected_at_ms,
            f64::from(reading.cpu_percent),
            f64::from(reading.memory_used_percent),
            f64::from(reading.disk_used_max_percent),
            reading.temperature_max_celsius.map(f64::from),
        ));
        samples.push(crate::store::engine::tickets::Sample {
            host: &report.host_id,
            readings,
            at_ms: report.collected_at_ms,
        });
        newest.insert(&report.host_id, report);
    }
    sqlx::query(
        "INSERT OR IGNORE INTO health_samples (host_id, resolution_s, at_ms, samples, \
         cpu_percent, cpu_max_percent, memory_used_percent, disk_used_max_percent, \
         temperature_max_celsius) \
         SELECT value->>0, 0, value->>1, 1, value->>2, value->>2, value->>3, value->>4, value->>5 \
         FROM json_each(?1)",
    )
    .bind(json_rows(&history)?)
    .execute(&mut **tx)
    .await?;
    tickets::evaluate::<Sqlite>(tx, policy, &samples, now_ms).await?;

    let latest: Vec<(&str, String, i64)> = newest
        .values()
        .filter_map(|r| match &r.payload {
            ReportPayload::Health { encoded, .. } => {
                Some((r.host_id.as_str(), hex::encode(encoded), r.collected_at_ms))
            }
            _ => None,
        })
        .collect();
    let applied: Vec<String> = sqlx::query_scalar(
        "UPDATE hosts SET last_health = unhex(j.value->>1), health_at_ms = j.value->>2, \
         health_received_at_ms = ?2 \
         FROM json_each(?1) AS j WHERE hosts.id = j.value->>0 \
         AND (hosts.health_received_at_ms IS NULL OR hosts.health_received_at_ms <= ?2) \
         RETURNING hosts.id",
    )
    .bind(json_rows(&latest)?)
    .bind(now_ms)
    .fetch_all(&mut **tx)
    .await?;
    let free: Vec<(&str, &[(String, f32)])> = applied
        .iter()
        .filter_map(|host| match newest.get(host.as_str()).map(|r| &r.payload) {
            Some(ReportPayload::Health { free, .. }) => newest
                .get_key_value(host.as_str())
                .map(|(h, _)| (*h, free.as_slice())),
            _ => None,
        })
        .collect();
    fleet::replace_free(tx, &free).await
}
