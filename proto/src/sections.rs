//! Inventory section names (D16), as typed on command lines and used in
//! `Unavailable.field` paths. `hardware` stands for system, cpu, memory,
//! storage, gpu and battery.

use crate::v1::InventorySection;

/// Every section, in display order.
pub const ALL: [InventorySection; 12] = [
    InventorySection::System,
    InventorySection::Os,
    InventorySection::Cpu,
    InventorySection::Memory,
    InventorySection::Storage,
    InventorySection::Network,
    InventorySection::Gpu,
    InventorySection::Battery,
    InventorySection::Users,
    InventorySection::Security,
    InventorySection::Services,
    InventorySection::Software,
];

/// The sections `hardware` stands for.
pub const HARDWARE: [InventorySection; 6] = [
    InventorySection::System,
    InventorySection::Cpu,
    InventorySection::Memory,
    InventorySection::Storage,
    InventorySection::Gpu,
    InventorySection::Battery,
];

/// The command-line name of a section.
pub fn name(section: InventorySection) -> &'static str {
    match section {
        InventorySection::Unspecified => "unspecified",
        InventorySection::System => "system",
        InventorySection::Cpu => "cpu",
        InventorySection::Memory => "memory",
        InventorySection::Storage => "storage",
        InventorySection::Network => "network",
        InventorySection::Gpu => "gpu",
        InventorySection::Battery => "battery",
        InventorySection::Os => "os",
        InventorySection::Users => "users",
        InventorySection::Security => "security",
        InventorySection::Software => "software",
        InventorySection::Services => "services",
    }
}

/// The sections a name stands for, or a one-line error listing the names.
pub fn parse(text: &str) -> Result<Vec<InventorySection>, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "hardware" {
        return Ok(HARDWARE.to_vec());
    }
    ALL.iter()
        .find(|s| name(**s) == lower)
        .map(|s| vec![*s])
        .ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|s| name(*s)).collect();
            format!(
                "unknown section {text:?}: expected hardware, {}",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_hardware_is_an_alias() {
        for s in ALL {
            assert_eq!(parse(name(s)).expect("parses"), vec![s]);
        }
        assert_eq!(parse("Hardware").expect("alias").len(), 6);
        let error = parse("disks").expect_err("unknown");
        assert!(error.contains("unknown section \"disks\""), "{error}");
    }
}
