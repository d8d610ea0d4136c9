//! Windows hardware, OS details, users, security posture and services.
//!
//! Everything comes from WMI and the registry, read in the agent's own
//! process: no PowerShell, no child process per inventory. The adapter
//! (`native.rs`, Windows only) runs the queries of [`snapshot`] and reads
//! a few registry values into one JSON document; [`apply_document`] turns
//! that document into the inventory. Both the document's construction and
//! its parsing are plain code, tested here on fixture rows and documents.
//!
//! # Layout
//! - [`snapshot`]: the queries, and WMI values → document, checked.
//! - `native`: the COM/WMI and registry calls (compiled for Windows only).
//! - [`updates`]: the pending-update count from the Windows Update Agent,
//!   kept for an hour, and what its errors mean.

use deskpulse_proto::v1::{
    Antivirus, BatteryInfo, CpuInfo, Disk, DiskKind, Gpu, GpuInfo, Inventory, LocalUser,
    MemoryInfo, MemoryModule, NetworkInfo, NetworkInterface, ProtectionState, SecurityInfo,
    Service, ServicesInfo, SoftwareInfo, SystemInfo, UnavailableReason, UserSession, UsersInfo,
    VolumeEncryption,
};
use serde_json::Value;

use super::hardware::{parse, smbios};
use super::packages::windows::{hotfixes_from, one_or_many};
use super::unavailable;

pub mod snapshot;
pub mod updates;

/// Trimmed text of a JSON string or number; empty for anything else.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A firmware string, or empty when it is a placeholder such as
/// "To Be Filled By O.E.M." or "Default string".
fn firmware_text(value: &Value) -> String {
    let value = text(value);
    if parse::is_placeholder(&value) {
        String::new()
    } else {
        value
    }
}

/// An unsigned number, from a JSON number or numeric text (CIM's uint64
/// values sometimes arrive as strings).
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int64(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn u32_of(value: &Value) -> u32 {
    number(value)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// A CIM boolean: JSON true/false, or 1/0 as some providers write it.
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        _ => None,
    }
}

/// Strings of a JSON list, or of one string standing for a list.
fn strings(value: &Value) -> Vec<String> {
    one_or_many(value)
        .into_iter()
        .map(text)
        .filter(|s| !s.is_empty())
        .collect()
}

/// [`apply_document`] on a document's JSON text (the fixtures).
pub fn apply_snapshot(json: &str, inv: &mut Inventory) -> Result<(), String> {
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("inventory snapshot is not JSON: {e}"))?;
    apply_document(&doc, inv)
}

/// Why the source of `key` gave nothing, when the adapter recorded it.
fn failure(doc: &Value, key: &str) -> Option<(UnavailableReason, String)> {
    let failed = &doc["failed"][key];
    let detail = failed["detail"].as_str()?;
    Some((
        snapshot::Failure::reason_of(failed["reason"].as_str().unwrap_or("")),
        detail.to_owned(),
    ))
}

/// Records that `key` gave nothing: with the adapter's reason when it has
/// one, else with `reason` and `detail`.
fn missing_key(
    doc: &Value,
    inv: &mut Inventory,
    key: &str,
    field: &str,
    reason: UnavailableReason,
    detail: &str,
) {
    let (reason, detail) = failure(doc, key).unwrap_or((reason, detail.to_owned()));
    unavailable(inv, field, reason, detail);
}

/// Fills every section but software packages and filesystems from the
/// snapshot document. A query that came back empty is recorded as
/// unavailable rather than as an empty section, with the adapter's reason
/// when it failed; every value the adapter refused is recorded too.
pub fn apply_document(doc: &Value, inv: &mut Inventory) -> Result<(), String> {
    if !doc.is_object() {
        return Err("inventory snapshot is not a JSON object".into());
    }
    for bad in one_or_many(&doc["malformed"]) {
        unavailable(
            inv,
            bad["field"].as_str().unwrap_or("system"),
            UnavailableReason::Failed,
            text(&bad["detail"]),
        );
    }
    inv.system = Some(system(doc, inv));
    inv.cpu = Some(cpu(doc));
    inv.memory = Some(memory(doc));
    inv.storage.get_or_insert_with(Default::default).disks = disks(doc);
    inv.network = Some(network(doc));
    inv.gpu = Some(GpuInfo {
        gpus: one_or_many(&doc["video"])
            .into_iter()
            .map(|v| Gpu {
                vendor: text(&v["AdapterCompatibility"]),
                model: text(&v["Name"]),
                driver: text(&v["DriverVersion"]),
            })
            .collect(),
    });
    inv.battery = Some(batteries(doc));
    os_details(doc, inv);
    inv.users = Some(users(doc));
    inv.security = Some(security(doc, inv));
    inv.services = Some(ServicesInfo {
        services: one_or_many(&doc["services"])
            .into_iter()
            .map(|s| Service {
                name: text(&s["Name"]),
                display_name: text(&s["DisplayName"]),
                state: text(&s["State"]).to_ascii_lowercase(),
                start_mode: text(&s["StartMode"]).to_ascii_lowercase(),
            })
            .filter(|s| !s.name.is_empty())
            .collect(),
    });
    inv.software
        .get_or_insert_with(SoftwareInfo::default)
        .hotfixes = hotfixes_from(&doc["hotfixes"]);
    for (key, field) in [
        ("computer_system", "system"),
        ("processors", "cpu"),
        ("disk_drives", "storage.disks"),
        ("net_adapters", "network.interfaces"),
        ("accounts", "users"),
        ("services", "services"),
    ] {
        if one_or_many(&doc[key]).is_empty() {
            missing_key(
                doc,
                inv,
                key,
                field,
                UnavailableReason::Failed,
                &format!("WMI returned nothing for {key}"),
            );
        }
    }
    Ok(())
}

fn system(doc: &Value, inv: &mut Inventory) -> SystemInfo {
    let cs = &doc["computer_system"];
    let bios = &doc["bios"];
    let product = &doc["product"];
    let board = &doc["baseboard"];
    // Win32_BIOS.SerialNumber is the SMBIOS system serial; the product's
    // IdentifyingNumber is the same number where the BIOS one is blank.
    let mut serial = firmware_text(&bios["SerialNumber"]);
    if serial.is_empty() {
        serial = firmware_text(&product["IdentifyingNumber"]);
    }
    if serial.is_empty() {
        unavailable(
            inv,
            "system.serial",
            UnavailableReason::NotPresent,
            "the firmware holds no serial number or only a placeholder",
        );
    }
    let chassis = one_or_many(&doc["enclosure"])
        .first()
        .and_then(|e| {
            one_or_many(&e["ChassisTypes"])
                .first()
                .and_then(|c| number(c))
        })
        .and_then(|c| u8::try_from(c).ok());
    let bios_date = int64(&bios["ReleaseDate"]);
    SystemInfo {
        vendor: firmware_text(&cs["Manufacturer"]),
        model: firmware_text(&cs["Model"]),
        serial,
        hardware_uuid: firmware_text(&product["UUID"]).to_ascii_lowercase(),
        chassis_type: chassis
            .map(|c| parse::chassis_name(c).to_owned())
            .unwrap_or_default(),
        bios_vendor: firmware_text(&bios["Manufacturer"]),
        bios_version: firmware_text(&bios["SMBIOSBIOSVersion"]),
        bios_date: if bios_date > 0 {
            iso_date(bios_date)
        } else {
            String::new()
        },
        baseboard_vendor: firmware_text(&board["Manufacturer"]),
        baseboard_model: firmware_text(&board["Product"]),
        baseboard_serial: firmware_text(&board["SerialNumber"]),
    }
}

/// YYYY-MM-DD of a Unix time, in UTC.
fn iso_date(unix_s: i64) -> String {
    let (year, month, day) = crate::diagnostics::parse::civil_date(unix_s.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Win32_Processor.Architecture codes.
fn cpu_arch(code: Option<u64>) -> &'static str {
    match code {
        Some(0) => "x86",
        Some(5) => "arm",
        Some(9) => "x86_64",
        Some(12) => "aarch64",
        _ => "",
    }
}

fn cpu(doc: &Value) -> CpuInfo {
    let sockets = one_or_many(&doc["processors"]);
    let Some(first) = sockets.first() else {
        return CpuInfo::default();
    };
    let sum = |field: &str| sockets.iter().map(|p| u32_of(&p[field])).sum::<u32>();
    CpuInfo {
        model: text(&first["Name"]),
        vendor: text(&first["Manufacturer"]),
        logical_cores: sum("NumberOfLogicalProcessors"),
        physical_cores: sum("NumberOfCores"),
        frequency_mhz: number(&first["MaxClockSpeed"]).unwrap_or(0),
        arch: cpu_arch(number(&first["Architecture"])).to_owned(),
    }
}

fn memory(doc: &Value) -> MemoryInfo {
    let modules = one_or_many(&doc["memory_modules"])
        .into_iter()
        .map(|m| {
            let slot = match (text(&m["BankLabel"]), text(&m["DeviceLocator"])) {
                (bank, locator) if bank.is_empty() => locator,
                (bank, locator) if locator.is_empty() => bank,
                (bank, locator) => format!("{bank} / {locator}"),
            };
            let speed = number(&m["ConfiguredClockSpeed"])
                .filter(|s| *s > 0)
                .or_else(|| number(&m["Speed"]))
                .unwrap_or(0);
            MemoryModule {
                slot,
                size_bytes: number(&m["Capacity"]).unwrap_or(0),
                memory_type: number(&m["SMBIOSMemoryType"])
                    .and_then(|c| u8::try_from(c).ok())
                    .map(|c| smbios::memory_type(c).to_owned())
                    .unwrap_or_default(),
                speed_mts: u32::try_from(speed).unwrap_or(0),
                manufacturer: firmware_text(&m["Manufacturer"]),
                part_number: firmware_text(&m["PartNumber"]),
                serial: firmware_text(&m["SerialNumber"]),
            }
        })
        .collect();
    MemoryInfo {
        total_bytes: number(&doc["computer_system"]["TotalPhysicalMemory"]).unwrap_or(0),
        // Win32_OperatingSystem counts free memory in KiB.
        available_bytes: number(&doc["os"]["FreePhysicalMemory"]).unwrap_or(0) * 1024,
        // Page file sizes are in MiB.
        swap_total_bytes: one_or_many(&doc["page_files"])
            .into_iter()
            .filter_map(|p| number(&p["AllocatedBaseSize"]))
            .sum::<u64>()
            * 1024
            * 1024,
        modules,
    }
}

fn disks(doc: &Value) -> Vec<Disk> {
    let physical = one_or_many(&doc["physical_disks"]);
    one_or_many(&doc["disk_drives"])
        .into_iter()
        .map(|d| {
            let index = text(&d["Index"]);
            // MSFT_PhysicalDisk knows SSD from HDD and the bus; DeviceId is
            // the same number as Win32_DiskDrive.Index.
            let storage = physical.iter().find(|p| text(&p["DeviceId"]) == index);
            let bus = storage.and_then(|p| number(&p["BusType"]));
            let media = storage.and_then(|p| number(&p["MediaType"]));
            let kind = match (bus, media) {
                (Some(17), _) => DiskKind::Nvme,
                (_, Some(4)) => DiskKind::Ssd,
                (_, Some(3)) => DiskKind::Hdd,
                _ => DiskKind::Unspecified,
            };
            let media_type = text(&d["MediaType"]).to_ascii_lowercase();
            Disk {
                name: format!("PhysicalDrive{index}"),
                model: text(&d["Model"]),
                serial: firmware_text(&d["SerialNumber"]),
                size_bytes: number(&d["Size"]).unwrap_or(0),
                kind: kind as i32,
                // BusType 7 is USB; the media type says "Removable" or
                // "External" for card readers and USB disks.
                removable: bus == Some(7)
                    || media_type.contains("removable")
                    || media_type.contains("external"),
            }
        })
        .collect()
}

fn network(doc: &Value) -> NetworkInfo {
    let configs = one_or_many(&doc["net_configs"]);
    let mut info = NetworkInfo::default();
    for adapter in one_or_many(&doc["net_adapters"]) {
        let index = number(&adapter["InterfaceIndex"]);
        let config = configs
            .iter()
            .find(|c| index.is_some() && number(&c["InterfaceIndex"]) == index);
        let addresses = config.map(|c| strings(&c["IPAddress"])).unwrap_or_default();
        let (ipv6, ipv4): (Vec<String>, Vec<String>) =
            addresses.into_iter().partition(|a| a.contains(':'));
        if let Some(config) = config {
            for gateway in strings(&config["DefaultIPGateway"]) {
                if !info.default_gateways.contains(&gateway) {
                    info.default_gateways.push(gateway);
                }
            }
            for dns in strings(&config["DNSServerSearchOrder"]) {
                if !info.dns_servers.contains(&dns) {
                    info.dns_servers.push(dns);
                }
            }
        }
        info.interfaces.push(NetworkInterface {
            name: text(&adapter["Name"]),
            // Windows writes MACs as AA-BB-CC-DD-EE-FF.
            mac: text(&adapter["MacAddress"])
                .replace('-', ":")
                .to_ascii_lowercase(),
            ipv4,
            ipv6,
            // MediaConnectState 1 is "connected".
            up: number(&adapter["MediaConnectState"]) == Some(1),
            speed_mbps: number(&adapter["Speed"]).unwrap_or(0) / 1_000_000,
            // NdisPhysicalMedium 1 is wireless LAN, 9 is native 802.11.
            wireless: matches!(number(&adapter["NdisPhysicalMedium"]), Some(1 | 9)),
        });
    }
    info
}

fn batteries(doc: &Value) -> BatteryInfo {
    let full = one_or_many(&doc["battery_full"]);
    let cycles = one_or_many(&doc["battery_cycles"]);
    let matching = |list: &[&Value], instance: &str, field: &str| {
        list.iter()
            .find(|b| text(&b["InstanceName"]) == instance)
            .and_then(|b| number(&b[field]))
    };
    BatteryInfo {
        batteries: one_or_many(&doc["battery_static"])
            .into_iter()
            .map(|b| {
                let instance = text(&b["InstanceName"]);
                // root/wmi reports capacities in mWh.
                let counters = parse::BatteryCounters {
                    energy_full_design_uwh: number(&b["DesignedCapacity"]).map(|c| c * 1000),
                    energy_full_uwh: matching(&full, &instance, "FullChargedCapacity")
                        .map(|c| c * 1000),
                    cycle_count: matching(&cycles, &instance, "CycleCount"),
                    ..parse::BatteryCounters::default()
                };
                let model = text(&b["DeviceName"]);
                let name = if model.is_empty() {
                    instance
                } else {
                    model.clone()
                };
                parse::battery(&name, text(&b["ManufactureName"]), model, counters)
            })
            .collect(),
    }
}

fn os_details(doc: &Value, inv: &mut Inventory) {
    let os = &doc["os"];
    let cs = &doc["computer_system"];
    let info = inv.os.get_or_insert_with(Default::default);
    let caption = text(&os["Caption"]);
    if !caption.is_empty() {
        info.name = caption;
    }
    let display = text(&os["DisplayVersion"]);
    if !display.is_empty() {
        info.version = display;
    } else if !text(&os["Version"]).is_empty() {
        // WMI's "10.0.19045" over sysinfo's reading of the same kernel.
        info.version = text(&os["Version"]);
    }
    // The build with its update revision, as winver shows it: 22631.4460.
    let build = text(&os["BuildNumber"]);
    info.build = match number(&os["UBR"]) {
        Some(ubr) if !build.is_empty() => format!("{build}.{ubr}"),
        _ => build,
    };
    info.install_date_unix_s = int64(&os["InstallDate"]);
    let boot = int64(&os["LastBootUpTime"]);
    if boot > 0 {
        info.boot_time_unix_s = boot;
    }
    info.timezone = text(&os["TimeZone"]);
    if flag(&cs["PartOfDomain"]) == Some(true) {
        info.domain = text(&cs["Domain"]);
    } else {
        info.workgroup = text(&cs["Workgroup"]);
    }
}

/// The user name without its `DOMAIN\` or `.\` prefix.
fn bare_user(qualified: &str) -> String {
    qualified
        .rsplit_once('\\')
        .map_or(qualified, |(_, user)| user)
        .to_owned()
}

fn users(doc: &Value) -> UsersInfo {
    let admins = one_or_many(&doc["admins"]);
    let is_admin = |sid: &str, name: &str| {
        admins.iter().any(|a| {
            let admin_sid = text(&a["SID"]);
            if sid.is_empty() || admin_sid.is_empty() {
                text(&a["Name"]).eq_ignore_ascii_case(name)
            } else {
                admin_sid == sid
            }
        })
    };
    let users = one_or_many(&doc["accounts"])
        .into_iter()
        .map(|a| {
            let sid = text(&a["SID"]);
            let name = text(&a["Name"]);
            LocalUser {
                admin: is_admin(&sid, &name),
                full_name: text(&a["FullName"]),
                disabled: flag(&a["Disabled"]).unwrap_or(false),
                id: sid,
                name,
            }
        })
        .collect();
    let sessions = one_or_many(&doc["sessions"])
        .into_iter()
        .map(|s| UserSession {
            user: text(&s["user"]),
            terminal: format!("session {}", text(&s["session"])),
            host: text(&s["domain"]),
            started_unix_s: int64(&s["started"]),
        })
        .filter(|s| !s.user.is_empty())
        .collect();
    let last = &doc["last_logon"];
    let last_sid = text(&last["SID"]);
    let last_login_unix_s = one_or_many(&doc["profiles"])
        .into_iter()
        .find(|p| !last_sid.is_empty() && text(&p["SID"]) == last_sid)
        .map_or(0, |p| int64(&p["LastUseTime"]));
    UsersInfo {
        users,
        sessions,
        last_login_user: bare_user(&text(&last["User"])),
        last_login_unix_s,
    }
}

/// Windows Security Center's productState: the second byte is the scanner
/// state (0x10/0x11 on), the low byte the signature state (0x00 current).
pub fn antivirus_state(product_state: u64) -> (ProtectionState, bool) {
    let scanner = (product_state >> 8) & 0xff;
    let signatures = product_state & 0xff;
    let state = if scanner & 0x10 != 0 {
        ProtectionState::On
    } else {
        ProtectionState::Off
    };
    (state, signatures == 0)
}

fn security(doc: &Value, inv: &mut Inventory) -> SecurityInfo {
    let profiles = one_or_many(&doc["firewall_profiles"]);
    let firewall = if profiles.is_empty() {
        missing_key(
            doc,
            inv,
            "firewall_profiles",
            "security.firewall",
            UnavailableReason::Failed,
            "WMI returned no Windows Firewall profile",
        );
        ProtectionState::Unspecified
    } else if profiles.iter().all(|p| flag(&p["Enabled"]) == Some(true)) {
        ProtectionState::On
    } else {
        // One profile off (say Public) leaves the PC exposed on that kind
        // of network, so "on" means on for every profile.
        ProtectionState::Off
    };
    let antivirus: Vec<Antivirus> = one_or_many(&doc["antivirus"])
        .into_iter()
        .map(|a| {
            let (state, up_to_date) = antivirus_state(number(&a["productState"]).unwrap_or(0));
            Antivirus {
                product: text(&a["displayName"]),
                state: state as i32,
                up_to_date,
            }
        })
        .collect();
    if antivirus.is_empty() {
        missing_key(
            doc,
            inv,
            "antivirus",
            "security.antivirus",
            UnavailableReason::NotPresent,
            "Windows Security Center lists no antivirus (a Windows Server has none)",
        );
    }
    let volumes = one_or_many(&doc["bitlocker"]);
    if volumes.is_empty() {
        missing_key(
            doc,
            inv,
            "bitlocker",
            "security.encryption",
            UnavailableReason::NotPermitted,
            "BitLocker's WMI class answered nothing (it needs administrator rights, and Home editions lack it)",
        );
    }
    let encryption = volumes
        .into_iter()
        .map(|v| {
            // ProtectionStatus 1 is "protection on"; ConversionStatus 1 is
            // "fully encrypted" (a suspended volume is encrypted, unprotected).
            let protected = number(&v["ProtectionStatus"]) == Some(1);
            let encrypted = protected || number(&v["ConversionStatus"]) == Some(1);
            VolumeEncryption {
                volume: text(&v["DriveLetter"]),
                method: bitlocker_method(number(&v["EncryptionMethod"])),
                encrypted,
            }
        })
        .collect();
    let pending_updates = number(&doc["pending_updates"]).and_then(|n| u32::try_from(n).ok());
    if pending_updates.is_none() {
        missing_key(
            doc,
            inv,
            "pending_updates",
            "security.pending_updates",
            UnavailableReason::Failed,
            "Windows Update gave no count of pending updates",
        );
    }
    SecurityInfo {
        firewall: firewall as i32,
        firewall_product: if profiles.is_empty() {
            String::new()
        } else {
            "Windows Firewall".into()
        },
        encryption,
        antivirus,
        reboot_pending: !one_or_many(&doc["reboot_flags"]).is_empty(),
        pending_updates,
    }
}

/// Win32_EncryptableVolume.EncryptionMethod codes.
fn bitlocker_method(code: Option<u64>) -> String {
    match code {
        Some(1) => "BitLocker AES-128 with diffuser",
        Some(2) => "BitLocker AES-256 with diffuser",
        Some(3) => "BitLocker AES-128",
        Some(4) => "BitLocker AES-256",
        Some(5) => "BitLocker hardware encryption",
        Some(6) => "BitLocker XTS-AES-128",
        Some(7) => "BitLocker XTS-AES-256",
        _ => "BitLocker",
    }
    .to_owned()
}

#[cfg(windows)]
mod native;
#[cfg(windows)]
pub use native::{collect, security_now};

#[cfg(test)]
mod tests;
