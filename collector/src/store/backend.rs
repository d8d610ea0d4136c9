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
