//! The host filter, the same SQL on both backends: the conditions a
//! [`HostQuery`] adds to a `SELECT … FROM hosts WHERE …`.

use sqlx::QueryBuilder;

use super::Dialect;
use crate::store::versions::sort_key;
use crate::store::{HostQuery, RetiredHosts};

/// Appends ` AND …` for each filter of `query`. `software_hosts` is the
/// backend's subquery that finds the hosts with a package, up to
/// `WHERE c.name = `.
pub(crate) fn push_conditions<B: Dialect>(
    sql: &mut QueryBuilder<B>,
    software_hosts: &str,
    query: &HostQuery,
) {
    if let Some((name, compare)) = &query.software {
        sql.push(format!(" AND id IN ({software_hosts}"));
        B::text(sql, name);
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
        sql.push(")");
    }
    let contains = [("os", &query.os), ("model", &query.model)];
    for (kind, value) in contains {
        if let Some(value) = value {
            fact(sql, kind);
            sql.push(" AND value LIKE ");
            B::text(sql, &format!("%{}%", value.replace(['%', '_'], "")));
            sql.push(B::LIKE_LITERAL);
            sql.push(")");
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
