//! How many OS updates wait on a Linux PC (issue 21), read without the
//! network: update-notifier's count when Ubuntu leaves one; else, on the
//! live system only, what apt would upgrade now from the lists it already
//! has (`apt-get -s dist-upgrade`, locking off: a simulation takes no lock
//! and changes nothing), or what dnf knows from its cache (`dnf -C
//! check-update`). A count that cannot be read is an error with its
//! reason, never 0.
//!
//! A count costs a second or two of apt's or dnf's time, so it is kept
//! (D24): taken again only when the package state it comes from has
//! changed (dpkg's status, apt's or dnf's lists, the rpmdb), and then at
//! most once per [`MIN_SPACING`], so an apt run that touches the status
//! file every second does not start a probe every inventory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use deskpulse_proto::v1::UnavailableReason;

use crate::collect::spawn;

/// The least time between two counts by a program.
pub const MIN_SPACING: Duration = Duration::from_secs(600);

/// How long apt or dnf may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Why no count: the reason and one line for `Inventory.unavailable`.
pub type Missing = (UnavailableReason, String);

/// The count update-notifier wrote, e.g. "12 updates can be applied
/// immediately." or "3 packages can be updated."
pub fn update_notifier(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let (count, rest) = l.split_once(' ')?;
        let count: u32 = count.parse().ok()?;
        (rest.starts_with("update") || rest.starts_with("package")).then_some(count)
    })
}

/// The packages `apt-get -s dist-upgrade` would upgrade: its `Inst NAME
/// [OLD] (NEW ...)` lines, which apt never translates. New dependencies
/// (`Inst NAME (NEW ...)`, no old version) are not updates of anything;
/// packages held back are not counted either (apt would not install them).
pub fn apt_simulation(text: &str) -> u32 {
    let upgrades = text.lines().filter(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("Inst") && words.next().is_some() && {
            words.next().is_some_and(|old| old.starts_with('['))
        }
    });
    u32::try_from(upgrades.count()).unwrap_or(u32::MAX)
}

/// The packages `dnf -q check-update` lists: `NAME.ARCH VERSION REPO`
/// lines, each package once (the "Obsoleting Packages" section lists some
/// again, with the packages they replace indented below them).
pub fn dnf_check_update(text: &str) -> u32 {
    let mut seen: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with([' ', '\t']))
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [package, _version, _repo] if package.contains('.') => Some(package),
                _ => None,
            },
        )
        .collect();
    seen.sort_unstable();
    seen.dedup();
    u32::try_from(seen.len()).unwrap_or(u32::MAX)
}

/// The files whose change means the count may have changed.
const STATE_FILES: [&str; 6] = [
    "var/lib/dpkg/status",
    "var/cache/apt/pkgcache.bin",
    "var/lib/apt/lists",
    "var/lib/rpm",
    "var/cache/dnf",
    "var/lib/update-notifier/updates-available",
];

struct Kept {
    key: Vec<Option<SystemTime>>,
    at: Instant,
    value: Result<u32, Missing>,
}

static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

/// The number of pending updates on the PC under `root`, or why it is not
/// known.
pub fn pending(root: &Path) -> Result<u32, Missing> {
    if let Some(count) = std::fs::read_to_string(root.join(STATE_FILES[5]))
        .ok()
        .and_then(|t| update_notifier(&t))
    {
        return Ok(count);
    }
    if root != Path::new("/") {
        // Programs see the running system, not a fixture tree (D13).
        return Err((
            UnavailableReason::NotSupported,
            "under a system root other than /, only update-notifier's count is read".into(),
        ));
    }
    let key: Vec<Option<SystemTime>> = STATE_FILES.iter().map(|f| mtime(&root.join(f))).collect();
    let mut kept = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(k) = kept.as_ref()
        && (k.key == key || k.at.elapsed() < MIN_SPACING)
    {
        return k.value.clone();
    }
    let value = count_by_program(root);
    *kept = Some(Kept {
        key,
        at: Instant::now(),
        value: value.clone(),
    });
    value
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

fn count_by_program(root: &Path) -> Result<u32, Missing> {
    let failed = |error: String| (UnavailableReason::Failed, error);
    if root.join("var/lib/dpkg/status").exists() {
        let done = spawn::run(
            "apt-get",
            &["-s", "-q", "-o", "Debug::NoLocking=true", "dist-upgrade"],
            TIMEOUT,
        )
        .map_err(|e| failed(e.to_string()))?;
        return match done.code {
            Some(0) => Ok(apt_simulation(&String::from_utf8_lossy(&done.stdout))),
            Some(code) => Err(failed(format!(
                "apt-get -s dist-upgrade: exited with exit status: {code}"
            ))),
            None => Err(failed("apt-get -s dist-upgrade: ended by a signal".into())),
        };
    }
    let dnf = match root.join("var/lib/rpm").exists() {
        true => match spawn::run("dnf", &["-C", "-q", "check-update"], TIMEOUT) {
            Err(spawn::SpawnError::NotFound(_)) => None,
            other => Some(other.map_err(|e| failed(e.to_string()))?),
        },
        false => None,
    };
    if let Some(done) = dnf {
        // check-update exits 100 when there are updates, 0 when none.
        return match done.code {
            Some(100) => Ok(dnf_check_update(&String::from_utf8_lossy(&done.stdout))),
            Some(0) => Ok(0),
            Some(code) => Err(failed(format!(
                "dnf -C check-update: exited with exit status: {code} (no metadata cached yet?)"
            ))),
            None => Err(failed("dnf -C check-update: ended by a signal".into())),
        };
    }
    Err((
        UnavailableReason::NotSupported,
        "pending updates are counted with apt (dpkg) or dnf (rpm); neither is here".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/updates");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture")
    }

    #[test]
    fn update_notifier_counts() {
        assert_eq!(
            update_notifier(
                "\n12 updates can be applied immediately.\n5 of these updates are standard security updates.\n"
            ),
            Some(12)
        );
        assert_eq!(
            update_notifier("3 packages can be updated.\n0 updates are security updates.\n"),
            Some(3)
        );
        assert_eq!(update_notifier("nothing here\n"), None);
    }

    #[test]
    fn apt_counts_upgrades_not_new_packages() {
        assert_eq!(apt_simulation(&fixture("apt-get-s-dist-upgrade.txt")), 4);
        assert_eq!(apt_simulation(&fixture("apt-get-s-up-to-date.txt")), 0);
    }

    #[test]
    fn dnf_counts_each_package_once() {
        assert_eq!(dnf_check_update(&fixture("dnf-check-update.txt")), 5);
        assert_eq!(dnf_check_update(""), 0);
    }

    #[test]
    fn a_fixture_root_without_update_notifier_has_no_count() {
        let root = tempfile::tempdir().expect("root");
        let (reason, why) = pending(root.path()).expect_err("not counted");
        assert_eq!(reason, UnavailableReason::NotSupported);
        assert!(why.contains("update-notifier"), "{why}");
        let file = root
            .path()
            .join("var/lib/update-notifier/updates-available");
        std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
        std::fs::write(&file, "7 updates can be applied immediately.\n").expect("write");
        assert_eq!(pending(root.path()), Ok(7));
    }

    /// This machine's own count, as apt's simulation gives it, against
    /// `apt list --upgradable` (the `pending_updates` diagnostic), which
    /// also lists what apt would hold back.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_live_count_is_at_most_what_apt_lists_as_upgradable() {
        if !Path::new("/var/lib/dpkg/status").exists()
            || crate::diagnostics::run::which("apt").is_none()
        {
            eprintln!("SKIPPED: not a Debian-like system");
            return;
        }
        let count = pending(Path::new("/")).expect("apt counts here");
        let listed = spawn::output("apt", &["list", "--upgradable"], TIMEOUT).expect("apt list");
        let listed = String::from_utf8_lossy(&listed)
            .lines()
            .filter(|l| l.contains("[upgradable from"))
            .count();
        assert!(
            count as usize <= listed,
            "apt-get -s counts {count}, apt lists {listed}"
        );
    }
}
