//! Plain parsers of the Linux hardware sources: `/proc/cpuinfo`, routes,
//! `resolv.conf`, uevent files, `pci.ids`, SMBIOS chassis codes and the
//! firmware's placeholder strings.

use std::collections::BTreeSet;

use deskpulse_proto::v1::{Battery, DiskKind};

/// Strings firmware writes where a real value was never filled in.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    if v.is_empty() {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "to be filled by o.e.m.",
        "to be filled by oem",
        "default string",
        "system serial number",
        "system product name",
        "system manufacturer",
        "not specified",
        "not applicable",
        "not available",
        "none",
        "n/a",
        "0",
        "0123456789",
        "123456789",
        "oem",
        "o.e.m.",
        "chassis serial number",
        "base board serial number",
        "invalid",
        "unknown",
    ];
    if PLACEHOLDERS.contains(&lower.as_str()) {
        return true;
    }
    // All zeros or all Fs, with or without dashes (UUIDs, serials).
    let digits: Vec<char> = lower.chars().filter(|c| *c != '-' && *c != ' ').collect();
    !digits.is_empty() && (digits.iter().all(|c| *c == '0') || digits.iter().all(|c| *c == 'f'))
}

/// SMBIOS chassis type names (DSP0134 7.4.1), lowercased and hyphenated.
pub fn chassis_name(code: u8) -> &'static str {
    match code & 0x7f {
        1 => "other",
        2 => "unknown",
        3 => "desktop",
        4 => "low-profile-desktop",
        5 => "pizza-box",
        6 => "mini-tower",
        7 => "tower",
        8 => "portable",
        9 => "laptop",
        10 => "notebook",
        11 => "hand-held",
        12 => "docking-station",
        13 => "all-in-one",
        14 => "sub-notebook",
        15 => "space-saving",
        16 => "lunch-box",
        17 => "main-server-chassis",
        18 => "expansion-chassis",
        19 => "sub-chassis",
        20 => "bus-expansion-chassis",
        21 => "peripheral-chassis",
        22 => "raid-chassis",
        23 => "rack-mount-chassis",
        24 => "sealed-case-pc",
        25 => "multi-system-chassis",
        26 => "compact-pci",
        27 => "advanced-tca",
        28 => "blade",
        29 => "blade-enclosure",
        30 => "tablet",
        31 => "convertible",
        32 => "detachable",
        33 => "iot-gateway",
        34 => "embedded-pc",
        35 => "mini-pc",
        36 => "stick-pc",
        _ => "unknown",
    }
}

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfoText {
    /// "model name", or the ARM implementer/part when there is none.
    pub model: String,
    /// "vendor_id", or the ARM implementer.
    pub vendor: String,
    /// Processor entries.
    pub logical: u32,
    /// Distinct (physical id, core id) pairs; the logical count when absent.
    pub physical: u32,
    /// "cpu MHz" of the first processor, rounded.
    pub mhz: u64,
}

/// Parses `/proc/cpuinfo` (x86 and ARM layouts).
pub fn cpuinfo(text: &str) -> CpuInfoText {
    let mut out = CpuInfoText::default();
    let mut cores = BTreeSet::new();
    let (mut physical_id, mut implementer, mut part) =
        (String::new(), String::new(), String::new());
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" if value.chars().all(|c| c.is_ascii_digit()) => out.logical += 1,
            "model name" if out.model.is_empty() => out.model = value.to_owned(),
            "vendor_id" if out.vendor.is_empty() => out.vendor = value.to_owned(),
            "cpu MHz" if out.mhz == 0 => {
                out.mhz = value.parse::<f64>().map(|v| v.round() as u64).unwrap_or(0);
            }
            "physical id" => physical_id = value.to_owned(),
            "core id" => {
                cores.insert((physical_id.clone(), value.to_owned()));
            }
            "CPU implementer" if implementer.is_empty() => implementer = value.to_owned(),
            "CPU part" if part.is_empty() => part = value.to_owned(),
            _ => {}
        }
    }
    if out.vendor.is_empty() && !implementer.is_empty() {
        out.vendor = match implementer.as_str() {
            "0x41" => "ARM".to_owned(),
            "0x51" => "Qualcomm".to_owned(),
            "0x61" => "Apple".to_owned(),
            other => other.to_owned(),
        };
    }
    if out.model.is_empty() && !part.is_empty() {
        out.model = format!("{} part {part}", out.vendor);
    }
    out.physical = if cores.is_empty() {
        out.logical
    } else {
        u32::try_from(cores.len()).unwrap_or(0)
    };
    out
}

/// Block devices that are physical disks: not loop, ram, zram, device
/// mapper, md, or optical.
pub fn is_physical_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// NVMe by name; otherwise HDD or SSD by the rotational flag.
pub fn disk_kind(name: &str, rotational: Option<&str>) -> DiskKind {
    if name.starts_with("nvme") {
        DiskKind::Nvme
    } else {
        match rotational {
            Some("1") => DiskKind::Hdd,
            Some("0") => DiskKind::Ssd,
            _ => DiskKind::Unspecified,
        }
    }
}

/// Default IPv4 gateways from `/proc/net/route` (hex, little-endian).
pub fn ipv4_default_gateways(route: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in route.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
            continue;
        }
        if let Ok(raw) = u32::from_str_radix(f[2], 16) {
            let ip = std::net::Ipv4Addr::from(raw.swap_bytes());
            if !ip.is_unspecified() && !out.contains(&ip.to_string()) {
                out.push(ip.to_string());
            }
        }
    }
    out
}

/// Default IPv6 gateways from `/proc/net/ipv6_route`.
pub fn ipv6_default_gateways(route: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in route.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[0] != "00000000000000000000000000000000" || f[1] != "00" {
            continue;
        }
        let Ok(raw) = u128::from_str_radix(f[4], 16) else {
            continue;
        };
        let ip = std::net::Ipv6Addr::from(raw);
        if !ip.is_unspecified() && !out.contains(&ip.to_string()) {
            out.push(ip.to_string());
        }
    }
    out
}

/// `nameserver` lines of a resolv.conf.
pub fn nameservers(resolv: &str) -> Vec<String> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// One `KEY=value` of a uevent file.
pub fn uevent_value(uevent: &str, key: &str) -> String {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_default()
        .to_owned()
}

/// Vendor and device names from a `pci.ids` text for ids like "0x8086".
pub fn pci_name(ids: &str, vendor: &str, device: &str) -> (String, String) {
    let vendor = vendor.trim_start_matches("0x").to_ascii_lowercase();
    let device = device.trim_start_matches("0x").to_ascii_lowercase();
    let mut vendor_name = String::new();
    let mut in_vendor = false;
    for line in ids.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if !line.starts_with('\t') {
            if in_vendor {
                break;
            }
            if let Some(name) = line
                .strip_prefix(vendor.as_str())
                .and_then(|r| r.strip_prefix("  "))
            {
                vendor_name = name.trim().to_owned();
                in_vendor = true;
            }
            continue;
        }
        if in_vendor
            && !line.starts_with("\t\t")
            && let Some(name) = line[1..]
                .strip_prefix(device.as_str())
                .and_then(|r| r.strip_prefix("  "))
        {
            return (vendor_name, name.trim().to_owned());
        }
    }
    (vendor_name, String::new())
}

/// Names for the GPU vendors found in most PCs, when pci.ids is absent.
pub fn pci_vendor_fallback(vendor: &str) -> &'static str {
    match vendor
        .trim_start_matches("0x")
        .to_ascii_lowercase()
        .as_str()
    {
        "8086" => "Intel Corporation",
        "10de" => "NVIDIA Corporation",
        "1002" => "Advanced Micro Devices, Inc. [AMD/ATI]",
        "1af4" => "Red Hat, Inc. (virtio)",
        "15ad" => "VMware",
        _ => "",
    }
}

/// The counters a Linux power_supply battery exposes (µWh, µAh, µV).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatteryCounters {
    /// energy_full_design.
    pub energy_full_design_uwh: Option<u64>,
    /// energy_full.
    pub energy_full_uwh: Option<u64>,
    /// charge_full_design.
    pub charge_full_design_uah: Option<u64>,
    /// charge_full.
    pub charge_full_uah: Option<u64>,
    /// voltage_min_design.
    pub voltage_min_design_uv: Option<u64>,
    /// cycle_count.
    pub cycle_count: Option<u64>,
}

/// A battery from its counters: energy when given, else charge × design
/// voltage.
pub fn battery(name: &str, manufacturer: String, model: String, c: BatteryCounters) -> Battery {
    let from_charge = |charge: Option<u64>| {
        charge
            .zip(c.voltage_min_design_uv)
            .map(|(uah, uv)| uah * uv / 1_000_000)
    };
    let design_uwh = c
        .energy_full_design_uwh
        .or_else(|| from_charge(c.charge_full_design_uah));
    let full_uwh = c.energy_full_uwh.or_else(|| from_charge(c.charge_full_uah));
    let design = design_uwh.unwrap_or(0) / 1000;
    let full = full_uwh.unwrap_or(0) / 1000;
    Battery {
        name: name.to_owned(),
        manufacturer,
        model,
        design_capacity_mwh: design,
        full_charge_capacity_mwh: full,
        cycle_count: c
            .cycle_count
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        health_percent: if design > 0 {
            full as f32 * 100.0 / design as f32
        } else {
            0.0
        },
    }
}
