//! Hardware: system identity, CPU, memory, physical disks, network details,
//! GPUs and batteries. On Linux everything comes from files under the system
//! root (`/sys`, `/proc`, `/etc`); the SMBIOS table adds memory modules when
//! readable. Network addresses come from the running kernel, and only when
//! the root is the real `/`.
//!
//! # Layout
//! - [`smbios`]: the SMBIOS structure table parser.
//! - [`parse`]: plain parsers of the Linux text sources.
//! - this module: reading the sources and filling the inventory.

pub mod parse;
pub mod smbios;

use std::path::Path;

use deskpulse_proto::v1::{
    Battery, BatteryInfo, CpuInfo, Disk, Gpu, GpuInfo, Inventory, MemoryInfo, MemoryModule,
    NetworkInfo, NetworkInterface, SystemInfo, UnavailableReason,
};

use super::{reason_for, unavailable};

/// Reads a small sysfs or procfs text file, trimmed.
fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned())
}

/// Fills system, cpu, memory, storage.disks, network, gpu and battery on
/// Linux.
pub fn collect(root: &Path, inv: &mut Inventory) {
    let table = std::fs::read(root.join("sys/firmware/dmi/tables/DMI"));
    let smbios = table.as_ref().ok().map(|t| smbios::parse(t));
    system(root, smbios.as_ref(), inv);
    cpu(root, inv);
    memory(root, smbios.as_ref(), table.as_ref().err(), inv);
    disks(root, inv);
    network(root, inv);
    gpus(root, inv);
    batteries(root, inv);
}

fn system(root: &Path, smbios: Option<&smbios::Smbios>, inv: &mut Inventory) {
    let dmi = root.join("sys/class/dmi/id");
    if !dmi.exists() && smbios.is_none() {
        unavailable(
            inv,
            "system",
            UnavailableReason::NotPresent,
            "no DMI/SMBIOS data (sys/class/dmi/id is missing)",
        );
        inv.system = Some(SystemInfo::default());
        return;
    }
    let mut missing = Vec::new();
    // SMBIOS when readable (root), else the sysfs copy of the same fields.
    let mut field = |name: &str, file: &str, from_table: Option<&str>| -> String {
        let raw = match from_table {
            Some(value) => Ok(value.to_owned()),
            None => read(&dmi.join(file)),
        };
        match raw {
            Ok(value) if parse::is_placeholder(&value) => {
                if !value.is_empty() {
                    missing.push((
                        name.to_owned(),
                        UnavailableReason::NotPresent,
                        format!("firmware placeholder {value:?}"),
                    ));
                }
                String::new()
            }
            Ok(value) => value,
            Err(error) => {
                missing.push((
                    name.to_owned(),
                    reason_for(&error),
                    format!("sys/class/dmi/id/{file}: {error}"),
                ));
                String::new()
            }
        }
    };
    let t = smbios;
    let info = SystemInfo {
        vendor: field(
            "system.vendor",
            "sys_vendor",
            t.map(|s| s.system_vendor.as_str()),
        ),
        model: field(
            "system.model",
            "product_name",
            t.map(|s| s.system_model.as_str()),
        ),
        serial: field(
            "system.serial",
            "product_serial",
            t.map(|s| s.system_serial.as_str()),
        ),
        hardware_uuid: field(
            "system.hardware_uuid",
            "product_uuid",
            t.map(|s| s.system_uuid.as_str()),
        )
        .to_ascii_lowercase(),
        chassis_type: {
            let code = match t {
                Some(s) => Some(s.chassis_code),
                None => read(&dmi.join("chassis_type"))
                    .ok()
                    .and_then(|c| c.parse().ok()),
            };
            code.map(|c| parse::chassis_name(c).to_owned())
                .unwrap_or_default()
        },
        bios_vendor: field(
            "system.bios_vendor",
            "bios_vendor",
            t.map(|s| s.bios_vendor.as_str()),
        ),
        bios_version: field(
            "system.bios_version",
            "bios_version",
            t.map(|s| s.bios_version.as_str()),
        ),
        bios_date: field(
            "system.bios_date",
            "bios_date",
            t.map(|s| s.bios_date.as_str()),
        ),
        baseboard_vendor: field(
            "system.baseboard_vendor",
            "board_vendor",
            t.map(|s| s.board_vendor.as_str()),
        ),
        baseboard_model: field(
            "system.baseboard_model",
            "board_name",
            t.map(|s| s.board_model.as_str()),
        ),
        baseboard_serial: field(
            "system.baseboard_serial",
            "board_serial",
            t.map(|s| s.board_serial.as_str()),
        ),
    };
    for (name, reason, detail) in missing {
        unavailable(inv, &name, reason, detail);
    }
    inv.system = Some(info);
}

fn cpu(root: &Path, inv: &mut Inventory) {
    let text = match std::fs::read_to_string(root.join("proc/cpuinfo")) {
        Ok(text) => text,
        Err(error) => {
            unavailable(
                inv,
                "cpu",
                reason_for(&error),
                format!("proc/cpuinfo: {error}"),
            );
            return;
        }
    };
    let parsed = parse::cpuinfo(&text);
    let cpufreq = root.join("sys/devices/system/cpu/cpu0/cpufreq");
    let khz = read(&cpufreq.join("base_frequency"))
        .or_else(|_| read(&cpufreq.join("cpuinfo_max_freq")))
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    inv.cpu = Some(CpuInfo {
        model: parsed.model,
        vendor: parsed.vendor,
        logical_cores: parsed.logical,
        physical_cores: parsed.physical,
        frequency_mhz: khz.map_or(parsed.mhz, |k| k / 1000),
        arch: std::env::consts::ARCH.to_owned(),
    });
}

fn memory(
    root: &Path,
    smbios: Option<&smbios::Smbios>,
    table_error: Option<&std::io::Error>,
    inv: &mut Inventory,
) {
    let text = std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
    let (total, available) = super::meminfo(&text);
    let swap = text
        .lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let modules = smbios
        .map(|s| {
            s.memory
                .iter()
                .map(|m| MemoryModule {
                    slot: m.locator.clone(),
                    size_bytes: m.size_bytes,
                    memory_type: m.memory_type.clone(),
                    speed_mts: m.speed_mts,
                    manufacturer: clean(&m.manufacturer),
                    part_number: clean(&m.part_number),
                    serial: clean(&m.serial),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(error) = table_error {
        unavailable(
            inv,
            "memory.modules",
            reason_for(error),
            format!("sys/firmware/dmi/tables/DMI: {error}"),
        );
    }
    inv.memory = Some(MemoryInfo {
        total_bytes: total,
        available_bytes: available,
        swap_total_bytes: swap,
        modules,
    });
}

/// A firmware string with placeholders removed.
fn clean(value: &str) -> String {
    if parse::is_placeholder(value) {
        String::new()
    } else {
        value.to_owned()
    }
}

fn disks(root: &Path, inv: &mut Inventory) {
    let Ok(dir) = std::fs::read_dir(root.join("sys/block")) else {
        unavailable(
            inv,
            "storage.disks",
            UnavailableReason::NotPresent,
            "sys/block is missing",
        );
        return;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| parse::is_physical_disk(n))
        .collect();
    names.sort();
    let disks = names
        .into_iter()
        .map(|name| {
            let base = root.join("sys/block").join(&name);
            let dev = base.join("device");
            let first = |files: &[&str]| {
                files
                    .iter()
                    .find_map(|f| read(&dev.join(f)).ok().filter(|v| !v.is_empty()))
                    .unwrap_or_default()
            };
            let sectors: u64 = read(&base.join("size"))
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let rotational = read(&base.join("queue/rotational")).ok();
            Disk {
                kind: parse::disk_kind(&name, rotational.as_deref()) as i32,
                model: first(&["model", "device/model"]),
                serial: clean(&first(&["serial", "device/serial", "vpd_pg80"])),
                size_bytes: sectors * 512,
                removable: read(&base.join("removable")).is_ok_and(|v| v == "1"),
                name,
            }
        })
        .collect();
    inv.storage.get_or_insert_with(Default::default).disks = disks;
}

/// Interfaces, gateways and DNS servers into `inv.network`; shared with
/// the `network_config` diagnostic.
pub fn network(root: &Path, inv: &mut Inventory) {
    let net = root.join("sys/class/net");
    let mut interfaces = Vec::new();
    match std::fs::read_dir(&net) {
        Ok(dir) => {
            let mut names: Vec<String> = dir
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .collect();
            names.sort();
            for name in names {
                let base = net.join(&name);
                interfaces.push(NetworkInterface {
                    mac: read(&base.join("address"))
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    up: read(&base.join("operstate")).is_ok_and(|s| s == "up"),
                    // Reading speed of a down link fails with EINVAL, or gives -1.
                    speed_mbps: read(&base.join("speed"))
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    wireless: base.join("wireless").exists() || base.join("phy80211").exists(),
                    name,
                    ..NetworkInterface::default()
                });
            }
        }
        Err(error) => unavailable(
            inv,
            "network.interfaces",
            reason_for(&error),
            format!("sys/class/net: {error}"),
        ),
    }
    if root == Path::new("/") {
        add_addresses(&mut interfaces);
    } else {
        unavailable(
            inv,
            "network.interfaces.addresses",
            UnavailableReason::NotSupported,
            "addresses come from the running kernel, not from a system root",
        );
    }
    let mut gateways =
        parse::ipv4_default_gateways(&read(&root.join("proc/net/route")).unwrap_or_default());
    gateways.extend(parse::ipv6_default_gateways(
        &read(&root.join("proc/net/ipv6_route")).unwrap_or_default(),
    ));
    let mut dns = parse::nameservers(&read(&root.join("etc/resolv.conf")).unwrap_or_default());
    // systemd-resolved's stub hides the real servers behind 127.0.0.53.
    if dns.iter().all(|s| s == "127.0.0.53")
        && let Ok(real) = read(&root.join("run/systemd/resolve/resolv.conf"))
    {
        dns = parse::nameservers(&real);
    }
    inv.network = Some(NetworkInfo {
        interfaces,
        default_gateways: gateways,
        dns_servers: dns,
    });
}

fn add_addresses(interfaces: &mut [NetworkInterface]) {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return;
    };
    for (name, data) in &networks {
        let name = name.to_string_lossy();
        if let Some(nic) = interfaces.iter_mut().find(|i| i.name == name) {
            for net in data.ip_networks() {
                let text = format!("{}/{}", net.addr, net.prefix);
                if net.addr.is_ipv4() {
                    nic.ipv4.push(text);
                } else {
                    nic.ipv6.push(text);
                }
            }
        }
    }
}

fn gpus(root: &Path, inv: &mut Inventory) {
    let drm = root.join("sys/class/drm");
    let Ok(dir) = std::fs::read_dir(&drm) else {
        inv.gpu = Some(GpuInfo::default());
        return;
    };
    let mut cards: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("card") && n[4..].chars().all(|c| c.is_ascii_digit()))
        .collect();
    cards.sort();
    let ids = ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok());
    let gpus = cards
        .iter()
        .map(|card| {
            let dev = drm.join(card).join("device");
            let vendor_id = read(&dev.join("vendor")).unwrap_or_default();
            let device_id = read(&dev.join("device")).unwrap_or_default();
            let driver =
                parse::uevent_value(&read(&dev.join("uevent")).unwrap_or_default(), "DRIVER");
            let (vendor, model) = ids
                .as_deref()
                .map(|ids| parse::pci_name(ids, &vendor_id, &device_id))
                .unwrap_or_default();
            Gpu {
                vendor: if vendor.is_empty() {
                    parse::pci_vendor_fallback(&vendor_id).to_owned()
                } else {
                    vendor
                },
                model: if model.is_empty() {
                    device_id.clone()
                } else {
                    model
                },
                driver,
            }
        })
        .collect();
    inv.gpu = Some(GpuInfo { gpus });
}

fn batteries(root: &Path, inv: &mut Inventory) {
    let batteries = linux_batteries(root).into_iter().map(|(b, _)| b).collect();
    inv.battery = Some(BatteryInfo { batteries });
}

/// Every `sys/class/power_supply` entry of type Battery, sorted by name,
/// with its current charge in percent (`capacity`) when exposed. Shared by
/// the inventory and the health sampler, so both read batteries one way.
pub fn linux_batteries(root: &Path) -> Vec<(Battery, Option<f32>)> {
    let supply = root.join("sys/class/power_supply");
    let mut batteries = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&supply) {
        let mut names: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let base = supply.join(&name);
            if !read(&base.join("type")).is_ok_and(|t| t == "Battery") {
                continue;
            }
            let num = |f: &str| read(&base.join(f)).ok().and_then(|v| v.parse::<u64>().ok());
            let battery = parse::battery(
                &name,
                read(&base.join("manufacturer")).unwrap_or_default(),
                read(&base.join("model_name")).unwrap_or_default(),
                parse::BatteryCounters {
                    energy_full_design_uwh: num("energy_full_design"),
                    energy_full_uwh: num("energy_full"),
                    charge_full_design_uah: num("charge_full_design"),
                    charge_full_uah: num("charge_full"),
                    voltage_min_design_uv: num("voltage_min_design"),
                    cycle_count: num("cycle_count"),
                },
            );
            let capacity = num("capacity").map(|c| c.min(100) as f32);
            batteries.push((battery, capacity));
        }
    }
    batteries
}

#[cfg(test)]
mod tests;
