//! Revocation reaching what is live (issue 20): an agent session of a
//! revoked host, and a technician's open stream under a revoked or expired
//! API token, end at once with one line, on every replica.
//!
//! The store is the truth: a revoked host's certificates and a revoked
//! token are refused by every new call from the commit on. What is already
//! open holds a [`Held`] here, and three paths cut it:
//! - the replica that revoked cuts its own at once, after the commit;
//! - it tells the others through the relay (PostgreSQL `NOTIFY`), which cut
//!   theirs as they hear it;
//! - every replica polls the store every [`POLL_EVERY`] for what was revoked
//!   in the last [`POLL_WINDOW`] and cuts again, so a lost notification, a
//!   reconnecting listener or a session admitted just before the commit
//!   ends within seconds. Cutting is idempotent; a revoked host's new
//!   session is refused at admission anyway.
//!
//! A session or stream takes its hold before it checks the store, so a
//! revocation that commits after the check finds the hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::ServerContext;
use crate::store::Revoked;

/// How often each replica reads what was revoked lately.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// How far back the poll reads: wide enough for clock skew between
/// replicas, small enough that the read finds few rows.
pub const POLL_WINDOW: Duration = Duration::from_secs(600);

/// The line a revoked host's session ends with, and its new sessions are
/// refused with. The agent recognises it by its code and the word
/// "revoked".
pub fn host_message(at: Option<&str>) -> String {
    let when = at.map(|at| format!(" at {at}")).unwrap_or_default();
    format!(
        "this host was revoked or retired by an admin{when}; its certificate is refused: the agent must enroll again with a fresh token (deskpulse-agent enroll --force …)"
    )
}

/// The line a revoked API token is refused with.
pub const TOKEN_REVOKED: &str = "API token revoked: ask an admin for a new one";

/// The line an expired API token is refused with.
pub fn token_expired_message(at: &str) -> String {
    format!("API token expired at {at}: ask an admin for a new one")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Host(String),
    Token(String),
}

/// The sessions and streams open on this replica that a revocation ends.
#[derive(Debug, Default)]
pub struct Cuts {
    holds: Mutex<HashMap<Key, watch::Sender<Option<String>>>>,
}

/// A live session's or stream's hold; dropping it lets go.
#[derive(Debug)]
pub struct Held {
    cuts: Arc<Cuts>,
    key: Key,
    cut: watch::Receiver<Option<String>>,
}

impl Held {
    /// Waits until the hold is cut, and returns the line to end with.
    pub async fn cut(&mut self) -> String {
        let cut = self
            .cut
            .wait_for(Option::is_some)
            .await
            .map(|line| line.clone());
        // An error: the sender is gone, which happens once it was cut and
        // forgotten, with its line kept in the channel.
        let line = cut.unwrap_or_else(|_| self.cut.borrow().clone());
        match line {
            Some(line) => line,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // A cut hold's entry is gone already (one there now is newer).
        if self.cut.borrow().is_some() {
            return;
        }
        let mut holds = self.cuts.lock();
        // This hold's receiver is still alive here: the last one counts 1.
        if holds
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            holds.remove(&self.key);
        }
    }
}

impl Cuts {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, watch::Sender<Option<String>>>> {
        // Each update is one insert or remove: a poisoned map is whole.
        self.holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(self: &Arc<Self>, key: Key) -> Held {
        let cut = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Held {
            cuts: self.clone(),
            key,
            cut,
        }
    }

    /// A hold for an agent session of `host_id`.
    pub fn hold_host(self: &Arc<Self>, host_id: &str) -> Held {
        self.hold(Key::Host(host_id.to_owned()))
    }

    /// A hold for a stream opened with the API token `token_id`.
    pub fn hold_token(self: &Arc<Self>, token_id: &str) -> Held {
        self.hold(Key::Token(token_id.to_owned()))
    }

    /// Ends whatever holds `revoked` here; true if anything did.
    pub fn cut(&self, revoked: &Revoked) -> bool {
        let (key, line) = match revoked {
            Revoked::Host(id) => (Key::Host(id.clone()), host_message(None)),
            Revoked::ApiToken(id) => (Key::Token(id.clone()), TOKEN_REVOKED.to_owned()),
        };
        let Some(sender) = self.lock().remove(&key) else {
            return false;
        };
        sender.send_replace(Some(line));
        true
    }
}

/// Every [`POLL_EVERY`] until shutdown: cuts what was revoked in the last
/// [`POLL_WINDOW`] (see the module docs).
pub async fn poll(ctx: ServerContext) {
    let window_ms = i64::try_from(POLL_WINDOW.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let since = ctx.clock.now_ms().saturating_sub(window_ms);
        match ctx.store.revoked_since(since).await {
            Ok(revoked) => {
                for item in &revoked {
                    if ctx.dispatch.cuts.cut(item) {
                        tracing::info!(?item, "cut a live session or stream of a revocation");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reading recent revocations failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_ends_every_hold_of_its_key_and_no_other() {
        let cuts = Arc::new(Cuts::default());
        let mut first = cuts.hold_token("t1");
        let mut second = cuts.hold_token("t1");
        let other = cuts.hold_host("t1");
        assert!(cuts.cut(&Revoked::ApiToken("t1".into())));
        assert_eq!(first.cut().await, TOKEN_REVOKED);
        assert_eq!(second.cut().await, TOKEN_REVOKED);
        assert!(other.cut.borrow().is_none());
        assert!(!cuts.cut(&Revoked::ApiToken("t1".into())), "cut once");
        drop(other);
        assert!(cuts.lock().is_empty(), "dropped holds are forgotten");
    }

    #[tokio::test]
    async fn a_hold_dropped_before_the_cut_leaves_nothing_behind() {
        let cuts = Arc::new(Cuts::default());
        let first = cuts.hold_host("h");
        let second = cuts.hold_host("h");
        drop(first);
        assert_eq!(cuts.lock().len(), 1, "the other hold remains");
        drop(second);
        assert!(cuts.lock().is_empty());
        assert!(!cuts.cut(&Revoked::Host("h".into())));
    }
}
