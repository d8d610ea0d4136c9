//! The diagnostics done in Rust rather than by a program: sockets (TCP
//! connect; DNS and HTTP live in their own modules), `/proc` and `/sys`
//! readings, and the bounded file walks of `disk_usage` and `clear_temp`.
//! Files are read under the system root (D13); sockets and the clock are
//! the running machine's.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::plan::Native;
use super::{Context, Out, Stop, dns, http, parse};

/// Entries `disk_usage` looks at before it stops and says so.
pub const DISK_USAGE_MAX_ENTRIES: usize = 200_000;
/// Directories `disk_usage` lists.
const DISK_USAGE_SHOWN: usize = 25;
/// How deep `clear_temp` goes below a temp dir.
#[cfg(unix)]
const CLEAR_TEMP_MAX_DEPTH: usize = 32;

/// The time left, or the timeout.
pub fn left(deadline: Instant) -> Result<Duration, Stop> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Stop::TimedOut)
    } else {
        Ok(left)
    }
}

fn check_stop(stop: &AtomicBool) -> Result<(), Stop> {
    if stop.load(Ordering::Relaxed) {
        Err(Stop::Cancelled)
    } else {
        Ok(())
    }
}

/// Runs one native step; `Ok` is the exit code (0 success, 1 not).
pub fn run(
    step: &Native,
    context: &Context,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    let root = &context.system_root;
    match step {
        Native::DnsLookup {
            name,
            record_type,
            server,
            port,
        } => dns::lookup(root, name, record_type, server, *port, deadline, out),
        Native::TcpConnect { host, port } => tcp_connect(host, *port, deadline, out),
        Native::HttpCheck { url } => {
            http::check(root, url, context.http_allow_loopback, deadline, out)
        }
        Native::NetworkConfig => network_config(root, out),
        Native::ListeningPorts => listening_ports(root, out),
        Native::TopProcesses { count, by_memory } => {
            top_processes(root, *count, *by_memory, deadline, stop, out)
        }
        Native::DiskUsage { path, depth } => disk_usage(
            root,
            &context.disk_usage_roots,
            path,
            *depth,
            deadline,
            stop,
            out,
        ),
        Native::Battery => battery(root, out),
        Native::Clock => clock(root, out),
        Native::ClearTemp { days, dirs } => clear_temp(root, *days, dirs, deadline, stop, out),
    }
}

/// Resolves `host:port` through the system resolver, with its timing.
pub fn resolve(host: &str, port: u16, out: &Out) -> Result<Vec<SocketAddr>, String> {
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if host.parse::<std::net::IpAddr>().is_err() {
        out.line(format!(
            "resolved {host} in {} ms: {}",
            started.elapsed().as_millis(),
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(addrs)
}

/// Connects to each address of `host:port` in turn until one answers.
fn tcp_connect(host: &str, port: u16, deadline: Instant, out: &Out) -> Result<i32, Stop> {
    let addrs = match resolve(host, port, out) {
        Ok(addrs) => addrs,
        Err(error) => {
            out.line(error);
            return Ok(1);
        }
    };
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(&addr, left(deadline)?.min(Duration::from_secs(10))) {
            Ok(_) => {
                out.line(format!(
                    "connected to {addr} in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                ));
                return Ok(0);
            }
            Err(error) => out.line(format!(
                "{addr}: {error} after {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            )),
        }
    }
    Ok(1)
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_default()
}

/// Interfaces, addresses, routes and DNS servers: the inventory's network
/// reader plus the IPv4 route table.
fn network_config(root: &Path, out: &Out) -> Result<i32, Stop> {
    let mut inventory = deskpulse_proto::v1::Inventory::default();
    crate::collect::hardware::network(root, &mut inventory);
    let net = inventory.network.unwrap_or_default();
    out.line("interfaces:");
    for nic in &net.interfaces {
        let speed = if nic.speed_mbps > 0 {
            format!(" {} Mb/s", nic.speed_mbps)
        } else {
            String::new()
        };
        out.line(format!(
            "  {} {} {}{}{} {}",
            nic.name,
            if nic.mac.is_empty() { "-" } else { &nic.mac },
            if nic.up { "up" } else { "down" },
            speed,
            if nic.wireless { " wireless" } else { "" },
            nic.ipv4
                .iter()
                .chain(&nic.ipv6)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out.line("routes (IPv4):");
    for route in parse::routes(&read(root, "proc/net/route")) {
        out.line(format!(
            "  {} via {} dev {} metric {}",
            route.destination, route.gateway, route.interface, route.metric
        ));
    }
    out.line(format!(
        "default gateways: {}",
        net.default_gateways.join(" ")
    ));
    out.line(format!("dns servers: {}", net.dns_servers.join(" ")));
    for item in inventory.unavailable {
        out.line(format!("unavailable: {} ({})", item.field, item.detail));
    }
    Ok(0)
}

/// Every numeric dir under `proc`, i.e. every process.
fn pids(root: &Path) -> Vec<u32> {
    std::fs::read_dir(root.join("proc"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn comm(root: &Path, pid: u32) -> String {
    read(root, &format!("proc/{pid}/comm")).trim().to_owned()
}

/// Socket inode → (pid, name), from the `proc/[pid]/fd` links we may read
/// (all of them as root; our own otherwise).
fn socket_owners(root: &Path) -> HashMap<u64, (u32, String)> {
    let mut owners = HashMap::new();
    for pid in pids(root) {
        let Ok(fds) = std::fs::read_dir(root.join(format!("proc/{pid}/fd"))) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = parse::socket_inode(&target.to_string_lossy())
            {
                owners
                    .entry(inode)
                    .or_insert_with(|| (pid, comm(root, pid)));
            }
        }
    }
    owners
}

/// TCP and UDP sockets listening on this PC, with their processes.
fn listening_ports(root: &Path, out: &Out) -> Result<i32, Stop> {
    let owners = socket_owners(root);
    let mut rows = Vec::new();
    for (table, tcp, v6) in [
        ("tcp", true, false),
        ("tcp6", true, true),
        ("udp", false, false),
        ("udp6", false, true),
    ] {
        for socket in parse::proc_net(&read(root, &format!("proc/net/{table}")), v6) {
            if !parse::listening(&socket, tcp) {
                continue;
            }
            let owner = owners
                .get(&socket.inode)
                .map(|(pid, name)| format!("pid {pid} ({name})"))
                .unwrap_or_else(|| format!("uid {}", socket.uid));
            rows.push(format!(
                "{:<5} {:<40} {owner}",
                if tcp { "tcp" } else { "udp" },
                socket.local.to_string()
            ));
        }
    }
    out.line(format!("{} listening sockets", rows.len()));
    for row in rows {
        out.line(row);
    }
    Ok(0)
}

/// Clock ticks per second of `/proc/[pid]/stat` times: USER_HZ, 100 on
/// every Linux architecture we ship for.
const USER_HZ: f64 = 100.0;

fn proc_stats(root: &Path) -> HashMap<u32, parse::ProcStat> {
    pids(root)
        .into_iter()
        .filter_map(|pid| parse::proc_stat(&read(root, &format!("proc/{pid}/stat"))))
        .map(|s| (s.pid, s))
        .collect()
}

/// The top processes by CPU (over one second) or resident memory.
fn top_processes(
    root: &Path,
    count: usize,
    by_memory: bool,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    let before = proc_stats(root);
    // CPU use needs two readings; one second is the diagnostic's own
    // measuring window, cut short by a cancel.
    let window = Duration::from_secs(1).min(left(deadline)?);
    let until = Instant::now() + window;
    while Instant::now() < until {
        check_stop(stop)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = proc_stats(root);
    let page = page_size();
    let mut rows: Vec<(u32, String, f64, u64)> = after
        .values()
        .map(|s| {
            let was = before.get(&s.pid).map_or(s.ticks, |b| b.ticks);
            let cpu = s.ticks.saturating_sub(was) as f64 / USER_HZ / window.as_secs_f64() * 100.0;
            (s.pid, s.name.clone(), cpu, s.rss_pages * page)
        })
        .collect();
    if by_memory {
        rows.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
    } else {
        rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.3.cmp(&a.3)));
    }
    out.line(format!(
        "{} processes; top {count} by {}",
        rows.len(),
        if by_memory { "memory" } else { "CPU" }
    ));
    out.line(format!(
        "{:>8} {:>6} {:>10}  name",
        "pid", "cpu%", "rss MiB"
    ));
    for (pid, name, cpu, rss) in rows.into_iter().take(count) {
        out.line(format!(
            "{pid:>8} {cpu:>6.1} {:>10.1}  {name}",
            rss as f64 / 1_048_576.0
        ));
    }
    Ok(0)
}

/// `path` (absolute, checked) under the system root.
fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(unix)]
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// top_processes reads Linux's /proc; elsewhere the page size only has to
/// be a plausible number for the fixture tests.
#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

#[cfg(not(unix))]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

/// The largest directories under a path, to `depth` levels, by space
/// allocated. The path is resolved first (links followed, under the system
/// root) and the real path checked against the catalog again, so a trailing
/// `/` or a link inside the path cannot lead out of the allowed roots or
/// into a secret store. The walk itself never follows a link (on Unix it
/// goes through directory handles opened without following, so a link
/// swapped in halfway is not followed either), skips secret stores, stays
/// on the path's filesystem, and stops (saying so) after
/// [`DISK_USAGE_MAX_ENTRIES`] entries or at the deadline.
#[allow(clippy::too_many_arguments)] // one step's inputs; a struct would only rename them
fn disk_usage(
    root: &Path,
    roots: &[String],
    path: &str,
    depth: usize,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    let (real, logical) = match resolve_checked(root, roots, path) {
        Ok(found) => found,
        // A mount point above the roots, such as `/` itself (a full disk's
        // ticket names its mount point): the roots on its filesystem are
        // what may be shown of it.
        Err(refused) => {
            return match roots_on_filesystem(root, roots, path) {
                Some((real, logical, below)) => {
                    roots_usage(root, &real, &logical, &below, depth, deadline, stop, out)
                }
                None => Err(Stop::Failed(refused)),
            };
        }
    };
    filesystem_line(&real, out);
    let walk = walk_one(root, &real, &logical, depth, deadline, stop)?;
    let shown_as = if logical == path.trim_end_matches(['/', '\\']) {
        path.trim_end_matches(['/', '\\']).to_owned()
    } else {
        out.line(format!("{path} resolves to {logical}"));
        logical.clone()
    };
    out.line(walk.summary(&shown_as));
    let mut rows: Vec<(String, u64)> = walk.rows(&shown_as);
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, size) in rows.iter().take(DISK_USAGE_SHOWN) {
        out.line(format!("{:>10}  {name}", human(*size)));
    }
    walk.footnotes(out);
    Ok(0)
}

/// The filesystem's numbers as df, health samples and the inventory show
/// them (one definition: `deskpulse_proto::space`), df's percent rounded
/// up as df rounds it.
fn filesystem_line(real: &Path, out: &Out) {
    if let Ok(space) = crate::collect::disk_space(real) {
        out.line(format!(
            "filesystem: {} total, {} used ({:.0}%), {} available",
            human(space.total),
            human(space.used()),
            f64::from(space.used_percent()).ceil(),
            human(space.available)
        ));
    }
}

/// One walk from `real` (checked), to `depth`.
fn walk_one<'a>(
    root: &Path,
    real: &Path,
    logical: &str,
    depth: usize,
    deadline: Instant,
    stop: &'a AtomicBool,
) -> Result<UsageWalk<'a>, Stop> {
    let mut walk = UsageWalk {
        depth,
        deadline,
        stop,
        totals: HashMap::new(),
        grand: 0,
        entries: 0,
        unreadable: 0,
        secrets_skipped: 0,
        stopped: None,
    };
    walk.start(root, real, logical)?;
    Ok(walk)
}

/// A path resolved and checked: its real path and its name as the catalog
/// checks it.
type Checked = (PathBuf, String);

/// When `path` is not under the roots but is a directory above some of
/// them (a mount point such as `/`): its real and logical path, and the
/// roots under it on the same filesystem, each checked as a path asked
/// for would be. `None` when there are none.
fn roots_on_filesystem(
    root: &Path,
    roots: &[String],
    path: &str,
) -> Option<(PathBuf, String, Vec<Checked>)> {
    let real = std::fs::canonicalize(under_root(root, path)).ok()?;
    let logical = logical_path(root, &real)?;
    deskpulse_proto::catalog::check_path(&logical).ok()?;
    if !std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    let mut below: Vec<Checked> = Vec::new();
    for allowed in roots {
        if !deskpulse_proto::catalog::is_under(allowed, &logical) {
            continue;
        }
        let Ok((root_real, root_logical)) = resolve_checked(root, roots, allowed) else {
            continue;
        };
        if same_filesystem(&real, &root_real)
            && !below.iter().any(|(r, _)| root_real.starts_with(r))
        {
            below.retain(|(r, _)| !r.starts_with(&root_real));
            below.push((root_real, root_logical));
        }
    }
    (!below.is_empty()).then_some((real, logical, below))
}

#[cfg(unix)]
fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_filesystem(a: &Path, b: &Path) -> bool {
    // A drive letter is a filesystem.
    a.components().next() == b.components().next()
}

/// `disk_usage` of a mount point above the roots: each root on its
/// filesystem walked, and their largest directories together.
#[allow(clippy::too_many_arguments)] // one step's inputs; a struct would only rename them
fn roots_usage(
    root: &Path,
    real: &Path,
    logical: &str,
    below: &[Checked],
    depth: usize,
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    filesystem_line(real, out);
    let names: Vec<&str> = below.iter().map(|(_, l)| l.as_str()).collect();
    out.line(format!(
        "{logical} is not under this agent's disk_usage_roots; showing the roots on its filesystem: {}",
        names.join(", ")
    ));
    let mut rows: Vec<(String, u64)> = Vec::new();
    for (root_real, root_logical) in below {
        let walk = walk_one(root, root_real, root_logical, depth, deadline, stop)?;
        out.line(walk.summary(root_logical));
        rows.extend(walk.rows(root_logical));
        walk.footnotes(out);
    }
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, size) in rows.iter().take(DISK_USAGE_SHOWN) {
        out.line(format!("{:>10}  {name}", human(*size)));
    }
    Ok(0)
}

/// Resolves `path` under the system root (every link followed) and checks
/// the real path: no secret store (as the catalog checks), and under one of
/// this agent's `disk_usage_roots`, each resolved too (so `/var` on macOS
/// holds `/private/var/log`). Returns the real path and its name as seen
/// from inside the system root, or why it is refused, in one line.
fn resolve_checked(root: &Path, roots: &[String], path: &str) -> Result<(PathBuf, String), String> {
    let start = under_root(root, path);
    let real = std::fs::canonicalize(&start).map_err(|error| format!("{path}: {error}"))?;
    let logical = logical_path(root, &real)
        .ok_or_else(|| format!("{path} resolves outside the system root; refused"))?;
    let allowed = || {
        roots.iter().any(|allowed| {
            deskpulse_proto::catalog::is_under(&logical, allowed)
                || std::fs::canonicalize(under_root(root, allowed))
                    .is_ok_and(|allowed| real.starts_with(allowed))
        })
    };
    let verdict = deskpulse_proto::catalog::check_path(&logical).and_then(|()| {
        if allowed() {
            Ok(())
        } else {
            Err(format!(
                "path {logical:?} is not under this agent's disk_usage_roots ({})",
                roots.join(", ")
            ))
        }
    });
    if let Err(error) = verdict {
        return Err(if logical == path.trim_end_matches(['/', '\\']) {
            format!("refused: {error}")
        } else {
            format!("{path} resolves to {logical}; refused: {error}")
        });
    }
    if !std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_dir()) {
        return Err(format!("{path} is not a directory"));
    }
    Ok((real, logical))
}

/// `real` (a canonical path) as the path the catalog checks: on Unix
/// relative to the canonical system root, with macOS's `/private/var` and
/// `/private/tmp` named `/var` and `/tmp` as its users know them; on
/// Windows without the `\\?\` prefix canonical paths carry.
#[cfg(unix)]
fn logical_path(root: &Path, real: &Path) -> Option<String> {
    let root = std::fs::canonicalize(root).ok()?;
    let rel = real.strip_prefix(&root).ok()?;
    let mut logical = String::new();
    for part in rel.components() {
        logical.push('/');
        logical.push_str(part.as_os_str().to_str()?);
    }
    for alias in ["/private/var", "/private/tmp"] {
        if let Some(rest) = logical.strip_prefix(alias)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            logical = format!("{}{rest}", &alias["/private".len()..]);
            break;
        }
    }
    if logical.is_empty() {
        logical.push('/');
    }
    Some(logical)
}

#[cfg(not(unix))]
fn logical_path(_root: &Path, real: &Path) -> Option<String> {
    let text = real.to_str()?;
    let text = text.strip_prefix(r"\\?\").unwrap_or(text);
    // A UNC share is never under an allowed root.
    (!text.starts_with(r"UNC\")).then(|| text.to_owned())
}

/// One `disk_usage` walk's tallies.
struct UsageWalk<'a> {
    depth: usize,
    deadline: Instant,
    stop: &'a AtomicBool,
    /// Totals per directory at depth 1..=depth, keyed by path relative to
    /// the start.
    totals: HashMap<PathBuf, u64>,
    grand: u64,
    entries: usize,
    unreadable: usize,
    secrets_skipped: usize,
    stopped: Option<&'static str>,
}

impl UsageWalk<'_> {
    /// `/var: 1.2 GiB in 3000 entries`, and why it stopped early.
    fn summary(&self, shown_as: &str) -> String {
        format!(
            "{shown_as}: {} in {} entries{}",
            human(self.grand),
            self.entries,
            self.stopped
                .map(|why| format!(" (stopped at {why}; totals are partial)"))
                .unwrap_or_default()
        )
    }

    /// Each directory's total, named under `shown_as`.
    fn rows(&self, shown_as: &str) -> Vec<(String, u64)> {
        self.totals
            .iter()
            .map(|(rel, size)| (format!("{shown_as}/{}", rel.display()), *size))
            .collect()
    }

    /// What could not be read, and the secret stores left out.
    fn footnotes(&self, out: &Out) {
        if self.unreadable > 0 {
            out.line(format!("{} entries could not be read", self.unreadable));
        }
        if self.secrets_skipped > 0 {
            out.line(format!(
                "{} secret stores skipped, not listed",
                self.secrets_skipped
            ));
        }
    }

    /// Counts one entry; false once the walk must stop.
    fn tick(&mut self) -> Result<bool, Stop> {
        self.entries += 1;
        if self.entries > DISK_USAGE_MAX_ENTRIES {
            self.stopped = Some("the entry limit");
            return Ok(false);
        }
        if self.entries.is_multiple_of(1024) {
            check_stop(self.stop)?;
            if Instant::now() >= self.deadline {
                self.stopped = Some("the time limit");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Credits every listed ancestor and the entry itself, so a big file
    /// near the top shows as well as a big directory.
    fn credit(&mut self, rel: &Path, size: u64) {
        self.grand += size;
        let mut ancestor = PathBuf::new();
        for part in rel.components().take(self.depth) {
            ancestor.push(part);
            *self.totals.entry(ancestor.clone()).or_default() += size;
        }
    }

    /// A directory entry `logical` names, when it is a secret store: it is
    /// skipped, not entered and not listed.
    fn secret(&mut self, logical: &str) -> bool {
        let secret = deskpulse_proto::catalog::secret_store(logical).is_some();
        if secret {
            self.secrets_skipped += 1;
        }
        secret
    }
}

/// How deep the Unix walk goes: one directory handle is open per level.
#[cfg(unix)]
const DISK_USAGE_MAX_DEPTH: usize = 64;

#[cfg(unix)]
impl UsageWalk<'_> {
    /// Opens the start from the system root one component at a time,
    /// never following a link: `real` has none, so a link found now was
    /// swapped in after the check, and the walk refuses it.
    fn start(&mut self, root: &Path, real: &Path, logical: &str) -> Result<(), Stop> {
        use rustix::fs::Mode;
        let opened = (|| {
            let root = std::fs::canonicalize(root)?;
            let mut fd = rustix::fs::open(&root, DIR_FLAGS, Mode::empty())?;
            for part in real.strip_prefix(&root).unwrap_or(real).components() {
                fd = rustix::fs::openat(&fd, part.as_os_str(), DIR_FLAGS, Mode::empty())?;
            }
            Ok::<_, std::io::Error>(fd)
        })()
        .map_err(|error| {
            Stop::Failed(format!(
                "{logical}: {error} (a link or file took the place of a directory; not followed)"
            ))
        })?;
        let stat = rustix::fs::fstat(&opened)
            .map_err(|e| Stop::Failed(format!("{logical}: {}", std::io::Error::from(e))))?;
        self.grand += stat.st_blocks.max(0) as u64 * 512;
        self.level(&opened, stat.st_dev, &PathBuf::new(), logical, 0)
    }

    /// One directory, depth first. Returns early (not an error) when the
    /// walk has hit a limit.
    fn level(
        &mut self,
        fd: &rustix::fd::OwnedFd,
        dev: DeviceId,
        rel: &Path,
        logical: &str,
        level: usize,
    ) -> Result<(), Stop> {
        use rustix::fs::{AtFlags, FileType, Mode};
        let Ok(mut list) = rustix::fs::Dir::read_from(fd) else {
            self.unreadable += 1;
            return Ok(());
        };
        let mut names = Vec::new();
        while let Some(entry) = list.read() {
            let Ok(entry) = entry else {
                self.unreadable += 1;
                break;
            };
            let name = entry.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        drop(list);
        for name in names {
            if self.stopped.is_some() || !self.tick()? {
                return Ok(());
            }
            let Ok(stat) = rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                self.unreadable += 1;
                continue;
            };
            let text = name.to_string_lossy();
            let child_logical = format!("{}/{text}", logical.trim_end_matches('/'));
            let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
            if is_dir && self.secret(&child_logical) {
                continue;
            }
            let child_rel = rel.join(&*text);
            self.credit(&child_rel, stat.st_blocks.max(0) as u64 * 512);
            if !is_dir || stat.st_dev != dev || level + 1 >= DISK_USAGE_MAX_DEPTH {
                continue;
            }
            match rustix::fs::openat(fd, &name, DIR_FLAGS, Mode::empty()) {
                // Opened without following, then checked again: the handle
                // is a directory on the start's filesystem.
                Ok(child) => {
                    if rustix::fs::fstat(&child).is_ok_and(|s| s.st_dev == dev) {
                        self.level(&child, dev, &child_rel, &child_logical, level + 1)?;
                    }
                }
                Err(_) => self.unreadable += 1,
            }
        }
        Ok(())
    }
}

#[cfg(not(unix))]
impl UsageWalk<'_> {
    /// Walks with `std::fs`, never following a link or a junction (both
    /// are reparse points `symlink_metadata` reports as links).
    fn start(&mut self, _root: &Path, real: &Path, logical: &str) -> Result<(), Stop> {
        let meta = std::fs::symlink_metadata(real)
            .map_err(|error| Stop::Failed(format!("{logical}: {error}")))?;
        self.grand += allocated(&meta);
        // (dir, its path relative to the start, its catalog name)
        let mut stack = vec![(real.to_path_buf(), PathBuf::new(), logical.to_owned())];
        'walk: while let Some((dir, rel, logical)) = stack.pop() {
            let Ok(list) = std::fs::read_dir(&dir) else {
                self.unreadable += 1;
                continue;
            };
            for entry in list.flatten() {
                if !self.tick()? {
                    break 'walk;
                }
                let Ok(meta) = entry.path().symlink_metadata() else {
                    self.unreadable += 1;
                    continue;
                };
                let name = entry.file_name();
                let text = name.to_string_lossy();
                let child_logical = format!("{}\\{text}", logical.trim_end_matches('\\'));
                if meta.is_dir() && self.secret(&child_logical) {
                    continue;
                }
                let child_rel = rel.join(&*text);
                self.credit(&child_rel, allocated(&meta));
                if meta.is_dir() {
                    stack.push((entry.path(), child_rel, child_logical));
                }
            }
        }
        Ok(())
    }
}

/// Every battery's charge, health and cycles, from the inventory's reader.
fn battery(root: &Path, out: &Out) -> Result<i32, Stop> {
    let batteries = crate::collect::hardware::linux_batteries(root);
    if batteries.is_empty() {
        out.line("no battery");
    }
    for (b, charge) in batteries {
        out.line(format!(
            "{}: {} {} charge {} health {:.0}% ({} of {} mWh design) cycles {}",
            b.name,
            if b.manufacturer.is_empty() {
                "-"
            } else {
                &b.manufacturer
            },
            if b.model.is_empty() { "-" } else { &b.model },
            charge.map_or("unknown".to_owned(), |c| format!("{c:.0}%")),
            b.health_percent,
            b.full_charge_capacity_mwh,
            b.design_capacity_mwh,
            b.cycle_count
        ));
    }
    Ok(0)
}

/// The clock in UTC and the configured time zone (`etc/localtime`'s link
/// into the zoneinfo tree, else `etc/timezone`).
fn clock(root: &Path, out: &Out) -> Result<i32, Stop> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    out.line(format!("system clock: {}", parse::utc(now)));
    let zone = std::fs::read_link(root.join("etc/localtime"))
        .ok()
        .and_then(|target| {
            let text = target.to_string_lossy().into_owned();
            text.split_once("zoneinfo/").map(|(_, z)| z.to_owned())
        })
        .or_else(|| {
            let text = read(root, "etc/timezone");
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        })
        .unwrap_or_else(|| "unknown (no etc/localtime link or etc/timezone)".to_owned());
    out.line(format!("time zone: {zone}"));
    Ok(0)
}

/// What `clear_temp` did in one temp dir.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    /// Files deleted.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files that could not be deleted, or dirs not read.
    pub failed: u64,
}

/// Deletes the regular files older than `days` in each temp dir under the
/// system root (D13). See [`clear_dir`] for the rules.
fn clear_temp(
    root: &Path,
    days: u64,
    dirs: &[&str],
    deadline: Instant,
    stop: &AtomicBool,
    out: &Out,
) -> Result<i32, Stop> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let cutoff = now - i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let mut code = 0;
    for dir in dirs {
        let path = root.join(dir);
        match clear_dir(&path, cutoff, deadline, stop) {
            Ok(done) => {
                out.line(format!(
                    "/{dir}: deleted {} files ({}) older than {days} days{}",
                    done.files,
                    human(done.bytes),
                    if done.failed > 0 {
                        format!("; {} could not be deleted", done.failed)
                    } else {
                        String::new()
                    }
                ));
                if done.failed > 0 {
                    code = 1;
                }
            }
            Err(ClearError::Stopped(why)) => return Err(why),
            Err(ClearError::Open(error)) => {
                out.line(format!("/{dir}: {error}"));
            }
        }
    }
    Ok(code)
}

/// Why a temp dir was not cleared.
#[derive(Debug)]
pub enum ClearError {
    /// The dir could not be opened.
    Open(String),
    /// Cancelled or out of time.
    Stopped(Stop),
}

/// Deletes the regular files under `dir` whose modification time is
/// before `cutoff` (Unix seconds). It works through directory handles
/// (`openat` with `O_NOFOLLOW`, `fstatat` without following, `unlinkat`),
/// so a symlink is never followed — not even one an attacker swaps in for
/// a directory halfway through, the classic hole in `/tmp` cleaners —
/// and it never descends into another filesystem. Directories, links,
/// sockets and devices are left alone.
#[cfg(unix)]
pub fn clear_dir(
    dir: &Path,
    cutoff: i64,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Cleared, ClearError> {
    use rustix::fs::Mode;
    let top = rustix::fs::open(dir, DIR_FLAGS, Mode::empty())
        .map_err(|e| ClearError::Open(std::io::Error::from(e).to_string()))?;
    let top_stat = rustix::fs::fstat(&top)
        .map_err(|e| ClearError::Open(std::io::Error::from(e).to_string()))?;
    let mut walk = ClearWalk {
        // dev_t is u64 on Linux and i32 on macOS: keep the OS's own type.
        dev: top_stat.st_dev,
        cutoff,
        deadline,
        stop,
        seen: 0,
        done: Cleared::default(),
    };
    walk.level(&top, 0)?;
    Ok(walk.done)
}

/// Directories are opened without following a link, and only as
/// directories.
#[cfg(unix)]
const DIR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

/// The filesystem a directory lives on, as `stat` names it.
#[cfg(unix)]
type DeviceId = rustix::fs::Dev;

#[cfg(unix)]
struct ClearWalk<'a> {
    dev: DeviceId,
    cutoff: i64,
    deadline: Instant,
    stop: &'a AtomicBool,
    seen: usize,
    done: Cleared,
}

#[cfg(unix)]
impl ClearWalk<'_> {
    /// One directory, depth first, so at most one handle per level is open.
    fn level(&mut self, fd: &rustix::fd::OwnedFd, level: usize) -> Result<(), ClearError> {
        use rustix::fs::{AtFlags, FileType, Mode};
        let Ok(mut list) = rustix::fs::Dir::read_from(fd) else {
            self.done.failed += 1;
            return Ok(());
        };
        let mut names = Vec::new();
        while let Some(Ok(entry)) = list.read() {
            let name = entry.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        drop(list);
        for name in names {
            self.seen += 1;
            if self.seen.is_multiple_of(256) {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(ClearError::Stopped(Stop::Cancelled));
                }
                if Instant::now() >= self.deadline {
                    return Err(ClearError::Stopped(Stop::TimedOut));
                }
            }
            let Ok(stat) = rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if stat.st_dev != self.dev {
                continue;
            }
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile if stat.st_mtime < self.cutoff => {
                    match rustix::fs::unlinkat(fd, &name, AtFlags::empty()) {
                        Ok(()) => {
                            self.done.files += 1;
                            self.done.bytes += stat.st_size.max(0) as u64;
                        }
                        Err(_) => self.done.failed += 1,
                    }
                }
                FileType::Directory if level < CLEAR_TEMP_MAX_DEPTH => {
                    match rustix::fs::openat(fd, &name, DIR_FLAGS, Mode::empty()) {
                        // Opened without following, then checked again: the
                        // handle is a directory on our filesystem.
                        Ok(child) => {
                            if rustix::fs::fstat(&child).is_ok_and(|s| s.st_dev == self.dev) {
                                self.level(&child, level + 1)?;
                            }
                        }
                        Err(_) => self.done.failed += 1,
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Not supported off Unix (the Windows plan refuses clear_temp).
#[cfg(not(unix))]
pub fn clear_dir(
    _dir: &Path,
    _cutoff: i64,
    _deadline: Instant,
    _stop: &AtomicBool,
) -> Result<Cleared, ClearError> {
    Err(ClearError::Open("not supported on this platform".into()))
}
