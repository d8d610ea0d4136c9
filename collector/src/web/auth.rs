//! Who is using the console, and what they may do: sign-in (an API token,
//! checked as the technician API checks it, or a local account's password,
//! Argon2id), the session cookie, sign-out, and the guard every request
//! passes.
//!
//! A session is a random secret in a `__Host-` cookie (`Secure`,
//! `HttpOnly`, `SameSite=Strict`, `Path=/`); the store keeps only its
//! SHA-256. It ends after [`IDLE_TIMEOUT_MS`] unused or
//! [`ABSOLUTE_TIMEOUT_MS`] after sign-in, at sign-out, when its API token
//! is revoked or expires, and when its local account's password is reset
//! or the account deleted. Each session has a CSRF token: every request
//! other than GET and HEAD must carry it, as the `X-CSRF-Token` header
//! (htmx, through `console.js`) or the form's `csrf` field, or it is
//! refused with 403 before any handler runs. Sign-in itself, before any
//! session, is protected by a double-submit nonce in its own `SameSite`
//! cookie.
//!
//! Roles are checked on the server for every action with the API's own
//! check ([`crate::server::technician::role_refusal`]) through
//! [`SignedIn::require`]; a page that hides a button only spares the
//! viewer the 403.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::info;

use super::Console;
use super::layout::{CSRF_FIELD, WebError, bare_page};
use crate::secrets;
use crate::server::technician::{check_api_token, role_refusal};
use crate::store::{AuditEntry, Caller, NewWebSession, Role, WebSessionRow};

/// The session cookie. `__Host-` makes the browser insist on `Secure`,
/// `Path=/` and no `Domain`, so no other host can set it.
pub const SESSION_COOKIE: &str = "__Host-deskpulse";
/// The sign-in form's double-submit nonce cookie.
pub const SIGN_IN_COOKIE: &str = "__Host-deskpulse-signin";
/// The header htmx requests carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A session unused this long has ended.
pub const IDLE_TIMEOUT_MS: i64 = 60 * 60 * 1000;
/// A session ends this long after sign-in, however much it is used.
pub const ABSOLUTE_TIMEOUT_MS: i64 = 12 * 60 * 60 * 1000;

/// The peer's address, for a listener that is not tonic's (the
/// `--web-listen` one) to hand the console.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The signed-in caller of a request, put there by [`guard`]: a handler
/// that takes it runs only for a live session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Who, with the role they hold now. `token_id` is the API token signed
    /// in with, or for a password the session's id: what the audit log's
    /// token column then names.
    pub caller: Caller,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
    /// The session's id.
    pub session_id: String,
}

impl SignedIn {
    /// The caller, when their role is at least `needed` for `action`;
    /// otherwise 403 with the API's own line.
    pub fn require(&self, needed: Role, action: &str) -> Result<&Caller, WebError> {
        match role_refusal(&self.caller, needed, action) {
            None => Ok(&self.caller),
            Some(line) => {
                info!(
                    action,
                    technician = %self.caller.name,
                    role = %self.caller.role,
                    "web console: refused, role too low"
                );
                Err(WebError::Forbidden(line))
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SignedIn>()
            .cloned()
            .ok_or_else(|| Redirect::to("/sign-in").into_response())
    }
}

/// The sign-in and sign-out routes.
pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
}

/// The value of the cookie `name`, if the request sent it.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for a console cookie: `Secure`, `HttpOnly`,
/// `SameSite=Strict`, `Path=/`, kept `max_age_ms`.
fn set_cookie(name: &str, value: &str, max_age_ms: i64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age_ms / 1000
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |differ, (x, y)| differ | (x ^ y))
            == 0
}

/// The session a request's cookie names, if it is live: known, its
/// credential still good, neither idle past [`IDLE_TIMEOUT_MS`] nor past
/// its absolute expiry. An ended session is deleted on the way.
async fn current_session(
    console: &Console,
    headers: &HeaderMap,
) -> Result<Option<SignedIn>, WebError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let store = &console.ctx.store;
    let now = console.ctx.clock.now_ms();
    let Some(row) = store
        .web_session(&secrets::token_hash(secret), now)
        .await
        .map_err(WebError::store)?
    else {
        return Ok(None);
    };
    if let Some(why) = ended(&row, now) {
        info!(session = %row.id, technician = %row.name, why, "web console session ended");
        if let Err(error) = store.delete_web_session(&row.id).await {
            tracing::warn!(%error, "deleting an ended web session failed");
        }
        return Ok(None);
    }
    if now.saturating_sub(row.last_seen_at_ms) >= crate::store::WEB_SESSION_TOUCH_EVERY_MS
        && let Err(error) = store.touch_web_session(&row.id, now).await
    {
        tracing::warn!(%error, "recording a web session's use failed");
    }
    Ok(Some(SignedIn {
        caller: Caller {
            technician_id: row.technician_id,
            name: row.name,
            role: row.role,
            token_id: row.api_token_id.unwrap_or_else(|| row.id.clone()),
            expires_at_ms: Some(row.expires_at_ms),
            last_used_at_ms: Some(row.last_seen_at_ms),
        },
        csrf: row.csrf_token,
        session_id: row.id,
    }))
}

/// Why a stored session no longer holds at `now`, if it does not.
fn ended(row: &WebSessionRow, now: i64) -> Option<&'static str> {
    if !row.credential_valid {
        Some("its API token or local account no longer works")
    } else if now >= row.expires_at_ms {
        Some("past its absolute expiry")
    } else if now.saturating_sub(row.last_seen_at_ms) >= IDLE_TIMEOUT_MS {
        Some("idle too long")
    } else {
        None
    }
}

/// Back to sign-in: a redirect, or for an htmx request (which would follow
/// a redirect and swap the sign-in page into a fragment) htmx's own
/// `HX-Redirect`.
fn to_sign_in(headers: &HeaderMap) -> Response {
    if headers.contains_key("hx-request") {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/sign-in"));
        response
    } else {
        Redirect::to("/sign-in").into_response()
    }
}

/// Every console request passes here. Sign-in, the assets and the favicon
/// (a 404) are open; everything else needs a live session, and every
/// request but GET and HEAD the session's CSRF token, or it ends here (a
/// redirect to sign-in, or 403).
pub async fn guard(State(console): State<Console>, request: Request<Body>, next: Next) -> Response {
    let path = request.uri().path();
    // The browser's own /favicon.ico request must not be sent to sign-in:
    // that page sets a fresh nonce cookie, and the form on screen would fail.
    if path == "/sign-in" || path == "/favicon.ico" || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let who = match current_session(&console, request.headers()).await {
        Ok(Some(who)) => who,
        Ok(None) if reading => return to_sign_in(request.headers()),
        Ok(None) => {
            return WebError::Forbidden("your session has ended: sign in again".into())
                .into_response();
        }
        Err(error) => return error.into_response(),
    };
    let mut request = if reading {
        request
    } else {
        match with_csrf_checked(request, &who).await {
            Ok(request) => request,
            Err(error) => return error.into_response(),
        }
    };
    request.extensions_mut().insert(who);
    next.run(request).await
}

/// `request` back, whole, when it carries `who`'s CSRF token in the header
/// or its form's `csrf` field; 403 otherwise.
async fn with_csrf_checked(
    request: Request<Body>,
    who: &SignedIn,
) -> Result<Request<Body>, WebError> {
    let refused = || {
        info!(technician = %who.caller.name, "web console: refused a request without its CSRF token");
        WebError::Forbidden(
            "the form's CSRF token is missing or wrong: reload the page and try again".into(),
        )
    };
    if let Some(sent) = request.headers().get(CSRF_HEADER) {
        return match sent.to_str() {
            Ok(sent) if same_secret(sent, &who.csrf) => Ok(request),
            _ => Err(refused()),
        };
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .map_err(|_| WebError::BadRequest("the form is too large".into()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let sent = fields
        .iter()
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.as_str());
    match sent {
        Some(sent) if same_secret(sent, &who.csrf) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(refused()),
    }
}

/// The address a request came from, from tonic's connection info (the TLS
/// port) or [`ClientAddr`] (the `--web-listen` one).
fn peer(parts_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    parts_extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .or_else(|| parts_extensions.get::<ClientAddr>().map(|addr| addr.0))
}

/// The sign-in page, with a fresh nonce in its cookie and its forms; a
/// caller already signed in goes to the queue.
async fn sign_in_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = current_session(&console, &headers).await {
        return Redirect::to("/").into_response();
    }
    sign_in_form(&headers, StatusCode::OK, None)
}

/// The nonce of a sign-in form: the one in the browser's cookie when it
/// has one of ours, so that a second tab (or a page the browser fetched by
/// itself) does not void the form already on screen; else a fresh one.
fn sign_in_nonce(headers: &HeaderMap) -> String {
    match cookie(headers, SIGN_IN_COOKIE) {
        Some(sent) if sent.len() == 64 && sent.bytes().all(|b| b.is_ascii_hexdigit()) => {
            sent.to_owned()
        }
        _ => secrets::new_token(""),
    }
}

fn sign_in_form(headers: &HeaderMap, status: StatusCode, problem: Option<&str>) -> Response {
    let nonce = sign_in_nonce(headers);
    let body = bare_page(
        "Sign in",
        html! {
            div.signin {
                h1 { "Sign in to Deskpulse" }
                @if let Some(problem) = problem {
                    p.error role="alert" { (problem) }
                }
                section.card {
                    h2 { "Local account" }
                    form method="post" action="/sign-in" {
                        input type="hidden" name="nonce" value=(nonce);
                        input type="hidden" name="method" value="password";
                        label { "Name" input name="name" autocomplete="username" required; }
                        label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                        button type="submit" { "Sign in" }
                    }
                }
                section.card {
                    h2 { "API token" }
                    form method="post" action="/sign-in" {
                        input type="hidden" name="nonce" value=(nonce);
                        input type="hidden" name="method" value="token";
                        label { "Token" input type="password" name="token" autocomplete="off" required; }
                        button type="submit" { "Sign in with the token" }
                    }
                }
            }
        },
    );
    let mut response = (status, Html(body.into_string())).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, &nonce, 30 * 60 * 1000),
    );
    response
}

/// What the sign-in forms post.
#[derive(Debug, Deserialize)]
struct SignInForm {
    /// The nonce the page was rendered with (and set in its cookie).
    nonce: String,
    /// "password" or "token".
    method: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

/// One line for a failed sign-in: never which of name and password was
/// wrong.
const WRONG_PASSWORD: &str = "the name or the password is wrong";

async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    request_extensions: axum::http::Extensions,
    Form(form): Form<SignInForm>,
) -> Response {
    // The nonce cookie is SameSite=Strict: another site's form cannot send
    // it, so it cannot sign a browser in to the attacker's account.
    if !cookie(&headers, SIGN_IN_COOKIE).is_some_and(|sent| same_secret(sent, &form.nonce)) {
        return sign_in_form(
            &headers,
            StatusCode::FORBIDDEN,
            Some("the sign-in form expired: try again"),
        );
    }
    let peer = peer(&request_extensions);
    let attempt = match console.sign_ins.reserve(peer).await {
        Ok(attempt) => attempt,
        Err(status) => return WebError::TooMany(status.message().to_owned()).into_response(),
    };
    let signed = match form.method.as_str() {
        "token" => match check_api_token(&console.ctx, form.token.trim()).await {
            Ok(Ok(caller)) => Ok((caller.clone(), Some(caller.token_id))),
            Ok(Err(line)) => Err(line),
            Err(error) => return WebError::store(error).into_response(),
        },
        "password" => match password_caller(&console, form.name.trim(), form.password).await {
            Ok(Some(caller)) => Ok((caller, None)),
            Ok(None) => Err(WRONG_PASSWORD.to_owned()),
            Err(error) => return error.into_response(),
        },
        _ => return WebError::BadRequest("unknown sign-in method".into()).into_response(),
    };
    let (caller, api_token_id) = match signed {
        Ok(signed) => signed,
        Err(line) => {
            attempt.failed();
            info!(?peer, refusal = %line, "web console: refused a sign-in");
            return sign_in_form(&headers, StatusCode::UNAUTHORIZED, Some(&line));
        }
    };
    drop(attempt);
    match start_session(&console, &caller, api_token_id).await {
        Ok(secret) => {
            info!(technician = %caller.name, role = %caller.role, "web console: signed in");
            let mut response = Redirect::to("/").into_response();
            let cookies = response.headers_mut();
            cookies.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &secret, ABSOLUTE_TIMEOUT_MS),
            );
            cookies.append(header::SET_COOKIE, set_cookie(SIGN_IN_COOKIE, "", 0));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// The technician whose local account `name` has `password`, or `None`.
/// The hash is checked off the async threads, and an unknown name costs
/// the same as a wrong password.
async fn password_caller(
    console: &Console,
    name: &str,
    password: String,
) -> Result<Option<Caller>, WebError> {
    let login = if name.is_empty() {
        None
    } else {
        console
            .ctx
            .store
            .local_user_login(name)
            .await
            .map_err(WebError::store)?
    };
    let stored = login.as_ref().map(|l| l.password_hash.clone());
    let matches =
        tokio::task::spawn_blocking(move || secrets::verify_password(&password, stored.as_deref()))
            .await
            .unwrap_or(false);
    Ok(login.filter(|_| matches).map(|login| Caller {
        technician_id: login.technician_id,
        name: login.name,
        role: login.role,
        token_id: String::new(),
        expires_at_ms: None,
        last_used_at_ms: None,
    }))
}

/// Stores a new session for `caller`, audited as a sign-in; the cookie's
/// secret.
async fn start_session(
    console: &Console,
    caller: &Caller,
    api_token_id: Option<String>,
) -> Result<String, WebError> {
    let now = console.ctx.clock.now_ms();
    let secret = secrets::new_token(secrets::SESSION_PREFIX);
    let session = NewWebSession {
        id: uuid::Uuid::new_v4().to_string(),
        secret_sha256: secrets::token_hash(&secret),
        technician_id: caller.technician_id.clone(),
        api_token_id: api_token_id.clone(),
        csrf_token: secrets::new_token(secrets::CSRF_PREFIX),
        // A session never outlives the token it was signed in with.
        expires_at_ms: caller
            .expires_at_ms
            .unwrap_or(i64::MAX)
            .min(now.saturating_add(ABSOLUTE_TIMEOUT_MS)),
    };
    let audit = AuditEntry {
        technician_id: Some(caller.technician_id.clone()),
        token_id: Some(api_token_id.clone().unwrap_or_else(|| session.id.clone())),
        action: "web.sign-in".into(),
        subject: session.id.clone(),
        detail: match &api_token_id {
            Some(id) => format!("{} with API token {id}", caller.name),
            None => format!("{} with a password", caller.name),
        },
    };
    console
        .ctx
        .store
        .create_web_session(&session, &audit, now)
        .await
        .map_err(WebError::store)?;
    Ok(secret)
}

async fn sign_out(State(console): State<Console>, who: SignedIn) -> Response {
    if let Err(error) = console.ctx.store.delete_web_session(&who.session_id).await {
        return WebError::store(error).into_response();
    }
    info!(technician = %who.caller.name, "web console: signed out");
    let mut response = Redirect::to("/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    response
}
