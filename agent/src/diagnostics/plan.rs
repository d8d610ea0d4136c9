//! What each diagnostic runs, per platform: a list of steps, each a fixed
//! program with an argv (never a shell, never a command string built from
//! free text) or a native step done in Rust.
//!
//! These are plain functions of the checked parameters, the platform and
//! which programs are installed, so the Windows and macOS plans are built
//! and tested on Linux too; only the choice of [`current`] platform and the
//! running of them there is not exercised on our machines. Every parameter
//! reaching a plan has passed `catalog::check`; the plans still put `--`
//! before operands where the program accepts it, so a value can never be
//! read as an option.

use std::path::Path;

use deskpulse_proto::v1::DiagnosticParams;
use deskpulse_proto::v1::diagnostic_params::Kind;

/// The platform a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Linux: `/proc`, `/sys`, systemd tools.
    Linux,
    /// Windows: built-in tools and PowerShell cmdlets.
    Windows,
    /// macOS: BSD tools, `log`, `launchctl`, `softwareupdate`.
    Macos,
}

/// The platform this build runs on.
pub fn current() -> Platform {
    if cfg!(windows) {
        Platform::Windows
    } else if cfg!(target_os = "macos") {
        Platform::Macos
    } else {
        Platform::Linux
    }
}

/// What is done with a program's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Post {
    /// Streamed as it comes.
    Raw,
    /// System log lines: only those containing `filter` (case-insensitive;
    /// empty for all), the last `count` of them. Applied here, in Rust,
    /// never handed to a shell or to the program.
    LogFilter {
        /// Text a line must contain.
        filter: String,
        /// Lines kept, the newest.
        count: usize,
    },
    /// The first `lines` lines.
    Head(usize),
    /// The output, then a one-line summary parsed from it.
    Summary(Summary),
}

/// The summaries parsed from program output (see `parse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// `systemctl status`: the Active: line.
    SystemctlStatus,
    /// `timedatectl status`: synchronised, NTP service, time zone.
    Timedatectl,
    /// `chronyc tracking`: reference, offset, leap status.
    Chronyc,
    /// `smartctl -a -j`: passed or failed, model, temperature.
    Smart,
}

/// A diagnostic done in Rust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Native {
    /// DNS lookup through the system resolver or a given server.
    DnsLookup {
        /// The name.
        name: String,
        /// "", A, AAAA, MX, TXT, CNAME or NS.
        record_type: String,
        /// A server's IP address, or empty.
        server: String,
        /// Its port.
        port: u16,
    },
    /// TCP connect with timing.
    TcpConnect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// One HTTP(S) GET.
    HttpCheck {
        /// The URL.
        url: String,
    },
    /// Interfaces, routes, DNS from `/proc`, `/sys` and resolv.conf.
    NetworkConfig,
    /// Sockets from `/proc/net`.
    ListeningPorts,
    /// Processes from `/proc/[pid]/stat`.
    TopProcesses {
        /// How many.
        count: usize,
        /// By resident memory instead of CPU.
        by_memory: bool,
    },
    /// A bounded walk of a directory tree.
    DiskUsage {
        /// The absolute path (read under the system root).
        path: String,
        /// Levels to total.
        depth: usize,
    },
    /// Batteries from `/sys/class/power_supply`.
    Battery,
    /// The clock and the time zone.
    Clock,
    /// Delete old regular files in the temp dirs.
    ClearTemp {
        /// Older than this many days.
        days: u64,
        /// The temp dirs, relative to the system root.
        dirs: Vec<&'static str>,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a program.
    Program {
        /// The program (found on the search path) and its arguments.
        argv: Vec<String>,
        /// When the program is missing, say so and go on, instead of
        /// failing the diagnostic.
        optional: bool,
        /// What to do with its output.
        post: Post,
    },
    /// Do it in Rust.
    Native(Native),
}

fn program(argv: &[&str]) -> Step {
    Step::Program {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        optional: false,
        post: Post::Raw,
    }
}

fn with_post(step: Step, new: Post) -> Step {
    match step {
        Step::Program { argv, optional, .. } => Step::Program {
            argv,
            optional,
            post: new,
        },
        native => native,
    }
}

fn optional(step: Step) -> Step {
    match step {
        Step::Program { argv, post, .. } => Step::Program {
            argv,
            optional: true,
            post,
        },
        native => native,
    }
}

fn or_default(value: u32, default: u32) -> u32 {
    if value == 0 { default } else { value }
}

/// The interfaces `renew_dhcp` acts on: the one given, or every interface
/// under `sys/class/net` that is up, except loopback.
pub fn dhcp_interfaces(root: &Path, given: &str) -> Vec<String> {
    if !given.is_empty() {
        return vec![given.to_owned()];
    }
    let net = root.join("sys/class/net");
    let mut names: Vec<String> = std::fs::read_dir(&net)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .filter(|n| {
                    std::fs::read_to_string(net.join(n).join("operstate"))
                        .is_ok_and(|s| s.trim() == "up")
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The DHCP renewal on Linux, with the first tool that applies:
/// systemd-networkd's `networkctl renew` when networkd manages links
/// (`run/systemd/netif/links` exists), else NetworkManager's `nmcli device
/// reapply`, else ISC `dhclient -r` then `dhclient -1`.
pub fn linux_dhcp(
    root: &Path,
    interfaces: &[String],
    available: &dyn Fn(&str) -> bool,
) -> Result<Vec<Step>, String> {
    if interfaces.is_empty() {
        return Err("no network interface is up to renew".into());
    }
    let refs: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    if available("networkctl") && root.join("run/systemd/netif/links").is_dir() {
        let mut argv = vec!["networkctl", "renew", "--"];
        argv.extend(&refs);
        return Ok(vec![program(&argv)]);
    }
    if available("nmcli") {
        return Ok(refs
            .iter()
            .map(|i| program(&["nmcli", "device", "reapply", i]))
            .collect());
    }
    if available("dhclient") {
        return Ok(refs
            .iter()
            .flat_map(|i| {
                [
                    program(&["dhclient", "-r", i]),
                    program(&["dhclient", "-1", i]),
                ]
            })
            .collect());
    }
    Err("no DHCP client to ask: networkd (networkctl), NetworkManager (nmcli) or dhclient".into())
}

/// The plan of a checked request on `platform`. `available` says whether a
/// program is installed; `root` is the system root (D13). An error is one
/// line: the diagnostic cannot run here.
pub fn plan(
    params: &DiagnosticParams,
    platform: Platform,
    root: &Path,
    available: &dyn Fn(&str) -> bool,
) -> Result<Vec<Step>, String> {
    let kind = params.kind.as_ref().ok_or("no diagnostic given")?;
    // Native steps are the same everywhere they exist.
    let native = |n: Native| Ok(vec![Step::Native(n)]);
    match kind {
        Kind::DnsLookup(p) => {
            return native(Native::DnsLookup {
                name: p.name.clone(),
                record_type: p.record_type.clone(),
                server: p.server.clone(),
                port: u16::try_from(or_default(p.server_port, 53)).unwrap_or(53),
            });
        }
        Kind::TcpConnect(p) => {
            return native(Native::TcpConnect {
                host: p.host.clone(),
                port: u16::try_from(p.port).unwrap_or(0),
            });
        }
        Kind::HttpCheck(p) => return native(Native::HttpCheck { url: p.url.clone() }),
        Kind::DiskUsage(p) => {
            return native(Native::DiskUsage {
                path: p.path.clone(),
                depth: or_default(p.depth, 1) as usize,
            });
        }
        _ => {}
    }
    match platform {
        Platform::Linux => linux(kind, root, available),
        Platform::Windows => windows(kind, available),
        Platform::Macos => macos(kind, available),
    }
}

fn linux(kind: &Kind, root: &Path, available: &dyn Fn(&str) -> bool) -> Result<Vec<Step>, String> {
    let steps = match kind {
        Kind::Ping(p) => {
            let count = or_default(p.count, 4).to_string();
            vec![program(&[
                "ping", "-n", "-c", &count, "-W", "2", "--", &p.host,
            ])]
        }
        Kind::Traceroute(p) => {
            let hops = or_default(p.max_hops, 20).to_string();
            vec![program(&["tracepath", "-n", "-m", &hops, "--", &p.host])]
        }
        Kind::NetworkConfig(_) => vec![Step::Native(Native::NetworkConfig)],
        Kind::ListeningPorts(_) => vec![Step::Native(Native::ListeningPorts)],
        Kind::TopProcesses(p) => vec![Step::Native(Native::TopProcesses {
            count: or_default(p.count, 10) as usize,
            by_memory: p.sort_by == "memory",
        })],
        Kind::ServiceStatus(p) => vec![
            with_post(
                program(&["systemctl", "status", "--no-pager", "--", &p.service]),
                Post::Summary(Summary::SystemctlStatus),
            ),
            optional(program(&[
                "journalctl",
                &format!("--unit={}", p.service),
                "-n",
                "20",
                "--no-pager",
            ])),
        ],
        Kind::LogErrors(p) => {
            let count = or_default(p.count, 50);
            let hours = or_default(p.hours, 24);
            // With a filter, read more lines than asked for: the filter
            // runs here, after journalctl.
            let read = if p.filter.is_empty() { count } else { 10_000 }.to_string();
            vec![with_post(
                program(&[
                    "journalctl",
                    "-p",
                    "err",
                    "-n",
                    &read,
                    &format!("--since=-{hours}h"),
                    "--no-pager",
                    "-o",
                    "short-iso",
                ]),
                Post::LogFilter {
                    filter: p.filter.clone(),
                    count: count as usize,
                },
            )]
        }
        Kind::PendingUpdates(_) => {
            if available("apt") {
                vec![program(&["apt", "list", "--upgradable"])]
            } else if available("dnf") {
                vec![program(&["dnf", "-q", "check-update"])]
            } else if available("zypper") {
                vec![program(&["zypper", "--non-interactive", "list-updates"])]
            } else if available("pacman") {
                vec![program(&["pacman", "-Qu"])]
            } else {
                return Err("no supported package manager (apt, dnf, zypper, pacman)".into());
            }
        }
        Kind::SmartReport(p) => {
            let devices = if p.device.is_empty() {
                crate::collect::health::smart_devices(root)
            } else {
                vec![p.device.clone()]
            };
            if devices.is_empty() {
                return Err("no whole disks under sys/block to ask smartctl about".into());
            }
            devices
                .iter()
                .map(|d| {
                    with_post(
                        program(&["smartctl", "-a", "-j", d]),
                        Post::Summary(Summary::Smart),
                    )
                })
                .collect()
        }
        Kind::BatteryReport(_) => vec![Step::Native(Native::Battery)],
        Kind::ClockStatus(_) => {
            let mut steps = Vec::new();
            if available("timedatectl") {
                steps.push(with_post(
                    program(&["timedatectl", "status"]),
                    Post::Summary(Summary::Timedatectl),
                ));
            }
            if available("chronyc") {
                steps.push(with_post(
                    program(&["chronyc", "tracking"]),
                    Post::Summary(Summary::Chronyc),
                ));
            }
            steps.push(Step::Native(Native::Clock));
            steps
        }
        Kind::RestartService(p) => vec![
            program(&["systemctl", "restart", "--", &p.service]),
            optional(program(&["systemctl", "is-active", "--", &p.service])),
        ],
        Kind::FlushDns(_) => {
            if available("resolvectl") {
                vec![program(&["resolvectl", "flush-caches"])]
            } else if available("nscd") {
                vec![program(&["nscd", "--invalidate=hosts"])]
            } else {
                return Err(
                    "no DNS cache to flush: neither resolvectl (systemd-resolved) nor nscd is installed"
                        .into(),
                );
            }
        }
        Kind::ClearTemp(p) => vec![Step::Native(Native::ClearTemp {
            days: u64::from(or_default(p.older_than_days, 7)),
            dirs: vec!["tmp", "var/tmp"],
        })],
        Kind::RenewDhcp(p) => linux_dhcp(root, &dhcp_interfaces(root, &p.interface), available)?,
        Kind::DnsLookup(_) | Kind::TcpConnect(_) | Kind::HttpCheck(_) | Kind::DiskUsage(_) => {
            unreachable_native()
        }
    };
    Ok(steps)
}

/// The portable native kinds are planned in [`plan`] before the platform
/// split, so the platform functions never see them; this only satisfies
/// the exhaustive match.
fn unreachable_native() -> Vec<Step> {
    Vec::new()
}

/// A PowerShell step: the script is fixed text with only numbers and
/// checked names (`[A-Za-z0-9@._-]`, so no quote can end the string) put
/// in; it is one argv element, not a command line for a shell.
fn powershell(script: &str) -> Step {
    program(&[
        "powershell.exe",
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        script,
    ])
}

/// Windows: built-in tools and PowerShell cmdlets. Not run on our machines.
fn windows(kind: &Kind, available: &dyn Fn(&str) -> bool) -> Result<Vec<Step>, String> {
    let steps = match kind {
        Kind::Ping(p) => {
            let count = or_default(p.count, 4).to_string();
            vec![program(&["ping.exe", "-n", &count, "-w", "2000", &p.host])]
        }
        Kind::Traceroute(p) => {
            let hops = or_default(p.max_hops, 20).to_string();
            vec![program(&["tracert.exe", "-d", "-h", &hops, &p.host])]
        }
        Kind::NetworkConfig(_) => vec![
            program(&["ipconfig.exe", "/all"]),
            program(&["route.exe", "print"]),
        ],
        Kind::ListeningPorts(_) => vec![program(&["netstat.exe", "-ano"])],
        Kind::TopProcesses(p) => {
            let count = or_default(p.count, 10);
            let key = if p.sort_by == "memory" {
                "WorkingSet64"
            } else {
                "CPU"
            };
            vec![powershell(&format!(
                "Get-Process | Sort-Object {key} -Descending | Select-Object -First {count} Id,ProcessName,CPU,WorkingSet64 | Format-Table -AutoSize"
            ))]
        }
        Kind::ServiceStatus(p) => vec![
            program(&["sc.exe", "queryex", &p.service]),
            program(&["sc.exe", "qc", &p.service]),
        ],
        Kind::LogErrors(p) => {
            let count = or_default(p.count, 50);
            let hours = or_default(p.hours, 24);
            let read = if p.filter.is_empty() { count } else { 2000 };
            vec![with_post(
                powershell(&format!(
                    "Get-WinEvent -FilterHashtable @{{LogName='System','Application'; Level=1,2; StartTime=(Get-Date).AddHours(-{hours})}} -MaxEvents {read} -ErrorAction SilentlyContinue | Sort-Object TimeCreated | ForEach-Object {{ '{{0:s}} {{1}} {{2}}: {{3}}' -f $_.TimeCreated, $_.ProviderName, $_.Id, ($_.Message -replace '\\s+', ' ') }}"
                )),
                Post::LogFilter {
                    filter: p.filter.clone(),
                    count: count as usize,
                },
            )]
        }
        Kind::PendingUpdates(_) => vec![powershell(
            "(New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher().Search('IsInstalled=0 and IsHidden=0').Updates | ForEach-Object { $_.Title }",
        )],
        Kind::SmartReport(p) => {
            if available("smartctl.exe") {
                let device = if p.device.is_empty() {
                    "/dev/sda"
                } else {
                    &p.device
                };
                vec![with_post(
                    program(&["smartctl.exe", "-a", "-j", device]),
                    Post::Summary(Summary::Smart),
                )]
            } else {
                vec![powershell(
                    "Get-PhysicalDisk | ForEach-Object { $_ | Format-List FriendlyName,SerialNumber,MediaType,HealthStatus,OperationalStatus; $_ | Get-StorageReliabilityCounter | Format-List Temperature,Wear,ReadErrorsTotal,WriteErrorsTotal,PowerOnHours }",
                )]
            }
        }
        Kind::BatteryReport(_) => vec![powershell(
            "Get-CimInstance Win32_Battery | Format-List Name,EstimatedChargeRemaining,BatteryStatus,DesignCapacity,FullChargeCapacity",
        )],
        Kind::ClockStatus(_) => vec![
            program(&["w32tm.exe", "/query", "/status"]),
            Step::Native(Native::Clock),
        ],
        Kind::RestartService(p) => vec![powershell(&format!(
            "Restart-Service -Name '{}' -Force -PassThru | Format-List Name,Status",
            p.service
        ))],
        Kind::FlushDns(_) => vec![program(&["ipconfig.exe", "/flushdns"])],
        Kind::ClearTemp(_) => {
            return Err("clear_temp is not supported on Windows yet".into());
        }
        Kind::RenewDhcp(p) => {
            if p.interface.is_empty() {
                vec![program(&["ipconfig.exe", "/renew"])]
            } else {
                vec![program(&["ipconfig.exe", "/renew", &p.interface])]
            }
        }
        Kind::DnsLookup(_) | Kind::TcpConnect(_) | Kind::HttpCheck(_) | Kind::DiskUsage(_) => {
            unreachable_native()
        }
    };
    Ok(steps)
}

/// macOS: BSD tools and Apple's own. Not run on our machines.
fn macos(kind: &Kind, available: &dyn Fn(&str) -> bool) -> Result<Vec<Step>, String> {
    let steps = match kind {
        Kind::Ping(p) => {
            let count = or_default(p.count, 4).to_string();
            vec![program(&[
                "/sbin/ping",
                "-n",
                "-c",
                &count,
                "-W",
                "2000",
                "--",
                &p.host,
            ])]
        }
        Kind::Traceroute(p) => {
            let hops = or_default(p.max_hops, 20).to_string();
            vec![program(&[
                "/usr/sbin/traceroute",
                "-n",
                "-m",
                &hops,
                "--",
                &p.host,
            ])]
        }
        Kind::NetworkConfig(_) => vec![
            program(&["/sbin/ifconfig"]),
            program(&["/usr/sbin/netstat", "-rn"]),
            program(&["/usr/sbin/scutil", "--dns"]),
        ],
        Kind::ListeningPorts(_) => vec![
            program(&["/usr/sbin/lsof", "-nP", "-iTCP", "-sTCP:LISTEN"]),
            program(&["/usr/sbin/lsof", "-nP", "-iUDP"]),
        ],
        Kind::TopProcesses(p) => {
            let order = if p.sort_by == "memory" { "-m" } else { "-r" };
            vec![with_post(
                program(&["/bin/ps", "-Ao", "pid,pcpu,rss,comm", order]),
                Post::Head(or_default(p.count, 10) as usize + 1),
            )]
        }
        Kind::ServiceStatus(p) => vec![program(&[
            "/bin/launchctl",
            "print",
            &format!("system/{}", p.service),
        ])],
        Kind::LogErrors(p) => {
            let count = or_default(p.count, 50);
            let hours = or_default(p.hours, 24);
            vec![with_post(
                program(&[
                    "/usr/bin/log",
                    "show",
                    "--style",
                    "compact",
                    "--predicate",
                    "messageType == error",
                    "--last",
                    &format!("{hours}h"),
                ]),
                Post::LogFilter {
                    filter: p.filter.clone(),
                    count: count as usize,
                },
            )]
        }
        Kind::PendingUpdates(_) => vec![program(&["/usr/sbin/softwareupdate", "-l"])],
        Kind::SmartReport(p) => {
            if available("smartctl") {
                let device = if p.device.is_empty() {
                    "/dev/disk0"
                } else {
                    &p.device
                };
                vec![with_post(
                    program(&["smartctl", "-a", "-j", device]),
                    Post::Summary(Summary::Smart),
                )]
            } else {
                vec![program(&["/usr/sbin/diskutil", "info", "-all"])]
            }
        }
        Kind::BatteryReport(_) => vec![
            program(&["/usr/bin/pmset", "-g", "batt"]),
            program(&["/usr/sbin/system_profiler", "SPPowerDataType"]),
        ],
        Kind::ClockStatus(_) => vec![
            optional(program(&["/usr/sbin/systemsetup", "-getusingnetworktime"])),
            optional(program(&["/usr/sbin/systemsetup", "-getnetworktimeserver"])),
            Step::Native(Native::Clock),
        ],
        Kind::RestartService(p) => vec![program(&[
            "/bin/launchctl",
            "kickstart",
            "-k",
            &format!("system/{}", p.service),
        ])],
        Kind::FlushDns(_) => vec![
            program(&["/usr/bin/dscacheutil", "-flushcache"]),
            program(&["/usr/bin/killall", "-HUP", "mDNSResponder"]),
        ],
        // /tmp is a link to /private/tmp on macOS, and links are not
        // followed.
        Kind::ClearTemp(p) => vec![Step::Native(Native::ClearTemp {
            days: u64::from(or_default(p.older_than_days, 7)),
            dirs: vec!["private/tmp", "private/var/tmp"],
        })],
        Kind::RenewDhcp(p) => {
            let interface = if p.interface.is_empty() {
                "en0"
            } else {
                &p.interface
            };
            vec![program(&["/usr/sbin/ipconfig", "set", interface, "DHCP"])]
        }
        Kind::DnsLookup(_) | Kind::TcpConnect(_) | Kind::HttpCheck(_) | Kind::DiskUsage(_) => {
            unreachable_native()
        }
    };
    Ok(steps)
}
