//! What a panic in the collector does (docs/decisions.md, "Panics in the
//! collector"). The collector's release build unwinds, so one panicking
//! request or session is contained and every other agent keeps its
//! session:
//! - a panicking RPC handler becomes an `internal` status for that call
//!   alone (`grpc_internal`, the `CatchPanicLayer` the server puts in front
//!   of every service);
//! - a panicking agent session ends that session alone with an `internal`
//!   status (`contain_session`); the agent resends from its spool;
//! - a panicking background task (ingest writer, timers, webhooks,
//!   anchoring) has no one to answer, and a collector without it would
//!   serve half its job, so `critical` logs it and ends the process with
//!   code 1, for the service manager to restart.
//!
//! Every panic is logged once, as one line, by the hook `install_hook`
//! sets (no multi-line default message, no backtrace).
//!
//! `test_panic` is a hook for the end-to-end tests: in debug builds it
//! panics once where `DESKPULSE_COLLECTOR_TEST_PANIC` names its point;
//! release builds compile it to nothing.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::Full;
use tonic::Status;
use tonic::codegen::http::Response;

/// The text of a panic's payload.
pub fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "a panic without a message"
    }
}

/// Logs every panic as one `error` line with its location, instead of the
/// standard library's message on stderr.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(
            panic = %message(info.payload()),
            %location,
            "a collector task panicked"
        );
    }));
}

/// The answer to an RPC whose handler panicked: `internal`, for that call
/// alone (the hook has logged the panic).
pub fn grpc_internal(_payload: Box<dyn Any + Send + 'static>) -> Response<Full<Bytes>> {
    Status::internal("the collector failed on this request; it has been logged").into_http()
}

/// Runs an agent session; a panic ends it with an `internal` status sent on
/// `tx` instead of a silently closed stream.
pub async fn contain_session<T>(
    host_id: String,
    session: impl Future<Output = ()>,
    tx: tokio::sync::mpsc::Sender<Result<T, Status>>,
) {
    if AssertUnwindSafe(session).catch_unwind().await.is_err() {
        tracing::error!(host = %host_id, "an agent session panicked; ended it");
        let _ = tx
            .send(Err(Status::internal(
                "the collector failed on this session; reconnect and resend",
            )))
            .await;
    }
}

/// Runs a background task the collector cannot serve without; a panic ends
/// the process with code 1.
pub async fn critical(name: &'static str, task: impl Future<Output = ()>) {
    if AssertUnwindSafe(task).catch_unwind().await.is_err() {
        tracing::error!(
            task = name,
            "a collector task panicked; stopping the collector"
        );
        std::process::exit(1);
    }
}

/// The variable naming the point `test_panic` panics at (debug builds).
pub const TEST_PANIC_VAR: &str = "DESKPULSE_COLLECTOR_TEST_PANIC";

/// Panics the first time it is reached with `DESKPULSE_COLLECTOR_TEST_PANIC`
/// naming `point`, and never again in this process: the tests see one call
/// or session fail and the next ones served. Debug builds only.
#[cfg(debug_assertions)]
pub fn test_panic(point: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FIRED: AtomicBool = AtomicBool::new(false);
    if std::env::var(TEST_PANIC_VAR).is_ok_and(|v| v == point)
        && !FIRED.swap(true, Ordering::SeqCst)
    {
        panic!("test panic at {point}");
    }
}

/// Release builds: nothing.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn test_panic(_point: &str) {}
