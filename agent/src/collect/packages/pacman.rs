//! pacman's local database (`/var/lib/pacman/local/NAME-VERSION/desc`):
//! `%KEY%` lines, each followed by its values until a blank line.

use deskpulse_proto::v1::Package;

/// One package from a `desc` file; `None` without a name or version.
pub fn parse_desc(text: &str) -> Option<Package> {
    let mut p = Package {
        ecosystem: "pacman".into(),
        source: "pacman".into(),
        ..Package::default()
    };
    let mut key = "";
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('%') && line.ends_with('%') && line.len() > 2 {
            key = line;
            continue;
        }
        if line.is_empty() {
            key = "";
            continue;
        }
        match key {
            "%NAME%" => p.name = line.to_owned(),
            "%VERSION%" => p.version = line.to_owned(),
            "%ARCH%" => p.arch = line.to_owned(),
            "%INSTALLDATE%" => p.install_date_unix_s = line.parse().unwrap_or(0),
            _ => {}
        }
        key = match key {
            // Single-valued keys take only their first line.
            "%NAME%" | "%VERSION%" | "%ARCH%" | "%INSTALLDATE%" => "",
            other => other,
        };
    }
    (!p.name.is_empty() && !p.version.is_empty()).then_some(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DESC: &str = "%NAME%\nlinux\n\n%VERSION%\n6.6.7.arch1-1\n\n%BASE%\nlinux\n\n%DESC%\nThe Linux kernel and modules\n\n\
%ARCH%\nx86_64\n\n%BUILDDATE%\n1702653063\n\n%INSTALLDATE%\n1702800000\n\n%PACKAGER%\nJan Alexander Steffens <heftig@archlinux.org>\n\n\
%SIZE%\n137311213\n\n%LICENSE%\nGPL2\n\n%VALIDATION%\npgp\n\n%DEPENDS%\ncoreutils\nkmod\n\n";

    #[test]
    fn a_desc_file_becomes_a_package() {
        let p = parse_desc(DESC).expect("package");
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.arch.as_str()),
            ("linux", "6.6.7.arch1-1", "x86_64")
        );
        assert_eq!(p.install_date_unix_s, 1_702_800_000);
        assert_eq!(p.publisher, "", "the packager is a person, not a publisher");
        assert!(parse_desc("%NAME%\nx\n").is_none());
    }
}
