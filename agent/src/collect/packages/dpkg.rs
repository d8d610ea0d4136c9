//! dpkg's status database (`/var/lib/dpkg/status`): RFC 822-style stanzas,
//! continuation lines starting with a space. A package counts as installed
//! when its files are on disk: its Status (want, error flag, state) ends in
//! "installed" (`ii`, and `hi`/`ri` for held or marked packages, D35), or
//! in one of the transitional states an apt run passes through
//! ([`TRANSITIONAL`]), which the package keeps in its `state`. Only
//! "not-installed" and "config-files" (removed, configuration kept) are
//! gone: a package mid-upgrade is never logged as removed and added again.

use deskpulse_proto::v1::Package;

/// One installed package as dpkg records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpkgPackage {
    /// Package.
    pub name: String,
    /// Version, with the epoch when there is one ("1:2.3-4").
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// The Origin field, rarely set.
    pub origin: String,
    /// The Maintainer field, "Name <address>".
    pub maintainer: String,
    /// Empty when installed; else the transitional state, e.g. "unpacked".
    pub state: String,
}

/// dpkg's states between "not-installed" and "installed" (dpkg(1),
/// "Package states"): the files are there, the package is being unpacked,
/// configured or awaits a trigger.
pub const TRANSITIONAL: [&str; 5] = [
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
];

/// The package state a Status field's value gives: `Some("")` installed,
/// `Some(state)` present in a transitional state, `None` not installed.
fn installed_state(status: &str) -> Option<&str> {
    match status.split_whitespace().collect::<Vec<_>>()[..] {
        [_want, _error, "installed"] => Some(""),
        [_want, _error, state] => TRANSITIONAL.iter().copied().find(|s| *s == state),
        _ => None,
    }
}

/// The publisher (D17) of a dpkg package: its Origin when dpkg recorded
/// one, else the distribution whose lists the maintainer address belongs
/// to, else the maintainer's name (a vendor's team for third-party
/// packages: "Google Inc.", "Microsoft Corporation"). The address itself is
/// never the publisher.
pub fn publisher(origin: &str, maintainer: &str) -> String {
    if !origin.is_empty() {
        return origin.to_owned();
    }
    let (name, address) = match maintainer.split_once('<') {
        Some((name, rest)) => (name.trim(), rest.trim_end_matches('>').trim()),
        None if maintainer.contains('@') => ("", maintainer.trim()),
        None => (maintainer.trim(), ""),
    };
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let under = |root: &str| domain == root || domain.ends_with(&format!(".{root}"));
    if under("debian.org") || under("debian.net") {
        "Debian".into()
    } else if under("ubuntu.com") || under("canonical.com") {
        "Ubuntu".into()
    } else if under("linuxmint.com") {
        "Linux Mint".into()
    } else if under("raspberrypi.com") || under("raspberrypi.org") {
        "Raspberry Pi".into()
    } else {
        name.trim_matches('"').to_owned()
    }
}

/// The installed packages of a status file, in file order.
pub fn parse_status(text: &str) -> Vec<DpkgPackage> {
    let mut out = Vec::new();
    let mut current = DpkgPackage::default();
    let mut installed = false;
    let mut flush = |current: &mut DpkgPackage, installed: &mut bool| {
        if *installed && !current.name.is_empty() && !current.version.is_empty() {
            out.push(std::mem::take(current));
        } else {
            *current = DpkgPackage::default();
        }
        *installed = false;
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut current, &mut installed);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue; // a continuation of a multi-line field we do not read
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Package" => current.name = value.to_owned(),
            "Version" => current.version = value.to_owned(),
            "Architecture" => current.arch = value.to_owned(),
            "Origin" => current.origin = value.to_owned(),
            "Maintainer" => current.maintainer = value.to_owned(),
            "Status" => match installed_state(value) {
                Some(state) => {
                    installed = true;
                    current.state = state.to_owned();
                }
                None => installed = false,
            },
            _ => {}
        }
    }
    flush(&mut current, &mut installed);
    out
}

/// The wire form; the install date is filled by the caller.
pub fn to_package(p: DpkgPackage) -> Package {
    Package {
        ecosystem: "dpkg".into(),
        name: p.name,
        version: p.version,
        arch: p.arch,
        publisher: publisher(&p.origin, &p.maintainer),
        source: "dpkg".into(),
        state: p.state,
        ..Package::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: bash\nEssential: yes\nStatus: install ok installed\nPriority: required\n\
Architecture: amd64\nVersion: 5.2.15-2+b8\nDescription: GNU Bourne Again SHell\n Bash is an sh-compatible command language interpreter.\n .\n Status: not a real field\n\n\
Package: old-config\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n\n\
Package: held\nStatus: hold ok installed\nArchitecture: all\nVersion: 2.0\n\n\
Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.11-1~deb12u2\nOrigin: Debian\n\n\
Package: epoch\nStatus: install ok installed\nArchitecture: all\nVersion: 1:2.3-4\n\n\
Package: removed\nStatus: deinstall ok not-installed\nVersion: 0.2\n\n\
Package: no-version\nStatus: install ok installed\n";

    #[test]
    fn installed_packages_with_their_fields() {
        let pkgs = parse_status(STATUS);
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "held", "libssl3", "epoch"]);
        assert_eq!(pkgs[0].version, "5.2.15-2+b8");
        assert_eq!(pkgs[0].arch, "amd64");
        assert_eq!(pkgs[2].origin, "Debian");
        assert_eq!(pkgs[3].version, "1:2.3-4");
        assert!(pkgs.iter().all(|p| p.state.is_empty()));
    }

    /// Stanzas as dpkg leaves them in the middle of `apt-get upgrade`
    /// (`agent/tests/fixtures/dpkg/status-mid-upgrade`): each package being upgraded is
    /// still installed, in its transitional state; the one being removed and
    /// the one whose configuration alone is left are gone.
    #[test]
    fn packages_mid_upgrade_are_installed_in_a_transitional_state() {
        let text = include_str!("../../../tests/fixtures/dpkg/status-mid-upgrade");
        let pkgs = parse_status(text);
        let view: Vec<(&str, &str, &str)> = pkgs
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.state.as_str()))
            .collect();
        assert_eq!(
            view,
            [
                ("base-files", "12.4+deb12u8", ""),
                ("libc6", "2.36-9+deb12u9", "half-configured"),
                ("libc-bin", "2.36-9+deb12u9", "unpacked"),
                ("man-db", "2.11.2-2", "triggers-pending"),
                ("openssh-server", "1:9.2p1-2+deb12u4", "triggers-awaited"),
                ("tzdata", "2024b-0+deb12u1", "half-installed"),
                ("vim-tiny", "2:9.0.1378-2", ""),
            ]
        );
        assert_eq!(to_package(pkgs[1].clone()).state, "half-configured");
    }

    #[test]
    fn publisher_is_an_origin_or_vendor_never_an_address() {
        assert_eq!(publisher("Debian", "Someone <x@example.com>"), "Debian");
        let cases = [
            (
                "GNU Libc Maintainers <debian-glibc@lists.debian.org>",
                "Debian",
            ),
            ("Santiago Vila <sanvila@debian.org>", "Debian"),
            (
                "Debian Rust Maintainers <pkg-rust-maintainers@alioth-lists.debian.net>",
                "Debian",
            ),
            (
                "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
                "Ubuntu",
            ),
            (
                "Chrome Linux Team <chromium-dev@chromium.org>",
                "Chrome Linux Team",
            ),
            (
                "Microsoft Corporation <vscode-linux@microsoft.com>",
                "Microsoft Corporation",
            ),
            ("\"Docker, Inc.\" <support@docker.com>", "Docker, Inc."),
            ("nobody@example.com", ""),
            ("", ""),
        ];
        for (maintainer, expected) in cases {
            assert_eq!(publisher("", maintainer), expected, "{maintainer}");
        }
    }

    #[test]
    fn crlf_and_missing_trailing_newline() {
        let pkgs = parse_status(
            "Package: a\r\nStatus: install ok installed\r\nVersion: 1\r\n\r\nPackage: b\nStatus: install ok installed\nVersion: 2",
        );
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].version, "1");
    }
}
