//! macOS applications, receipts and Homebrew formulas, with the plist
//! fixtures read back after the real `plistutil` converts them.

#[cfg(unix)]
use std::path::{Path, PathBuf};

use super::*;

const WORD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleDisplayName</key>
	<string>Microsoft Word</string>
	<key>CFBundleIdentifier</key>
	<string>com.microsoft.Word</string>
	<key>CFBundleShortVersionString</key>
	<string>16.80</string>
	<key>CFBundleVersion</key>
	<string>16.80.23121017</string>
</dict>
</plist>
"#;

const RECEIPT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>InstallDate</key>
	<date>2024-01-15T09:30:00Z</date>
	<key>InstallPrefixPath</key>
	<string>/</string>
	<key>InstallProcessName</key>
	<string>installer</string>
	<key>PackageFileName</key>
	<string>GoogleChrome.pkg</string>
	<key>PackageIdentifier</key>
	<string>com.google.Chrome</string>
	<key>PackageVersion</key>
	<string>120.0.6099.216</string>
</dict>
</plist>
"#;

#[test]
fn bundles_receipts_and_formulas() {
    let word = app_bundle(WORD.as_bytes()).expect("bundle");
    assert_eq!(
        (
            word.name.as_str(),
            word.version.as_str(),
            word.publisher.as_str()
        ),
        ("Microsoft Word", "16.80", "com.microsoft")
    );
    let chrome = receipt(RECEIPT.as_bytes()).expect("receipt");
    assert_eq!(chrome.name, "com.google.Chrome");
    assert_eq!(chrome.version, "120.0.6099.216");
    assert_eq!(chrome.install_date_unix_s, 1_705_311_000);
    let jq = homebrew(
        "jq",
        "1.7.1",
        r#"{"time": 1704067200, "source": {"tap": "homebrew/core"}}"#,
    );
    assert_eq!(
        (
            jq.version.as_str(),
            jq.install_date_unix_s,
            jq.source.as_str()
        ),
        ("1.7.1", 1_704_067_200, "homebrew/core")
    );
    assert!(app_bundle(b"not a plist").is_none());
    assert!(receipt(b"<plist><dict></dict></plist>").is_none());
}

/// A temp dir for the plistutil test, removed when dropped.
#[cfg(unix)]
struct Tree(PathBuf);

#[cfg(unix)]
impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn write(root: &Path, path: &str, data: &[u8]) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(full, data).expect("write");
}

/// The fixtures go through the real `plistutil` (D32): it must accept our
/// XML, and our parser must read its binary conversion the same way.
///
/// Unix only: a Windows build cannot start the Debian `plistutil` CI has.
#[test]
#[cfg(unix)]
fn plistutil_converts_the_fixtures_and_we_read_both_forms() {
    let tree = Tree(tempfile::tempdir().expect("temp dir").keep());
    let xml = tree.0.join("Info.plist");
    let bin = tree.0.join("Info.bin.plist");
    std::fs::write(&xml, WORD).expect("write");
    let status = match std::process::Command::new("plistutil")
        .arg("-i")
        .arg(&xml)
        .arg("-o")
        .arg(&bin)
        .args(["-f", "bin"])
        .status()
    {
        Ok(status) => status,
        Err(_) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "plistutil is required in CI (apt-get install libplist-utils)"
            );
            eprintln!("SKIPPED: plistutil is not installed");
            return;
        }
    };
    assert!(status.success(), "plistutil rejected the fixture");
    let binary = std::fs::read(&bin).expect("binary plist");
    assert!(binary.starts_with(b"bplist00"));
    assert_eq!(app_bundle(&binary), app_bundle(WORD.as_bytes()));

    write(
        &tree.0,
        "root/Applications/Microsoft Word.app/Contents/Info.plist",
        &binary,
    );
    write(
        &tree.0,
        "root/var/db/receipts/com.google.Chrome.plist",
        RECEIPT.as_bytes(),
    );
    write(
        &tree.0,
        "root/opt/homebrew/Cellar/jq/1.7.1/INSTALL_RECEIPT.json",
        br#"{"time": 1704067200}"#,
    );
    let all = collect(&tree.0.join("root"));
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|p| (p.ecosystem.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("homebrew", "jq"),
            ("macos-app", "Microsoft Word"),
            ("pkgutil", "com.google.Chrome")
        ]
    );
}
