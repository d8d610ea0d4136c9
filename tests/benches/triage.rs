//! How long an injected fault takes to become a ticket with its triage
//! output attached (issue 23), on a real collector and a real agent over
//! loopback: a small loop-mounted disk is filled until `small-disk-full`
//! (over 80 % for 2 s) fires, and the clock runs from the end of the fill
//! to the ticket, then to both triage results in its worklog. The target
//! is the rule's `for` plus 5 s. Needs root and the workspace's debug
//! binaries (`cargo build --workspace --bins`).
//!
//! `cargo bench -p deskpulse-tests --bench triage [-- RUNS]`

use std::time::Duration;

use deskpulse_tests::triage::{LoopDisk, RULE_FOR, Setup, inject_and_wait};

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut tickets = Vec::new();
    let mut triaged = Vec::new();
    for run in 1..=runs {
        let Some(disk) = LoopDisk::mount(48) else {
            eprintln!("needs root, loop devices and mkfs.ext4");
            std::process::exit(2);
        };
        let setup = Setup::start();
        let Some((_, timing)) = inject_and_wait(&setup, &disk) else {
            eprintln!("run {run}: no ticket with its triage within a minute");
            std::process::exit(1);
        };
        println!(
            "run {run}: fault -> ticket {:.2} s, -> triage output attached {:.2} s",
            timing.to_ticket.as_secs_f64(),
            timing.to_triage.as_secs_f64()
        );
        tickets.push(timing.to_ticket);
        triaged.push(timing.to_triage);
    }
    let summary = |name: &str, values: &mut Vec<Duration>| {
        values.sort();
        println!(
            "{name}: median {:.2} s, worst {:.2} s over {} runs",
            values[values.len() / 2].as_secs_f64(),
            values[values.len() - 1].as_secs_f64(),
            values.len()
        );
    };
    summary("fault -> ticket", &mut tickets);
    summary("fault -> ticket with triage output", &mut triaged);
    println!(
        "target: the rule's for ({} s) + 5 s = {} s; health samples every 1 s",
        RULE_FOR.as_secs(),
        RULE_FOR.as_secs() + 5
    );
}
