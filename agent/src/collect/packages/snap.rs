//! Snaps (`/snap/NAME/current/meta/snap.yaml`) and system-wide flatpaks
//! (`/var/lib/flatpak/app/ID/current/active/metadata`).

use std::path::Path;

use deskpulse_proto::v1::Package;

/// `name` and `version` of a snap.yaml: top-level `key: value` lines only.
pub fn parse_snap_yaml(text: &str) -> Option<(String, String)> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches(['\'', '"']).to_owned();
        match key.trim() {
            "name" => name = Some(value),
            "version" => version = Some(value),
            _ => {}
        }
    }
    Some((name?, version?))
}

/// Installed snaps.
pub fn installed(root: &Path) -> Vec<Package> {
    let Ok(dir) = std::fs::read_dir(root.join("snap")) else {
        return Vec::new();
    };
    let mut out: Vec<Package> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("current/meta/snap.yaml")).ok())
        .filter_map(|text| parse_snap_yaml(&text))
        .map(|(name, version)| Package {
            ecosystem: "snap".into(),
            name,
            version,
            source: "snap".into(),
            ..Package::default()
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The `[Application] name` and `runtime=` branch of a flatpak metadata file.
pub fn parse_flatpak_metadata(text: &str) -> Option<String> {
    let mut in_app = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_app = line == "[Application]";
            continue;
        }
        if in_app && let Some(name) = line.strip_prefix("name=") {
            return Some(name.to_owned());
        }
    }
    None
}

/// System-wide flatpak applications; the version is the installed branch
/// (e.g. "stable"), since flatpak keeps release versions only in appdata.
pub fn flatpaks(root: &Path) -> Vec<Package> {
    let apps = root.join("var/lib/flatpak/app");
    let Ok(dir) = std::fs::read_dir(&apps) else {
        return Vec::new();
    };
    let mut out: Vec<Package> = dir
        .flatten()
        .filter_map(|app| flatpak_at(&app.path().join("current")))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn flatpak_at(current: &Path) -> Option<Package> {
    let text = std::fs::read_to_string(current.join("active/metadata")).ok()?;
    let name = parse_flatpak_metadata(&text)?;
    let target = std::fs::read_link(current).ok();
    let branch = target
        .as_ref()
        .and_then(|t| t.file_name())
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let arch = target
        .as_ref()
        .and_then(|t| t.parent())
        .and_then(|p| p.file_name())
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Package {
        ecosystem: "flatpak".into(),
        name,
        version: branch,
        arch,
        source: "flatpak".into(),
        ..Package::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snap_yaml_top_level_fields_only() {
        let yaml = "name: firefox\nversion: '121.0-1'\nsummary: Mozilla Firefox\napps:\n  firefox:\n    version: nested\n";
        assert_eq!(
            parse_snap_yaml(yaml),
            Some(("firefox".into(), "121.0-1".into()))
        );
        assert_eq!(parse_snap_yaml("summary: x\n"), None);
    }

    #[test]
    fn flatpak_metadata_application_name() {
        let meta = "[Runtime]\nname=org.freedesktop.Platform\n\n[Application]\nname=org.mozilla.firefox\nruntime=org.freedesktop.Platform/x86_64/23.08\n";
        assert_eq!(
            parse_flatpak_metadata(meta).as_deref(),
            Some("org.mozilla.firefox")
        );
        assert_eq!(parse_flatpak_metadata("[Runtime]\nname=x\n"), None);
    }
}
