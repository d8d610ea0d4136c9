//! The web console (issue 22): server-rendered pages for the help desk,
//! served by the collector on its TLS port beside gRPC (a request whose
//! `content-type` is `application/grpc…` goes to tonic, any other to the
//! console) and, with `--web-listen`, on an address of its own.
//!
//! Pages are [`maud`] templates, compiled and escaping every value: data
//! from employees and PCs (ticket titles, hostnames, package names) is
//! only ever text. htmx does the partial updates; the console's own
//! `console.js` shows times in the viewer's zone and counts down to SLA due
//! times. Every asset is built into the binary ([`assets`]), and every
//! response carries a strict Content-Security-Policy with no inline script
//! ([`security_headers`]).
//!
//! Who may do what is the technician API's: a technician signs in with an
//! API token or a local account (`deskpulse-collector user create`), and
//! each action checks the same role and goes through the same audited store
//! call as its RPC ([`auth`]).
//!
//! # Layout
//! - [`auth`]: sign-in and sign-out, the session cookie, the guard every
//!   request passes (session, idle and absolute expiry, CSRF on every
//!   POST), and [`auth::SignedIn`], the extractor a page takes to know its
//!   caller and check a role.
//! - [`layout`]: the page frame (head, navigation, CSRF meta tag), the
//!   CSRF form field, times, and [`layout::WebError`], an error as a page.
//! - [`assets`]: the built-in files under `/assets/`.
//! - [`queue`]: the ticket queue, and its rows for htmx polling.
//! - [`ticket`]: one ticket with its context, and its actions.
//! - [`fleet`]: the fleet overview and the host list with the CLI's
//!   filters.
//! - [`host`]: one host: its inventory, health charts, change timeline,
//!   tickets and jobs, and running a diagnostic with its output live.
//! - [`pages`]: knowledge-base search, the audit log (admin), rules and SLA
//!   targets (read-only).
//! - [`problems`]: fleet-wide problems, listed and one by one (issue 23).
//! - [`listener`]: the `--web-listen` address (TLS, HTTP/1.1 and HTTP/2).
//!
//! A new area is a file with a
//! `pub(crate) fn routes() -> Router<Console>` merged in [`router`] (one
//! line), whose handlers take [`auth::SignedIn`], check their role with
//! [`auth::SignedIn::require`], render through [`layout::page`], and put
//! [`layout::csrf_field`] in every form; the guard has checked the session
//! and any POST's CSRF token before they run.

pub mod assets;
pub mod auth;
mod fleet;
mod host;
pub mod layout;
pub mod listener;
mod pages;
mod problems;
mod queue;
mod ticket;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, Response, header};
use axum::middleware::{self, Next};
use tower::ServiceExt;

use crate::server::ServerContext;
use crate::server::limits::FailedAttempts;

/// The largest request body the console takes: its forms carry a note or a
/// resolution (at most 10,000 characters) and a few fields.
pub const MAX_BODY: usize = 64 * 1024;

/// The console's state: the server's context, and the failed sign-ins
/// counted per source address.
#[derive(Clone)]
pub struct Console {
    /// The store, clock and audit anchor the gRPC services use.
    pub ctx: ServerContext,
    /// Failed sign-ins (tokens and passwords) per source address, limited
    /// as the API limits failed tokens.
    pub sign_ins: Arc<FailedAttempts>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// A console over `ctx`.
    pub fn new(ctx: ServerContext) -> Self {
        Self {
            ctx,
            sign_ins: Arc::new(FailedAttempts::new("web sign-in")),
        }
    }
}

/// The console's routes, behind the session guard and the security
/// headers.
pub fn router(console: Console) -> Router {
    Router::new()
        .merge(auth::routes())
        .merge(queue::routes())
        .merge(ticket::routes())
        .merge(fleet::routes())
        .merge(host::routes())
        .merge(pages::routes())
        .merge(problems::routes())
        .merge(assets::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(console.clone(), auth::guard))
        .layer(middleware::from_fn(security_headers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            layout::panic_page,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(console)
}

async fn not_found() -> layout::WebError {
    layout::WebError::NotFound("there is no such page".into())
}

/// The policy every response carries: scripts and styles only from the
/// console itself (no inline script, no eval), no framing, no plugins,
/// forms posting only back to it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every console response, pages, partials,
/// assets and errors alike.
pub async fn security_headers(request: Request<Body>, next: Next) -> Response<Body> {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a request is gRPC: its content type says so (`application/grpc`,
/// `application/grpc+proto`, `application/grpc-web…` are all tonic's).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// One router for the TLS port: gRPC requests to `grpc` (tonic's routes),
/// everything else to `web` (the console).
pub fn beside_grpc(grpc: Router, web: Router) -> Router {
    Router::new().fallback_service(tower::service_fn(move |request: Request<Body>| {
        let (grpc, web) = (grpc.clone(), web.clone());
        async move {
            let response = if is_grpc(&request) {
                grpc.oneshot(request).await
            } else {
                web.oneshot(request).await
            };
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    }))
}
