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
        publisher: p.origin,
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
    fn crlf_and_missing_trailing_newline() {
        let pkgs = parse_status(
            "Package: a\r\nStatus: install ok installed\r\nVersion: 1\r\n\r\nPackage: b\nStatus: install ok installed\nVersion: 2",
        );
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].version, "1");
    }
}
