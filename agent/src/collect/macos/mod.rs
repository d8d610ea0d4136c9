//! macOS hardware, OS details, users, security posture and services.
//!
//! Files first (D13: all under the system root): local accounts and the
//! admin group from the local directory's plists, the firewall, last user
//! and update count from preference plists, XProtect's bundle, launchd job
//! plists. Hardware comes from one `system_profiler -json` run, battery
//! capacities from `ioreg`, FileVault from `fdesetup status` and job states
//! from `launchctl list`: no file holds those. Every parser here is plain
//! code tested on Linux with fixtures; the adapter that spawns the programs
//! is not compiled on our machines.

use std::path::Path;

use deskpulse_proto::v1::{
    Antivirus, Battery, BatteryInfo, Disk, DiskKind, Gpu, GpuInfo, Inventory, LocalUser,
    MemoryModule, NetworkInfo, NetworkInterface, ProtectionState, SecurityInfo, Service,
    SystemInfo, UnavailableReason, UsersInfo, VolumeEncryption,
};
use serde_json::Value;

use super::hardware::parse;
use super::packages::windows::one_or_many;
use super::unavailable;

/// The `system_profiler` data types [`apply_system_profiler`] reads.
pub const PROFILER_TYPES: &[&str] = &[
    "SPHardwareDataType",
    "SPSoftwareDataType",
    "SPMemoryDataType",
    "SPNVMeDataType",
    "SPSerialATADataType",
    "SPDisplaysDataType",
    "SPNetworkDataType",
];

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// The `_items` of every entry of one data type (controllers hold disks,
/// slots hold modules).
fn items<'a>(doc: &'a Value, data_type: &str) -> Vec<&'a Value> {
    one_or_many(&doc[data_type])
        .into_iter()
        .flat_map(|entry| one_or_many(&entry["_items"]))
        .collect()
}

/// "16 GB", "500.28 GB", "512 MB" → bytes (binary units, as Apple's
/// memory sizes are).
pub fn size_bytes(text: &str) -> u64 {
    let mut parts = text.split_whitespace();
    let Some(number) = parts.next().and_then(|n| n.parse::<f64>().ok()) else {
        return 0;
    };
    let unit: u64 = match parts.next().unwrap_or("") {
        "TB" => 1 << 40,
        "GB" => 1 << 30,
        "MB" => 1 << 20,
        "KB" => 1 << 10,
        _ => 1,
    };
    (number * unit as f64) as u64
}

/// "2400 MHz" or "6400 MT/s" → 2400 / 6400.
fn speed(text: &str) -> u32 {
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// "macOS 14.1 (23B74)" → ("macOS", "14.1", "23B74").
pub fn os_version(text: &str) -> (String, String, String) {
    let (main, build) = match text.split_once(" (") {
        Some((main, rest)) => (main, rest.trim_end_matches(')')),
        None => (text, ""),
    };
    let (name, version) = main.rsplit_once(' ').unwrap_or((main, ""));
    (name.to_owned(), version.to_owned(), build.to_owned())
}

/// Fills system, memory modules, disks, GPUs, network and OS details from
/// `system_profiler -json` output.
pub fn apply_system_profiler(json: &str, inv: &mut Inventory) -> Result<(), String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("system_profiler output is not JSON: {e}"))?;
    if !doc.is_object() {
        return Err("system_profiler output is not a JSON object".into());
    }
    let hw = one_or_many(&doc["SPHardwareDataType"])
        .first()
        .copied()
        .cloned()
        .unwrap_or_default();
    if hw.is_null() {
        unavailable(
            inv,
            "system",
            UnavailableReason::Failed,
            "system_profiler returned no SPHardwareDataType",
        );
    }
    let serial = text(&hw["serial_number"]);
    inv.system = Some(SystemInfo {
        vendor: if hw.is_null() {
            String::new()
        } else {
            "Apple Inc.".into()
        },
        model: [text(&hw["machine_name"]), text(&hw["machine_model"])]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        serial: if parse::is_placeholder(&serial) {
            String::new()
        } else {
            serial
        },
        hardware_uuid: text(&hw["platform_UUID"]).to_ascii_lowercase(),
        chassis_type: if text(&hw["machine_name"]).contains("Book") {
            "notebook".into()
        } else if hw.is_null() {
            String::new()
        } else {
            "desktop".into()
        },
        bios_vendor: if hw.is_null() {
            String::new()
        } else {
            "Apple Inc.".into()
        },
        bios_version: text(&hw["boot_rom_version"]),
        ..SystemInfo::default()
    });
    let memory = inv.memory.get_or_insert_with(Default::default);
    if memory.total_bytes == 0 {
        memory.total_bytes = size_bytes(&text(&hw["physical_memory"]));
    }
    memory.modules = memory_modules(&doc);
    inv.storage.get_or_insert_with(Default::default).disks = disks(&doc);
    inv.gpu = Some(GpuInfo {
        gpus: one_or_many(&doc["SPDisplaysDataType"])
            .into_iter()
            .map(|g| Gpu {
                vendor: text(&g["spdisplays_vendor"])
                    .trim_start_matches("sppci_vendor_")
                    .to_owned(),
                model: text(&g["sppci_model"]),
                driver: String::new(),
            })
            .collect(),
    });
    inv.network = Some(network(&doc));
    let software = one_or_many(&doc["SPSoftwareDataType"])
        .first()
        .copied()
        .cloned()
        .unwrap_or_default();
    let os = inv.os.get_or_insert_with(Default::default);
    let (name, version, build) = os_version(&text(&software["os_version"]));
    if !name.is_empty() {
        os.name = name;
        os.version = version;
        os.build = build;
    }
    Ok(())
}

fn memory_modules(doc: &Value) -> Vec<MemoryModule> {
    let slots = items(doc, "SPMemoryDataType");
    if !slots.is_empty() {
        return slots
            .into_iter()
            .filter(|m| !text(&m["dimm_size"]).eq_ignore_ascii_case("empty"))
            .map(|m| MemoryModule {
                slot: text(&m["_name"]),
                size_bytes: size_bytes(&text(&m["dimm_size"])),
                memory_type: text(&m["dimm_type"]),
                speed_mts: speed(&text(&m["dimm_speed"])),
                manufacturer: text(&m["dimm_manufacturer"]),
                part_number: text(&m["dimm_part_number"]),
                serial: Some(text(&m["dimm_serial_number"]))
                    .filter(|s| !parse::is_placeholder(s) && s != "0x00000000")
                    .unwrap_or_default(),
            })
            .collect();
    }
    // Apple silicon: unified memory on the package, one entry, no slots.
    one_or_many(&doc["SPMemoryDataType"])
        .into_iter()
        .filter(|m| m["SPMemoryDataType"].is_string())
        .map(|m| MemoryModule {
            slot: "unified".into(),
            size_bytes: size_bytes(&text(&m["SPMemoryDataType"])),
            memory_type: text(&m["dimm_type"]),
            manufacturer: text(&m["dimm_manufacturer"]),
            ..MemoryModule::default()
        })
        .collect()
}

fn disks(doc: &Value) -> Vec<Disk> {
    let nvme = items(doc, "SPNVMeDataType").into_iter().map(|d| (d, true));
    let sata = items(doc, "SPSerialATADataType")
        .into_iter()
        .map(|d| (d, false));
    nvme.chain(sata)
        .map(|(d, is_nvme)| {
            let medium = text(&d["spsata_medium_type"]).to_ascii_lowercase();
            let kind = if is_nvme {
                DiskKind::Nvme
            } else if medium.contains("solid") {
                DiskKind::Ssd
            } else if medium.contains("rotational") {
                DiskKind::Hdd
            } else {
                DiskKind::Unspecified
            };
            let yes = |key: &str| text(&d[key]).eq_ignore_ascii_case("yes");
            Disk {
                name: text(&d["bsd_name"]),
                model: [text(&d["device_model"]), text(&d["_name"])]
                    .into_iter()
                    .find(|m| !m.is_empty())
                    .unwrap_or_default(),
                serial: text(&d["device_serial"]),
                size_bytes: d["size_in_bytes"].as_u64().unwrap_or(0),
                kind: kind as i32,
                removable: yes("removable_media") || yes("detachable_drive"),
            }
        })
        .collect()
}

fn network(doc: &Value) -> NetworkInfo {
    let mut info = NetworkInfo::default();
    for service in one_or_many(&doc["SPNetworkDataType"]) {
        let name = text(&service["interface"]);
        if name.is_empty() {
            continue;
        }
        let ipv4 = one_or_many(&service["IPv4"]["Addresses"])
            .into_iter()
            .map(text)
            .collect::<Vec<_>>();
        let ipv6 = one_or_many(&service["IPv6"]["Addresses"])
            .into_iter()
            .map(text)
            .collect::<Vec<_>>();
        for gateway in [&service["IPv4"]["Router"], &service["IPv6"]["Router"]] {
            let gateway = text(gateway);
            if !gateway.is_empty() && !info.default_gateways.contains(&gateway) {
                info.default_gateways.push(gateway);
            }
        }
        for dns in one_or_many(&service["DNS"]["ServerAddresses"]) {
            let dns = text(dns);
            if !dns.is_empty() && !info.dns_servers.contains(&dns) {
                info.dns_servers.push(dns);
            }
        }
        info.interfaces.push(NetworkInterface {
            up: !ipv4.is_empty() || !ipv6.is_empty(),
            name,
            mac: text(&service["Ethernet"]["MAC Address"]).to_ascii_lowercase(),
            ipv4,
            ipv6,
            speed_mbps: 0,
            wireless: text(&service["type"]) == "AirPort",
        });
    }
    info
}

/// Batteries from `ioreg -a -r -c AppleSmartBattery` (a plist array).
/// Capacities are in mAh there; the design voltage turns them into mWh.
pub fn batteries(ioreg_plist: &[u8]) -> Result<BatteryInfo, String> {
    let value = plist::Value::from_reader(std::io::Cursor::new(ioreg_plist))
        .map_err(|e| format!("ioreg output is not a plist: {e}"))?;
    let entries = value.as_array().map(Vec::as_slice).unwrap_or_default();
    let batteries = entries
        .iter()
        .filter_map(plist::Value::as_dictionary)
        .map(|d| {
            let int = |key: &str| {
                d.get(key)
                    .and_then(plist::Value::as_unsigned_integer)
                    .filter(|v| *v > 0)
            };
            let string = |key: &str| {
                d.get(key)
                    .and_then(plist::Value::as_string)
                    .unwrap_or_default()
                    .to_owned()
            };
            // Apple silicon reports MaxCapacity as a percentage and the real
            // figure as AppleRawMaxCapacity; Intel Macs give mAh in both.
            let full = int("AppleRawMaxCapacity").or_else(|| int("MaxCapacity"));
            let millivolts = int("DesignVoltage").or_else(|| int("Voltage"));
            let counters = parse::BatteryCounters {
                charge_full_design_uah: int("DesignCapacity").map(|c| c * 1000),
                charge_full_uah: full.map(|c| c * 1000),
                voltage_min_design_uv: millivolts.map(|mv| mv * 1000),
                cycle_count: int("CycleCount"),
                ..parse::BatteryCounters::default()
            };
            let model = string("DeviceName");
            parse::battery("InternalBattery-0", string("Manufacturer"), model, counters)
        })
        .collect::<Vec<Battery>>();
    Ok(BatteryInfo { batteries })
}

/// "FileVault is On." / "FileVault is Off." from `fdesetup status`.
pub fn filevault(status: &str) -> Option<bool> {
    let first = status.lines().next()?.trim();
    match first.strip_prefix("FileVault is ")?.trim_end_matches('.') {
        "On" => Some(true),
        "Off" => Some(false),
        _ => None,
    }
}

/// `launchctl list`: "PID\tStatus\tLabel" lines; a number in the PID column
/// means the job is running.
pub fn launchctl_running(list: &str) -> std::collections::HashSet<String> {
    list.lines()
        .skip_while(|l| l.starts_with("PID"))
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let pid = cols.next()?;
            let label = cols.nth(1)?;
            pid.trim().parse::<u32>().ok().map(|_| label.to_owned())
        })
        .collect()
}

fn read_plist(path: &Path) -> Option<plist::Dictionary> {
    plist::Value::from_file(path).ok()?.into_dictionary()
}

/// The first string of a local-directory attribute (they are all arrays).
fn attribute(dict: &plist::Dictionary, key: &str) -> String {
    dict.get(key)
        .and_then(plist::Value::as_array)
        .and_then(|a| a.first())
        .and_then(plist::Value::as_string)
        .unwrap_or_default()
        .to_owned()
}

/// Local accounts from `var/db/dslocal/nodes/Default`: people have uid ≥ 500
/// and names without the leading underscore of system accounts.
pub fn local_users(root: &Path) -> Result<Vec<LocalUser>, std::io::Error> {
    let node = root.join("var/db/dslocal/nodes/Default");
    let admins: Vec<String> = read_plist(&node.join("groups/admin.plist"))
        .and_then(|g| g.get("users").and_then(plist::Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_string().map(str::to_owned))
        .collect();
    let mut users: Vec<LocalUser> = std::fs::read_dir(node.join("users"))?
        .flatten()
        .filter_map(|entry| read_plist(&entry.path()))
        .filter_map(|d| {
            let name = attribute(&d, "name");
            let uid: u32 = attribute(&d, "uid").parse().ok()?;
            if uid < 500 || name.starts_with('_') || name.is_empty() {
                return None;
            }
            let disabled = d
                .get("authentication_authority")
                .and_then(plist::Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .filter_map(plist::Value::as_string)
                        .any(|s| s.contains(";DisabledUser;"))
                });
            Some(LocalUser {
                admin: admins.contains(&name),
                full_name: attribute(&d, "realname"),
                id: uid.to_string(),
                disabled,
                name,
            })
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// Fills users (accounts, console user, last user), security posture from
/// files and the given FileVault answer, OS install date and time zone, and
/// launchd services whose run states come from `running`.
pub fn apply_files(
    root: &Path,
    inv: &mut Inventory,
    filevault_on: Result<bool, String>,
    running: Option<&std::collections::HashSet<String>>,
    now_unix_s: i64,
) {
    let users = match local_users(root) {
        Ok(users) => users,
        Err(error) => {
            unavailable(
                inv,
                "users",
                super::reason_for(&error),
                format!("var/db/dslocal/nodes/Default/users: {error}"),
            );
            Vec::new()
        }
    };
    let console = console_user(root, &users);
    let login_window = read_plist(&root.join("Library/Preferences/com.apple.loginwindow.plist"));
    inv.users = Some(UsersInfo {
        users,
        sessions: console.into_iter().collect(),
        last_login_user: login_window
            .as_ref()
            .and_then(|d| d.get("lastUserName"))
            .and_then(plist::Value::as_string)
            .unwrap_or_default()
            .to_owned(),
        last_login_unix_s: 0,
    });

    let os = inv.os.get_or_insert_with(Default::default);
    if let Some(installed) = super::host::mtime_unix_s(&root.join("var/db/.AppleSetupDone")) {
        os.install_date_unix_s = installed;
    }
    if let Ok(target) = std::fs::read_link(root.join("etc/localtime")) {
        os.timezone = super::host::zone_from_link(&target.to_string_lossy()).unwrap_or_default();
    }

    let security = security(root, inv, filevault_on, now_unix_s);
    inv.security = Some(security);
    inv.services = Some(deskpulse_proto::v1::ServicesInfo {
        services: launchd_services(root, running),
    });
    if running.is_none() {
        unavailable(
            inv,
            "services.state",
            UnavailableReason::Failed,
            "launchctl list gave no answer, so run states are not known",
        );
    }
}

/// Who owns the console: the user at the Mac's screen.
#[cfg(unix)]
fn console_user(root: &Path, users: &[LocalUser]) -> Option<deskpulse_proto::v1::UserSession> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.join("dev/console")).ok()?;
    let uid = meta.uid().to_string();
    let user = users.iter().find(|u| u.id == uid)?;
    Some(deskpulse_proto::v1::UserSession {
        user: user.name.clone(),
        terminal: "console".into(),
        host: String::new(),
        started_unix_s: meta.mtime(),
    })
}

/// The console's owner is a Unix file owner; the fixture tests of this
/// module also run in the Windows build, where no such owner exists.
#[cfg(not(unix))]
fn console_user(_: &Path, _: &[LocalUser]) -> Option<deskpulse_proto::v1::UserSession> {
    None
}

fn security(
    root: &Path,
    inv: &mut Inventory,
    filevault_on: Result<bool, String>,
    now_unix_s: i64,
) -> SecurityInfo {
    let prefs = root.join("Library/Preferences");
    // globalstate: 0 off, 1 on for specific services, 2 essential only.
    let firewall = match read_plist(&prefs.join("com.apple.alf.plist")).and_then(|d| {
        d.get("globalstate")
            .and_then(plist::Value::as_unsigned_integer)
    }) {
        Some(0) => ProtectionState::Off,
        Some(_) => ProtectionState::On,
        None => {
            unavailable(
                inv,
                "security.firewall",
                UnavailableReason::NotPresent,
                "Library/Preferences/com.apple.alf.plist has no globalstate",
            );
            ProtectionState::Unspecified
        }
    };
    let encryption = match filevault_on {
        Ok(on) => vec![VolumeEncryption {
            volume: "/".into(),
            method: "FileVault".into(),
            encrypted: on,
        }],
        Err(error) => {
            unavailable(inv, "security.encryption", UnavailableReason::Failed, error);
            Vec::new()
        }
    };
    // XProtect is built in and always on; its definitions count as current
    // when Apple updated the bundle in the last 30 days.
    let xprotect = root.join("Library/Apple/System/Library/CoreServices/XProtect.bundle");
    let antivirus = read_plist(&xprotect.join("Contents/Info.plist"))
        .map(|d| {
            let version = d
                .get("CFBundleShortVersionString")
                .and_then(plist::Value::as_string)
                .unwrap_or_default();
            let updated = super::host::mtime_unix_s(&xprotect.join("Contents/Info.plist"));
            Antivirus {
                product: format!("XProtect {version}").trim().to_owned(),
                state: ProtectionState::On as i32,
                up_to_date: updated.is_some_and(|t| now_unix_s - t < 30 * 86_400),
            }
        })
        .into_iter()
        .collect::<Vec<_>>();
    if antivirus.is_empty() {
        unavailable(
            inv,
            "security.antivirus",
            UnavailableReason::NotPresent,
            "XProtect's bundle is missing",
        );
    }
    let pending_updates = read_plist(&prefs.join("com.apple.SoftwareUpdate.plist")).and_then(|d| {
        d.get("LastRecommendedUpdatesAvailable")
            .and_then(plist::Value::as_unsigned_integer)
    });
    if pending_updates.is_none() {
        unavailable(
            inv,
            "security.pending_updates",
            UnavailableReason::NotPresent,
            "Software Update has not recorded a check",
        );
    }
    unavailable(
        inv,
        "security.reboot_pending",
        UnavailableReason::NotSupported,
        "macOS keeps no pending-reboot flag",
    );
    SecurityInfo {
        firewall: firewall as i32,
        firewall_product: "macOS Application Firewall".into(),
        encryption,
        antivirus,
        reboot_pending: false,
        pending_updates: pending_updates.and_then(|n| u32::try_from(n).ok()),
    }
}

/// launchd jobs from their plists: system daemons, third-party daemons and
/// agents. A job that runs at load or is kept alive starts automatically.
pub fn launchd_services(
    root: &Path,
    running: Option<&std::collections::HashSet<String>>,
) -> Vec<Service> {
    let mut services = Vec::new();
    for dir in [
        "System/Library/LaunchDaemons",
        "Library/LaunchDaemons",
        "Library/LaunchAgents",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut found: Vec<Service> = entries
            .flatten()
            .filter_map(|e| read_plist(&e.path()))
            .filter_map(|d| {
                let label = d.get("Label")?.as_string()?.to_owned();
                let yes = |key: &str| {
                    d.get(key).is_some_and(|v| {
                        v.as_boolean().unwrap_or(false) || v.as_dictionary().is_some()
                    })
                };
                let start_mode = if yes("Disabled") {
                    "disabled"
                } else if yes("RunAtLoad") || yes("KeepAlive") {
                    "auto"
                } else {
                    "on-demand"
                };
                let state = match running {
                    Some(set) if set.contains(&label) => "running",
                    Some(_) => "stopped",
                    None => "",
                };
                Some(Service {
                    display_name: String::new(),
                    name: label,
                    state: state.into(),
                    start_mode: start_mode.into(),
                })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        services.extend(found);
    }
    services
}

#[cfg(target_os = "macos")]
pub use adapter::{collect, security_now};

/// The thin adapter: spawn the programs, then apply their output and the
/// files under the root.
#[cfg(target_os = "macos")]
mod adapter {
    use std::path::Path;
    use std::time::Duration;

    use deskpulse_proto::v1::{Inventory, UnavailableReason};

    use crate::collect::{spawn, unavailable};

    const TIMEOUT: Duration = Duration::from_secs(60);

    pub fn collect(root: &Path, inv: &mut Inventory) {
        let mut args = vec!["-json"];
        args.extend_from_slice(super::PROFILER_TYPES);
        let profiled = spawn::output("/usr/sbin/system_profiler", &args, TIMEOUT)
            .and_then(|out| super::apply_system_profiler(&String::from_utf8_lossy(&out), inv));
        if let Err(error) = profiled {
            unavailable(inv, "hardware", UnavailableReason::Failed, error);
        }
        let refresh = sysinfo::RefreshKind::nothing()
            .with_cpu(sysinfo::CpuRefreshKind::nothing().with_frequency());
        if let Ok(cpu) = sysinfo::System::new_with_specifics(refresh)
            && let Some(first) = cpu.cpus().first()
        {
            inv.cpu = Some(deskpulse_proto::v1::CpuInfo {
                model: first.brand().to_owned(),
                vendor: first.vendor_id().to_owned(),
                logical_cores: u32::try_from(cpu.cpus().len()).unwrap_or(0),
                physical_cores: sysinfo::System::physical_core_count()
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                frequency_mhz: first.frequency(),
                arch: std::env::consts::ARCH.to_owned(),
            });
        }
        match spawn::output(
            "/usr/sbin/ioreg",
            &["-a", "-r", "-c", "AppleSmartBattery"],
            TIMEOUT,
        )
        .and_then(|out| {
            if out.is_empty() {
                Ok(Default::default())
            } else {
                super::batteries(&out)
            }
        }) {
            Ok(batteries) => inv.battery = Some(batteries),
            Err(error) => unavailable(inv, "battery", UnavailableReason::Failed, error),
        }
        let filevault = spawn::output("/usr/bin/fdesetup", &["status"], TIMEOUT).and_then(|out| {
            super::filevault(&String::from_utf8_lossy(&out))
                .ok_or_else(|| "fdesetup status: unexpected answer".to_owned())
        });
        let running = spawn::output("/bin/launchctl", &["list"], TIMEOUT)
            .ok()
            .map(|out| super::launchctl_running(&String::from_utf8_lossy(&out)));
        let now = crate::collect::host::now_unix_s();
        super::apply_files(root, inv, filevault, running.as_ref(), now);
    }

    /// The security section alone, for the health sampler's posture probe:
    /// one `fdesetup status` and the preference plists, no
    /// `system_profiler`.
    pub fn security_now(root: &Path, inv: &mut Inventory) -> deskpulse_proto::v1::SecurityInfo {
        let filevault = spawn::output("/usr/bin/fdesetup", &["status"], TIMEOUT).and_then(|out| {
            super::filevault(&String::from_utf8_lossy(&out))
                .ok_or_else(|| "fdesetup status: unexpected answer".to_owned())
        });
        super::security(root, inv, filevault, crate::collect::host::now_unix_s())
    }
}

#[cfg(test)]
mod tests;
