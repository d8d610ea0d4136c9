//! Inventory changes that change rules fire on, found by comparing the
//! stored inventory with the next one. Pure: the store calls [`detect`]
//! inside the transaction that stores the new inventory, and a host's first
//! inventory (no old one) fires nothing.

use deskpulse_proto::v1::{Inventory, ProtectionState};

use super::model::ChangeKind;

/// One detected change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What kind of change.
    pub kind: ChangeKind,
    /// The disk, account, product or volume; empty for memory.
    pub subject: String,
    /// One line for the ticket: old -> new.
    pub detail: String,
}

/// Total memory must drop by this much, and by 2 %, to count: the memory
/// the OS reports moves by a few MB with kernel reservations.
const MEMORY_DROP_BYTES: u64 = 256 * 1024 * 1024;

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The changes from `old` to `new` that change rules may fire on.
pub fn detect(old: &Inventory, new: &Inventory) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    if let (Some(a), Some(b)) = (&old.memory, &new.memory) {
        let drop = a.total_bytes.saturating_sub(b.total_bytes);
        if b.total_bytes > 0 && drop >= MEMORY_DROP_BYTES && drop * 50 >= a.total_bytes {
            events.push(ChangeEvent {
                kind: ChangeKind::MemoryDecreased,
                subject: String::new(),
                detail: format!(
                    "total memory {} -> {}",
                    gib(a.total_bytes),
                    gib(b.total_bytes)
                ),
            });
        }
    }
    if let (Some(a), Some(b)) = (&old.storage, &new.storage) {
        for disk in &b.disks {
            let before = a.disks.iter().find(|d| d.name == disk.name);
            if let Some(before) = before
                && !before.serial.is_empty()
                && !disk.serial.is_empty()
                && before.serial != disk.serial
            {
                events.push(ChangeEvent {
                    kind: ChangeKind::DiskSerialChanged,
                    subject: disk.name.clone(),
                    detail: format!(
                        "disk {} serial {} ({}) -> {} ({})",
                        disk.name, before.serial, before.model, disk.serial, disk.model
                    ),
                });
            }
        }
    }
    if let (Some(a), Some(b)) = (&old.users, &new.users) {
        for user in b.users.iter().filter(|u| u.admin && !u.disabled) {
            let was_admin = a
                .users
                .iter()
                .any(|u| u.name == user.name && u.admin && !u.disabled);
            if !was_admin {
                let known = a.users.iter().any(|u| u.name == user.name);
                events.push(ChangeEvent {
                    kind: ChangeKind::NewLocalAdmin,
                    subject: user.name.clone(),
                    detail: if known {
                        format!("local account {} gained administrator rights", user.name)
                    } else {
                        format!("new local administrator {}", user.name)
                    },
                });
            }
        }
    }
    if let (Some(a), Some(b)) = (&old.security, &new.security) {
        for av in &b.antivirus {
            let was_on = a
                .antivirus
                .iter()
                .any(|o| o.product == av.product && o.state == ProtectionState::On as i32);
            if was_on && av.state == ProtectionState::Off as i32 {
                events.push(ChangeEvent {
                    kind: ChangeKind::AntivirusDisabled,
                    subject: av.product.clone(),
                    detail: format!("{} real-time protection on -> off", av.product),
                });
            }
        }
        for volume in &b.encryption {
            let was = a
                .encryption
                .iter()
                .find(|o| o.volume == volume.volume && o.encrypted);
            if let Some(was) = was
                && !volume.encrypted
            {
                events.push(ChangeEvent {
                    kind: ChangeKind::EncryptionDisabled,
                    subject: volume.volume.clone(),
                    detail: format!(
                        "{} encryption {} -> none",
                        volume.volume,
                        if was.method.is_empty() {
                            "on"
                        } else {
                            &was.method
                        }
                    ),
                });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::{
        Antivirus, Disk, LocalUser, MemoryInfo, SecurityInfo, StorageInfo, UsersInfo,
        VolumeEncryption,
    };

    use super::*;

    fn pc(
        memory_gib: u64,
        serial: &str,
        admin: bool,
        av: ProtectionState,
        luks: bool,
    ) -> Inventory {
        Inventory {
            memory: Some(MemoryInfo {
                total_bytes: memory_gib << 30,
                ..Default::default()
            }),
            storage: Some(StorageInfo {
                disks: vec![Disk {
                    name: "nvme0n1".into(),
                    serial: serial.into(),
                    model: "WD SN740".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            users: Some(UsersInfo {
                users: vec![LocalUser {
                    name: "mallory".into(),
                    admin,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            security: Some(SecurityInfo {
                antivirus: vec![Antivirus {
                    product: "Defender".into(),
                    state: av as i32,
                    up_to_date: true,
                }],
                encryption: vec![VolumeEncryption {
                    volume: "/".into(),
                    method: if luks { "luks".into() } else { String::new() },
                    encrypted: luks,
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_watched_change_is_detected_with_its_subject() {
        let before = pc(16, "A1", false, ProtectionState::On, true);
        let after = pc(8, "B2", true, ProtectionState::Off, false);
        let kinds: Vec<(ChangeKind, String)> = detect(&before, &after)
            .into_iter()
            .map(|e| (e.kind, e.subject))
            .collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::MemoryDecreased, String::new()),
                (ChangeKind::DiskSerialChanged, "nvme0n1".into()),
                (ChangeKind::NewLocalAdmin, "mallory".into()),
                (ChangeKind::AntivirusDisabled, "Defender".into()),
                (ChangeKind::EncryptionDisabled, "/".into()),
            ]
        );
    }

    #[test]
    fn the_same_inventory_and_improvements_fire_nothing() {
        let good = pc(16, "A1", false, ProtectionState::On, true);
        assert!(detect(&good, &good).is_empty());
        let worse = pc(8, "A1", true, ProtectionState::Off, false);
        assert!(
            detect(&worse, &good).is_empty(),
            "{:?}",
            detect(&worse, &good)
        );
        // A few MB less visible memory is noise, not a removed module.
        let mut noisy = good.clone();
        if let Some(m) = noisy.memory.as_mut() {
            m.total_bytes -= 50 << 20;
        }
        assert!(detect(&good, &noisy).is_empty());
        // An unknown antivirus state going to off is not a change from on.
        let unknown = pc(16, "A1", false, ProtectionState::Unspecified, true);
        let off = pc(16, "A1", false, ProtectionState::Off, true);
        assert!(detect(&unknown, &off).is_empty());
    }
}
