//! `dns_lookup`: A and AAAA through the system resolver (`getaddrinfo`,
//! which honours nsswitch, /etc/hosts and systemd-resolved exactly as the
//! user's programs do), or one question to a given server over UDP.
//!
//! The UDP query is built and parsed here, by hand, rather than with
//! `hickory-resolver`: one question and one answer section is about 200
//! lines, while hickory brings its own async runtime glue, caches and
//! several dozen thousand lines into an agent whose size is its memory
//! budget. Without a server, MX/TXT/CNAME/NS go to the first `nameserver`
//! in resolv.conf, since `getaddrinfo` only knows addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::native::left;
use super::{Out, Stop};

/// Record types we ask for and print.
pub fn type_code(name: &str) -> Option<u16> {
    Some(match name {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}

fn type_name(code: u16) -> String {
    match code {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        other => format!("TYPE{other}"),
    }
}

/// A query for one question, recursion desired.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() {
            continue;
        }
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// One answer record, its data as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name.
    pub name: String,
    /// The type, e.g. "A".
    pub rtype: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data: an address, a name, "10 mx.example.com", or text.
    pub data: String,
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response code (0 no error, 3 no such name).
    pub rcode: u8,
    /// True when the server cut the answer (TC bit).
    pub truncated: bool,
    /// The answer section.
    pub answers: Vec<Record>,
}

/// The text of a response code.
pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "error",
    }
}

/// Reads a (possibly compressed) name at `at`; returns it and the offset
/// after it in the original position. Pointer loops are cut off.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or("name runs past the end")? as usize;
        if len & 0xC0 == 0xC0 {
            let low = *msg.get(at + 1).ok_or("pointer runs past the end")? as usize;
            end.get_or_insert(at + 2);
            at = ((len & 0x3F) << 8) | low;
            jumps += 1;
            if jumps > 32 {
                return Err("compression loop".into());
            }
            continue;
        }
        if len == 0 {
            let after = end.unwrap_or(at + 1);
            let name = if labels.is_empty() {
                ".".to_owned()
            } else {
                labels.join(".")
            };
            return Ok((name, after));
        }
        let label = msg
            .get(at + 1..at + 1 + len)
            .ok_or("label runs past the end")?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        if labels.len() > 128 {
            return Err("name too long".into());
        }
        at += 1 + len;
    }
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, String> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "message runs past the end".to_owned())
}

/// Parses a response to query `id`.
pub fn parse_response(msg: &[u8], id: u16) -> Result<Response, String> {
    if msg.len() < 12 {
        return Err("response shorter than a DNS header".into());
    }
    if u16_at(msg, 0)? != id {
        return Err("response to another query".into());
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response".into());
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (name, after) = read_name(msg, at)?;
        let rtype = u16_at(msg, after)?;
        let ttl = msg
            .get(after + 4..after + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("record runs past the end")?;
        let len = u16_at(msg, after + 8)? as usize;
        let start = after + 10;
        let rdata = msg
            .get(start..start + len)
            .ok_or("record data runs past the end")?;
        let data = match rtype {
            1 if len == 4 => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            28 if len == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                Ipv6Addr::from(b).to_string()
            }
            2 | 5 => read_name(msg, start)?.0,
            15 => format!("{} {}", u16_at(msg, start)?, read_name(msg, start + 2)?.0),
            16 => {
                let mut parts = Vec::new();
                let mut i = 0;
                while i < rdata.len() {
                    let n = rdata[i] as usize;
                    let chunk = rdata
                        .get(i + 1..i + 1 + n)
                        .ok_or("TXT runs past its record")?;
                    parts.push(format!(
                        "\"{}\"",
                        String::from_utf8_lossy(chunk).escape_default()
                    ));
                    i += 1 + n;
                }
                parts.join(" ")
            }
            _ => format!("({len} bytes)"),
        };
        answers.push(Record {
            name,
            rtype: type_name(rtype),
            ttl,
            data,
        });
        at = start + len;
    }
    Ok(Response {
        rcode: (flags & 0x000F) as u8,
        truncated: flags & 0x0200 != 0,
        answers,
    })
}

/// Asks `server` one question over UDP: two tries, each waiting at most
/// half the time left (and 5 s).
pub fn query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    deadline: Instant,
) -> Result<Response, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    let id: u16 = rand::random();
    let q = build_query(id, name, qtype);
    let mut buf = vec![0u8; 4096];
    let mut last = String::from("no answer");
    for _ in 0..2 {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5))
            / 2;
        if wait.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        socket
            .send(&q)
            .map_err(|e| format!("cannot send to {server}: {e}"))?;
        match socket.recv(&mut buf) {
            Ok(n) => match parse_response(&buf[..n], id) {
                Ok(response) => return Ok(response),
                Err(error) => last = error,
            },
            Err(error) => {
                last = if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    format!("no answer from {server}")
                } else {
                    format!("{server}: {error}")
                };
            }
        }
    }
    Err(last)
}

/// The diagnostic itself.
pub fn lookup(
    root: &Path,
    name: &str,
    record_type: &str,
    server: &str,
    port: u16,
    deadline: Instant,
    out: &Out,
) -> Result<i32, Stop> {
    let types: Vec<&str> = if record_type.is_empty() {
        vec!["A", "AAAA"]
    } else {
        vec![record_type]
    };
    let server: Option<SocketAddr> = if !server.is_empty() {
        server.parse::<IpAddr>().ok().map(|ip| (ip, port).into())
    } else if types.iter().all(|t| *t == "A" || *t == "AAAA") {
        None
    } else {
        let resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default();
        match crate::collect::hardware::parse::nameservers(&resolv)
            .first()
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            Some(ip) => Some((ip, 53).into()),
            None => {
                out.line("no nameserver in etc/resolv.conf to ask for this record type");
                return Ok(1);
            }
        }
    };
    let Some(server) = server else {
        return system_resolver(name, &types, out);
    };
    let mut found = false;
    for t in types {
        left(deadline)?;
        let Some(code) = type_code(t) else { continue };
        let started = Instant::now();
        match query(server, name, code, deadline) {
            Ok(response) => {
                out.line(format!(
                    "{name} {t} from {server}: {} in {:.1} ms{}",
                    rcode_name(response.rcode),
                    started.elapsed().as_secs_f64() * 1000.0,
                    if response.truncated {
                        " (truncated; TCP not tried)"
                    } else {
                        ""
                    }
                ));
                for r in &response.answers {
                    out.line(format!("  {} {} {} {}", r.name, r.ttl, r.rtype, r.data));
                }
                found |= response.rcode == 0 && !response.answers.is_empty();
            }
            Err(error) => out.line(format!("{name} {t} from {server}: {error}")),
        }
    }
    Ok(if found { 0 } else { 1 })
}

fn system_resolver(name: &str, types: &[&str], out: &Out) -> Result<i32, Stop> {
    use std::net::ToSocketAddrs;
    let started = Instant::now();
    match (name, 0u16).to_socket_addrs() {
        Ok(addrs) => {
            let mut shown: Vec<IpAddr> = Vec::new();
            for addr in addrs {
                let ip = addr.ip();
                let wanted = (ip.is_ipv4() && types.contains(&"A"))
                    || (ip.is_ipv6() && types.contains(&"AAAA"));
                if wanted && !shown.contains(&ip) {
                    shown.push(ip);
                }
            }
            out.line(format!(
                "{name} via the system resolver in {:.1} ms: {} address(es)",
                started.elapsed().as_secs_f64() * 1000.0,
                shown.len()
            ));
            for ip in &shown {
                out.line(format!(
                    "  {} {ip}",
                    if ip.is_ipv4() { "A" } else { "AAAA" }
                ));
            }
            Ok(if shown.is_empty() { 1 } else { 0 })
        }
        Err(error) => {
            out.line(format!("{name} via the system resolver: {error}"));
            Ok(1)
        }
    }
}
