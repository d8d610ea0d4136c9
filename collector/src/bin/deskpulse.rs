//! `deskpulse`: the technician CLI. See `deskpulse_collector::cli`.

use std::process::ExitCode;

use clap::Parser;
use deskpulse_collector::cli::{self, Cli};
use deskpulse_collector::config::ProcessEnv;

fn main() -> ExitCode {
    let parsed = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli::main(parsed, &ProcessEnv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report("deskpulse"),
    }
}
