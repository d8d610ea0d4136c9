//! The Deskpulse collector: enrolls agents, stores their reports, and serves
//! the technician API. Two binaries share this library: `deskpulse-collector`
//! (the server and its admin commands) and `deskpulse` (the technician CLI).
//!
//! # Layout
//! - [`config`]: the server's process config, layered file < env < flags.
//! - [`datadir`]: the data dir: CA, server certificate, initial admin token.
//! - [`pki`]: the fleet CA and the certificates it issues.
//! - [`model`]: the plain domain types (roles, hosts, tickets, jobs,
//!   changes, webhooks, audit entries), free of the store.
//! - [`query`]: host filters as typed, checked and made into store queries.
//! - [`secrets`]: API and enrollment tokens, stored only hashed; web
//!   session secrets; local account passwords (Argon2id).
//! - [`store`]: the storage interface and its SQLite and PostgreSQL
//!   backends.
//! - [`facts`]: the values of an inventory that fleet queries search.
//! - [`changes`]: item-by-item inventory changes for the change log.
//! - [`rules`]: health rules, their state machine and ticket priority.
//! - [`suggest`]: suggested fixes from the knowledge base and change
//!   correlation, as plain ranking and wording (issue 23).
//! - [`ingest`]: the batching writer between agent sessions and the store.
//! - [`metrics`]: Prometheus metrics on `--metrics-listen`.
//! - [`server`]: the gRPC services on the single TLS port.
//! - [`web`]: the web console, on the TLS port beside gRPC (issue 22).
//! - [`webhooks`]: ticket-event deliveries from the store's outbox: signed
//!   JSON, Slack and Teams messages, e-mail.
//! - [`mail`]: the SMTP settings and the mailer e-mail deliveries use.
//! - [`audit`]: the tamper-evident audit log: entry hash, audit key,
//!   anchor file, verification (D28).
//! - [`admin`]: the admin commands that work on the data dir directly.
//! - [`cli`]: the technician CLI, `deskpulse`.
//! - [`clock`]: injected time.
//! - [`units`]: durations and measured values as people read them.
//! - [`atomic_file`]: files replaced whole, for keys and certificates.
//! - [`exit`]: errors that carry their process exit code (D11).

pub mod admin;
pub mod atomic_file;
pub mod audit;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod clockskew;
pub mod config;
pub mod datadir;
pub mod exit;
pub mod facts;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod panics;
pub mod pki;
pub mod query;
pub mod rules;
pub mod secrets;
pub mod server;
pub mod store;
pub mod suggest;
pub mod units;
pub mod web;
pub mod webhooks;
