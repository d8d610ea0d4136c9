//! The repository explains itself, checked by reading its files (no
//! binaries, no network): every Rust module opens with its `//!` doc, the
//! maps (ARCHITECTURE.md, README.md, `docs/decisions.md`,
//! `docs/product.md`) name only paths that exist, Markdown links resolve
//! inside the repository, no file points outside it, every decision the
//! code cites (D1, D2, …) is written down in `docs/decisions.md`, and the
//! license the crates declare is in `LICENSE`.
//!
//! Test modules (`tests.rs` and the like) need their doc too: the rule is
//! "every module", and a line saying what a test module covers is what a
//! reader looks for first.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The crates whose Rust files must open with a module doc.
const CRATES: [&str; 5] = ["agent", "collector", "proto", "tests", "xtask"];

/// Top-level directories that hold the repository's own files, for the
/// path check: a span in backticks that starts with one of these and holds
/// a `/` names a path.
const PATH_PREFIXES: [&str; 8] = [
    "agent/",
    "collector/",
    "proto/",
    "tests/",
    "xtask/",
    "docs/",
    ".ci/",
    "packaging/",
];

/// The documents a newcomer follows; every path they name must exist.
const MAPS: [&str; 4] = [
    "ARCHITECTURE.md",
    "README.md",
    "docs/decisions.md",
    "docs/product.md",
];

/// Directories that are not the repository's own files: build output, the
/// demo's data, git's, and the browser driver `npm ci` installs
/// (gitignored).
const NOT_OURS: [&str; 4] = ["target", ".demo", ".git", "tests/web/node_modules"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir`, skipping what `skip` rejects (given the path
/// relative to the root), sorted so failures list in a stable order.
fn files_under(root: &Path, dir: &Path, skip: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            let path = entry.path();
            if skip(&relative(root, &path)) {
                continue;
            }
            let kind = entry
                .file_type()
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn not_ours(relative: &str) -> bool {
    NOT_OURS.contains(&relative)
}

#[test]
fn every_module_opens_with_its_doc() {
    let root = root();
    // Generated code carries the proto comments, not a module doc; fixture
    // trees are data that only looks like source.
    let skip = |rel: &str| {
        not_ours(rel)
            || rel.starts_with("proto/src/generated")
            || rel
                .split('/')
                .any(|part| part == "fixtures" || part == "target")
    };
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for krate in CRATES {
        for path in files_under(&root, &root.join(krate), &skip) {
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            checked += 1;
            let text = read(&path);
            let first = text.lines().map(str::trim).find(|line| !line.is_empty());
            if !first.is_some_and(|line| line.starts_with("//!")) {
                undocumented.push(relative(&root, &path));
            }
        }
    }
    assert!(
        checked > 100,
        "found only {checked} Rust files under {root:?}"
    );
    assert!(
        undocumented.is_empty(),
        "these modules do not open with a `//!` doc saying what they are for:\n  {}",
        undocumented.join("\n  ")
    );
}

/// The text of `markdown` outside fenced code blocks: paths in examples
/// are commands to type, not claims about the tree.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The inline code spans of `prose`, with line breaks inside a span folded
/// to spaces.
fn code_spans(prose: &str) -> Vec<String> {
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `a/{b,c}.rs` as `a/b.rs` and `a/c.rs`; one brace group is enough for
/// how the maps write paths.
fn expand_braces(path: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (path.find('{'), path.find('}')) else {
        return vec![path.to_owned()];
    };
    if close < open {
        return vec![path.to_owned()];
    }
    path[open + 1..close]
        .split(',')
        .map(|choice| format!("{}{}{}", &path[..open], choice, &path[close + 1..]))
        .collect()
}

/// Whether `path` exists under `root`; a `*` in the last component matches
/// any run of characters, and at least one entry must match.
fn exists(root: &Path, path: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if dir.contains('*') {
        return false;
    }
    if !name.contains('*') {
        let full = root.join(trimmed);
        return if path.ends_with('/') {
            full.is_dir()
        } else {
            full.exists()
        };
    }
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .any(|entry| glob_match(name, &entry.file_name().to_string_lossy()))
}

fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The repository paths a span names: its first word, when that starts
/// with one of [`PATH_PREFIXES`] and holds a `/` past the prefix or ends a
/// directory.
fn named_paths(span: &str) -> Vec<String> {
    let Some(word) = span.split_whitespace().next() else {
        return Vec::new();
    };
    if !PATH_PREFIXES.iter().any(|prefix| word.starts_with(prefix)) {
        return Vec::new();
    }
    expand_braces(word)
}

#[test]
fn the_maps_name_only_paths_that_exist() {
    let root = root();
    let mut missing = Vec::new();
    let mut checked = 0;
    for map in MAPS {
        let text = prose(&read(&root.join(map)));
        for span in code_spans(&text) {
            for path in named_paths(&span) {
                checked += 1;
                if !exists(&root, &path) {
                    missing.push(format!("{map}: `{path}`"));
                }
            }
        }
    }
    assert!(checked > 50, "found only {checked} paths in {MAPS:?}");
    assert!(
        missing.is_empty(),
        "these paths are named but do not exist (moved? renamed?):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_path_check_reads_what_the_maps_write() {
    let spans = code_spans("a `agent/src/{spool,state}.rs` and `cargo xtask test`, `xtask/`.");
    let paths: Vec<String> = spans.iter().flat_map(|s| named_paths(s)).collect();
    assert_eq!(
        paths,
        ["agent/src/spool.rs", "agent/src/state.rs", "xtask/"],
        "{spans:?}"
    );
    let root = root();
    assert!(exists(&root, "proto/proto/deskpulse/v1/*.proto"));
    assert!(!exists(&root, "proto/proto/deskpulse/v1/*.json"));
    assert!(exists(&root, "xtask/src/"));
    assert!(!exists(&root, "xtask/src/main.rs/"));
    assert!(!exists(&root, "agent/src/no_such_module.rs"));
}

/// GitHub's anchor for a heading: lower case, letters, digits, `-` and `_`
/// kept, spaces become `-`, the rest dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    prose(markdown)
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links in `prose`.
fn link_targets(prose: &str) -> Vec<String> {
    prose
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
        .collect()
}

#[test]
fn markdown_links_resolve_inside_the_repository() {
    let root = root();
    let skip = |rel: &str| not_ours(rel) || rel.split('/').any(|part| part == "target");
    let mut broken = Vec::new();
    for path in files_under(&root, &root, &skip) {
        if path.extension().is_none_or(|ext| ext != "md") {
            continue;
        }
        let name = relative(&root, &path);
        let text = prose(&read(&path));
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap_or(&root).join(file)
            };
            let inside = linked
                .canonicalize()
                .is_ok_and(|real| real.starts_with(root.canonicalize().unwrap_or(root.clone())));
            if !inside {
                broken.push(format!(
                    "{name}: ({target}) is not a file in the repository"
                ));
                continue;
            }
            if !fragment.is_empty()
                && linked.extension().is_some_and(|ext| ext == "md")
                && !anchors(&read(&linked)).contains(fragment)
            {
                broken.push(format!("{name}: ({target}) names no heading there"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "these links lead nowhere:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn no_file_points_outside_the_repository() {
    let root = root();
    // Built from pieces so this file does not match itself.
    let outside = [concat!("..", "/shared"), concat!("/work", "/shared")];
    let mut pointing = Vec::new();
    for path in files_under(&root, &root, &not_ours) {
        let bytes =
            fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for needle in outside {
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                pointing.push(format!("{} mentions {needle}", relative(&root, &path)));
            }
        }
    }
    assert!(
        pointing.is_empty(),
        "a newcomer cannot follow these; bring what they point to into docs/:\n  {}",
        pointing.join("\n  ")
    );
}

/// The decision numbers `text` cites: `D` and one or two digits standing
/// alone, so a MAC address such as `C2-D3-E4` is not one.
fn cited_decisions(text: &str) -> BTreeSet<u32> {
    let bytes = text.as_bytes();
    let joins = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':');
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices('D') {
        if at > 0 && joins(bytes[at - 1]) {
            continue;
        }
        let digits: String = text[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let end = at + 1 + digits.len();
        // "D7: …" cites; "D3:e4" is part of an address.
        let joined_after = match bytes.get(end) {
            Some(b':') => bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric),
            Some(&b) => joins(b),
            None => false,
        };
        if digits.is_empty() || digits.len() > 2 || joined_after {
            continue;
        }
        if let Ok(number) = digits.parse() {
            out.insert(number);
        }
    }
    out
}

#[test]
fn every_cited_decision_is_written_down() {
    let root = root();
    let skip = |rel: &str| {
        not_ours(rel)
            || rel
                .split('/')
                .any(|part| part == "target" || part == "fixtures")
    };
    let mut cited = BTreeSet::new();
    for path in files_under(&root, &root, &skip) {
        let rust_or_markdown = path
            .extension()
            .is_some_and(|ext| ext == "rs" || ext == "md" || ext == "proto");
        if rust_or_markdown && !path.ends_with("docs/decisions.md") {
            cited.extend(cited_decisions(&read(&path)));
        }
    }
    assert!(cited.len() > 20, "found only {cited:?} cited");
    let written = anchors(&read(&root.join("docs/decisions.md")));
    let unwritten: Vec<String> = cited
        .iter()
        .map(|n| format!("D{n}"))
        .filter(|d| {
            !written
                .iter()
                .any(|a| a.starts_with(&format!("{}-", d.to_lowercase())))
        })
        .collect();
    assert!(
        unwritten.is_empty(),
        "the code cites {unwritten:?} but docs/decisions.md has no heading `## Dn …` for them"
    );
}

#[test]
fn decision_citations_are_told_from_look_alikes() {
    assert_eq!(
        cited_decisions("one port (D1); D28, D7: and D36.\n(D2, D26)"),
        BTreeSet::from([1, 2, 7, 26, 28, 36])
    );
    assert!(cited_decisions("A0-B1-C2-D3-E4-F5 a0:b1:D3:e4 D123 XD4 D4x").is_empty());
}

#[test]
fn the_license_the_crates_declare_is_in_the_repository() {
    let root = root();
    let manifest = read(&root.join("Cargo.toml"));
    assert!(
        manifest.contains("license = \"Apache-2.0\""),
        "the workspace no longer declares Apache-2.0; update this test and LICENSE together"
    );
    let license = read(&root.join("LICENSE"));
    assert!(
        license.trim_start().starts_with("Apache License")
            && license.contains("Version 2.0, January 2004")
            && license.contains("END OF TERMS AND CONDITIONS"),
        "LICENSE is not the full Apache License 2.0 text"
    );
}
