//! Host filters as technicians type them (`--software 'openssl<3.0.13'`,
//! `--mac A0-B1-…`, `--tag site=berlin`), checked and turned into the store's
//! [`HostQuery`]. The CLI checks them before any network I/O; the server
//! checks them again, since any client can call the API.

use std::net::IpAddr;

use deskpulse_proto::v1::HostFilter;

use crate::model::{HostQuery, RetiredHosts, VersionOp};

/// `NAME`, or `NAME` followed by `<`, `<=`, `=`, `>=` or `>` and a version.
pub fn parse_software(text: &str) -> Result<(String, Option<(VersionOp, String)>), String> {
    let text = text.trim();
    let at = text.find(['<', '>', '=']);
    let (name, rest) = match at {
        Some(at) => (&text[..at], &text[at..]),
        None => (text, ""),
    };
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "--software {text:?}: expected NAME or NAME<VERSION (also <=, =, >=, >)"
        ));
    }
    if rest.is_empty() {
        return Ok((name.to_owned(), None));
    }
    let (op, version) = [
        ("<=", VersionOp::LessEqual),
        (">=", VersionOp::GreaterEqual),
        ("<", VersionOp::Less),
        (">", VersionOp::Greater),
        ("=", VersionOp::Equal),
    ]
    .iter()
    .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (*op, v.trim())))
    .ok_or_else(|| format!("--software {text:?}: unknown comparison"))?;
    if version.is_empty()
        || version.contains(['<', '>', '='])
        || version.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "--software {text:?}: the version after the comparison is missing or malformed"
        ));
    }
    Ok((name.to_owned(), Some((op, version.to_owned()))))
}

/// The wire form of a version comparison.
pub fn op_symbol(op: VersionOp) -> &'static str {
    op.sql()
}

/// A MAC address in any common notation, as lowercase colon-separated hex.
pub fn parse_mac(text: &str) -> Result<String, String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "--mac {text:?} is not a MAC address, e.g. a0:b1:c2:d3:e4:f5"
        ));
    }
    let lower = hex.to_ascii_lowercase();
    Ok(lower
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(":"))
}

/// An IPv4 or IPv6 address, normalised.
pub fn parse_ip(text: &str) -> Result<String, String> {
    text.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!("--ip {text:?} is not an IP address"))
}

/// A tag `key=value`; an empty value is allowed only where `allow_empty`.
pub fn parse_tag(text: &str, allow_empty: bool) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("tag {text:?}: expected key=value"))?;
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim().to_owned();
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !key_ok {
        return Err(format!(
            "tag {text:?}: the key must be 1-64 characters of a-z, 0-9, _ . -"
        ));
    }
    if value.len() > 256
        || value.chars().any(char::is_control)
        || (!allow_empty && value.is_empty())
    {
        return Err(format!(
            "tag {text:?}: the value must be 1-256 printable characters"
        ));
    }
    // A tag that drives ticket priority takes only the levels the rules
    // know (issue 21): `criticality=urgent` would count as medium unseen.
    if key == crate::rules::priority::Impact::TAG && !value.is_empty() {
        let level = crate::rules::priority::Impact::check_level(&value)
            .map_err(|e| format!("tag {text:?}: {e}"))?;
        return Ok((key, level));
    }
    Ok((key, value))
}

/// Checks a wire filter and turns it into a store query.
pub fn from_filter(filter: &HostFilter, now_ms: i64) -> Result<HostQuery, String> {
    let text = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_lowercase())
    };
    let software = if filter.software_name.trim().is_empty() {
        None
    } else {
        let spec = format!(
            "{}{}{}",
            filter.software_name.trim(),
            filter.software_op.trim(),
            filter.software_version.trim()
        );
        Some(parse_software(&spec)?)
    };
    let disk_free_below = if filter.disk_free_below == 0.0 {
        None
    } else if (0.0..=100.0).contains(&filter.disk_free_below) {
        Some(filter.disk_free_below)
    } else {
        return Err(format!(
            "--disk-free-below {} must be between 0 and 100",
            filter.disk_free_below
        ));
    };
    Ok(HostQuery {
        software,
        os: text(&filter.os),
        serial: text(&filter.serial),
        model: text(&filter.model),
        disk_free_below,
        offline_at_ms: filter.offline.then_some(now_ms),
        user: text(&filter.user),
        ip: match filter.ip.trim() {
            "" => None,
            ip => Some(parse_ip(ip)?),
        },
        mac: match filter.mac.trim() {
            "" => None,
            mac => Some(parse_mac(mac)?),
        },
        tags: filter
            .tags
            .iter()
            .map(|t| parse_tag(t, false))
            .collect::<Result<_, _>>()?,
        retired: match deskpulse_proto::v1::RetiredHosts::try_from(filter.retired) {
            Ok(deskpulse_proto::v1::RetiredHosts::Excluded) => RetiredHosts::Excluded,
            Ok(deskpulse_proto::v1::RetiredHosts::Only) => RetiredHosts::Only,
            Ok(deskpulse_proto::v1::RetiredHosts::Included) => RetiredHosts::Included,
            Err(_) => return Err(format!("unknown retired-hosts choice {}", filter.retired)),
        },
    })
}

/// Why an agent may not report `hostname`, if it may not: a name that
/// parses as a UUID (any of its spellings) could be taken for another
/// host's id wherever a technician names a host by id.
pub fn refused_hostname(hostname: &str) -> Option<&'static str> {
    uuid::Uuid::try_parse(hostname.trim())
        .is_ok()
        .then_some("the host name looks like a host id (a UUID); host ids name hosts, so such a name is refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_specs() {
        assert_eq!(
            parse_software("firefox").expect("name"),
            ("firefox".into(), None)
        );
        assert_eq!(
            parse_software("openssl<3.0.13").expect("lt"),
            ("openssl".into(), Some((VersionOp::Less, "3.0.13".into())))
        );
        assert_eq!(
            parse_software("libc6 >= 2.36").expect("ge").1,
            Some((VersionOp::GreaterEqual, "2.36".into()))
        );
        for bad in ["", "<1.0", "openssl<", "openssl<<1", "open ssl", "x=>1"] {
            assert!(parse_software(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs_ips_and_tags() {
        assert_eq!(
            parse_mac("A0-B1-C2-D3-E4-F5").expect("mac"),
            "a0:b1:c2:d3:e4:f5"
        );
        assert_eq!(
            parse_mac("a0b1.c2d3.e4f5").expect("cisco"),
            "a0:b1:c2:d3:e4:f5"
        );
        assert!(parse_mac("a0:b1:c2").is_err());
        assert_eq!(parse_ip(" 10.1.2.3 ").expect("v4"), "10.1.2.3");
        assert_eq!(parse_ip("FD00::0002").expect("v6"), "fd00::2");
        assert!(parse_ip("10.1.2").is_err());
        assert_eq!(
            parse_tag("Site=Berlin", false).expect("tag"),
            ("site".into(), "Berlin".into())
        );
        assert!(parse_tag("site=", false).is_err());
        assert_eq!(parse_tag("site=", true).expect("removal").1, "");
        assert!(parse_tag("no equals", false).is_err());
        let urgent = parse_tag("criticality=urgent", true).expect_err("unknown level");
        assert_eq!(
            urgent,
            "tag \"criticality=urgent\": criticality \"urgent\" is not a known level; \
             ticket priority knows high, medium and low"
        );
        assert_eq!(
            parse_tag("Criticality=High", false).expect("a known level"),
            ("criticality".to_owned(), "high".to_owned())
        );
        assert_eq!(parse_tag("criticality=", true).expect("removal").1, "");
        assert!(parse_tag("bad key=x", false).is_err());
    }

    #[test]
    fn host_names_that_read_as_host_ids_are_refused() {
        for name in [
            "3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60",
            "3F2A9C1E-0B7D-4C1A-9E2F-1D2C3B4A5F60",
            "3f2a9c1e0b7d4c1a9e2f1d2c3b4a5f60",
            "{3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60}",
            "urn:uuid:3f2a9c1e-0b7d-4c1a-9e2f-1d2c3b4a5f60",
        ] {
            assert!(refused_hostname(name).is_some(), "{name}");
        }
        for name in ["web-01", "3f2a9c1e", "", "laptop.example.com"] {
            assert!(refused_hostname(name).is_none(), "{name}");
        }
    }

    #[test]
    fn filters_become_queries_and_bad_ones_are_refused() {
        let filter = HostFilter {
            software_name: "openssl".into(),
            software_op: "<".into(),
            software_version: "3.0.13".into(),
            disk_free_below: 10.0,
            offline: true,
            user: "Alice".into(),
            ..Default::default()
        };
        let q = from_filter(&filter, 42).expect("valid");
        assert_eq!(q.user.as_deref(), Some("alice"));
        assert_eq!(q.offline_at_ms, Some(42));
        assert!(
            from_filter(
                &HostFilter {
                    disk_free_below: 150.0,
                    ..Default::default()
                },
                0
            )
            .is_err()
        );
        assert!(
            from_filter(
                &HostFilter {
                    ip: "nope".into(),
                    ..Default::default()
                },
                0
            )
            .is_err()
        );
    }
}
