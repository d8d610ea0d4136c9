//! The Deskpulse agent: collects inventory and health on a PC and reports them
//! to the collector over mutual TLS.
//!
//! # Layout
//! - [`collect`]: reads inventory and health from the system, under a
//!   configurable system root (D13).
//! - [`config`]: the agent's config, layered file < env < flags.
//! - [`state`]: the state dir: key, certificates, enrollment, status, lock.
//! - [`transport`]: TLS channels to the collector and the CA pin bootstrap.
//! - [`enroll`]: `deskpulse-agent enroll`.
//! - [`spool`]: the durable on-disk spool of reports awaiting acknowledgement.
//! - [`inventory_base`]: the acknowledged snapshot that deltas are taken against.
//! - [`session`]: the service loop and `run --once`.
//! - [`renew`]: host certificate renewal and expiry (the renewed pair kept
//!   beside the current one until the collector accepts it).
//! - [`local`]: the running service's local endpoint (a socket, or a named
//!   pipe on Windows).
//! - [`issue`]: `report-issue`, an employee's problem report.
//! - [`service`]: the agent as an OS service: install, start, stop,
//!   status, and the service body `run` shares with the Windows SCM.
//! - [`logging`]: `RUST_LOG` and where log lines go (journald, stderr).
//! - [`diagnostics`]: remote diagnostics: the agent's own allowlist and
//!   checks, the executor, and each diagnostic per platform.

pub mod collect;
pub mod config;
pub mod diagnostics;
pub mod enroll;
pub mod inventory_base;
pub mod issue;
pub mod local;
pub mod logging;
pub mod renew;
pub mod service;
pub mod session;
pub mod spool;
pub mod state;
pub mod transport;
