//! The fleet-query tables on SQLite: software catalog and host rows, facts,
//! free space, tags. Writes go in multi-row statements of a few hundred
//! rows, and a host's software is diffed against what is stored, so a new
//! inventory with three changed packages writes about three rows.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::store::versions::sort_key;
use crate::store::{HostQuery, InventoryFacts, PackageKey, StoreResult};

/// Rows per multi-row statement: 4 binds each stays far below SQLite's
/// variable limit.
const CHUNK: usize = 400;

/// Replaces a host's searchable facts.
pub async fn replace_facts(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    facts: &InventoryFacts,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM host_facts WHERE host_id = ?")
        .bind(host)
        .execute(&mut **tx)
        .await?;
    let unique: HashSet<&(&'static str, String)> =
        facts.facts.iter().filter(|(_, v)| !v.is_empty()).collect();
    let rows: Vec<_> = unique.into_iter().collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO host_facts (kind, value, host_id) ");
        q.push_values(chunk, |mut b, (kind, value)| {
            b.push_bind(*kind).push_bind(value.as_str()).push_bind(host);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Replaces a host's free-space figures.
pub async fn replace_free(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    free: &[(String, f32)],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM host_filesystems WHERE host_id = ?")
        .bind(host)
        .execute(&mut **tx)
        .await?;
    let mut seen = HashSet::new();
    let rows: Vec<&(String, f32)> = free
        .iter()
        .filter(|(m, _)| seen.insert(m.as_str()))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO host_filesystems (host_id, mount_point, free_percent) ",
        );
        q.push_values(chunk, |mut b, (mount, pct)| {
            b.push_bind(host)
                .push_bind(mount.as_str())
                .push_bind(f64::from(*pct));
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Makes a host's installed software exactly `packages`, interning new
/// catalog rows and writing only the difference.
pub async fn replace_software(
    tx: &mut Transaction<'static, Sqlite>,
    host: &str,
    packages: &[PackageKey],
) -> StoreResult<()> {
    let wanted: HashSet<&PackageKey> = packages.iter().collect();
    let wanted: Vec<&PackageKey> = wanted.into_iter().collect();
    // Intern the catalog rows and learn their ids.
    let mut ids: HashMap<&PackageKey, i64> = HashMap::with_capacity(wanted.len());
    for chunk in wanted.chunks(CHUNK) {
        let keys: Vec<Vec<u8>> = chunk
            .iter()
            .map(|p| sort_key(&p.ecosystem, &p.version))
            .collect();
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO software_catalog (ecosystem, name, version, version_key) ",
        );
        q.push_values(chunk.iter().zip(&keys), |mut b, (p, key)| {
            b.push_bind(p.ecosystem.as_str())
                .push_bind(p.name.as_str())
                .push_bind(p.version.as_str())
                .push_bind(key.as_slice());
        });
        q.build().execute(&mut **tx).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, ecosystem, name, version FROM software_catalog WHERE (ecosystem, name, version) IN (",
        );
        q.push_values(chunk.iter(), |mut b, p| {
            b.push_bind(p.ecosystem.as_str())
                .push_bind(p.name.as_str())
                .push_bind(p.version.as_str());
        });
        q.push(")");
        let rows = q.build().fetch_all(&mut **tx).await?;
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
        for p in chunk {
            if let Some(id) = by_key.get(&(p.ecosystem.clone(), p.name.clone(), p.version.clone()))
            {
                ids.insert(p, *id);
            }
        }
    }
    let wanted_ids: HashSet<i64> = ids.values().copied().collect();
    let stored: HashSet<i64> =
        sqlx::query_scalar("SELECT catalog_id FROM host_software WHERE host_id = ?")
            .bind(host)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let removed: Vec<i64> = stored.difference(&wanted_ids).copied().collect();
    let added: Vec<i64> = wanted_ids.difference(&stored).copied().collect();
    for chunk in removed.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM host_software WHERE host_id = ");
        q.push_bind(host).push(" AND catalog_id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    for chunk in added.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO host_software (host_id, catalog_id) ");
        q.push_values(chunk, |mut b, id| {
            b.push_bind(host).push_bind(*id);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends ` AND …` conditions for `query` to a `SELECT … FROM hosts WHERE …`.
/// Each condition is an `id IN (subquery)` over an indexed table, so SQLite
/// builds the matching set once instead of probing per host.
pub fn push_conditions(sql: &mut QueryBuilder<Sqlite>, query: &HostQuery) {
    if let Some((name, compare)) = &query.software {
        sql.push(" AND id IN (SELECT hs.host_id FROM software_catalog c JOIN host_software hs ON hs.catalog_id = c.id WHERE c.name = ")
            .push_bind(name.clone());
        if let Some((op, version)) = compare {
            // The key depends on the ecosystem's rules: compare each row
            // against the key made by its own ecosystem.
            sql.push(" AND ((c.ecosystem = 'dpkg' AND c.version_key ")
                .push(op.sql())
                .push(" ")
                .push_bind(sort_key("dpkg", version))
                .push(") OR (c.ecosystem <> 'dpkg' AND c.version_key ")
                .push(op.sql())
                .push(" ")
                .push_bind(sort_key("rpm", version))
                .push("))");
        }
        sql.push(")");
    }
    let fact = |sql: &mut QueryBuilder<Sqlite>, kind: &'static str, value: &str, contains: bool| {
        sql.push(" AND id IN (SELECT host_id FROM host_facts WHERE kind = ")
            .push_bind(kind);
        if contains {
            sql.push(" AND value LIKE ")
                .push_bind(format!("%{}%", value.replace(['%', '_'], "")));
        } else {
            sql.push(" AND value = ").push_bind(value.to_owned());
        }
        sql.push(")");
    };
    if let Some(os) = &query.os {
        fact(sql, "os", os, true);
    }
    if let Some(serial) = &query.serial {
        fact(sql, "serial", serial, false);
    }
    if let Some(model) = &query.model {
        fact(sql, "model", model, true);
    }
    if let Some(user) = &query.user {
        fact(sql, "user", user, false);
    }
    if let Some(ip) = &query.ip {
        fact(sql, "ip", ip, false);
    }
    if let Some(mac) = &query.mac {
        fact(sql, "mac", mac, false);
    }
    if let Some(pct) = query.disk_free_below {
        sql.push(" AND id IN (SELECT host_id FROM host_filesystems WHERE free_percent < ")
            .push_bind(f64::from(pct))
            .push(")");
    }
    for (key, value) in &query.tags {
        sql.push(" AND id IN (SELECT host_id FROM host_tags WHERE key = ")
            .push_bind(key.clone())
            .push(" AND value = ")
            .push_bind(value.clone())
            .push(")");
    }
    if let Some(now) = query.offline_at_ms {
        // The negation of HostRow::is_online (D18).
        sql.push(" AND session_replica IS NULL AND (goodbye_reason IS NOT NULL OR last_seen_at_ms IS NULL OR last_seen_at_ms < ")
            .push_bind(now)
            .push(" - 3 * 1000 * health_interval_secs)");
    }
}
