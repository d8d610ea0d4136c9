//! Alpine's apk database (`/lib/apk/db/installed`): blocks separated by
//! blank lines, one `X:value` per line (P name, V version, A arch, o origin
//! package, t build time).

use deskpulse_proto::v1::Package;

/// The packages of an apk installed database.
pub fn parse_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut p = Package {
            ecosystem: "apk".into(),
            source: "apk".into(),
            ..Package::default()
        };
        for line in block.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key {
                "P" => p.name = value.to_owned(),
                "V" => p.version = value.to_owned(),
                "A" => p.arch = value.to_owned(),
                _ => {}
            }
        }
        if !p.name.is_empty() && !p.version.is_empty() {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_packages() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\no:musl\nt:1695739026\n\n\
                  P:busybox\nV:1.36.1-r5\nA:x86_64\nF:bin\nR:busybox\n\nP:broken\n\n";
        let pkgs = parse_installed(db);
        assert_eq!(pkgs.len(), 2);
        assert_eq!(
            (
                pkgs[0].name.as_str(),
                pkgs[0].version.as_str(),
                pkgs[0].arch.as_str()
            ),
            ("musl", "1.2.4-r2", "x86_64")
        );
        assert_eq!(pkgs[1].name, "busybox");
    }
}
