//! A spool file as the disk may hold it after a crash, a full disk or
//! tampering: the bytes written as the spool file, then `Spool::inspect`
//! (what `status` does), `Spool::open` (replay, recovery, compaction) and
//! `read_after` (every pending report decoded), as the agent does at start.
#![no_main]

use deskpulse_agent::spool::{Limits, Spool};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = deskpulse_fuzz::scratch_dir();
    std::fs::write(dir.path().join("records.log"), data).expect("writing the spool file");
    let _ = Spool::inspect(dir.path());
    let Ok((mut spool, _recovery)) = Spool::open(dir.path(), Limits::default()) else {
        return;
    };
    let _ = spool.read_after(0, usize::MAX);
    let _ = spool.stats();
});
