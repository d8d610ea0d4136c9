//! macOS software, from files: application bundles
//! (`Applications/*.app/Contents/Info.plist`), installer receipts
//! (`var/db/receipts/*.plist`, what `pkgutil --pkgs` lists) and Homebrew
//! (`*/Cellar/NAME/VERSION/INSTALL_RECEIPT.json`). Plists may be XML or
//! binary; the `plist` crate reads both.

use std::path::Path;

use deskpulse_proto::v1::Package;

fn string(dict: &plist::Dictionary, key: &str) -> String {
    dict.get(key)
        .and_then(plist::Value::as_string)
        .unwrap_or_default()
        .to_owned()
}

/// An application bundle's Info.plist: name, version, bundle identifier.
/// The publisher is the reverse-DNS vendor part of the identifier
/// ("com.microsoft.Word" → "com.microsoft"): a hint, not a signed fact.
pub fn app_bundle(info_plist: &[u8]) -> Option<Package> {
    let value = plist::Value::from_reader(std::io::Cursor::new(info_plist)).ok()?;
    let dict = value.as_dictionary()?;
    let name = [
        string(dict, "CFBundleDisplayName"),
        string(dict, "CFBundleName"),
    ]
    .into_iter()
    .find(|n| !n.is_empty())?;
    let id = string(dict, "CFBundleIdentifier");
    let publisher = id
        .rsplit_once('.')
        .map(|(vendor, _)| vendor.to_owned())
        .unwrap_or_default();
    let version = [
        string(dict, "CFBundleShortVersionString"),
        string(dict, "CFBundleVersion"),
    ]
    .into_iter()
    .find(|v| !v.is_empty())
    .unwrap_or_default();
    Some(Package {
        ecosystem: "macos-app".into(),
        name,
        version,
        publisher,
        source: "app-bundle".into(),
        ..Package::default()
    })
}

/// An installer receipt: PackageIdentifier, PackageVersion, InstallDate.
pub fn receipt(plist_bytes: &[u8]) -> Option<Package> {
    let value = plist::Value::from_reader(std::io::Cursor::new(plist_bytes)).ok()?;
    let dict = value.as_dictionary()?;
    let name = string(dict, "PackageIdentifier");
    if name.is_empty() {
        return None;
    }
    let installed = dict
        .get("InstallDate")
        .and_then(plist::Value::as_date)
        .map(std::time::SystemTime::from)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    Some(Package {
        ecosystem: "pkgutil".into(),
        publisher: name
            .rsplit_once('.')
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default(),
        name,
        version: string(dict, "PackageVersion"),
        install_date_unix_s: installed,
        source: string(dict, "InstallProcessName"),
        ..Package::default()
    })
}

/// A Homebrew formula from its Cellar directory names and receipt.
pub fn homebrew(name: &str, version: &str, receipt_json: &str) -> Package {
    let receipt: serde_json::Value = serde_json::from_str(receipt_json).unwrap_or_default();
    let tap = receipt["source"]["tap"]
        .as_str()
        .unwrap_or("homebrew/core")
        .to_owned();
    Package {
        ecosystem: "homebrew".into(),
        name: name.to_owned(),
        version: version.to_owned(),
        install_date_unix_s: receipt["time"].as_i64().unwrap_or(0),
        publisher: tap.clone(),
        source: tap,
        ..Package::default()
    }
}

/// Everything under a macOS system root.
pub fn collect(root: &Path) -> Vec<Package> {
    let mut out = Vec::new();
    for apps in ["Applications", "System/Applications"] {
        if let Ok(dir) = std::fs::read_dir(root.join(apps)) {
            out.extend(
                dir.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".app"))
                    .filter_map(|e| std::fs::read(e.path().join("Contents/Info.plist")).ok())
                    .filter_map(|bytes| app_bundle(&bytes)),
            );
        }
    }
    if let Ok(dir) = std::fs::read_dir(root.join("var/db/receipts")) {
        out.extend(
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".plist"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|bytes| receipt(&bytes)),
        );
    }
    for cellar in ["opt/homebrew/Cellar", "usr/local/Cellar"] {
        let Ok(formulas) = std::fs::read_dir(root.join(cellar)) else {
            continue;
        };
        for formula in formulas.flatten() {
            let name = formula.file_name().to_string_lossy().into_owned();
            for version in std::fs::read_dir(formula.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let receipt = std::fs::read_to_string(version.path().join("INSTALL_RECEIPT.json"))
                    .unwrap_or_default();
                out.push(homebrew(
                    &name,
                    &version.file_name().to_string_lossy(),
                    &receipt,
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.ecosystem, &a.name).cmp(&(&b.ecosystem, &b.name)));
    out
}

#[cfg(test)]
mod tests;
