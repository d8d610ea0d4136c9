//! What changed between two inventories of a host, item by item, for the
//! per-host change log. Volatile readings (uptime, free memory and space,
//! run states, logged-in sessions, battery wear) are left out: they change
//! every cycle and belong to health, not history.

use std::collections::BTreeMap;

use deskpulse_proto::v1::{Inventory, ProtectionState};

/// One observed change. `old` is `None` for an added item, `new` for a
/// removed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The section (D16 name), or "inventory" for the baseline entry.
    pub section: &'static str,
    /// The item within the section, e.g. "package dpkg/openssl:amd64".
    pub item: String,
    /// The value before.
    pub old: Option<String>,
    /// The value after.
    pub new: Option<String>,
}

type Items = BTreeMap<(&'static str, String), String>;

fn put(items: &mut Items, section: &'static str, item: impl Into<String>, value: String) {
    items.insert((section, item.into()), value);
}

fn state(code: i32) -> &'static str {
    match ProtectionState::try_from(code) {
        Ok(ProtectionState::On) => "on",
        Ok(ProtectionState::Off) => "off",
        _ => "unknown",
    }
}

/// The comparable items of an inventory: (section, item) → value.
pub fn items(inv: &Inventory) -> Items {
    let mut out = Items::new();
    if let Some(s) = &inv.system {
        for (field, value) in [
            ("vendor", &s.vendor),
            ("model", &s.model),
            ("serial", &s.serial),
            ("hardware uuid", &s.hardware_uuid),
            ("chassis", &s.chassis_type),
            ("bios version", &s.bios_version),
            ("bios date", &s.bios_date),
            ("baseboard", &s.baseboard_model),
        ] {
            put(&mut out, "system", field, value.clone());
        }
    }
    if let Some(c) = &inv.cpu {
        put(&mut out, "cpu", "model", c.model.clone());
        put(
            &mut out,
            "cpu",
            "cores",
            format!("{} physical, {} logical", c.physical_cores, c.logical_cores),
        );
    }
    if let Some(m) = &inv.memory {
        put(&mut out, "memory", "total bytes", m.total_bytes.to_string());
        for module in &m.modules {
            put(
                &mut out,
                "memory",
                format!("module {}", module.slot),
                format!(
                    "{} bytes {} {} MT/s {} {} serial {}",
                    module.size_bytes,
                    module.memory_type,
                    module.speed_mts,
                    module.manufacturer,
                    module.part_number,
                    module.serial
                ),
            );
        }
    }
    if let Some(st) = &inv.storage {
        for d in &st.disks {
            put(
                &mut out,
                "storage",
                format!("disk {}", d.name),
                format!("{} serial {} {} bytes", d.model, d.serial, d.size_bytes),
            );
        }
        for f in &st.filesystems {
            put(
                &mut out,
                "storage",
                format!("filesystem {}", f.mount_point),
                format!("{} {} {} bytes", f.device, f.fs_type, f.total_bytes),
            );
        }
    }
    if let Some(n) = &inv.network {
        for i in &n.interfaces {
            put(
                &mut out,
                "network",
                format!("interface {}", i.name),
                format!(
                    "mac {} ipv4 {} ipv6 {}",
                    i.mac,
                    i.ipv4.join(","),
                    i.ipv6.join(",")
                ),
            );
        }
        put(
            &mut out,
            "network",
            "gateways",
            n.default_gateways.join(","),
        );
        put(&mut out, "network", "dns servers", n.dns_servers.join(","));
    }
    if let Some(g) = &inv.gpu {
        for (i, gpu) in g.gpus.iter().enumerate() {
            put(
                &mut out,
                "gpu",
                format!("gpu {i}"),
                format!("{} {} driver {}", gpu.vendor, gpu.model, gpu.driver),
            );
        }
    }
    if let Some(b) = &inv.battery {
        for battery in &b.batteries {
            put(
                &mut out,
                "battery",
                format!("battery {}", battery.name),
                format!(
                    "{} {} design {} mWh",
                    battery.manufacturer, battery.model, battery.design_capacity_mwh
                ),
            );
        }
    }
    if let Some(o) = &inv.os {
        for (field, value) in [
            ("hostname", o.hostname.clone()),
            ("name", o.name.clone()),
            ("version", o.version.clone()),
            ("build", o.build.clone()),
            ("kernel", o.kernel_version.clone()),
            ("timezone", o.timezone.clone()),
            ("domain", o.domain.clone()),
            ("workgroup", o.workgroup.clone()),
        ] {
            put(&mut out, "os", field, value);
        }
    }
    if let Some(u) = &inv.users {
        for user in &u.users {
            put(
                &mut out,
                "users",
                format!("user {}", user.name),
                format!(
                    "{}{}{}",
                    user.full_name,
                    if user.admin { " (admin)" } else { "" },
                    if user.disabled { " (disabled)" } else { "" }
                ),
            );
        }
        put(&mut out, "users", "last login", u.last_login_user.clone());
    }
    if let Some(s) = &inv.security {
        put(&mut out, "security", "firewall", state(s.firewall).into());
        for v in &s.encryption {
            put(
                &mut out,
                "security",
                format!("encryption {}", v.volume),
                format!(
                    "{} {}",
                    if v.encrypted {
                        "encrypted"
                    } else {
                        "not encrypted"
                    },
                    v.method
                ),
            );
        }
        for a in &s.antivirus {
            put(
                &mut out,
                "security",
                format!("antivirus {}", a.product),
                format!(
                    "{}{}",
                    state(a.state),
                    if a.up_to_date { "" } else { ", out of date" }
                ),
            );
        }
        put(
            &mut out,
            "security",
            "reboot pending",
            if s.reboot_pending { "yes" } else { "no" }.into(),
        );
    }
    if let Some(sw) = &inv.software {
        for p in &sw.packages {
            let arch = if p.arch.is_empty() {
                String::new()
            } else {
                format!(":{}", p.arch)
            };
            put(
                &mut out,
                "software",
                format!("package {}/{}{arch}", p.ecosystem, p.name),
                p.version.clone(),
            );
        }
        for h in &sw.hotfixes {
            put(
                &mut out,
                "software",
                format!("hotfix {}", h.id),
                "installed".into(),
            );
        }
    }
    if let Some(sv) = &inv.services {
        for s in &sv.services {
            put(
                &mut out,
                "services",
                format!("service {}", s.name),
                format!("start {}", s.start_mode),
            );
        }
    }
    out.retain(|_, v| !v.trim().is_empty());
    out
}

/// The changes from `old` to `new`. A host's first inventory is one
/// baseline entry, not one "added" per item (D15).
pub fn diff(old: Option<&Inventory>, new: &Inventory) -> Vec<Change> {
    let new_items = items(new);
    let Some(old) = old else {
        return vec![Change {
            section: "inventory",
            item: "baseline".into(),
            old: None,
            new: Some(format!("{} items", new_items.len())),
        }];
    };
    let old_items = items(old);
    let mut out = Vec::new();
    for ((section, item), value) in &new_items {
        let before = old_items.get(&(*section, item.clone()));
        if before != Some(value) {
            out.push(Change {
                section,
                item: item.clone(),
                old: before.cloned(),
                new: Some(value.clone()),
            });
        }
    }
    for ((section, item), value) in &old_items {
        if !new_items.contains_key(&(*section, item.clone())) {
            out.push(Change {
                section,
                item: item.clone(),
                old: Some(value.clone()),
                new: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::{OsInfo, Package, SoftwareInfo};

    use super::*;

    fn inv(packages: &[(&str, &str)], uptime: u64) -> Inventory {
        Inventory {
            os: Some(OsInfo {
                hostname: "pc-1".into(),
                uptime_secs: uptime,
                ..OsInfo::default()
            }),
            software: Some(SoftwareInfo {
                packages: packages
                    .iter()
                    .map(|(n, v)| Package {
                        ecosystem: "dpkg".into(),
                        name: (*n).into(),
                        version: (*v).into(),
                        arch: "amd64".into(),
                        ..Package::default()
                    })
                    .collect(),
                ..SoftwareInfo::default()
            }),
            ..Inventory::default()
        }
    }

    #[test]
    fn the_first_inventory_is_one_baseline_entry() {
        let changes = diff(None, &inv(&[("bash", "5.2")], 1));
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].section, changes[0].item.as_str()),
            ("inventory", "baseline")
        );
    }

    #[test]
    fn added_upgraded_removed_and_volatile_ignored() {
        let old = inv(&[("bash", "5.2"), ("vim", "9.0")], 1);
        let new = inv(&[("bash", "5.2.1"), ("curl", "7.88")], 999);
        let changes = diff(Some(&old), &new);
        let view: Vec<(&str, Option<&str>, Option<&str>)> = changes
            .iter()
            .map(|c| (c.item.as_str(), c.old.as_deref(), c.new.as_deref()))
            .collect();
        assert_eq!(
            view,
            [
                ("package dpkg/bash:amd64", Some("5.2"), Some("5.2.1")),
                ("package dpkg/curl:amd64", None, Some("7.88")),
                ("package dpkg/vim:amd64", Some("9.0"), None),
            ],
            "uptime changed too, and is not history"
        );
        assert!(changes.iter().all(|c| c.section == "software"));
        assert!(diff(Some(&new), &new).is_empty());
    }
}
