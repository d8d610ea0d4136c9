//! Inventories on PostgreSQL: storing a full snapshot or applying a delta to
//! the stored one, the fleet-query rows that follow from it, and the
//! per-host change log. The port of `sqlite/inventory.rs`, with the same
//! functions; callers hold the host's evaluation lock (`lock_host`).

use deskpulse_proto::delta;
use deskpulse_proto::v1::{Inventory, InventoryDelta};
use prost::Message;
use sqlx::{Postgres, Row, Transaction};

use super::fleet;
use crate::changes;
use crate::rules::policy::Policy;
use crate::store::{
    IncomingReport, InventoryFacts, ReportOutcome, StoreResult, decode_stored_inventory,
};

type Tx = Transaction<'static, Postgres>;

/// A full inventory with the columns the hosts table keeps of it.
pub struct StoredInventory<'a> {
    /// The encoded `Inventory`.
    pub encoded: &'a [u8],
    /// Its host name.
    pub hostname: &'a str,
    /// Its OS name.
    pub os_name: &'a str,
    /// Its OS version.
    pub os_version: &'a str,
    /// What fleet queries search.
    pub facts: &'a InventoryFacts,
}

/// The stored inventory of a host and when it was collected; one that
/// cannot be decoded is an error naming the host.
async fn current(tx: &mut Tx, host: &str) -> StoreResult<(Option<Inventory>, Option<i64>)> {
    let row = sqlx::query("SELECT inventory, inventory_at_ms FROM hosts WHERE id = $1")
        .bind(host)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok((None, None));
    };
    let blob: Option<Vec<u8>> = row.try_get("inventory")?;
    let at: Option<i64> = row.try_get("inventory_at_ms")?;
    let stored = blob
        .map(|b| decode_stored_inventory(host, &b))
        .transpose()?;
    Ok((stored, at))
}

/// Stores a full inventory, unless a newer one is stored already, and logs
/// what changed against the previous one.
pub async fn store(
    tx: &mut Tx,
    policy: &Policy,
    report: &IncomingReport,
    stored: &StoredInventory<'_>,
    new: &Inventory,
    now_ms: i64,
) -> StoreResult<()> {
    let (old, old_at) = current(tx, &report.host_id).await?;
    // A resent older report must not overwrite newer state.
    if old_at.is_some_and(|at| at > report.collected_at_ms) {
        return Ok(());
    }
    sqlx::query(
        "UPDATE hosts SET inventory = $1, inventory_at_ms = $2, hostname = $3, \
         os_name = $4, os_version = $5 WHERE id = $6",
    )
    .bind(stored.encoded)
    .bind(report.collected_at_ms)
    .bind(stored.hostname)
    .bind(stored.os_name)
    .bind(stored.os_version)
    .bind(&report.host_id)
    .execute(&mut **tx)
    .await?;
    fleet::replace_facts(tx, &report.host_id, stored.facts).await?;
    fleet::replace_software(tx, &report.host_id, &stored.facts.packages).await?;
    fleet::replace_free(tx, &report.host_id, &stored.facts.free).await?;
    let changes = changes::diff(old.as_ref(), new);
    insert_changes(tx, &report.host_id, report.collected_at_ms, &changes).await?;
    if let Some(old) = &old {
        let events = crate::rules::events::detect(old, new);
        crate::store::sql::tickets::evaluate_changes::<Postgres>(
            tx,
            policy,
            &report.host_id,
            &events,
            report.collected_at_ms,
            now_ms,
        )
        .await?;
    }
    Ok(())
}

/// Applies an inventory delta to the stored inventory. A delta that does
/// not fit asks the agent for a full inventory instead.
pub async fn apply_delta(
    tx: &mut Tx,
    policy: &Policy,
    report: &IncomingReport,
    delta: &InventoryDelta,
    now_ms: i64,
) -> StoreResult<ReportOutcome> {
    let (old, old_at) = current(tx, &report.host_id).await?;
    if old_at.is_some_and(|at| at > report.collected_at_ms) {
        // Older than what is stored: a late resend, already superseded.
        return Ok(ReportOutcome::Stored);
    }
    let Some(old) = old else {
        return Ok(ReportOutcome::Resync(
            "the collector has no inventory of this host to apply a delta to".into(),
        ));
    };
    let new = match delta::apply(&old, delta) {
        Ok(new) => new,
        Err(error) => return Ok(ReportOutcome::Resync(error.to_string())),
    };
    if let Some(reason) = crate::store::delta_over_limits(&new, &policy.inventory_limits) {
        return Ok(ReportOutcome::Resync(reason));
    }
    let os = new.os.clone().unwrap_or_default();
    let encoded = new.encode_to_vec();
    let facts = crate::facts::inventory_facts(&new);
    let stored = StoredInventory {
        encoded: &encoded,
        hostname: &os.hostname,
        os_name: &os.name,
        os_version: &os.version,
        facts: &facts,
    };
    store(tx, policy, report, &stored, &new, now_ms).await?;
    Ok(ReportOutcome::Stored)
}

/// Appends change-log rows in one statement. WITH ORDINALITY keeps the
/// diff's order in the ids, which break ties between rows of one instant.
async fn insert_changes(
    tx: &mut Tx,
    host: &str,
    at_ms: i64,
    changes: &[changes::Change],
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let sections: Vec<&str> = changes.iter().map(|c| c.section).collect();
    let items: Vec<&str> = changes.iter().map(|c| c.item.as_str()).collect();
    let olds: Vec<Option<&str>> = changes.iter().map(|c| c.old.as_deref()).collect();
    let news: Vec<Option<&str>> = changes.iter().map(|c| c.new.as_deref()).collect();
    sqlx::query(
        "INSERT INTO host_changes (host_id, observed_at_ms, section, item, old_value, new_value) \
         SELECT $1, $2, section, item, old_value, new_value \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[]) \
         WITH ORDINALITY AS c (section, item, old_value, new_value, n) ORDER BY n",
    )
    .bind(host)
    .bind(at_ms)
    .bind(sections)
    .bind(items)
    .bind(olds)
    .bind(news)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
