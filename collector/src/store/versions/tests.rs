//! Version sort keys agree with dpkg's and rpm's own ordering, checked
//! against `dpkg --compare-versions` and rpm's `vercmp`.

use std::cmp::Ordering;

use super::*;

fn cmp(ecosystem: &str, a: &str, b: &str) -> Ordering {
    sort_key(ecosystem, a).cmp(&sort_key(ecosystem, b))
}

/// Pairs from dpkg's own test suite (lib/dpkg/t/t-version.c) and its
/// documentation: (a, b, expected order of a against b).
const DPKG: &[(&str, &str, Ordering)] = &[
    ("1.0", "1.0", Ordering::Equal),
    ("1.0~rc1", "1.0", Ordering::Less),
    ("1.0~rc1", "1.0~rc2", Ordering::Less),
    ("1.0~~", "1.0~", Ordering::Less),
    ("1.0", "1.0.0", Ordering::Less),
    ("1.0", "1.0a", Ordering::Less),
    ("1.0a", "1.0+a", Ordering::Less),
    ("1.0a", "1.0.1", Ordering::Less),
    ("2.30", "2.4", Ordering::Greater),
    ("1:0.1", "2.0", Ordering::Greater),
    ("0:1.0", "1.0", Ordering::Equal),
    ("1.0-1", "1.0-2", Ordering::Less),
    ("1.0-1", "1.0.1-1", Ordering::Less),
    ("1.0-1ubuntu1", "1.0-1", Ordering::Greater),
    ("3.0.11-1~deb12u2", "3.0.11-1", Ordering::Less),
    ("3.0.13-1~deb12u1", "3.0.11-1~deb12u2", Ordering::Greater),
    ("1.0-0", "1.0", Ordering::Equal),
    ("a", "1", Ordering::Greater),
    ("1.001", "1.1", Ordering::Equal),
];

/// Pairs from rpm's test suite (tests/rpmvercmp.at).
const RPM: &[(&str, &str, Ordering)] = &[
    ("1.0", "1.0", Ordering::Equal),
    ("1.0", "2.0", Ordering::Less),
    ("2.0.1", "2.0", Ordering::Greater),
    ("2.0.1a", "2.0.1", Ordering::Greater),
    ("5.5p1", "5.5p2", Ordering::Less),
    ("5.5p10", "5.5p1", Ordering::Greater),
    ("10xyz", "10.1xyz", Ordering::Less),
    ("xyz10", "xyz10.1", Ordering::Less),
    ("xyz.4", "8", Ordering::Less),
    ("5.5p1", "5.5.p1", Ordering::Equal),
    ("1.0aa", "1.0a", Ordering::Greater),
    ("2a", "2.0", Ordering::Less),
    ("1.0~rc1", "1.0", Ordering::Less),
    ("1.0~rc1", "1.0~rc1~git123", Ordering::Greater),
    ("1.0^", "1.0", Ordering::Greater),
    ("1.0^git1", "1.0.1", Ordering::Less),
    ("1.0^git1~pre", "1.0^git1", Ordering::Less),
    ("1:1.0", "2.0", Ordering::Greater),
    ("1.0-1.el9", "1.0-2.el9", Ordering::Less),
    ("a", "1", Ordering::Less),
];

#[test]
fn dpkg_order_matches_dpkg() {
    for (a, b, want) in DPKG {
        assert_eq!(cmp("dpkg", a, b), *want, "dpkg {a} vs {b}");
        assert_eq!(cmp("dpkg", b, a), want.reverse(), "dpkg {b} vs {a}");
    }
}

#[test]
fn rpm_order_matches_rpmvercmp() {
    for (a, b, want) in RPM {
        assert_eq!(cmp("rpm", a, b), *want, "rpm {a} vs {b}");
        assert_eq!(cmp("rpm", b, a), want.reverse(), "rpm {b} vs {a}");
    }
}

#[test]
fn the_two_ecosystems_disagree_where_their_rules_differ() {
    // Letters sort after the end in dpkg but before numbers in rpm.
    assert_eq!(cmp("dpkg", "a", "1"), Ordering::Greater);
    assert_eq!(cmp("rpm", "a", "1"), Ordering::Less);
    // rpm ignores separators; dpkg orders '+' after letters.
    assert_eq!(cmp("rpm", "1.0a", "1.0+a"), Ordering::Equal);
    assert_eq!(cmp("dpkg", "1.0a", "1.0+a"), Ordering::Less);
    // Other ecosystems use the rpm rules.
    assert_eq!(cmp("snap", "121.0", "99.0"), Ordering::Greater);
}

/// Checks the dpkg rule against the `dpkg` tool itself where it is present.
#[test]
fn dpkg_compare_versions_agrees() {
    let Ok(probe) = std::process::Command::new("dpkg").arg("--version").output() else {
        eprintln!("SKIPPED: dpkg is not installed");
        return;
    };
    assert!(probe.status.success());
    for (a, b, _) in DPKG {
        for (op, want) in [
            ("lt", Ordering::Less),
            ("eq", Ordering::Equal),
            ("gt", Ordering::Greater),
        ] {
            let status = std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .expect("dpkg runs");
            assert_eq!(
                status.success(),
                cmp("dpkg", a, b) == want,
                "dpkg says {a} {op} {b} is {}",
                status.success()
            );
        }
    }
}

/// Checks the rpm rule against `rpmdev-vercmp`-like `rpm --eval` where rpm
/// is present.
#[test]
fn rpm_vercmp_agrees() {
    let probe = std::process::Command::new("rpm")
        .args(["--eval", "%{lua:print(rpm.vercmp('1','2'))}"])
        .output();
    let Ok(probe) = probe else {
        eprintln!("SKIPPED: rpm is not installed");
        return;
    };
    if String::from_utf8_lossy(&probe.stdout).trim() != "-1" {
        eprintln!("SKIPPED: this rpm has no lua vercmp");
        return;
    }
    for (a, b, _) in RPM {
        // rpm.vercmp compares whole EVR strings.
        let out = std::process::Command::new("rpm")
            .args([
                "--eval",
                &format!("%{{lua:print(rpm.vercmp('{a}','{b}'))}}"),
            ])
            .output()
            .expect("rpm runs");
        let theirs: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number");
        let ours = match cmp("rpm", a, b) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        };
        assert_eq!(ours, theirs, "rpm.vercmp({a}, {b})");
    }
}
