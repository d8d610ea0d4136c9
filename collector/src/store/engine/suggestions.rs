//! Suggested fixes, attached when a ticket opens (issue 23): in the opening
//! transaction, [`attach`] looks the new ticket up in the knowledge base
//! ([`crate::suggest::lookup`]), ranks what it finds
//! ([`crate::suggest::rank`]) and stores the best few with the ticket, so
//! the `ticket.opened` event built in the same transaction carries them.
//!
//! The cost on the ingest path is bounded: at most three indexed reads per
//! opened ticket (the host's recent changes, unless the evidence carries
//! them; at most [`RULE_CANDIDATES`] resolved tickets of the same rule
//! through a partial index; at most [`TEXT_CANDIDATES`] full-text matches
//! of at most 24 quoted words) and one insert. A ticket that only counts an
//! occurrence or reopens runs none of it.

use super::tickets::{NewTicket, TicketTx};
use crate::store::StoreResult;
use crate::suggest::{
    Candidate, RULE_CANDIDATES, SOFTWARE_CHANGES, SOFTWARE_CHANGES_MS, Suggestion, TEXT_CANDIDATES,
};

/// The knowledge-base reads and the suggestion rows of one open write
/// transaction; a supertrait of [`TicketTx`], so the ticket engine can
/// attach suggestions wherever it opens a ticket.
pub trait SuggestTx: Send {
    /// Tickets of `rule` a technician resolved (not by themselves), newest
    /// first, at most `limit`.
    async fn resolved_of_rule(&mut self, rule: &str, limit: u32) -> StoreResult<Vec<Candidate>>;
    /// Resolved tickets (not by themselves) whose title, resolution or
    /// notes match any of `terms` (each a quoted phrase), best first, at
    /// most `limit`.
    async fn text_matches(&mut self, terms: &[String], limit: u32) -> StoreResult<Vec<Candidate>>;
    /// Stores a ticket's suggestions, best first.
    async fn save_suggestions(
        &mut self,
        ticket: i64,
        suggestions: &[Suggestion],
    ) -> StoreResult<()>;
    /// A ticket's stored suggestions, best first.
    async fn suggestions_of(&mut self, ticket: i64) -> StoreResult<Vec<Suggestion>>;
}

/// The change-log items an employee report's evidence copied, if it did.
fn items_in_evidence(evidence: &serde_json::Value) -> Option<Vec<String>> {
    let changes = evidence.get("recent_changes")?.as_array()?;
    Some(
        changes
            .iter()
            .filter_map(|c| c.get("item").and_then(serde_json::Value::as_str))
            .map(str::to_owned)
            .collect(),
    )
}

/// Looks the new ticket `id` up in the knowledge base and stores the best
/// matches with it (none when nothing matches well enough).
pub async fn attach(
    tx: &mut impl TicketTx,
    new: &NewTicket<'_>,
    id: i64,
    now_ms: i64,
) -> StoreResult<()> {
    let items = match items_in_evidence(new.evidence) {
        Some(items) => items,
        None => tx
            .recent_changes(new.host, now_ms - SOFTWARE_CHANGES_MS, SOFTWARE_CHANGES)
            .await?
            .into_iter()
            .map(|c| c.item)
            .collect(),
    };
    let lookup = crate::suggest::lookup(new.rule, new.subject, new.title, new.evidence, &items);
    let mut candidates = Vec::new();
    if !lookup.rule.is_empty() {
        candidates.extend(tx.resolved_of_rule(&lookup.rule, RULE_CANDIDATES).await?);
    }
    if !lookup.terms.is_empty() {
        candidates.extend(tx.text_matches(&lookup.terms, TEXT_CANDIDATES).await?);
    }
    candidates.retain(|c| c.ticket_id != id);
    let suggestions = crate::suggest::rank(&lookup, candidates);
    if suggestions.is_empty() {
        return Ok(());
    }
    tx.save_suggestions(id, &suggestions).await
}

/// A ticket's stored suggestions as its webhook payload carries them.
pub async fn payloads(
    tx: &mut impl TicketTx,
    ticket: i64,
) -> StoreResult<Vec<crate::suggest::SuggestionPayload>> {
    Ok(tx
        .suggestions_of(ticket)
        .await?
        .iter()
        .map(Suggestion::payload)
        .collect())
}
