//! The store's domain logic, written once for both backends. Each part is
//! a set of functions over a narrow per-transaction repository trait that
//! a backend implements with SQL alone, so what happens to a ticket is
//! decided here and only how a row is read or written differs between
//! SQLite and PostgreSQL.

pub mod audit;
pub mod employee;
pub mod jobs;
pub mod problems;
pub mod suggestions;
pub mod tickets;
pub mod triage;
