//! Plain parsers for the diagnostics: `/proc` tables, and the one-line
//! summaries printed under program output (`systemctl status`,
//! `timedatectl`, `chronyc`, `smartctl -j`), plus the system-log filter.
//! They take text and return values, so they are tested on fixtures where
//! our machines have no systemd, chrony or real disks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One socket line of `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// The local address and port.
    pub local: SocketAddr,
    /// The remote port (0 for an unconnected socket).
    pub remote_port: u16,
    /// The kernel's state number (0x0A is TCP LISTEN, 0x07 is close).
    pub state: u8,
    /// The owner uid.
    pub uid: u32,
    /// The socket inode, matched against `/proc/[pid]/fd` links.
    pub inode: u64,
}

fn hex_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        // Four 32-bit words, each in the kernel's (little-endian) order.
        let mut bytes = [0u8; 16];
        for word in 0..4 {
            let value = u32::from_str_radix(&addr[word * 8..word * 8 + 8], 16).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        let value = u32::from_str_radix(addr, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(value.to_le_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

/// The sockets of one `/proc/net` table; `v6` for the tcp6/udp6 tables.
/// Malformed lines are skipped.
pub fn proc_net(text: &str, v6: bool) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let local = hex_addr(f[1], v6)?;
            let remote_port = hex_addr(f[2], v6)?.port();
            Some(Socket {
                local,
                remote_port,
                state: u8::from_str_radix(f[3], 16).ok()?,
                uid: f[7].parse().ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// Whether a socket listens: TCP in LISTEN, or UDP bound and unconnected.
pub fn listening(socket: &Socket, tcp: bool) -> bool {
    if tcp {
        socket.state == 0x0A
    } else {
        socket.state == 0x07 && socket.remote_port == 0
    }
}

/// The inode of an fd link target `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What `top_processes` needs of `/proc/[pid]/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: u32,
    /// The command name (`comm`, which may hold spaces and parentheses).
    pub name: String,
    /// User plus system CPU time, in clock ticks.
    pub ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses one `/proc/[pid]/stat`. The name sits between the first `(` and
/// the last `)`, since it may itself contain parentheses.
pub fn proc_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let name = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime(11) stime(12) ... rss(21).
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let rss_pages = rest.get(21)?.parse::<i64>().ok()?.max(0) as u64;
    Some(ProcStat {
        pid,
        name,
        ticks: utime + stime,
        rss_pages,
    })
}

/// One IPv4 route of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface.
    pub interface: String,
    /// Destination network, as prefix text (`0.0.0.0/0` for the default).
    pub destination: String,
    /// The gateway, `0.0.0.0` for an on-link route.
    pub gateway: Ipv4Addr,
    /// The route's metric.
    pub metric: u32,
}

/// The IPv4 routes of `/proc/net/route`.
pub fn routes(text: &str) -> Vec<Route> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(|v| v.to_le_bytes());
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let dest = Ipv4Addr::from(word(f[1])?);
            let gateway = Ipv4Addr::from(word(f[2])?);
            let mask = u32::from_be_bytes(word(f[7])?);
            Some(Route {
                interface: f[0].to_owned(),
                destination: format!("{dest}/{}", mask.count_ones()),
                gateway,
                metric: f[6].parse().ok()?,
            })
        })
        .collect()
}

/// System log lines containing `filter` (ASCII case-insensitive; empty
/// keeps all), the newest `count`. journalctl's `-- No entries --` and
/// `-- Boot … --` markers are not log lines and are left out.
pub fn log_filter(text: &str, filter: &str, count: usize) -> Vec<String> {
    let needle = filter.to_ascii_lowercase();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
        .filter(|l| needle.is_empty() || l.to_ascii_lowercase().contains(&needle))
        .collect();
    let from = kept.len().saturating_sub(count);
    kept[from..].iter().map(|l| (*l).to_owned()).collect()
}

/// `systemctl status`: the `Active:` line, e.g. "active (running) since …".
pub fn systemctl_active(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Active:"))
        .map(|v| v.trim().to_owned())
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// `timedatectl status`: "synchronized yes, NTP service active, time zone
/// Europe/Berlin (CET, +0100)".
pub fn timedatectl(text: &str) -> Option<String> {
    let synced = field(text, "System clock synchronized")?;
    let ntp = field(text, "NTP service").unwrap_or("unknown");
    let zone = field(text, "Time zone").unwrap_or("unknown");
    Some(format!(
        "synchronized {synced}, NTP service {ntp}, time zone {zone}"
    ))
}

/// `chronyc tracking`: "reference …, system time …, leap status …".
pub fn chronyc(text: &str) -> Option<String> {
    let reference = field(text, "Reference ID")?;
    let offset = field(text, "System time").unwrap_or("unknown");
    let leap = field(text, "Leap status").unwrap_or("unknown");
    Some(format!(
        "reference {reference}, system time {offset}, leap status {leap}"
    ))
}

/// `smartctl -a -j`: "/dev/sda Samsung SSD 870: PASSED, 34 °C", or the
/// first smartctl message when it could not assess the disk.
pub fn smart(json: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let device = doc
        .pointer("/device/name")
        .and_then(|v| v.as_str())
        .unwrap_or("disk");
    let model = doc
        .pointer("/model_name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let name = if model.is_empty() {
        device.to_owned()
    } else {
        format!("{device} {model}")
    };
    match doc
        .pointer("/smart_status/passed")
        .and_then(|v| v.as_bool())
    {
        Some(passed) => {
            let verdict = if passed { "PASSED" } else { "FAILED" };
            let temp = doc
                .pointer("/temperature/current")
                .and_then(|v| v.as_i64())
                .map(|t| format!(", {t} °C"))
                .unwrap_or_default();
            Some(format!("{name}: {verdict}{temp}"))
        }
        None => {
            let message = doc
                .pointer("/smartctl/messages/0/string")
                .and_then(|v| v.as_str())
                .unwrap_or("no SMART status");
            Some(format!("{name}: not assessed ({message})"))
        }
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`, so the agent needs no date
/// crate for a few timestamps.
pub fn utc(unix_secs: i64) -> String {
    let (year, month, day) = civil_date(unix_secs.div_euclid(86_400));
    let secs = unix_secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The (year, month, day) of a count of days since 1970-01-01, by the
/// civil-from-days algorithm.
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}
