//! The live link between collector replicas that share one PostgreSQL
//! database (D2, D26): PostgreSQL's own `LISTEN`/`NOTIFY` on one channel.
//!
//! A technician may reach any replica while the agent holds its stream on
//! another. The replica that queues a job, cancels one or hears output
//! publishes a [`RelayEvent`]; every other replica hears it and acts on what
//! it holds locally (the agent's stream, the technician's watch). This is
//! the best-effort half only: jobs and results are rows in the store, so a
//! lost notification delays a delivery until a resync or the agent's
//! reconnect, and never loses a result.
//!
//! One SQLite database has exactly one collector, so an embedded store runs
//! without a relay.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::store::StoreResult;

/// The one notification channel every replica listens on.
const CHANNEL: &str = "deskpulse_relay";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; output chunks
/// are split so that each hex-encoded piece and its envelope fit.
const MAX_CHUNK: usize = 3000;
/// Events waiting to be published before new ones are dropped: a slow
/// database must never stall an agent's session.
const PUBLISH_QUEUE: usize = 4096;
/// Events a slow follower may lag behind.
const FOLLOW_BUFFER: usize = 4096;

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RelayEvent {
    /// A job was queued for a host that has no stream on the sender.
    JobQueued { job_id: String, host_id: String },
    /// A technician cancelled a sent job whose host has no stream on the
    /// sender.
    JobCancel { job_id: String, host_id: String },
    /// A piece of a job's live output (hex, at most [`MAX_CHUNK`] bytes).
    Output { job_id: String, data: String },
    /// A job's result is stored.
    Finished { job_id: String },
    /// A host was revoked: its session ends wherever it is (issue 20).
    HostRevoked { host_id: String },
    /// An API token was revoked: its open streams end wherever they are.
    TokenRevoked { token_id: String },
    /// Notifications may have been missed (the listener reconnected):
    /// receivers re-read the store. Never sent over the wire.
    #[serde(skip)]
    Resync,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    event: RelayEvent,
}

/// This replica's end of the relay.
#[derive(Debug)]
pub struct Relay {
    publish: mpsc::Sender<RelayEvent>,
    heard: broadcast::Sender<RelayEvent>,
}

impl Relay {
    /// Connects to the database at `url` (`postgres://…`), listens on the
    /// relay channel and starts the publisher. Both stop on `shutdown`.
    pub async fn connect(
        url: &str,
        replica: &str,
        shutdown: CancellationToken,
    ) -> StoreResult<Arc<Self>> {
        // One connection publishes, so this replica's events arrive in the
        // order it sent them (output chunks above all).
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        // The listener holds a connection of its own for as long as it runs.
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let (heard, _) = broadcast::channel(FOLLOW_BUFFER);
        tokio::spawn(publish_events(
            pool,
            replica.to_owned(),
            queue,
            shutdown.clone(),
        ));
        tokio::spawn(hear_events(
            listener,
            replica.to_owned(),
            heard.clone(),
            shutdown,
        ));
        Ok(Arc::new(Self { publish, heard }))
    }

    /// Tells the other replicas, best effort.
    pub fn publish(&self, event: RelayEvent) {
        if self.publish.try_send(event).is_err() {
            tracing::warn!("the relay's publish queue is full; dropped an event");
        }
    }

    /// Tells the other replicas about a chunk of live output, split into
    /// pieces a notification can carry.
    pub fn publish_output(&self, job_id: &str, data: &[u8]) {
        for piece in data.chunks(MAX_CHUNK) {
            self.publish(RelayEvent::Output {
                job_id: job_id.to_owned(),
                data: hex::encode(piece),
            });
        }
    }

    /// What the other replicas say, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RelayEvent> {
        self.heard.subscribe()
    }
}

async fn publish_events(
    pool: PgPool,
    replica: String,
    mut queue: mpsc::Receiver<RelayEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = queue.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        let payload = match serde_json::to_string(&Envelope {
            from: replica.clone(),
            event,
        }) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "encoding a relay event failed");
                continue;
            }
        };
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&payload)
            .execute(&pool)
            .await
        {
            tracing::warn!(%error, "publishing a relay event failed; dropped it");
        }
    }
    pool.close().await;
}

async fn hear_events(
    mut listener: PgListener,
    replica: String,
    heard: broadcast::Sender<RelayEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => {
                match serde_json::from_str::<Envelope>(notification.payload()) {
                    Ok(envelope) if envelope.from == replica => {}
                    Ok(envelope) => {
                        let _ = heard.send(envelope.event);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "ignored an unreadable relay notification");
                    }
                }
            }
            // The connection was lost and sqlx reconnected (and listens
            // again): whatever was sent meanwhile is gone.
            Ok(None) => {
                tracing::warn!("the relay listener reconnected; resyncing from the store");
                let _ = heard.send(RelayEvent::Resync);
            }
            Err(error) => {
                tracing::warn!(%error, "the relay listener failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_fit_a_notification() {
        let event = RelayEvent::Output {
            job_id: uuid::Uuid::new_v4().to_string(),
            data: hex::encode(vec![0xffu8; MAX_CHUNK]),
        };
        let text = serde_json::to_string(&Envelope {
            from: uuid::Uuid::new_v4().to_string(),
            event: event.clone(),
        })
        .expect("encode");
        assert!(text.len() < 8000, "{} bytes", text.len());
        let back: Envelope = serde_json::from_str(&text).expect("decode");
        assert_eq!(back.event, event);
    }
}
