//! The collector's TOML config file (`serve --config`): written to a file
//! and resolved by `config::resolve_serve` with an empty environment.
#![no_main]

use std::collections::HashMap;

use deskpulse_collector::config::{ServeFlags, resolve_serve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = deskpulse_fuzz::scratch_dir();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, data).expect("writing the config file");
    let flags = ServeFlags {
        config: Some(path),
        ..ServeFlags::default()
    };
    let _ = resolve_serve(&flags, &HashMap::new());
});
