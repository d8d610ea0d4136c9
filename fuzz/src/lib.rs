//! What several fuzz targets share: splitting one input into frames, so a
//! target can be fed a sequence of messages (or a base and a delta), and a
//! scratch directory on a RAM file system for the targets that go through
//! files.

use std::path::Path;

/// The frames of `data`: each a little-endian `u16` length, then that many
/// bytes (fewer at the end, when the input stops short).
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (frame, after) = rest.split_at(len.min(rest.len()));
        data = after;
        Some(frame)
    })
}

/// `frames` reversed: what a seed generator writes.
pub fn framed(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&message[..usize::from(len)]);
    }
    out
}

/// A fresh directory, on /dev/shm when it exists: the spool fsyncs, and a
/// RAM file system makes that free.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}
