//! systemd services read from unit files, without talking to systemd:
//! start mode from the unit and its symlinks (enabled, disabled, static,
//! masked), run state from `/run/systemd/units/invocation:NAME`, which
//! systemd keeps for every started unit.

use std::collections::BTreeMap;
use std::path::Path;

use deskpulse_proto::v1::Service;

/// Unit directories, highest precedence first.
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// The `Description=` of a unit and whether it has an `[Install]` section.
pub fn parse_unit(text: &str) -> (String, bool) {
    let mut description = String::new();
    let mut install = false;
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
            install |= line == "[Install]";
            continue;
        }
        if section == "[Unit]"
            && let Some(d) = line.strip_prefix("Description=")
        {
            description = d.trim().to_owned();
        }
        if section == "[Install]" && !line.is_empty() && !line.starts_with('#') {
            install = true;
        }
    }
    (description, install)
}

/// Services under `root`; `running` says whether systemd is PID 1 there, so
/// the run state can be read.
pub fn services(root: &Path, running: bool) -> Vec<Service> {
    let mut units: BTreeMap<String, Service> = BTreeMap::new();
    for dir in UNIT_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Templates (foo@.service) are not services until instantiated.
            if !name.ends_with(".service") || name.contains("@.") || units.contains_key(&name) {
                continue;
            }
            let path = entry.path();
            let masked = std::fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null"));
            let (description, has_install) = if masked {
                (String::new(), false)
            } else {
                parse_unit(&std::fs::read_to_string(&path).unwrap_or_default())
            };
            let start_mode = if masked {
                "masked"
            } else if is_wanted(root, &name) {
                "enabled"
            } else if has_install {
                "disabled"
            } else {
                "static"
            };
            let state = if running { run_state(root, &name) } else { "" };
            units.insert(
                name.clone(),
                Service {
                    name,
                    display_name: description,
                    state: state.to_owned(),
                    start_mode: start_mode.to_owned(),
                },
            );
        }
    }
    units.into_values().collect()
}

/// The run state of one watched unit, for health samples: "missing" when no
/// unit file of that name exists, else "running" or "stopped" as
/// [`services`] reads them. A name without a unit suffix means its
/// `.service`. It looks the one unit up instead of scanning every unit
/// directory. The health sampler uses it under a fixture root, or when
/// `systemctl show` fails: systemd leaves no file that tells a failed unit
/// from a stopped one, so "failed" is not reported from files.
pub fn watched_state(root: &Path, name: &str) -> &'static str {
    let unit = if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.service")
    };
    let found = UNIT_DIRS
        .iter()
        .any(|dir| std::fs::symlink_metadata(root.join(dir).join(&unit)).is_ok());
    if !found {
        return "missing";
    }
    if run_state(root, &unit) == "running" {
        "running"
    } else {
        "stopped"
    }
}

/// "running" when systemd keeps an invocation id for the unit.
fn run_state(root: &Path, name: &str) -> &'static str {
    // A link whose target is the invocation id: it dangles on purpose.
    if std::fs::symlink_metadata(
        root.join("run/systemd/units")
            .join(format!("invocation:{name}")),
    )
    .is_ok()
    {
        "running"
    } else {
        "stopped"
    }
}

/// True when some `*.wants/` or `*.requires/` directory links the unit.
fn is_wanted(root: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(root.join("etc/systemd/system")) else {
        return false;
    };
    entries.flatten().any(|e| {
        let dir = e.file_name().to_string_lossy().into_owned();
        (dir.ends_with(".wants") || dir.ends_with(".requires"))
            && std::fs::symlink_metadata(e.path().join(name)).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_and_install_sections() {
        let (d, install) = parse_unit(
            "[Unit]\nDescription=OpenBSD Secure Shell server\n\n[Service]\nExecStart=/usr/sbin/sshd -D\n\n[Install]\nWantedBy=multi-user.target\n",
        );
        assert_eq!(d, "OpenBSD Secure Shell server");
        assert!(install);
        let (_, install) = parse_unit("[Unit]\nDescription=Static\n[Service]\nType=oneshot\n");
        assert!(!install);
    }
}
