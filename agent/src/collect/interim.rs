//! Stand-ins for the CPU, memory, network and software sections until the
//! `hw` and `software` modules replace them.

use std::path::Path;

use deskpulse_proto::v1::{
    CpuInfo, Inventory, MemoryInfo, NetworkInfo, NetworkInterface, Package, SoftwareInfo,
};
use sysinfo::{Networks, System};

/// Fills cpu, memory, network and software.
pub fn fill(root: &Path, inv: &mut Inventory) {
    let mut sys = System::new_with_specifics(sysinfo::RefreshKind::nothing()).ok();
    if let Some(sys) = sys.as_mut() {
        sys.refresh_memory();
        sys.refresh_cpu_all();
        let cpus = sys.cpus();
        inv.cpu = Some(CpuInfo {
            model: cpus
                .first()
                .map(|c| c.brand().to_owned())
                .unwrap_or_default(),
            vendor: cpus
                .first()
                .map(|c| c.vendor_id().to_owned())
                .unwrap_or_default(),
            logical_cores: u32::try_from(cpus.len()).unwrap_or(0),
            physical_cores: System::physical_core_count()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            frequency_mhz: cpus.first().map(|c| c.frequency()).unwrap_or_default(),
            arch: System::cpu_arch(),
        });
        inv.memory = Some(MemoryInfo {
            total_bytes: sys.total_memory(),
            available_bytes: sys.available_memory(),
            swap_total_bytes: sys.total_swap(),
            ..MemoryInfo::default()
        });
    }
    let nets = Networks::new_with_refreshed_list().ok();
    inv.network = Some(NetworkInfo {
        interfaces: nets
            .iter()
            .flat_map(|n| n.iter())
            .filter(|(name, _)| name.to_string_lossy() != "lo")
            .map(|(name, data)| NetworkInterface {
                name: name.to_string_lossy().into_owned(),
                mac: data.mac_address().to_string(),
                ipv4: data
                    .ip_networks()
                    .iter()
                    .filter(|n| n.addr.is_ipv4())
                    .map(|n| n.to_string())
                    .collect(),
                ipv6: data
                    .ip_networks()
                    .iter()
                    .filter(|n| n.addr.is_ipv6())
                    .map(|n| n.to_string())
                    .collect(),
                ..NetworkInterface::default()
            })
            .collect(),
        ..NetworkInfo::default()
    });
    inv.software = Some(SoftwareInfo {
        packages: dpkg(root),
        ..SoftwareInfo::default()
    });
}

fn dpkg(root: &Path) -> Vec<Package> {
    let text = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
                    .map(str::to_owned)
            };
            (field("Status")? == "install ok installed").then(|| Package {
                ecosystem: "dpkg".into(),
                name: field("Package").unwrap_or_default(),
                version: field("Version").unwrap_or_default(),
                arch: field("Architecture").unwrap_or_default(),
                ..Package::default()
            })
        })
        .collect()
}
