//! Delivering automatic triage (issue 23). A rule's triage jobs are made
//! in the transaction that opens its ticket, which runs in the ingest
//! writer or the timer task, away from any session; this task finds them
//! once committed and hands those of hosts streaming to this replica to
//! [`Dispatch::deliver`](super::dispatch::Dispatch::deliver), the path of
//! every job. A host that is not connected anywhere gets its queued jobs
//! when its session starts, as for any job; one connected to another
//! replica gets them from that replica's own poll.

use std::time::Duration;

use super::ServerContext;
use crate::store::engine::triage::TRIAGE_TTL_MS;

/// How often the store is asked for new triage jobs: beside the agent's
/// run, the most a triage run starts late.
const POLL: Duration = Duration::from_millis(500);

/// The most triage jobs one poll hands out; the rest wait for the next.
const BATCH: u32 = 1000;

/// Until shutdown: delivers queued triage jobs of hosts connected here.
pub async fn deliver(ctx: ServerContext) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = ctx.clock.now_ms();
        let queued = match ctx
            .store
            .queued_triage_jobs(now.saturating_sub(TRIAGE_TTL_MS), BATCH)
            .await
        {
            Ok(queued) => queued,
            Err(error) => {
                tracing::warn!(%error, "reading queued triage jobs failed");
                continue;
            }
        };
        for job in queued
            .iter()
            .filter(|job| ctx.dispatch.connected(&job.host_id))
        {
            match ctx.dispatch.deliver(&ctx.store, job, now).await {
                Ok(true) => {
                    tracing::info!(job = %job.id, host = %job.host_id, diagnostic = %job.diagnostic, "triage delivered");
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, job = %job.id, "delivering a triage job failed; it stays queued");
                }
            }
        }
    }
}
