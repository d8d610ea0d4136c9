//! The boundary between wire inventories and the store's fleet-query facts:
//! which values of an inventory the fleet filters search, normalised
//! (lowercase, addresses without prefix length).

use deskpulse_proto::v1::{HealthSample, Inventory};

use crate::store::{InventoryFacts, PackageKey};

fn free_percent(total: u64, available: u64) -> f32 {
    if total == 0 {
        return 100.0;
    }
    (available.min(total) as f64 * 100.0 / total as f64) as f32
}

/// The facts of an inventory.
pub fn inventory_facts(inv: &Inventory) -> InventoryFacts {
    let mut facts: Vec<(&'static str, String)> = Vec::new();
    if let Some(os) = &inv.os {
        facts.push((
            "os",
            format!("{} {}", os.name, os.version).trim().to_lowercase(),
        ));
    }
    if let Some(system) = &inv.system {
        facts.push(("serial", system.serial.trim().to_lowercase()));
        facts.push((
            "model",
            format!("{} {}", system.vendor, system.model)
                .trim()
                .to_lowercase(),
        ));
    }
    if let Some(users) = &inv.users {
        facts.extend(users.users.iter().map(|u| ("user", u.name.to_lowercase())));
        facts.extend(
            users
                .sessions
                .iter()
                .map(|s| ("user", s.user.to_lowercase())),
        );
        facts.push(("user", users.last_login_user.to_lowercase()));
    }
    if let Some(net) = &inv.network {
        for nic in &net.interfaces {
            facts.push(("mac", nic.mac.to_lowercase().replace('-', ":")));
            for addr in nic.ipv4.iter().chain(&nic.ipv6) {
                let ip = addr.split('/').next().unwrap_or(addr);
                facts.push(("ip", ip.to_lowercase()));
            }
        }
    }
    let packages = inv
        .software
        .iter()
        .flat_map(|s| &s.packages)
        .filter(|p| !p.name.is_empty())
        .map(|p| PackageKey {
            ecosystem: p.ecosystem.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
        })
        .collect();
    let free = inv
        .storage
        .iter()
        .flat_map(|s| &s.filesystems)
        .map(|fs| {
            (
                fs.mount_point.clone(),
                free_percent(fs.total_bytes, fs.available_bytes),
            )
        })
        .collect();
    InventoryFacts {
        packages,
        facts,
        free,
    }
}

/// Free space per filesystem of a health sample.
pub fn health_free(health: &HealthSample) -> Vec<(String, f32)> {
    health
        .filesystems
        .iter()
        .map(|fs| {
            (
                fs.mount_point.clone(),
                (100.0 - fs.used_percent).clamp(0.0, 100.0),
            )
        })
        .collect()
}

/// The readings the health history keeps of a sample.
pub fn health_reading(health: &HealthSample) -> crate::store::HealthReading {
    crate::store::HealthReading {
        cpu_percent: health.cpu_percent.clamp(0.0, 100.0),
        memory_used_percent: health.memory_used_percent.clamp(0.0, 100.0),
        disk_used_max_percent: health
            .filesystems
            .iter()
            .map(|f| f.used_percent.clamp(0.0, 100.0))
            .fold(0.0, f32::max),
    }
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::{
        Filesystem, LocalUser, NetworkInfo, NetworkInterface, OsInfo, Package, SoftwareInfo,
        StorageInfo, UsersInfo,
    };

    use super::*;

    #[test]
    fn facts_are_normalised_for_search() {
        let inv = Inventory {
            os: Some(OsInfo {
                name: "Debian GNU/Linux".into(),
                version: "12".into(),
                ..Default::default()
            }),
            users: Some(UsersInfo {
                users: vec![LocalUser {
                    name: "Alice".into(),
                    ..Default::default()
                }],
                last_login_user: "bob".into(),
                ..Default::default()
            }),
            network: Some(NetworkInfo {
                interfaces: vec![NetworkInterface {
                    mac: "A0-B1-C2-D3-E4-F5".into(),
                    ipv4: vec!["10.1.2.3/24".into()],
                    ipv6: vec!["FD00::2/64".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            storage: Some(StorageInfo {
                filesystems: vec![Filesystem {
                    mount_point: "/".into(),
                    total_bytes: 200,
                    available_bytes: 10,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            software: Some(SoftwareInfo {
                packages: vec![Package {
                    ecosystem: "dpkg".into(),
                    name: "openssl".into(),
                    version: "3.0.11-1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = inventory_facts(&inv);
        for want in [
            ("os", "debian gnu/linux 12"),
            ("user", "alice"),
            ("user", "bob"),
            ("mac", "a0:b1:c2:d3:e4:f5"),
            ("ip", "10.1.2.3"),
            ("ip", "fd00::2"),
        ] {
            assert!(
                f.facts.contains(&(want.0, want.1.to_string())),
                "{want:?} in {:?}",
                f.facts
            );
        }
        assert_eq!(f.free, vec![("/".to_string(), 5.0)]);
        assert_eq!(f.packages.len(), 1);
    }
}
