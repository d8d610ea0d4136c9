//! The store's reads of issue 23 shown with a ticket: the suggestions
//! stored when it opened, and the change correlation computed at read time
//! ([`SuggestionQueries`], a supertrait of [`crate::store::Store`], written
//! once for both backends in `store::sql::suggestions`).

use async_trait::async_trait;

use crate::store::shared::SqlBackend;
use crate::store::{StoreResult, TicketRow, sql};
use crate::suggest::{CorrelatedChange, Suggestion};

/// Reads of suggested fixes and change correlation.
#[async_trait]
pub trait SuggestionQueries: Send + Sync {
    /// The suggestions stored with ticket `id` when it opened, best first.
    async fn ticket_suggestions(&self, id: i64) -> StoreResult<Vec<Suggestion>>;

    /// The changes on `ticket`'s host in the day before it opened, newest
    /// first, each with how many other hosts made the same change and have
    /// a ticket of its rule open.
    async fn change_correlation(&self, ticket: &TicketRow) -> StoreResult<Vec<CorrelatedChange>>;
}

#[async_trait]
impl<T: SqlBackend> SuggestionQueries for T {
    async fn ticket_suggestions(&self, id: i64) -> StoreResult<Vec<Suggestion>> {
        sql::suggestions::suggestions(self.reads(), id).await
    }

    async fn change_correlation(&self, ticket: &TicketRow) -> StoreResult<Vec<CorrelatedChange>> {
        sql::suggestions::correlation(self.reads(), ticket).await
    }
}
