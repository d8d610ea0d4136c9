//! The agent's TOML config file (`--config`): written to a file and
//! resolved by `config::resolve` with an empty environment, as every agent
//! command does.
#![no_main]

use std::collections::HashMap;

use deskpulse_agent::config::{AgentFlags, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = deskpulse_fuzz::scratch_dir();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, data).expect("writing the config file");
    let flags = AgentFlags {
        config: Some(path),
        ..AgentFlags::default()
    };
    let _ = resolve(&flags, &HashMap::new());
});
