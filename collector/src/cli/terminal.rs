//! The one way the CLI writes to the terminal. Host names, package names,
//! ticket text and diagnostic output come from agents and employees, so a
//! hostile one could send escape sequences (ESC, CSI, OSC, a carriage
//! return that overwrites a line, a bidi override that reorders one). All
//! human output goes through [`out`], [`err`] or [`LiveText`], which make
//! such characters visible as `\u{1b}`-style escapes; one value set inside
//! a line or a table cell also goes through [`inert`], so it cannot start a
//! line of its own either. JSON goes out exact through [`json`]: serde_json
//! already escapes every C0 control, and scripts need the bytes as stored.
//!
//! The rest of the CLI may not print by itself: `clippy::print_stdout` and
//! `clippy::print_stderr` are denied in `cli/mod.rs`, and the test
//! `the_cli_writes_to_the_terminal_only_through_this_module` finds any
//! other `stdout()`/`stderr()` in `collector/src/cli/`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Prints to stdout through [`out`], like `print!`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::terminal::out(&format!($($arg)*)) };
}

/// Prints a line to stdout through [`out`], like `println!`.
macro_rules! outln {
    () => { $crate::cli::terminal::out("\n") };
    ($($arg:tt)*) => { $crate::cli::terminal::out(&(format!($($arg)*) + "\n")) };
}

/// Prints a line to stderr through [`err`], like `eprintln!`.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::terminal::err(&(format!($($arg)*) + "\n")) };
}

/// True for what a terminal may act on rather than show: every C0 and C1
/// control and DEL, and the Unicode marks that reorder or separate text
/// (bidi embeddings, overrides, isolates and marks; line and paragraph
/// separators).
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| acts_on_terminal(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !acts_on_terminal(c) || keep(c) {
            shown.push(c);
            continue;
        }
        match c {
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            other => {
                let _ = write!(shown, "\\u{{{:x}}}", u32::from(other));
            }
        }
    }
    Cow::Owned(shown)
}

/// One value for a line or a table cell: every control character,
/// newlines and tabs included, shown as an escape.
pub fn inert(value: &str) -> Cow<'_, str> {
    escape(value, |_| false)
}

/// Text of several lines: newlines and tabs kept, every other control
/// character shown as an escape.
pub fn inert_text(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

/// The name the CLI's own error lines start with.
const PROGRAM: &str = "deskpulse";

/// Writes human output to stdout. A closed pipe (`deskpulse hosts | head`)
/// ends the process quietly with exit code 141; another write error ends
/// it with one line (`deskpulse_proto::output`).
pub fn out(text: &str) {
    deskpulse_proto::output::write_stdout(PROGRAM, inert_text(text).as_bytes());
}

/// Writes human output to stderr.
pub fn err(text: &str) {
    deskpulse_proto::output::write_stderr(inert_text(text).as_bytes());
}

/// Writes JSON to stdout exactly as serialized, with a newline, as [`out`]
/// does.
pub fn json(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    deskpulse_proto::output::write_stdout(PROGRAM, line.as_bytes());
}

/// A diagnostic's output, as bytes arrive in pieces: UTF-8 decoded across
/// piece boundaries (an incomplete sequence at the end of a piece waits
/// for the next), invalid bytes shown as U+FFFD, then written through
/// [`out`].
#[derive(Debug, Default)]
pub struct LiveText {
    pending: Vec<u8>,
    ends_with_newline: bool,
}

impl LiveText {
    /// Writes what of `piece` can be decoded so far.
    pub fn write(&mut self, piece: &[u8]) {
        let text = self.decode(piece, false);
        self.show(&text);
    }

    /// Writes whatever is still held (an incomplete sequence at the very
    /// end becomes U+FFFD).
    pub fn finish(&mut self) {
        let text = self.decode(&[], true);
        self.show(&text);
    }

    /// Whether the last character written was a newline.
    pub fn ends_with_newline(&self) -> bool {
        self.ends_with_newline
    }

    fn show(&mut self, text: &str) {
        if let Some(last) = text.chars().last() {
            self.ends_with_newline = last == '\n';
            out(text);
        }
    }

    fn decode(&mut self, piece: &[u8], at_end: bool) -> String {
        self.pending.extend_from_slice(piece);
        let mut text = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None if at_end => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_become_visible_and_plain_text_is_untouched() {
        assert!(matches!(inert("web-01 Ünïcödé"), Cow::Borrowed(_)));
        assert_eq!(
            inert("a\u{1b}]0;pwned\u{7}b\rc\nd\te\u{9b}f\u{202e}g\u{7f}"),
            "a\\u{1b}]0;pwned\\u{7}b\\rc\\nd\\te\\u{9b}f\\u{202e}g\\u{7f}"
        );
        assert_eq!(
            inert_text("line 1\n\tline 2\u{1b}[2J\r\n"),
            "line 1\n\tline 2\\u{1b}[2J\\r\n"
        );
    }

    #[test]
    fn live_text_decodes_characters_split_across_pieces() {
        let mut live = LiveText::default();
        let snow = "é☃".as_bytes();
        let mut text = live.decode(&snow[..1], false);
        text += &live.decode(&snow[1..3], false);
        text += &live.decode(&snow[3..], false);
        assert_eq!(text, "é☃");
        assert_eq!(live.decode(b"a\xffb\xe2\x98", false), "a\u{fffd}b");
        assert_eq!(live.decode(&[], true), "\u{fffd}");
    }

    #[test]
    fn the_cli_writes_to_the_terminal_only_through_this_module() {
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli")];
        let mut offenders = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src/cli") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.file_name().is_some_and(|n| n == "terminal.rs") {
                    continue;
                }
                let source = std::fs::read_to_string(&path).expect("source");
                for (n, line) in source.lines().enumerate() {
                    if ["stdout()", "stderr()", "print!(", "println!(", "eprint"]
                        .iter()
                        .any(|p| line.contains(p))
                    {
                        offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
