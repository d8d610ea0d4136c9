//! The diagnostic catalog (D25), defined once for the agent and the
//! collector: each diagnostic's id, description, risk, timeout, output cap
//! and parameters, the parsing of `--param key=value` into the typed
//! parameter message, and the checks every parameter must pass.
//!
//! The checks are allowlists, not blocklists: a host is a DNS name or an IP
//! address, a service name is `[A-Za-z0-9@._-]` and cannot start with `-`, a
//! path is absolute, has no `..` and is no secret store ([`SECRET_STORES`]).
//! So shell metacharacters, option injection, traversal, NUL bytes and huge
//! strings fail the check before anything runs — and nothing runs through a
//! shell anyway. The agent runs [`check`] on every request it receives,
//! whatever the collector checked. Which roots `disk_usage` may list is the
//! agent's own setting (`disk_usage_roots`), checked by the agent on the
//! resolved path: the collector cannot know a PC's links or its config.

use std::net::IpAddr;
use std::time::Duration;

use crate::v1::diagnostic_params::Kind;
use crate::v1::{
    BatteryReportParams, ClearTempParams, ClockStatusParams, DiagnosticParams, DiagnosticRisk,
    DiskUsageParams, DnsLookupParams, FlushDnsParams, HttpCheckParams, ListeningPortsParams,
    LogErrorsParams, NetworkConfigParams, PendingUpdatesParams, PingParams, RenewDhcpParams,
    RestartServiceParams, ServiceStatusParams, SmartReportParams, TcpConnectParams,
    TopProcessesParams, TracerouteParams,
};

/// The catalog version this build carries; the agent reports it on connect.
pub const CATALOG_VERSION: u32 = 1;

/// Places `disk_usage` never lists, even under an allowed root: key and
/// password stores on Linux, macOS and Windows (and the agent's own state
/// dir). Each is a path prefix matched component by component and without
/// regard to case (macOS and Windows file systems ignore it); `*` stands
/// for any one component. A request for one is refused, and a walk that
/// meets one skips it without naming what is inside.
pub const SECRET_STORES: &[&str] = &[
    "/root",
    "/etc/ssl/private",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/ssh",
    "/var/root",
    "/var/db",
    "/var/backups",
    "/var/lib/private",
    "/var/lib/sss",
    "/var/lib/deskpulse-agent",
    "/home/*/.ssh",
    "/home/*/.gnupg",
    "/home/*/.password-store",
    "/home/*/.local/share/keyrings",
    "/Users/*/.ssh",
    "/Users/*/.gnupg",
    "/Users/*/Library/Keychains",
    "/Library/Keychains",
    "C:\\Users\\*\\.ssh",
    "C:\\Users\\*\\AppData\\Roaming\\Microsoft\\Protect",
    "C:\\Users\\*\\AppData\\Roaming\\Microsoft\\Credentials",
    "C:\\Users\\*\\AppData\\Local\\Microsoft\\Credentials",
    "C:\\Users\\*\\AppData\\Roaming\\Microsoft\\Crypto",
    "C:\\ProgramData\\Microsoft\\Crypto",
    "C:\\ProgramData\\ssh",
    "C:\\ProgramData\\Deskpulse",
];

/// The secret store `path` is, or lies in, if any ([`SECRET_STORES`]).
pub fn secret_store(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    SECRET_STORES.iter().copied().find(|store| {
        let pattern: Vec<&str> = store.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
        parts.len() >= pattern.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(want, have)| *want == "*" || want.eq_ignore_ascii_case(have))
    })
}

/// True when `path` is `root` or lies below it, component by component
/// (`/usr` holds `/usr/lib`, not `/usrx`); without regard to case for
/// Windows paths (`C:\...`), whose file systems ignore it.
pub fn is_under(path: &str, root: &str) -> bool {
    let split = |p: &str| -> Vec<String> {
        p.split(['/', '\\'])
            .filter(|part| !part.is_empty())
            .map(|part| {
                if windows_path(p) {
                    part.to_ascii_lowercase()
                } else {
                    part.to_owned()
                }
            })
            .collect()
    };
    let (path, root) = (split(path), split(root));
    path.len() >= root.len() && path.iter().zip(&root).all(|(a, b)| a == b)
}

fn windows_path(path: &str) -> bool {
    path.len() >= 2 && path.as_bytes()[1] == b':' && path.as_bytes()[0].is_ascii_alphabetic()
}

/// Checks one of the agent's `disk_usage_roots`: absolute, no `.` or `..`,
/// and neither a secret store nor inside one (a root may hold one: the
/// walk skips it).
pub fn check_root(root: &str) -> Result<(), String> {
    let absolute = root.starts_with('/') || (windows_path(root) && root.len() >= 3);
    if root.is_empty()
        || root.len() > 1024
        || root.chars().any(char::is_control)
        || !absolute
        || root
            .split(['/', '\\'])
            .any(|part| part == ".." || part == ".")
    {
        return Err(format!(
            "{:?} must be an absolute path without . or .. (at most 1024 characters)",
            shown(root)
        ));
    }
    match secret_store(root) {
        Some(store) => Err(format!(
            "{:?} is a secret store ({store}); disk_usage never lists it",
            shown(root)
        )),
        None => Ok(()),
    }
}

/// True when a walk from `path` could reach a secret store: some store
/// lies below it. The walk then checks each directory it enters.
pub fn holds_secret_store(path: &str) -> bool {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    SECRET_STORES.iter().any(|store| {
        let pattern: Vec<&str> = store.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
        pattern.len() > parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(want, have)| *want == "*" || want.eq_ignore_ascii_case(have))
    })
}

/// The longest text parameter anywhere (a URL); everything else is shorter.
const MAX_TEXT: usize = 2048;

/// One diagnostic in the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The id, e.g. "ping".
    pub id: &'static str,
    /// One line for the catalog listing.
    pub description: &'static str,
    /// Read-only or state-changing.
    pub risk: DiagnosticRisk,
    /// Killed, with its whole process tree, after this.
    pub timeout: Duration,
    /// Output kept beyond this is cut off.
    pub output_cap: usize,
    /// Its parameters: (name, help).
    pub params: &'static [(&'static str, &'static str)],
}

const KIB: usize = 1024;
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const READ: DiagnosticRisk = DiagnosticRisk::ReadOnly;
const WRITE: DiagnosticRisk = DiagnosticRisk::ChangesState;

/// Every diagnostic, read-only ones first.
pub const CATALOG: [Spec; 19] = [
    Spec {
        id: "ping",
        description: "ICMP echo to a host",
        risk: READ,
        timeout: secs(30),
        output_cap: 16 * KIB,
        params: &[
            ("host", "host name or IP address (required)"),
            ("count", "echo requests, 1-10 (default 4)"),
        ],
    },
    Spec {
        id: "traceroute",
        description: "the network path to a host",
        risk: READ,
        timeout: secs(90),
        output_cap: 32 * KIB,
        params: &[
            ("host", "host name or IP address (required)"),
            ("max_hops", "1-30 (default 20)"),
        ],
    },
    Spec {
        id: "dns_lookup",
        description: "resolve a name, through the system resolver or a given server",
        risk: READ,
        timeout: secs(20),
        output_cap: 16 * KIB,
        params: &[
            ("name", "the name to resolve (required)"),
            ("type", "A, AAAA, MX, TXT, CNAME or NS (default A and AAAA)"),
            (
                "server",
                "IP address of a DNS server (default: the system resolver)",
            ),
            ("port", "the server's port, 1-65535 (default 53)"),
        ],
    },
    Spec {
        id: "tcp_connect",
        description: "open a TCP connection to host:port, with timing",
        risk: READ,
        timeout: secs(15),
        output_cap: 4 * KIB,
        params: &[
            ("host", "host name or IP address (required)"),
            ("port", "1-65535 (required)"),
        ],
    },
    Spec {
        id: "http_check",
        description: "GET a URL: status, timing, TLS certificate expiry",
        risk: READ,
        timeout: secs(30),
        output_cap: 8 * KIB,
        params: &[("url", "http:// or https:// URL (required)")],
    },
    Spec {
        id: "network_config",
        description: "interfaces, addresses, routes and DNS servers",
        risk: READ,
        timeout: secs(15),
        output_cap: 64 * KIB,
        params: &[],
    },
    Spec {
        id: "listening_ports",
        description: "TCP and UDP sockets listening on this PC",
        risk: READ,
        timeout: secs(15),
        output_cap: 64 * KIB,
        params: &[],
    },
    Spec {
        id: "top_processes",
        description: "the processes using the most CPU or memory",
        risk: READ,
        timeout: secs(15),
        output_cap: 32 * KIB,
        params: &[
            ("count", "1-50 (default 10)"),
            ("sort", "cpu or memory (default cpu)"),
        ],
    },
    Spec {
        id: "disk_usage",
        description: "the largest directories under a path",
        risk: READ,
        timeout: secs(60),
        output_cap: 32 * KIB,
        params: &[
            (
                "path",
                "absolute path under the agent's disk_usage_roots (required)",
            ),
            ("depth", "1-3 (default 1)"),
        ],
    },
    Spec {
        id: "service_status",
        description: "one service's state and recent log lines",
        risk: READ,
        timeout: secs(15),
        output_cap: 32 * KIB,
        params: &[("service", "service name (required)")],
    },
    Spec {
        id: "log_errors",
        description: "the last system log errors (journal or event log)",
        risk: READ,
        timeout: secs(30),
        output_cap: 128 * KIB,
        params: &[
            ("count", "1-200 (default 50)"),
            ("filter", "only lines containing this text"),
            ("hours", "how far back, 1-720 (default 24)"),
        ],
    },
    Spec {
        id: "pending_updates",
        description: "the OS updates waiting to be installed",
        risk: READ,
        timeout: secs(120),
        output_cap: 64 * KIB,
        params: &[],
    },
    Spec {
        id: "smart_report",
        description: "the SMART report of one disk or all disks",
        risk: READ,
        timeout: secs(60),
        output_cap: 128 * KIB,
        params: &[(
            "device",
            "e.g. /dev/sda or /dev/nvme0n1 (default: every disk)",
        )],
    },
    Spec {
        id: "battery_report",
        description: "every battery's charge, health and cycles",
        risk: READ,
        timeout: secs(15),
        output_cap: 8 * KIB,
        params: &[],
    },
    Spec {
        id: "clock_status",
        description: "the clock, its time zone and NTP synchronisation",
        risk: READ,
        timeout: secs(15),
        output_cap: 8 * KIB,
        params: &[],
    },
    Spec {
        id: "restart_service",
        description: "restart one service",
        risk: WRITE,
        timeout: secs(60),
        output_cap: 16 * KIB,
        params: &[("service", "service name (required)")],
    },
    Spec {
        id: "flush_dns",
        description: "flush the DNS resolver cache",
        risk: WRITE,
        timeout: secs(30),
        output_cap: 4 * KIB,
        params: &[],
    },
    Spec {
        id: "clear_temp",
        description: "delete temporary files older than N days",
        risk: WRITE,
        timeout: secs(120),
        output_cap: 16 * KIB,
        params: &[("older_than_days", "1-365 (default 7)")],
    },
    Spec {
        id: "renew_dhcp",
        description: "renew the DHCP lease of an interface",
        risk: WRITE,
        timeout: secs(60),
        output_cap: 8 * KIB,
        params: &[("interface", "e.g. eth0 (default: every DHCP interface)")],
    },
];

/// The catalog entry of an id.
pub fn spec(id: &str) -> Option<&'static Spec> {
    CATALOG.iter().find(|s| s.id == id)
}

/// The catalog id of a parameter message, or "" when none is set.
pub fn id_of(params: &DiagnosticParams) -> &'static str {
    match &params.kind {
        Some(Kind::Ping(_)) => "ping",
        Some(Kind::Traceroute(_)) => "traceroute",
        Some(Kind::DnsLookup(_)) => "dns_lookup",
        Some(Kind::TcpConnect(_)) => "tcp_connect",
        Some(Kind::HttpCheck(_)) => "http_check",
        Some(Kind::NetworkConfig(_)) => "network_config",
        Some(Kind::ListeningPorts(_)) => "listening_ports",
        Some(Kind::TopProcesses(_)) => "top_processes",
        Some(Kind::DiskUsage(_)) => "disk_usage",
        Some(Kind::ServiceStatus(_)) => "service_status",
        Some(Kind::LogErrors(_)) => "log_errors",
        Some(Kind::PendingUpdates(_)) => "pending_updates",
        Some(Kind::SmartReport(_)) => "smart_report",
        Some(Kind::BatteryReport(_)) => "battery_report",
        Some(Kind::ClockStatus(_)) => "clock_status",
        Some(Kind::RestartService(_)) => "restart_service",
        Some(Kind::FlushDns(_)) => "flush_dns",
        Some(Kind::ClearTemp(_)) => "clear_temp",
        Some(Kind::RenewDhcp(_)) => "renew_dhcp",
        None => "",
    }
}

/// The ids enabled when the agent's config says nothing: every read-only
/// diagnostic, no state-changing one.
pub fn default_enabled() -> Vec<&'static str> {
    CATALOG
        .iter()
        .filter(|s| s.risk == DiagnosticRisk::ReadOnly)
        .map(|s| s.id)
        .collect()
}

fn plain_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    if value.len() > max {
        return Err(format!("{what} is longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

/// A DNS name or an IP address; nothing a shell or a program would read as
/// an option or a command.
pub fn check_host(what: &str, host: &str) -> Result<(), String> {
    plain_text(what, host, 253)?;
    if host.is_empty() {
        return Err(format!("{what} is required"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a host name or IP address",
            shown(host)
        ))
    }
}

/// A service name: `[A-Za-z0-9@._-]`, 1-128 characters, not starting with
/// `-` (so it can never be read as an option).
pub fn check_service(what: &str, name: &str) -> Result<(), String> {
    plain_text(what, name, 128)?;
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} must be 1-128 characters of [A-Za-z0-9@._-], not starting with - or .",
            shown(name)
        ))
    }
}

fn check_range(what: &str, value: u32, min: u32, max: u32) -> Result<(), String> {
    if value == 0 || (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{what} must be between {min} and {max}"))
    }
}

/// Checks a `disk_usage` path: absolute, no `.` or `..`, and not a
/// [`SECRET_STORES`] entry. The agent checks the path again once it has
/// resolved its links, and then its own roots (`disk_usage_roots`).
pub fn check_path(path: &str) -> Result<(), String> {
    plain_text("path", path, 1024)?;
    if path.is_empty() {
        return Err("path is required".into());
    }
    let windows = path.len() > 2 && path.as_bytes()[1] == b':';
    if !path.starts_with('/') && !windows {
        return Err(format!("path {:?} must be absolute", shown(path)));
    }
    if path
        .split(['/', '\\'])
        .any(|part| part == ".." || part == ".")
    {
        return Err(format!(
            "path {:?} may not contain . or .. components",
            shown(path)
        ));
    }
    match secret_store(path) {
        Some(store) => Err(format!(
            "path {:?} is a secret store ({store}); disk_usage never lists it",
            shown(path)
        )),
        None => Ok(()),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    plain_text("url", url, MAX_TEXT)?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("url {:?} must start with http:// or https://", shown(url)))?;
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '`' || c == '\\')
    {
        return Err("url may not contain spaces, backticks or backslashes".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("url may not carry user credentials".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    check_host("url host", host)?;
    if let Some(port) = authority.rsplit_once("]:").map(|(_, p)| p).or_else(|| {
        (!authority.starts_with('['))
            .then(|| authority.split_once(':').map(|(_, p)| p))
            .flatten()
    }) {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("url port {:?} must be 1-65535", shown(port))),
        }
    }
    Ok(())
}

/// A short, printable form of a refused value for error messages.
fn shown(value: &str) -> String {
    let mut text: String = value.chars().take(64).collect();
    if text.len() < value.len() {
        text.push('…');
    }
    text
}

/// Checks every parameter of a request against the catalog. Both the agent
/// (always) and the collector (for an early, clear error) call it.
pub fn check(params: &DiagnosticParams) -> Result<(), String> {
    match &params.kind {
        None => Err("no diagnostic given".into()),
        Some(Kind::Ping(p)) => {
            check_host("host", &p.host)?;
            check_range("count", p.count, 1, 10)
        }
        Some(Kind::Traceroute(p)) => {
            check_host("host", &p.host)?;
            check_range("max_hops", p.max_hops, 1, 30)
        }
        Some(Kind::DnsLookup(p)) => {
            check_host("name", &p.name)?;
            if !["", "A", "AAAA", "MX", "TXT", "CNAME", "NS"].contains(&p.record_type.as_str()) {
                return Err(format!(
                    "type {:?} must be A, AAAA, MX, TXT, CNAME or NS",
                    shown(&p.record_type)
                ));
            }
            if !p.server.is_empty() && p.server.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "server {:?} must be an IP address",
                    shown(&p.server)
                ));
            }
            check_range("port", p.server_port, 1, 65535)
        }
        Some(Kind::TcpConnect(p)) => {
            check_host("host", &p.host)?;
            if p.port == 0 || p.port > 65535 {
                return Err("port must be between 1 and 65535".into());
            }
            Ok(())
        }
        Some(Kind::HttpCheck(p)) => check_url(&p.url),
        Some(Kind::TopProcesses(p)) => {
            check_range("count", p.count, 1, 50)?;
            if !["", "cpu", "memory"].contains(&p.sort_by.as_str()) {
                return Err(format!(
                    "sort {:?} must be cpu or memory",
                    shown(&p.sort_by)
                ));
            }
            Ok(())
        }
        Some(Kind::DiskUsage(p)) => {
            check_path(&p.path)?;
            check_range("depth", p.depth, 1, 3)
        }
        Some(Kind::ServiceStatus(p)) => check_service("service", &p.service),
        Some(Kind::RestartService(p)) => check_service("service", &p.service),
        Some(Kind::LogErrors(p)) => {
            check_range("count", p.count, 1, 200)?;
            check_range("hours", p.hours, 1, 720)?;
            plain_text("filter", &p.filter, 64)?;
            if !p
                .filter
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | ':' | '-'))
            {
                return Err(format!(
                    "filter {:?} may hold only letters, digits, space and ._:-",
                    shown(&p.filter)
                ));
            }
            Ok(())
        }
        Some(Kind::SmartReport(p)) => {
            if p.device.is_empty() {
                return Ok(());
            }
            plain_text("device", &p.device, 64)?;
            let name = p.device.strip_prefix("/dev/").unwrap_or("");
            let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric())
                || (p.device.starts_with("\\\\.\\PHYSICALDRIVE")
                    && p.device[17..].chars().all(|c| c.is_ascii_digit()));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "device {:?} must be a disk such as /dev/sda or /dev/nvme0n1",
                    shown(&p.device)
                ))
            }
        }
        Some(Kind::ClearTemp(p)) => check_range("older_than_days", p.older_than_days, 1, 365),
        Some(Kind::RenewDhcp(p)) => {
            if p.interface.is_empty() {
                return Ok(());
            }
            plain_text("interface", &p.interface, 15)?;
            let ok = !p.interface.starts_with('-')
                && p.interface
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "interface {:?} must be 1-15 characters of [A-Za-z0-9._-]",
                    shown(&p.interface)
                ))
            }
        }
        Some(
            Kind::NetworkConfig(_)
            | Kind::ListeningPorts(_)
            | Kind::PendingUpdates(_)
            | Kind::BatteryReport(_)
            | Kind::ClockStatus(_)
            | Kind::FlushDns(_),
        ) => Ok(()),
    }
}

fn number(key: &str, value: &str) -> Result<u32, String> {
    let value = value.trim();
    if value.starts_with('-') {
        return Err(format!("{key} must not be negative"));
    }
    value
        .parse::<u32>()
        .map_err(|_| format!("{key} {:?} is not a whole number in range", shown(value)))
        .and_then(|n| {
            if n == 0 {
                Err(format!("{key} must be at least 1"))
            } else {
                Ok(n)
            }
        })
}

/// Builds the typed parameters of diagnostic `id` from `key=value` pairs
/// (`deskpulse run HOST ID --param k=v`), then [`check`]s them. Unknown
/// diagnostics and unknown or repeated keys are errors.
pub fn parse(id: &str, pairs: &[(String, String)]) -> Result<DiagnosticParams, String> {
    let spec = spec(id).ok_or_else(|| {
        let ids: Vec<&str> = CATALOG.iter().map(|s| s.id).collect();
        format!(
            "unknown diagnostic {:?}; the catalog has {}",
            shown(id),
            ids.join(", ")
        )
    })?;
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in pairs {
        if !spec.params.iter().any(|(name, _)| name == key) {
            let names: Vec<&str> = spec.params.iter().map(|(n, _)| *n).collect();
            return Err(if names.is_empty() {
                format!("{id} takes no parameters, got {:?}", shown(key))
            } else {
                format!(
                    "{id} has no parameter {:?}; it takes {}",
                    shown(key),
                    names.join(", ")
                )
            });
        }
        if seen.contains(&key.as_str()) {
            return Err(format!("parameter {key} is given twice"));
        }
        seen.push(key);
        plain_text(key, value, MAX_TEXT)?;
    }
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let text = |key: &str| get(key).unwrap_or("").to_owned();
    let num = |key: &str| get(key).map_or(Ok(0), |v| number(key, v));
    let kind = match id {
        "ping" => Kind::Ping(PingParams {
            host: text("host"),
            count: num("count")?,
        }),
        "traceroute" => Kind::Traceroute(TracerouteParams {
            host: text("host"),
            max_hops: num("max_hops")?,
        }),
        "dns_lookup" => Kind::DnsLookup(DnsLookupParams {
            name: text("name"),
            record_type: text("type").to_ascii_uppercase(),
            server: text("server"),
            server_port: num("port")?,
        }),
        "tcp_connect" => Kind::TcpConnect(TcpConnectParams {
            host: text("host"),
            port: match get("port") {
                Some(v) => number("port", v)?,
                None => return Err("port is required".into()),
            },
        }),
        "http_check" => Kind::HttpCheck(HttpCheckParams { url: text("url") }),
        "network_config" => Kind::NetworkConfig(NetworkConfigParams {}),
        "listening_ports" => Kind::ListeningPorts(ListeningPortsParams {}),
        "top_processes" => Kind::TopProcesses(TopProcessesParams {
            count: num("count")?,
            sort_by: text("sort").to_ascii_lowercase(),
        }),
        "disk_usage" => Kind::DiskUsage(DiskUsageParams {
            path: text("path"),
            depth: num("depth")?,
        }),
        "service_status" => Kind::ServiceStatus(ServiceStatusParams {
            service: text("service"),
        }),
        "log_errors" => Kind::LogErrors(LogErrorsParams {
            count: num("count")?,
            filter: text("filter"),
            hours: num("hours")?,
        }),
        "pending_updates" => Kind::PendingUpdates(PendingUpdatesParams {}),
        "smart_report" => Kind::SmartReport(SmartReportParams {
            device: text("device"),
        }),
        "battery_report" => Kind::BatteryReport(BatteryReportParams {}),
        "clock_status" => Kind::ClockStatus(ClockStatusParams {}),
        "restart_service" => Kind::RestartService(RestartServiceParams {
            service: text("service"),
        }),
        "flush_dns" => Kind::FlushDns(FlushDnsParams {}),
        "clear_temp" => Kind::ClearTemp(ClearTempParams {
            older_than_days: num("older_than_days")?,
        }),
        "renew_dhcp" => Kind::RenewDhcp(RenewDhcpParams {
            interface: text("interface"),
        }),
        _ => return Err(format!("unknown diagnostic {:?}", shown(id))),
    };
    let params = DiagnosticParams { kind: Some(kind) };
    check(&params)?;
    Ok(params)
}

/// The parameters as `key=value` text, for the audit log and listings.
pub fn describe(params: &DiagnosticParams) -> String {
    let pairs: Vec<String> = match &params.kind {
        Some(Kind::Ping(p)) => vec![format!("host={}", p.host), format!("count={}", p.count)],
        Some(Kind::Traceroute(p)) => {
            vec![
                format!("host={}", p.host),
                format!("max_hops={}", p.max_hops),
            ]
        }
        Some(Kind::DnsLookup(p)) => vec![
            format!("name={}", p.name),
            format!("type={}", p.record_type),
            format!("server={}", p.server),
            format!("port={}", p.server_port),
        ],
        Some(Kind::TcpConnect(p)) => vec![format!("host={}", p.host), format!("port={}", p.port)],
        Some(Kind::HttpCheck(p)) => vec![format!("url={}", p.url)],
        Some(Kind::TopProcesses(p)) => {
            vec![format!("count={}", p.count), format!("sort={}", p.sort_by)]
        }
        Some(Kind::DiskUsage(p)) => vec![format!("path={}", p.path), format!("depth={}", p.depth)],
        Some(Kind::ServiceStatus(p)) => vec![format!("service={}", p.service)],
        Some(Kind::RestartService(p)) => vec![format!("service={}", p.service)],
        Some(Kind::LogErrors(p)) => vec![
            format!("count={}", p.count),
            format!("filter={}", p.filter),
            format!("hours={}", p.hours),
        ],
        Some(Kind::SmartReport(p)) => vec![format!("device={}", p.device)],
        Some(Kind::ClearTemp(p)) => vec![format!("older_than_days={}", p.older_than_days)],
        Some(Kind::RenewDhcp(p)) => vec![format!("interface={}", p.interface)],
        _ => Vec::new(),
    };
    // Defaults (0 and empty) are left out: they say nothing.
    pairs
        .into_iter()
        .filter(|p| !p.ends_with('=') && !p.ends_with("=0"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
