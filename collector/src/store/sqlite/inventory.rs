//! Inventories on SQLite: storing a batch's full snapshots, or applying
//! deltas to the stored ones, the fleet-query rows that follow from them,
//! and the per-host change log, in the batch's transaction.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use deskpulse_proto::delta;
use deskpulse_proto::limits::Limits;
use deskpulse_proto::v1::{Inventory, InventoryDelta};
use prost::Message;
use sqlx::{Row, Sqlite, Transaction};

use super::fleet;
use crate::changes;
use crate::rules::policy::Policy;
use crate::store::rows::json_rows;
use crate::store::{
    IncomingReport, InventoryFacts, ReportOutcome, ReportPayload, StoreResult,
    decode_stored_inventory,
};

type Tx = Transaction<'static, Sqlite>;

/// What a host's row and fleet tables get from its newest inventory in
/// the batch: borrowed from a full snapshot, owned when a delta made it.
struct Stored<'a> {
    encoded: Cow<'a, [u8]>,
    hostname: Cow<'a, str>,
    os_name: Cow<'a, str>,
    os_version: Cow<'a, str>,
    facts: Cow<'a, InventoryFacts>,
    at_ms: i64,
}

/// The stored inventories of `hosts` and when each was collected; one that
/// cannot be decoded is an error naming its host.
async fn current(
    tx: &mut Tx,
    hosts: &[&str],
) -> StoreResult<HashMap<String, (Option<Inventory>, Option<i64>)>> {
    let rows = sqlx::query(
        "SELECT host_id, inventory, inventory_at_ms FROM host_inventories \
         WHERE host_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_rows(&hosts)?)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let host: String = r.try_get(0)?;
            let blob: Vec<u8> = r.try_get(1)?;
            let stored = decode_stored_inventory(&host, &blob)?;
            Ok((host, (Some(stored), Some(r.try_get(2)?))))
        })
        .collect()
}

/// Stores a batch's full inventories and applies its deltas, in batch
/// order; one outcome per report. A report older than what is stored
/// changes nothing; a delta that does not fit asks for a full inventory.
pub async fn store_batch(
    tx: &mut Tx,
    policy: &Policy,
    reports: &[&IncomingReport],
    now_ms: i64,
) -> StoreResult<Vec<ReportOutcome>> {
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let hosts: Vec<&str> = {
        let mut seen = HashSet::new();
        reports
            .iter()
            .map(|r| r.host_id.as_str())
            .filter(|h| seen.insert(*h))
            .collect()
    };
    let mut current = current(tx, &hosts).await?;
    let mut newest: HashMap<&str, Stored<'_>> = HashMap::new();
    let mut log: Vec<(&str, i64, changes::Change)> = Vec::new();
    let mut outcomes = Vec::with_capacity(reports.len());
    for report in reports {
        let host = report.host_id.as_str();
        let at = report.collected_at_ms;
        let (old, old_at) = current.remove(host).unwrap_or((None, None));
        // A resent older report must not overwrite newer state.
        let superseded = old_at.is_some_and(|stored| stored > at);
        let made = match &report.payload {
            ReportPayload::InventoryDelta { delta } => apply_delta(
                old.as_ref(),
                delta,
                at,
                superseded,
                &policy.inventory_limits,
            ),
            _ if superseded => Err(ReportOutcome::Stored),
            ReportPayload::Inventory {
                inventory,
                hostname,
                os_name,
                os_version,
                facts,
            } => Ok((
                inventory.as_ref().clone(),
                Stored {
                    encoded: Cow::Owned(inventory.encode_to_vec()),
                    hostname: Cow::Borrowed(hostname.as_str()),
                    os_name: Cow::Borrowed(os_name.as_str()),
                    os_version: Cow::Borrowed(os_version.as_str()),
                    facts: Cow::Borrowed(facts.as_ref()),
                    at_ms: at,
                },
            )),
            _ => Err(ReportOutcome::Stored),
        };
        let (new, stored) = match made {
            Ok(made) => made,
            Err(outcome) => {
                current.insert(host.to_owned(), (old, old_at));
                outcomes.push(outcome);
                continue;
            }
        };
        log.extend(
            changes::diff(old.as_ref(), &new)
                .into_iter()
                .map(|c| (host, at, c)),
        );
        if let Some(old) = &old {
            let events = crate::rules::events::detect(old, &new);
            crate::store::sql::tickets::evaluate_changes::<Sqlite>(
                tx, policy, host, &events, at, now_ms,
            )
            .await?;
        }
        current.insert(host.to_owned(), (Some(new), Some(at)));
        newest.insert(host, stored);
        outcomes.push(ReportOutcome::Stored);
    }
    write_newest(tx, &newest).await?;
    insert_changes(tx, &log).await?;
    Ok(outcomes)
}

/// Applies a delta to the stored inventory: the new inventory, or the
/// outcome to answer with (a resync when it does not fit, stored when a
/// newer inventory superseded it).
fn apply_delta(
    old: Option<&Inventory>,
    delta: &InventoryDelta,
    at_ms: i64,
    superseded: bool,
    limits: &Limits,
) -> Result<(Inventory, Stored<'static>), ReportOutcome> {
    if superseded {
        // Older than what is stored: a late resend, already superseded.
        return Err(ReportOutcome::Stored);
    }
    let Some(old) = old else {
        return Err(ReportOutcome::Resync(
            "the collector has no inventory of this host to apply a delta to".into(),
        ));
    };
    let new = delta::apply(old, delta).map_err(|e| ReportOutcome::Resync(e.to_string()))?;
    // Deltas each within the limits could add up past them.
    if let Some(reason) = crate::store::delta_over_limits(&new, limits) {
        return Err(ReportOutcome::Resync(reason));
    }
    let os = new.os.clone().unwrap_or_default();
    let stored = Stored {
        encoded: Cow::Owned(new.encode_to_vec()),
        hostname: Cow::Owned(os.hostname),
        os_name: Cow::Owned(os.name),
        os_version: Cow::Owned(os.version),
        facts: Cow::Owned(crate::facts::inventory_facts(&new)),
        at_ms,
    };
    Ok((new, stored))
}

/// Writes each host's newest inventory: the blob, the hosts columns and the
/// fleet-query rows.
async fn write_newest(tx: &mut Tx, newest: &HashMap<&str, Stored<'_>>) -> StoreResult<()> {
    if newest.is_empty() {
        return Ok(());
    }
    // One statement per blob: tens of KB each, bound as they are rather
    // than hex in JSON; a batch holds few full inventories.
    for (host, stored) in newest {
        sqlx::query(
            "INSERT INTO host_inventories (host_id, inventory, inventory_at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (host_id) DO UPDATE SET inventory = excluded.inventory, \
             inventory_at_ms = excluded.inventory_at_ms",
        )
        .bind(*host)
        .bind(stored.encoded.as_ref())
        .bind(stored.at_ms)
        .execute(&mut **tx)
        .await?;
    }
    let names: Vec<(&str, &str, &str, &str)> = newest
        .iter()
        .map(|(h, s)| {
            (
                *h,
                s.hostname.as_ref(),
                s.os_name.as_ref(),
                s.os_version.as_ref(),
            )
        })
        .collect();
    sqlx::query(
        "UPDATE hosts SET hostname = j.value->>1, os_name = j.value->>2, os_version = j.value->>3 \
         FROM json_each(?1) AS j WHERE hosts.id = j.value->>0",
    )
    .bind(json_rows(&names)?)
    .execute(&mut **tx)
    .await?;
    let facts: Vec<(&str, &InventoryFacts)> =
        newest.iter().map(|(h, s)| (*h, s.facts.as_ref())).collect();
    fleet::replace_facts(tx, &facts).await?;
    let software: Vec<_> = facts
        .iter()
        .map(|(h, f)| (*h, f.packages.as_slice()))
        .collect();
    fleet::replace_software(tx, &software).await?;
    let free: Vec<_> = facts.iter().map(|(h, f)| (*h, f.free.as_slice())).collect();
    fleet::replace_free(tx, &free).await
}

async fn insert_changes(tx: &mut Tx, log: &[(&str, i64, changes::Change)]) -> StoreResult<()> {
    if log.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = log
        .iter()
        .map(|(host, at, c)| {
            (
                *host,
                *at,
                c.section,
                c.item.as_str(),
                c.old.as_deref(),
                c.new.as_deref(),
            )
        })
        .collect();
    // json_each yields rows in array order, so ids follow the log's order.
    sqlx::query(
        "INSERT INTO host_changes (host_id, observed_at_ms, section, item, old_value, new_value) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?1)",
    )
    .bind(json_rows(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
