//! The knowledge base on PostgreSQL full-text search. SKELETON: a stub with
//! the SQLite module's signature, to be replaced by the real search.

use sqlx::PgPool;

use super::pending;
use crate::store::{KbHit, StoreResult};

pub async fn search(_pool: &PgPool, _terms: &[String], _limit: u32) -> StoreResult<Vec<KbHit>> {
    Err(pending("kb::search"))
}
