//! The host filter, the same SQL on both backends: the conditions a
//! [`HostQuery`] adds to a `SELECT … FROM hosts WHERE …`.

use sqlx::QueryBuilder;

use super::Dialect;
use crate::model::VersionOp;
use crate::store::versions::sort_key;
use crate::store::{HostQuery, RetiredHosts, StoreResult};

/// Where the backend keeps installed software, for the host filter and
/// [`matching_software`]: a FROM fragment joining the software catalog `c`
/// to the hosts that have each entry, and the column naming the host.
pub(crate) struct SoftwareTables {
    /// The FROM fragment, with the catalog as `c`.
    pub from: &'static str,
    /// The column holding the host id.
    pub host: &'static str,
}

/// `text` as a LIKE pattern matching itself: `%`, `_` and `\` escaped
/// with `\`.
fn like_literal(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// The LIKE pattern of a package name as `--software` takes it: `*` stands
/// for any run of characters, and everything else, `%` and `_` among them,
/// is itself (escaped with `\`).
pub(crate) fn name_pattern(name: &str) -> String {
    name.split('*')
        .map(like_literal)
        .collect::<Vec<_>>()
        .join("%")
}

/// Appends the test that the catalog entry `c` is the package `name` (`*`
/// a glob) at the version `compare` asks for. Case is ignored as SQLite's
/// `lower()` ignores it, ASCII letters only, on both backends: the name as
/// typed, or its ASCII lowercase against `lower(c.name)`, which migration
/// 0018 indexes.
fn push_software_match<B: Dialect>(
    sql: &mut QueryBuilder<B>,
    name: &str,
    compare: Option<&(VersionOp, String)>,
) {
    let lower = name.to_ascii_lowercase();
    if name.contains('*') {
        sql.push("(c.name LIKE ");
        B::text(sql, &name_pattern(name));
        sql.push(" ESCAPE '\\' OR lower(c.name) LIKE ");
        B::text(sql, &name_pattern(&lower));
        sql.push(" ESCAPE '\\')");
    } else {
        sql.push("(c.name = ");
        B::text(sql, name);
        sql.push(" OR lower(c.name) = ");
        B::text(sql, &lower);
        sql.push(")");
    }
    if let Some((op, version)) = compare {
        // The key depends on the ecosystem's rules: compare each row
        // against the key made by its own ecosystem.
        sql.push(format!(
            " AND ((c.ecosystem = 'dpkg' AND c.version_key {} ",
            op.sql()
        ));
        B::bytes(sql, &sort_key("dpkg", version));
        sql.push(format!(
            ") OR (c.ecosystem <> 'dpkg' AND c.version_key {} ",
            op.sql()
        ));
        B::bytes(sql, &sort_key("rpm", version));
        sql.push("))");
    }
}

/// Appends ` AND …` for each filter of `query`.
pub(crate) fn push_conditions<B: Dialect>(
    sql: &mut QueryBuilder<B>,
    software: &SoftwareTables,
    query: &HostQuery,
) {
    if let Some((name, compare)) = &query.software {
        sql.push(format!(
            " AND id IN (SELECT {} FROM {} WHERE ",
            software.host, software.from
        ));
        push_software_match(sql, name, compare.as_ref());
        sql.push(")");
    }
    let contains = [("os", &query.os), ("model", &query.model)];
    for (kind, value) in contains {
        if let Some(value) = value {
            fact(sql, kind);
            sql.push(" AND value LIKE ");
            B::text(sql, &format!("%{}%", like_literal(value)));
            sql.push(" ESCAPE '\\')");
        }
    }
    let equal = [
        ("serial", &query.serial),
        ("user", &query.user),
        ("ip", &query.ip),
        ("mac", &query.mac),
    ];
    for (kind, value) in equal {
        if let Some(value) = value {
            fact(sql, kind);
            sql.push(" AND value = ");
            B::text(sql, value);
            sql.push(")");
        }
    }
    if let Some(pct) = query.disk_free_below {
        sql.push(" AND id IN (SELECT host_id FROM host_filesystems WHERE free_percent < ");
        B::real(sql, f64::from(pct));
        sql.push(")");
    }
    for (key, value) in &query.tags {
        sql.push(" AND id IN (SELECT host_id FROM host_tags WHERE key = ");
        B::text(sql, key);
        sql.push(" AND value = ");
        B::text(sql, value);
        sql.push(")");
    }
    sql.push(match query.retired {
        RetiredHosts::Excluded => " AND retired_at_ms IS NULL",
        RetiredHosts::Only => " AND retired_at_ms IS NOT NULL",
        RetiredHosts::Included => "",
    });
    if let Some(now) = query.offline_at_ms {
        // The negation of HostRow::is_online (D18).
        sql.push(
            " AND session_replica IS NULL AND (goodbye_reason IS NOT NULL \
             OR last_seen_at_ms IS NULL OR last_seen_at_ms < ",
        );
        B::int(sql, now);
        sql.push(" - 3 * 1000 * health_interval_secs)");
    }
}

/// Opens ` AND id IN (SELECT host_id FROM host_facts WHERE kind = 'kind'`,
/// which the caller closes.
fn fact<B: Dialect>(sql: &mut QueryBuilder<B>, kind: &'static str) {
    sql.push(" AND id IN (SELECT host_id FROM host_facts WHERE kind = ");
    B::text(sql, kind);
}

/// The installed packages of `hosts` that `name` and `compare` match (as
/// the `--software` filter does), by host, name and version.
pub(crate) fn matching_software<B: super::tickets::BackendSql>(
    software: &SoftwareTables,
    hosts: &[&str],
    name: &str,
    compare: Option<&(VersionOp, String)>,
) -> StoreResult<QueryBuilder<B>> {
    let mut sql = QueryBuilder::new(format!(
        "SELECT {} AS host_id, c.ecosystem, c.name, c.version FROM {} WHERE ",
        software.host, software.from
    ));
    push_software_match(&mut sql, name, compare);
    sql.push(format!(" AND {}", software.host));
    B::push_in(&mut sql, hosts)?;
    sql.push(format!(
        " ORDER BY {0}{1}, c.name{1}, c.ecosystem{1}, c.version_key",
        software.host,
        B::BYTE_ORDER
    ));
    Ok(sql)
}
