//! The fleet policy as stored, the same SQL on both backends.

use sqlx::{Pool, QueryBuilder};

use super::{Dialect, SendFuture};
use crate::rules::policy::{Policy, parse_policy};
use crate::store::{PolicyRecord, StoreError};

/// The newest applied policy, or the built-in defaults when none was
/// applied. A stored text that no longer parses is an error that names its
/// version.
pub(crate) fn newest<B: Dialect>(pool: &Pool<B>) -> SendFuture<'_, PolicyRecord> {
    Box::pin(async move {
        let sql = QueryBuilder::new(
            "SELECT version, text, applied_by, applied_at_ms FROM fleet_policy \
             ORDER BY version DESC LIMIT 1",
        );
        let row = B::optional(pool, sql, |r| {
            Ok((
                r.int("version")?,
                r.text("text")?,
                r.text("applied_by")?,
                r.int("applied_at_ms")?,
            ))
        })
        .await?;
        let Some((version, text, applied_by, applied_at_ms)) = row else {
            return Ok(PolicyRecord {
                version: 0,
                text: String::new(),
                applied_by: String::new(),
                applied_at_ms: 0,
                policy: Policy::default(),
            });
        };
        let policy = parse_policy(&text)
            .map_err(|e| StoreError::Corrupt(format!("fleet policy version {version}: {e}")))?;
        Ok(PolicyRecord {
            version,
            text,
            applied_by,
            applied_at_ms,
            policy,
        })
    })
}
