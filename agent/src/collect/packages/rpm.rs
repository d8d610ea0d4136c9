//! rpm's database, read directly (D34): on rpm ≥ 4.16 it is SQLite
//! (`var/lib/rpm/rpmdb.sqlite`, or `usr/lib/sysimage/rpm/` on newer
//! distributions), one header blob per installed package in the `Packages`
//! table. Spawning `rpm -qa` would cost far more than reading it.
//!
//! A header blob is: index count and data length (big-endian u32), then
//! that many 16-byte index entries (tag, type, offset, count), then the data
//! store the offsets point into.
//!
//! The database is read with the system's own SQLite ([`system_sqlite`]),
//! so rpm databases are read on Linux only, where rpm systems are.

#[cfg(target_os = "linux")]
pub mod system_sqlite;

#[cfg(target_os = "linux")]
use std::path::Path;

use deskpulse_proto::v1::Package;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_INSTALLTIME: u32 = 1008;
const TAG_VENDOR: u32 = 1011;
const TAG_ARCH: u32 = 1022;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The tags we read from one header blob.
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    name: String,
    version: String,
    release: String,
    epoch: Option<u32>,
    arch: String,
    vendor: String,
    install_time: Option<u32>,
}

fn parse_header(blob: &[u8]) -> Option<Header> {
    let count = usize::try_from(be32(blob, 0)?).ok()?;
    let data_len = usize::try_from(be32(blob, 4)?).ok()?;
    let data_start = 8usize.checked_add(count.checked_mul(16)?)?;
    let data = blob.get(data_start..data_start.checked_add(data_len)?)?;
    let mut h = Header::default();
    for i in 0..count {
        let entry = 8 + i * 16;
        let (tag, kind, offset) = (
            be32(blob, entry)?,
            be32(blob, entry + 4)?,
            usize::try_from(be32(blob, entry + 8)?).ok()?,
        );
        let string = || {
            let bytes = data.get(offset..)?;
            let end = bytes.iter().position(|b| *b == 0)?;
            Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
        };
        let int = || {
            if kind == TYPE_INT32 {
                be32(data, offset)
            } else {
                None
            }
        };
        let is_text = kind == TYPE_STRING || kind == TYPE_I18NSTRING;
        match tag {
            TAG_NAME if is_text => h.name = string()?,
            TAG_VERSION if is_text => h.version = string()?,
            TAG_RELEASE if is_text => h.release = string()?,
            TAG_ARCH if is_text => h.arch = string()?,
            TAG_VENDOR if is_text => h.vendor = string().unwrap_or_default(),
            TAG_EPOCH => h.epoch = int(),
            TAG_INSTALLTIME => h.install_time = int(),
            _ => {}
        }
    }
    (!h.name.is_empty() && !h.version.is_empty()).then_some(h)
}

/// One package from a header blob; the version is `[epoch:]version-release`
/// as rpm orders it.
pub fn package(blob: &[u8]) -> Option<Package> {
    let h = parse_header(blob)?;
    let mut version = match h.epoch {
        Some(epoch) if epoch > 0 => format!("{epoch}:{}", h.version),
        _ => h.version,
    };
    if !h.release.is_empty() {
        version = format!("{version}-{}", h.release);
    }
    Some(Package {
        ecosystem: "rpm".into(),
        name: h.name,
        version,
        arch: h.arch,
        publisher: h.vendor,
        install_date_unix_s: h.install_time.map_or(0, i64::from),
        source: "rpm".into(),
        ..Package::default()
    })
}

/// Every installed package of an rpmdb.sqlite, opened read-only through
/// the system's SQLite library.
#[cfg(target_os = "linux")]
pub fn read_db(path: &Path) -> Result<Vec<Package>, system_sqlite::SqliteError> {
    read_db_with(system_sqlite::SYSTEM_LIBRARY, path)
}

/// [`read_db`] with the SQLite library named `library`.
#[cfg(target_os = "linux")]
pub(crate) fn read_db_with(
    library: &str,
    path: &Path,
) -> Result<Vec<Package>, system_sqlite::SqliteError> {
    let mut out = Vec::new();
    system_sqlite::each_blob(library, path, "SELECT blob FROM Packages", |blob| {
        out.extend(package(blob));
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    use std::path::PathBuf;

    use super::*;

    #[cfg(target_os = "linux")]
    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm/rpmdb.sqlite")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_fixture_database_made_by_rpm_reads_back() {
        let pkgs = read_db(&fixture()).expect("reads");
        let seen: Vec<(&str, &str, &str)> = pkgs
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.publisher.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "bash",
                    "5.1.8-9.el9",
                    "Rocky Enterprise Software Foundation"
                ),
                ("google-chrome-stable", "120.0.6099.216-1", "Google LLC"),
                (
                    "openssl-libs",
                    "1:3.0.7-24.el9",
                    "Rocky Enterprise Software Foundation"
                ),
            ]
        );
        assert!(pkgs.iter().all(|p| p.install_date_unix_s > 1_700_000_000));
    }

    /// The real `rpm` reads the committed fixture and agrees with us (D32).
    ///
    #[test]
    #[cfg(target_os = "linux")]
    fn rpm_agrees_with_our_reading() {
        let dir = fixture().parent().map(PathBuf::from).expect("dir");
        let out = std::process::Command::new("rpm")
            .args(["--define", "_db_backend sqlite", "--dbpath"])
            .arg(&dir)
            .args([
                "-qa",
                "--qf",
                "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{VENDOR}\\n",
            ])
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            other => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "rpm is required in CI: {other:?}"
                );
                eprintln!("SKIPPED: rpm is not installed");
                return;
            }
        };
        let mut theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        theirs.sort();
        let ours: Vec<String> = read_db(&fixture())
            .expect("reads")
            .iter()
            .map(|p| format!("{} {} {}", p.name, p.version, p.publisher))
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn without_the_system_library_the_database_is_not_read() {
        let error =
            read_db_with("libdeskpulse-no-such-sqlite.so.0", &fixture()).expect_err("no library");
        assert!(
            matches!(error, system_sqlite::SqliteError::NoLibrary(_)),
            "{error:?}"
        );
    }

    #[test]
    fn truncated_and_garbage_blobs_are_skipped() {
        assert!(package(&[]).is_none());
        assert!(package(&[0, 0, 0, 9, 0, 0, 0, 1]).is_none());
        assert!(package(&[0xff; 64]).is_none());
    }
}
