//! What changed between two inventories of a host, item by item, for the
//! per-host change log. Volatile readings (uptime, free memory and space,
//! run states, logged-in sessions, battery wear) are left out: they change
//! every cycle and belong to health, not history.
//!
//! Lists without an order (an interface's addresses, the gateways, the
//! GPUs) compare as sets: inventories stored before the agent sorted them
//! (`delta::sort_unordered`), and older agents, list them in whatever order
//! the OS gave, which is not a change.

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

/// A list without an order, as one comparable value: sorted, joined.
fn set(list: &[String]) -> String {
    let mut sorted: Vec<&str> = list.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(",")
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
                format!("mac {} ipv4 {} ipv6 {}", i.mac, set(&i.ipv4), set(&i.ipv6)),
            );
        }
        put(&mut out, "network", "gateways", set(&n.default_gateways));
        put(&mut out, "network", "dns servers", n.dns_servers.join(","));
    }
    if let Some(g) = &inv.gpu {
        // Adapters have no stable name: numbered in sorted order, so the
        // order the OS enumerates them in is no change.
        let mut gpus: Vec<String> = g
            .gpus
            .iter()
            .map(|gpu| format!("{} {} driver {}", gpu.vendor, gpu.model, gpu.driver))
            .collect();
        gpus.sort_unstable();
        for (i, gpu) in gpus.into_iter().enumerate() {
            put(&mut out, "gpu", format!("gpu {i}"), gpu);
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
    use deskpulse_proto::v1::{
        Gpu, GpuInfo, NetworkInfo, NetworkInterface, OsInfo, Package, SoftwareInfo,
    };

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

    fn network(ipv6: &[&str], gateways: &[&str], gpus: &[&str]) -> Inventory {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Inventory {
            network: Some(NetworkInfo {
                interfaces: vec![NetworkInterface {
                    name: "eth0".into(),
                    mac: "52:54:00:12:34:56".into(),
                    ipv4: strings(&["10.0.2.15/24"]),
                    ipv6: strings(ipv6),
                    ..NetworkInterface::default()
                }],
                default_gateways: strings(gateways),
                dns_servers: strings(&["10.0.2.3"]),
            }),
            gpu: Some(GpuInfo {
                gpus: gpus
                    .iter()
                    .map(|model| Gpu {
                        vendor: "Intel".into(),
                        model: (*model).into(),
                        driver: "i915".into(),
                    })
                    .collect(),
            }),
            ..Inventory::default()
        }
    }

    #[test]
    fn unordered_lists_in_another_order_are_no_change() {
        // What three hosts logged twenty times in 13 minutes: the same IPv6
        // addresses, listed by the kernel in another order.
        let before = network(
            &[
                "2001:db8::15/64",
                "fd00::15/64",
                "fe80::5054:ff:fe12:3456/64",
            ],
            &["10.0.2.2", "fe80::2"],
            &["UHD 620", "Arc A380"],
        );
        let after = network(
            &[
                "fe80::5054:ff:fe12:3456/64",
                "2001:db8::15/64",
                "fd00::15/64",
            ],
            &["fe80::2", "10.0.2.2"],
            &["Arc A380", "UHD 620"],
        );
        assert_eq!(diff(Some(&before), &after), []);
        let mut sorted = after.clone();
        deskpulse_proto::delta::sort_unordered(&mut sorted);
        assert_eq!(diff(Some(&before), &sorted), []);
        // A real change is still one change.
        let moved = network(
            &[
                "2001:db8::16/64",
                "fd00::15/64",
                "fe80::5054:ff:fe12:3456/64",
            ],
            &["10.0.2.2", "fe80::2"],
            &["Arc A380", "UHD 620"],
        );
        let changes = diff(Some(&before), &moved);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].item, "interface eth0");
        assert!(
            changes[0]
                .new
                .as_deref()
                .is_some_and(|v| v.contains("2001:db8::16/64"))
        );
    }

    #[test]
    fn a_package_in_a_transitional_state_is_no_change() {
        // An inventory taken while apt ran: libc6 unpacked at its new
        // version, bash half-configured at the same one.
        let before = inv(&[("bash", "5.2"), ("libc6", "2.36-9+deb12u8")], 1);
        let mut during = inv(&[("bash", "5.2"), ("libc6", "2.36-9+deb12u9")], 2);
        let software = during.software.as_mut().expect("software");
        software.packages[0].state = "half-configured".into();
        software.packages[1].state = "unpacked".into();
        let after = inv(&[("bash", "5.2"), ("libc6", "2.36-9+deb12u9")], 3);
        let changes = diff(Some(&before), &during);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (
                changes[0].item.as_str(),
                changes[0].old.as_deref(),
                changes[0].new.as_deref()
            ),
            (
                "package dpkg/libc6:amd64",
                Some("2.36-9+deb12u8"),
                Some("2.36-9+deb12u9")
            )
        );
        assert_eq!(diff(Some(&during), &after), [], "configured: nothing new");
    }

    #[test]
    fn dns_server_order_is_a_change() {
        let mut before = network(&[], &[], &[]);
        let mut after = before.clone();
        before.network.as_mut().expect("network").dns_servers =
            vec!["10.0.0.1".into(), "10.0.0.2".into()];
        after.network.as_mut().expect("network").dns_servers =
            vec!["10.0.0.2".into(), "10.0.0.1".into()];
        assert_eq!(
            diff(Some(&before), &after).len(),
            1,
            "resolvers ask in turn"
        );
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
