//! The one list of programs the tests run: every program a test looks for
//! is on it, and `.ci/run` keeps no second list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

/// The calls through which a test runs a program or looks for one, each
/// followed by the program's name as a literal.
const PROBES: &[&str] = &[
    "Command::new(",
    "require(",
    "require_tool(",
    "tool_output(",
    "spawn::run(",
    "which(",
];

/// Programs a test runs that another task provides, and which one.
const PROVIDED_ELSEWHERE: &[(&str, &str)] = &[(
    "wine",
    "`cargo xtask test` prepares Wine (xtask/src/wine.rs)",
)];

/// The crates whose tests may run programs.
const TESTED_CRATES: &[&str] = &["agent", "collector", "proto", "tests"];

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "generated" {
                rust_files(&path, files);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The part of a source file that is test code: all of a file under a
/// `tests` dir or named `tests.rs`, else what follows `#[cfg(test)]`.
fn test_code<'a>(path: &Path, source: &'a str) -> Option<&'a str> {
    let in_tests = path.components().any(|c| c.as_os_str() == "tests")
        || path.file_name().is_some_and(|n| n == "tests.rs");
    if in_tests {
        return Some(source);
    }
    source.find("#[cfg(test)]").map(|at| &source[at..])
}

/// The string literals that follow a probe call, across line breaks.
fn probed_programs(code: &str) -> Vec<String> {
    let mut programs = Vec::new();
    for probe in PROBES {
        for (at, _) in code.match_indices(probe) {
            let after = code[at + probe.len()..].trim_start();
            let Some(literal) = after.strip_prefix('"') else {
                continue;
            };
            if let Some(end) = literal.find('"') {
                programs.push(literal[..end].to_owned());
            }
        }
    }
    programs
}

#[test]
fn the_probe_scanner_finds_literals_across_lines_and_skips_variables() {
    let code = "Command::new(\"id\")\n tool_output(\n    \"findmnt\",\n)\n which(program) require(\"ping\", \"iputils-ping\")";
    let mut found = probed_programs(code);
    found.sort();
    assert_eq!(found, ["findmnt", "id", "ping"]);
}

#[test]
fn every_program_a_test_looks_for_is_provisioned() {
    let root = crate::workspace_root();
    let listed: BTreeSet<&str> = TEST_TOOLS.iter().map(|tool| tool.program).collect();
    let mut files = Vec::new();
    for krate in TESTED_CRATES {
        rust_files(&root.join(krate), &mut files);
    }
    assert!(files.len() > 50, "found only {} sources", files.len());
    let mut unlisted = Vec::new();
    let mut seen = BTreeSet::new();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("source");
        let Some(code) = test_code(path, &source) else {
            continue;
        };
        for program in probed_programs(code) {
            // Paths (`/usr/sbin/lsof` in a plan under test) and our own
            // binaries are not tools to install.
            if program.contains('/') || program.starts_with("deskpulse") {
                continue;
            }
            seen.insert(program.clone());
            if !listed.contains(program.as_str())
                && !PROVIDED_ELSEWHERE.iter().any(|(p, _)| *p == program)
            {
                unlisted.push(format!(
                    "{}: {program}",
                    path.strip_prefix(&root).unwrap_or(path).display()
                ));
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "tests run programs that xtask/src/provision.rs does not install; add each to TEST_TOOLS with its Debian package: {unlisted:#?}"
    );
    // The scan sees what it must: the diagnostics' ping, end to end too.
    for program in ["ping", "tracepath", "promtool", "dmidecode", "smartctl"] {
        assert!(seen.contains(program), "{program} not seen in {seen:?}");
    }
}

#[test]
fn each_program_is_listed_once() {
    let mut programs = BTreeSet::new();
    for tool in TEST_TOOLS {
        assert!(programs.insert(tool.program), "{} twice", tool.program);
    }
}

/// `.ci/run` provisions through xtask: a second list there would drift.
#[test]
fn the_ci_script_carries_no_package_list() {
    let script = std::fs::read_to_string(crate::workspace_root().join(".ci/run")).expect(".ci/run");
    let code: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let code = code.join("\n");
    assert!(!code.contains("apt-get"), "{code}");
    for tool in TEST_TOOLS {
        let words: Vec<&str> = code
            .split(|c: char| c.is_whitespace() || matches!(c, ':' | '(' | ')' | '"' | '\''))
            .collect();
        assert!(
            !words.contains(&tool.package),
            "{} in .ci/run",
            tool.package
        );
    }
    assert!(code.contains("cargo xtask provision"), "{code}");
}

#[test]
fn missing_tools_are_named_with_their_packages_and_the_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ping"), "").expect("write");
    let path = dir.path().as_os_str();
    let tools = [
        tool("ping", "iputils-ping"),
        tool("tracepath", "iputils-tracepath"),
        tool("dpkg", "dpkg"),
        tool("dpkg-query", "dpkg"),
    ];
    let missing = missing(&tools, Some(path));
    assert_eq!(
        missing.iter().map(|t| t.program).collect::<Vec<_>>(),
        ["tracepath", "dpkg", "dpkg-query"]
    );
    assert_eq!(
        install_command(&packages(&missing)),
        "apt-get install -y --no-install-recommends dpkg iputils-tracepath"
    );
    assert_eq!(super::missing(&tools, None).len(), tools.len());
}
