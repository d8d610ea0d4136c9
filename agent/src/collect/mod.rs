//! Inventory and health collection (interim minimal version; the fuller
//! module with fixture-tested parsers replaces it).

use std::path::Path;

use deskpulse_proto::v1::{
    CpuInfo, FilesystemUsage, HealthSample, Inventory, MemoryInfo, NetworkInfo, NetworkInterface,
    OsInfo, Package, SoftwareInfo, StorageInfo, SystemInfo,
};
use sysinfo::{Disks, Networks, System};

/// Collects the full inventory.
pub fn collect_inventory(system_root: &Path) -> Inventory {
    let mut sys = System::new().unwrap_or_else(|_| {
        System::new_with_specifics(sysinfo::RefreshKind::nothing()).expect("sysinfo")
    });
    sys.refresh_memory();
    sys.refresh_cpu_all();
    let cpus = sys.cpus();
    let disks = Disks::new_with_refreshed_list().ok();
    let nets = Networks::new_with_refreshed_list().ok();
    Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        system: Some(SystemInfo::default()),
        os: Some(OsInfo {
            hostname: System::host_name().unwrap_or_default(),
            name: System::name().unwrap_or_default(),
            version: System::os_version().unwrap_or_default(),
            kernel_version: System::kernel_version().unwrap_or_default(),
            arch: System::cpu_arch(),
            boot_time_unix_s: System::boot_time().unwrap_or_default() as i64,
            uptime_secs: System::uptime().unwrap_or_default(),
            ..Default::default()
        }),
        cpu: Some(CpuInfo {
            model: cpus
                .first()
                .map(|c| c.brand().to_owned())
                .unwrap_or_default(),
            vendor: cpus
                .first()
                .map(|c| c.vendor_id().to_owned())
                .unwrap_or_default(),
            logical_cores: cpus.len() as u32,
            physical_cores: System::physical_core_count().unwrap_or_default() as u32,
            frequency_mhz: cpus.first().map(|c| c.frequency()).unwrap_or_default(),
            ..Default::default()
        }),
        memory: Some(MemoryInfo {
            total_bytes: sys.total_memory(),
            available_bytes: sys.available_memory(),
            swap_total_bytes: sys.total_swap(),
            ..Default::default()
        }),
        storage: Some(StorageInfo {
            filesystems: disks
                .iter()
                .flat_map(|d| d.iter())
                .map(|d| deskpulse_proto::v1::Filesystem {
                    mount_point: d.mount_point().display().to_string(),
                    device: d.name().to_string_lossy().into_owned(),
                    fs_type: d.file_system().to_string_lossy().into_owned(),
                    total_bytes: d.total_space(),
                    available_bytes: d.available_space(),
                    removable: d.is_removable(),
                })
                .collect(),
            ..Default::default()
        }),
        network: Some(NetworkInfo {
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
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        software: Some(SoftwareInfo {
            packages: dpkg(system_root),
            ..Default::default()
        }),
        ..Default::default()
    }
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
                ..Default::default()
            })
        })
        .collect()
}

/// Keeps sysinfo state between samples.
pub struct HealthSampler {
    sys: System,
}

impl HealthSampler {
    /// A sampler.
    pub fn new(_system_root: &Path) -> Self {
        Self {
            sys: System::new().expect("sysinfo"),
        }
    }

    /// One sample.
    pub fn sample(&mut self) -> HealthSample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let total = self.sys.total_memory().max(1);
        let disks = Disks::new_with_refreshed_list().ok();
        HealthSample {
            cpu_percent: self.sys.global_cpu_usage(),
            memory_used_percent: (total - self.sys.available_memory()) as f32 * 100.0
                / total as f32,
            uptime_secs: System::uptime().unwrap_or_default(),
            filesystems: disks
                .iter()
                .flat_map(|d| d.iter())
                .map(|d| FilesystemUsage {
                    mount_point: d.mount_point().display().to_string(),
                    used_percent: (d.total_space() - d.available_space()) as f32 * 100.0
                        / d.total_space().max(1) as f32,
                    available_bytes: d.available_space(),
                })
                .collect(),
        }
    }
}

/// Text rendering of an inventory.
pub fn render_inventory(inv: &Inventory) -> String {
    format!("{inv:#?}\n")
}

/// Text rendering of a health sample.
pub fn render_health(h: &HealthSample) -> String {
    format!("{h:#?}\n")
}
