//! The collector's layers, checked by reading its sources: the domain
//! types, the rules, the host queries, the inventory facts, the webhook
//! format and the technician CLI never reach into the store, the domain
//! types reach into nothing, and the store's interface knows no backend.
//! With these, no import circle can run through the domain and the store
//! (issue 19): the store depends on the layers below it, never the other
//! way round.
//!
//! Test modules (`tests.rs`) are left out: a test may use anything.

use std::fs;
use std::path::{Path, PathBuf};

fn collector_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src")
}

/// The `.rs` files at `path` (a file, or a directory walked whole), but
/// test modules.
fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The lines of `file` that are code: comments and inline `#[cfg(test)]`
/// modules (up to their closing brace in column 0) left out, whatever
/// follows them.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut code = Vec::new();
    let mut in_test_module = false;
    let mut after_cfg_test = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if in_test_module {
            in_test_module = line != "}";
            continue;
        }
        if after_cfg_test && line.starts_with("mod ") && line.ends_with('{') {
            in_test_module = true;
            continue;
        }
        after_cfg_test = trimmed == "#[cfg(test)]";
        if !trimmed.starts_with("//") {
            code.push((n + 1, line.to_owned()));
        }
    }
    code
}

/// Every line under `place` (relative to `collector/src`) that names one
/// of `forbidden`, as `path:line: text`.
fn offending(place: &str, forbidden: &[&str]) -> Vec<String> {
    let root = collector_src();
    let path = root.join(place);
    assert!(
        path.exists(),
        "{} is gone: update this test",
        path.display()
    );
    let mut found = Vec::new();
    for file in sources(&path) {
        for (n, line) in code_lines(&file) {
            if forbidden.iter().any(|f| line.contains(f)) {
                let name = file
                    .strip_prefix(&root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                found.push(format!("collector/src/{name}:{n}: {}", line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_domain_types_and_the_atomic_file_writer_depend_on_nothing_of_the_collector() {
    for place in ["model.rs", "atomic_file.rs"] {
        let found = offending(place, &["crate::", "super::"]);
        assert!(
            found.is_empty(),
            "{place} must stay a leaf:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_rules_queries_facts_webhook_format_and_cli_never_reach_into_the_store() {
    for place in [
        "rules",
        "query.rs",
        "facts.rs",
        "changes.rs",
        "webhooks/format.rs",
        "webhooks/route.rs",
        "webhooks/render.rs",
        "cli",
    ] {
        let found = offending(place, &["crate::store", "crate::server", "crate::ingest"]);
        assert!(
            found.is_empty(),
            "{place} reaches into the store or the server (use crate::model):\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_store_interface_knows_no_backend() {
    let found = offending(
        "store/mod.rs",
        &["sqlite::", "postgres::", "SqliteStore", "PostgresStore"],
    );
    assert!(
        found.is_empty(),
        "store/mod.rs names a backend (only store/backend.rs may):\n{}",
        found.join("\n")
    );
}
