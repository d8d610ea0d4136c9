//! The fleet-query tables on PostgreSQL: software catalog and host rows,
//! facts, free space, tags. The port of `sqlite/fleet.rs`, with the same
//! functions. Batches go in as arrays through `UNNEST`: one bind parameter
//! per column whatever the row count, so no statement nears PostgreSQL's
//! 65,535-parameter limit and the plan is the same for every batch size. A
//! host's software is diffed against what is stored, so a new inventory
//! with three changed packages writes about three rows.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Row, Transaction};

use crate::store::versions::sort_key;
use crate::store::{InventoryFacts, PackageKey, StoreResult};

type Tx = Transaction<'static, Postgres>;

/// Replaces a host's searchable facts.
pub async fn replace_facts(tx: &mut Tx, host: &str, facts: &InventoryFacts) -> StoreResult<()> {
    sqlx::query("DELETE FROM host_facts WHERE host_id = $1")
        .bind(host)
        .execute(&mut **tx)
        .await?;
    let unique: HashSet<&(&'static str, String)> =
        facts.facts.iter().filter(|(_, v)| !v.is_empty()).collect();
    if unique.is_empty() {
        return Ok(());
    }
    let (kinds, values): (Vec<&str>, Vec<&str>) =
        unique.into_iter().map(|(k, v)| (*k, v.as_str())).unzip();
    sqlx::query(
        "INSERT INTO host_facts (kind, value, host_id) \
         SELECT kind, value, $3 FROM UNNEST($1::text[], $2::text[]) AS f (kind, value) \
         ON CONFLICT DO NOTHING",
    )
    .bind(kinds)
    .bind(values)
    .bind(host)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces a host's free-space figures.
pub async fn replace_free(tx: &mut Tx, host: &str, free: &[(String, f32)]) -> StoreResult<()> {
    sqlx::query("DELETE FROM host_filesystems WHERE host_id = $1")
        .bind(host)
        .execute(&mut **tx)
        .await?;
    let mut seen = HashSet::new();
    let (mounts, percents): (Vec<&str>, Vec<f32>) = free
        .iter()
        .filter(|(m, _)| seen.insert(m.as_str()))
        .map(|(m, p)| (m.as_str(), *p))
        .unzip();
    if mounts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO host_filesystems (host_id, mount_point, free_percent) \
         SELECT $1, mount_point, free_percent \
         FROM UNNEST($2::text[], $3::real[]) AS f (mount_point, free_percent)",
    )
    .bind(host)
    .bind(mounts)
    .bind(percents)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes a host's installed software exactly `packages`, interning new
/// catalog rows and writing only the difference.
pub async fn replace_software(tx: &mut Tx, host: &str, packages: &[PackageKey]) -> StoreResult<()> {
    // Sorted, so two hosts interning the same new packages at once take the
    // unique-index locks in the same order and cannot deadlock.
    let wanted: HashSet<&PackageKey> = packages.iter().collect();
    let mut wanted: Vec<&PackageKey> = wanted.into_iter().collect();
    wanted.sort_unstable();
    let ecosystems: Vec<&str> = wanted.iter().map(|p| p.ecosystem.as_str()).collect();
    let names: Vec<&str> = wanted.iter().map(|p| p.name.as_str()).collect();
    let versions: Vec<&str> = wanted.iter().map(|p| p.version.as_str()).collect();
    let keys: Vec<Vec<u8>> = wanted
        .iter()
        .map(|p| sort_key(&p.ecosystem, &p.version))
        .collect();

    let mut wanted_ids: HashSet<i64> = HashSet::with_capacity(wanted.len());
    if !wanted.is_empty() {
        // ON CONFLICT DO NOTHING waits for a concurrent inserter of the same
        // row to commit; the SELECT, a new statement, then sees its row.
        sqlx::query(
            "INSERT INTO software_catalog (ecosystem, name, version, version_key) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[]) \
             ON CONFLICT (ecosystem, name, version) DO NOTHING",
        )
        .bind(&ecosystems)
        .bind(&names)
        .bind(&versions)
        .bind(&keys)
        .execute(&mut **tx)
        .await?;
        let rows = sqlx::query(
            "SELECT c.id, c.ecosystem, c.name, c.version FROM software_catalog c \
             JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS w (ecosystem, name, version) \
             ON c.ecosystem = w.ecosystem AND c.name = w.name AND c.version = w.version",
        )
        .bind(&ecosystems)
        .bind(&names)
        .bind(&versions)
        .fetch_all(&mut **tx)
        .await?;
        let by_key: HashMap<(String, String, String), i64> = rows
            .iter()
            .map(|r| {
                Ok((
                    (
                        r.try_get("ecosystem")?,
                        r.try_get("name")?,
                        r.try_get("version")?,
                    ),
                    r.try_get("id")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        for p in &wanted {
            if let Some(id) = by_key.get(&(p.ecosystem.clone(), p.name.clone(), p.version.clone()))
            {
                wanted_ids.insert(*id);
            }
        }
    }
    let stored: HashSet<i64> =
        sqlx::query_scalar("SELECT catalog_id FROM host_software WHERE host_id = $1")
            .bind(host)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let removed: Vec<i64> = stored.difference(&wanted_ids).copied().collect();
    let added: Vec<i64> = wanted_ids.difference(&stored).copied().collect();
    if !removed.is_empty() {
        sqlx::query("DELETE FROM host_software WHERE host_id = $1 AND catalog_id = ANY($2)")
            .bind(host)
            .bind(removed)
            .execute(&mut **tx)
            .await?;
    }
    if !added.is_empty() {
        sqlx::query(
            "INSERT INTO host_software (host_id, catalog_id) SELECT $1, UNNEST($2::bigint[])",
        )
        .bind(host)
        .bind(added)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
