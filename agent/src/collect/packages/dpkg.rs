//! dpkg's status database (`/var/lib/dpkg/status`): RFC 822-style stanzas,
//! continuation lines starting with a space. A package counts as installed
//! when its Status is "install ok installed", which is what `dpkg-query`
//! shows as `ii` (D35).

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
            "Status" => {
                installed =
                    value.split_whitespace().collect::<Vec<_>>() == ["install", "ok", "installed"]
            }
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
Package: half-installed\nStatus: install reinstreq half-installed\nVersion: 0.1\n\n\
Package: no-version\nStatus: install ok installed\n";

    #[test]
    fn only_ii_packages_with_their_fields() {
        let pkgs = parse_status(STATUS);
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "libssl3", "epoch"]);
        assert_eq!(pkgs[0].version, "5.2.15-2+b8");
        assert_eq!(pkgs[0].arch, "amd64");
        assert_eq!(pkgs[1].origin, "Debian");
        assert_eq!(pkgs[2].version, "1:2.3-4");
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
