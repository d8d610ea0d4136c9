//! Inventory deltas: the agent sends what changed against the last snapshot
//! the collector acknowledged, and the collector applies it to the snapshot
//! it stores. Both sides check the result by hash, so a delta applied to the
//! wrong base is caught, never stored.
//!
//! Small sections travel whole when they changed; packages and services,
//! the big ones, change item by item. A snapshot is hashed in canonical form
//! ([`canonicalize`]): packages and services sorted, so the same machine
//! state always has the same hash.

use std::collections::BTreeMap;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1::{
    Inventory, InventoryDelta, InventorySection, Package, PackageRef, Service, ServicesInfo,
    SoftwareInfo,
};

/// Why a delta cannot be applied: either way the agent must resync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The collector's snapshot is not the one the delta starts from.
    #[error("the delta's base snapshot is not the stored one")]
    BaseMismatch,
    /// Applying the delta did not give the snapshot the agent has.
    #[error("the delta applied does not give the agent's snapshot")]
    ResultMismatch,
    /// The delta names a section this build does not know.
    #[error("the delta replaces an unknown section {0}")]
    UnknownSection(i32),
}

type PackageKey = (String, String, String, String);

fn package_key(p: &Package) -> PackageKey {
    (
        p.ecosystem.clone(),
        p.name.clone(),
        p.arch.clone(),
        p.source.clone(),
    )
}

fn ref_key(r: &PackageRef) -> PackageKey {
    (
        r.ecosystem.clone(),
        r.name.clone(),
        r.arch.clone(),
        r.source.clone(),
    )
}

/// Sorts packages and services into the order hashes are taken in.
pub fn canonicalize(inventory: &mut Inventory) {
    if let Some(software) = inventory.software.as_mut() {
        software.packages.sort_by(|a, b| {
            package_key(a)
                .cmp(&package_key(b))
                .then_with(|| a.version.cmp(&b.version))
        });
    }
    if let Some(services) = inventory.services.as_mut() {
        services.services.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| a.display_name.cmp(&b.display_name))
        });
    }
}

/// Sorts the lists whose order carries no meaning: each interface's
/// addresses, the default gateways, the GPUs and the encryption and
/// antivirus entries. DNS servers keep their order: a resolver asks them in
/// turn. The agent applies it to what it collects, so an OS listing the
/// same addresses in another order makes neither a delta nor a change; it
/// is not part of [`canonicalize`], whose hash agents of every version and
/// the collector agree on (a collector sorting what an older agent hashed
/// unsorted would answer every delta of that agent with a resync).
pub fn sort_unordered(inventory: &mut Inventory) {
    if let Some(network) = inventory.network.as_mut() {
        for interface in &mut network.interfaces {
            interface.ipv4.sort();
            interface.ipv6.sort();
        }
        network.interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        network.default_gateways.sort();
    }
    if let Some(gpu) = inventory.gpu.as_mut() {
        gpu.gpus.sort_by(|a, b| {
            (&a.vendor, &a.model, &a.driver).cmp(&(&b.vendor, &b.model, &b.driver))
        });
    }
    if let Some(security) = inventory.security.as_mut() {
        security.encryption.sort_by(|a, b| a.volume.cmp(&b.volume));
        security.antivirus.sort_by(|a, b| a.product.cmp(&b.product));
    }
}

/// SHA-256 of a canonical snapshot's encoding.
pub fn snapshot_hash(inventory: &Inventory) -> Vec<u8> {
    Sha256::digest(inventory.encode_to_vec()).to_vec()
}

fn unique_packages(software: &SoftwareInfo) -> Option<BTreeMap<PackageKey, &Package>> {
    let mut map = BTreeMap::new();
    for p in &software.packages {
        if map.insert(package_key(p), p).is_some() {
            return None;
        }
    }
    Some(map)
}

fn unique_services(services: &ServicesInfo) -> Option<BTreeMap<&str, &Service>> {
    let mut map = BTreeMap::new();
    for s in &services.services {
        if map.insert(s.name.as_str(), s).is_some() {
            return None;
        }
    }
    Some(map)
}

/// Copies each small section that differs into `replaced`.
macro_rules! whole_sections {
    ($base:expr, $next:expr, $replaced:expr, $listed:expr, [$(($field:ident, $section:ident)),*]) => {
        $(
            if $base.$field != $next.$field {
                $replaced.$field = $next.$field.clone();
                $listed.push(InventorySection::$section as i32);
            }
        )*
    };
}

/// The delta from `base` to `next`, both canonical.
pub fn diff(base: &Inventory, next: &Inventory) -> InventoryDelta {
    let mut delta = InventoryDelta {
        schema_version: next.schema_version,
        base_sha256: snapshot_hash(base),
        result_sha256: snapshot_hash(next),
        ..InventoryDelta::default()
    };
    let mut replaced = Inventory::default();
    whole_sections!(
        base,
        next,
        replaced,
        delta.replaced_sections,
        [
            (system, System),
            (cpu, Cpu),
            (memory, Memory),
            (storage, Storage),
            (network, Network),
            (gpu, Gpu),
            (battery, Battery),
            (os, Os),
            (users, Users),
            (security, Security)
        ]
    );
    let item_wise = match (&base.software, &next.software) {
        (Some(b), Some(n)) => unique_packages(b)
            .zip(unique_packages(n))
            .map(|m| (b, n, m)),
        _ => None,
    };
    match item_wise {
        Some((b, n, (old, new))) => {
            for (key, package) in &new {
                if old.get(key) != Some(package) {
                    delta.packages_upserted.push((*package).clone());
                }
            }
            for (ecosystem, name, arch, source) in old.keys().filter(|k| !new.contains_key(*k)) {
                delta.packages_removed.push(PackageRef {
                    ecosystem: ecosystem.clone(),
                    name: name.clone(),
                    arch: arch.clone(),
                    source: source.clone(),
                });
            }
            if b.hotfixes != n.hotfixes {
                delta.hotfixes_replaced = true;
                delta.hotfixes.clone_from(&n.hotfixes);
            }
        }
        None if base.software != next.software => {
            replaced.software.clone_from(&next.software);
            delta
                .replaced_sections
                .push(InventorySection::Software as i32);
        }
        None => {}
    }
    let services = match (&base.services, &next.services) {
        (Some(b), Some(n)) => unique_services(b).zip(unique_services(n)),
        _ => None,
    };
    match services {
        Some((old, new)) => {
            for (name, service) in &new {
                if old.get(name) != Some(service) {
                    delta.services_upserted.push((*service).clone());
                }
            }
            delta.services_removed = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .map(|k| (*k).to_owned())
                .collect();
        }
        None if base.services != next.services => {
            replaced.services.clone_from(&next.services);
            delta
                .replaced_sections
                .push(InventorySection::Services as i32);
        }
        None => {}
    }
    if base.unavailable != next.unavailable {
        delta.unavailable_replaced = true;
        replaced.unavailable.clone_from(&next.unavailable);
    }
    delta.replaced = Some(replaced);
    delta
}

/// Applies `delta` to `base`, checking both hashes.
pub fn apply(base: &Inventory, delta: &InventoryDelta) -> Result<Inventory, DeltaError> {
    if snapshot_hash(base) != delta.base_sha256 {
        return Err(DeltaError::BaseMismatch);
    }
    let mut out = base.clone();
    out.schema_version = delta.schema_version;
    let replaced = delta.replaced.clone().unwrap_or_default();
    let mut software_whole = false;
    let mut services_whole = false;
    for &code in &delta.replaced_sections {
        let section =
            InventorySection::try_from(code).map_err(|_| DeltaError::UnknownSection(code))?;
        match section {
            InventorySection::System => out.system.clone_from(&replaced.system),
            InventorySection::Cpu => out.cpu.clone_from(&replaced.cpu),
            InventorySection::Memory => out.memory.clone_from(&replaced.memory),
            InventorySection::Storage => out.storage.clone_from(&replaced.storage),
            InventorySection::Network => out.network.clone_from(&replaced.network),
            InventorySection::Gpu => out.gpu.clone_from(&replaced.gpu),
            InventorySection::Battery => out.battery.clone_from(&replaced.battery),
            InventorySection::Os => out.os.clone_from(&replaced.os),
            InventorySection::Users => out.users.clone_from(&replaced.users),
            InventorySection::Security => out.security.clone_from(&replaced.security),
            InventorySection::Software => {
                out.software.clone_from(&replaced.software);
                software_whole = true;
            }
            InventorySection::Services => {
                out.services.clone_from(&replaced.services);
                services_whole = true;
            }
            InventorySection::Unspecified => return Err(DeltaError::UnknownSection(code)),
        }
    }
    let package_changes = !delta.packages_upserted.is_empty()
        || !delta.packages_removed.is_empty()
        || delta.hotfixes_replaced;
    if !software_whole && package_changes {
        let software = out.software.get_or_insert_with(SoftwareInfo::default);
        let mut map: BTreeMap<PackageKey, Package> = software
            .packages
            .drain(..)
            .map(|p| (package_key(&p), p))
            .collect();
        for gone in &delta.packages_removed {
            map.remove(&ref_key(gone));
        }
        for p in &delta.packages_upserted {
            map.insert(package_key(p), p.clone());
        }
        software.packages = map.into_values().collect();
        if delta.hotfixes_replaced {
            software.hotfixes.clone_from(&delta.hotfixes);
        }
    }
    if !services_whole
        && (!delta.services_upserted.is_empty() || !delta.services_removed.is_empty())
    {
        let services = out.services.get_or_insert_with(ServicesInfo::default);
        let mut map: BTreeMap<String, Service> = services
            .services
            .drain(..)
            .map(|s| (s.name.clone(), s))
            .collect();
        for gone in &delta.services_removed {
            map.remove(gone);
        }
        for s in &delta.services_upserted {
            map.insert(s.name.clone(), s.clone());
        }
        services.services = map.into_values().collect();
    }
    if delta.unavailable_replaced {
        out.unavailable.clone_from(&replaced.unavailable);
    }
    canonicalize(&mut out);
    if snapshot_hash(&out) != delta.result_sha256 {
        return Err(DeltaError::ResultMismatch);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
