//! A stand-in for the software section until the packages module replaces
//! it.

use std::path::Path;

use deskpulse_proto::v1::{Inventory, Package, SoftwareInfo};

/// Fills software.
pub fn fill(root: &Path, inv: &mut Inventory) {
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
