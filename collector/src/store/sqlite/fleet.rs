//! The fleet-query tables on SQLite: software catalog and host rows, facts,
//! free space, tags. Writes take a whole ingest batch of hosts and go in a
//! few set-based statements (rows as one `json_each` bind, see `batch`),
//! and each host's software is diffed against what is stored, so a new
//! inventory with three changed packages writes about three rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Row, Sqlite, Transaction};

use crate::store::rows::json_rows;
use crate::store::versions::sort_key;
use crate::store::{InventoryFacts, PackageKey, StoreError, StoreResult};

type Tx = Transaction<'static, Sqlite>;

/// Replaces each host's searchable facts.
pub async fn replace_facts(tx: &mut Tx, hosts: &[(&str, &InventoryFacts)]) -> StoreResult<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
    sqlx::query("DELETE FROM host_facts WHERE host_id IN (SELECT value FROM json_each(?1))")
        .bind(json_rows(&ids)?)
        .execute(&mut **tx)
        .await?;
    let mut rows: HashSet<(&str, &str, &str)> = HashSet::new();
    for (host, facts) in hosts {
        for (kind, value) in &facts.facts {
            if !value.is_empty() {
                rows.insert((kind, value.as_str(), host));
            }
        }
    }
    let rows: Vec<_> = rows.into_iter().collect();
    sqlx::query(
        "INSERT OR IGNORE INTO host_facts (kind, value, host_id) \
         SELECT value->>0, value->>1, value->>2 FROM json_each(?1)",
    )
    .bind(json_rows(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces each host's free-space figures (the first figure of a mount
/// point counts).
pub async fn replace_free(tx: &mut Tx, hosts: &[(&str, &[(String, f32)])]) -> StoreResult<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
    sqlx::query("DELETE FROM host_filesystems WHERE host_id IN (SELECT value FROM json_each(?1))")
        .bind(json_rows(&ids)?)
        .execute(&mut **tx)
        .await?;
    let mut rows = Vec::new();
    for (host, free) in hosts {
        let mut seen = HashSet::new();
        for (mount, pct) in free.iter() {
            if seen.insert(mount.as_str()) {
                rows.push((*host, mount.as_str(), f64::from(*pct)));
            }
        }
    }
    sqlx::query(
        "INSERT INTO host_filesystems (host_id, mount_point, free_percent) \
         SELECT value->>0, value->>1, value->>2 FROM json_each(?1)",
    )
    .bind(json_rows(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes each host's installed software exactly its `packages`, interning
/// new catalog rows and writing only the difference. The catalog lookup
/// covers the distinct packages of the whole batch at once: across a fleet
/// most hosts share most packages.
pub async fn replace_software(tx: &mut Tx, hosts: &[(&str, &[PackageKey])]) -> StoreResult<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let mut distinct: HashMap<&PackageKey, usize> = HashMap::new();
    let mut keys: Vec<&PackageKey> = Vec::new();
    for (_, packages) in hosts {
        for p in packages.iter() {
            distinct.entry(p).or_insert_with(|| {
                keys.push(p);
                keys.len() - 1
            });
        }
    }
    let mut ids: Vec<Option<i64>> = vec![None; keys.len()];
    let lookup: Vec<(&str, &str, &str)> = keys
        .iter()
        .map(|p| (p.ecosystem.as_str(), p.name.as_str(), p.version.as_str()))
        .collect();
    // `j.key` is the index into the bound array, so no text comes back.
    let rows = sqlx::query(
        "SELECT j.key, c.id FROM json_each(?1) AS j JOIN software_catalog c \
         ON c.ecosystem = j.value->>0 AND c.name = j.value->>1 AND c.version = j.value->>2",
    )
    .bind(json_rows(&lookup)?)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let index: i64 = row.try_get(0)?;
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| ids.get_mut(i)) {
            *slot = Some(row.try_get(1)?);
        }
    }
    let missing: Vec<(&str, &str, &str, String)> = keys
        .iter()
        .zip(&ids)
        .filter(|(_, id)| id.is_none())
        .map(|(p, _)| {
            (
                p.ecosystem.as_str(),
                p.name.as_str(),
                p.version.as_str(),
                hex::encode(sort_key(&p.ecosystem, &p.version)),
            )
        })
        .collect();
    if !missing.is_empty() {
        // RETURNING comes back in no set order: match rows by their text.
        let rows = sqlx::query(
            "INSERT INTO software_catalog (ecosystem, name, version, version_key) \
             SELECT value->>0, value->>1, value->>2, unhex(value->>3) FROM json_each(?1) \
             RETURNING id, ecosystem, name, version",
        )
        .bind(json_rows(&missing)?)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = PackageKey {
                ecosystem: row.try_get(1)?,
                name: row.try_get(2)?,
                version: row.try_get(3)?,
            };
            if let Some(&i) = distinct.get(&key) {
                ids[i] = Some(row.try_get(0)?);
            }
        }
    }

    let keys = host_keys(tx, hosts.iter().map(|(h, _)| *h)).await?;
    let mut stored: HashMap<i64, HashSet<i64>> = HashMap::new();
    for row in sqlx::query(
        "SELECT host_key, catalog_id FROM host_software \
         WHERE host_key IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_rows(&keys.values().collect::<Vec<_>>())?)
    .fetch_all(&mut **tx)
    .await?
    {
        stored
            .entry(row.try_get(0)?)
            .or_default()
            .insert(row.try_get(1)?);
    }
    let empty = HashSet::new();
    // Keyed by host key: serialised as a JSON object, whose `key` column
    // costs nothing to read. With `[key, [ids…]]` rows every selected row's
    // `h.value->>0` re-rendered the whole host's array as text, quadratic
    // in the host's package count.
    let mut added: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut removed: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (host, packages) in hosts {
        let Some(&key) = keys.get(*host) else {
            return Err(StoreError::Corrupt(format!("no host key for {host}")));
        };
        let wanted: HashSet<i64> = packages
            .iter()
            .filter_map(|p| distinct.get(p).and_then(|&i| ids[i]))
            .collect();
        let have = stored.get(&key).unwrap_or(&empty);
        // Sorted, so each host's rows go into the primary key in order.
        let mut new: Vec<i64> = wanted.difference(have).copied().collect();
        new.sort_unstable();
        let gone: Vec<i64> = have.difference(&wanted).copied().collect();
        if !new.is_empty() {
            added.insert(key, new);
        }
        if !gone.is_empty() {
            removed.insert(key, gone);
        }
    }
    if !removed.is_empty() {
        sqlx::query(
            "DELETE FROM host_software WHERE (host_key, catalog_id) IN \
             (SELECT CAST(h.key AS INTEGER), c.value FROM json_each(?1) AS h, json_each(h.value) AS c)",
        )
        .bind(json_rows(&removed)?)
        .execute(&mut **tx)
        .await?;
    }
    if !added.is_empty() {
        sqlx::query(
            "INSERT INTO host_software (host_key, catalog_id) \
             SELECT CAST(h.key AS INTEGER), c.value FROM json_each(?1) AS h, json_each(h.value) AS c",
        )
        .bind(json_rows(&added)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The integer key of each host in `hosts` (migration 0010), handing out
/// the next keys to hosts that have none yet.
async fn host_keys<'h>(
    tx: &mut Tx,
    hosts: impl Iterator<Item = &'h str>,
) -> StoreResult<HashMap<String, i64>> {
    let ids = json_rows(&hosts.collect::<Vec<_>>())?;
    sqlx::query("INSERT OR IGNORE INTO host_keys (host_id) SELECT value FROM json_each(?1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    let rows = sqlx::query(
        "SELECT host_id, key FROM host_keys WHERE host_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
