//! Opening a store by its URL: the one place that knows every backend, so
//! that the interface (`store/mod.rs`) depends on none of them.

use std::sync::Arc;

use super::{SharedStore, StoreError, StoreResult, URL_FORMS, is_postgres_url, postgres, sqlite};

/// Opens the store named by `url` (`sqlite://PATH`, `postgres://…` or
/// `postgresql://…`), creating and migrating it as needed.
pub async fn open(url: &str) -> StoreResult<SharedStore> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path)).await?,
        ));
    }
    if is_postgres_url(url) {
        return Ok(Arc::new(postgres::PostgresStore::open(url).await?));
    }
    Err(StoreError::Url(format!(
        "unsupported database URL {url:?}: expected {URL_FORMS}"
    )))
}

/// Whether a database error says the database cannot write at all (out of
/// space, an I/O error, read-only, the connection lost), as opposed to
/// refusing what one write held (see `StoreError::is_storage_failure`).
pub(crate) fn cannot_write(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code().unwrap_or_default();
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // The primary result code: BUSY, LOCKED, NOMEM, READONLY, IOERR,
        // CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
        let primary = code.parse::<i64>().unwrap_or(0) & 0xff;
        matches!(primary, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26)
    } else {
        // SQLSTATE classes: connection exception, insufficient resources
        // (disk full, out of memory), operator intervention, system error;
        // and a read-only transaction (a standby).
        ["08", "53", "57", "58"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "25006"
    }
}
