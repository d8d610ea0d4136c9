//! The console's page frame and the pieces every page uses: the head (the
//! built-in styles and scripts, htmx's settings, the session's CSRF token
//! for `console.js`), the navigation with the caller's name and sign-out,
//! the hidden CSRF field of every form, times as `<time>` in UTC for
//! `console.js` to localize, and errors rendered as pages.
//!
//! Everything here is a maud template: values are escaped, and nothing
//! from a caller or a PC is ever written with `PreEscaped`.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::SignedIn;
use crate::store::Role;

/// The name of the form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// htmx's settings: no indicator styles injected (the policy allows no
/// inline style element), no eval, no script tags run from swapped HTML,
/// requests only to the console itself.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true,"historyCacheSize":0}"#;

/// A navigation entry: its path, its label, and the role that sees it.
const NAV: [(&str, &str, Role); 6] = [
    ("/", "Queue", Role::Viewer),
    ("/fleet", "Fleet", Role::Viewer),
    ("/problems", "Problems", Role::Viewer),
    ("/kb", "Knowledge base", Role::Viewer),
    ("/rules", "Rules", Role::Viewer),
    ("/audit", "Audit log", Role::Admin),
];

/// A whole page for a signed-in caller: `current` is the navigation path
/// to mark, `body` the page's content.
pub fn page(who: &SignedIn, title: &str, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(&who.csrf)))
            body {
                header.top {
                    a href="/" { strong { "Deskpulse" } }
                    nav aria-label="Main" {
                        @for (path, label, role) in NAV {
                            @if who.caller.role >= role {
                                @if path == current {
                                    a href=(path) aria-current="page" { (label) }
                                } @else {
                                    a href=(path) { (label) }
                                }
                            }
                        }
                    }
                    span.who { (who.caller.name) " (" (who.caller.role) ")" }
                    form method="post" action="/sign-out" {
                        (csrf_field(who))
                        button.secondary type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page without navigation: sign-in and errors before signing in.
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body { main { (body) } }
        }
    }
}

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            @if let Some(token) = csrf {
                meta name="csrf-token" content=(token);
            }
            title { (title) " · Deskpulse" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/htmx.min.js" defer {}
            script src="/assets/console.js" defer {}
        }
    }
}

/// The hidden field that carries the session's CSRF token in a form.
pub fn csrf_field(who: &SignedIn) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(who.csrf); }
}

/// `ms` as RFC 3339 UTC, whole seconds.
pub fn rfc3339(ms: i64) -> String {
    crate::webhooks::format::rfc3339(ms)
}

/// A time: the UTC text, which `console.js` replaces with the viewer's
/// local time, keeping the UTC time in the title.
pub fn time(ms: i64) -> Markup {
    let utc = rfc3339(ms);
    // "2026-12-07 01:07:14 UTC": whole seconds, read at a glance.
    let shown = format!("{} UTC", utc.get(..19).unwrap_or(&utc).replace('T', " "));
    html! { time datetime=(utc) title=(shown) { (shown) } }
}

/// A time, or a dash when there is none.
pub fn maybe_time(ms: Option<i64>) -> Markup {
    match ms {
        Some(ms) if ms > 0 => time(ms),
        _ => html! { span.muted { "—" } },
    }
}

/// An SLA due time: the time, and a countdown `console.js` keeps current.
pub fn due(ms: i64) -> Markup {
    html! { (time(ms)) " " span.countdown data-due-ms=(ms) {} }
}

/// What a console request can end in besides its page; each is a page
/// with its status.
#[derive(Debug)]
pub enum WebError {
    /// 400: what was asked is malformed; the line says how.
    BadRequest(String),
    /// 403: the caller may not, or the form's CSRF token is wrong.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 409: the ticket's state does not allow it.
    Conflict(String),
    /// 429: too many failed sign-ins from this address.
    TooMany(String),
    /// 500: the store failed; logged where it happened.
    Internal,
}

impl WebError {
    /// The store failed: logged here, shown as a 500.
    pub fn store(error: crate::store::StoreError) -> Self {
        tracing::error!(%error, "store error in the web console");
        Self::Internal
    }

    fn parts(&self) -> (StatusCode, &str) {
        match self {
            Self::BadRequest(line) => (StatusCode::BAD_REQUEST, line),
            Self::Forbidden(line) => (StatusCode::FORBIDDEN, line),
            Self::NotFound(line) => (StatusCode::NOT_FOUND, line),
            Self::Conflict(line) => (StatusCode::CONFLICT, line),
            Self::TooMany(line) => (StatusCode::TOO_MANY_REQUESTS, line),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the collector's store failed; retry later",
            ),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, line) = self.parts();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = bare_page(
            title,
            html! {
                h1 { (title) }
                p.error { (line) }
                p { a href="/" { "Back to the queue" } }
            },
        );
        (status, Html(body.into_string())).into_response()
    }
}

/// A handler that panicked: a 500 page, the panic logged by the hook
/// (`crate::panics`), the collector unharmed.
pub fn panic_page(_: Box<dyn std::any::Any + Send + 'static>) -> Response<axum::body::Body> {
    tracing::error!("a web console handler panicked");
    WebError::Internal.into_response()
}
