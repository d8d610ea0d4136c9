//! The web console in-process, on real SQLite with a manual clock: the
//! security headers on every response, CSRF and roles refused on the
//! server, sessions that expire back to sign-in, both ways of signing in,
//! text from employees and PCs rendered inert, and the host page: its
//! sections, its chart data from the stored health history, and running a
//! diagnostic under the API's role rules and parameter checks.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::auth::{IDLE_TIMEOUT_MS, SESSION_COOKIE, SIGN_IN_COOKIE};
use super::{Console, router};
use crate::clock::{Clock, ManualClock};
use crate::server::ServerContext;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    AuditEntry, AuditQuery, EnrollOutcome, EnrollRequest, HostCert, NewApiToken,
    NewEnrollmentToken, NewLocalUser, Role, SharedStore,
};

mod public_note;

/// Text an employee or a PC could send that a browser would run if it were
/// written into a page unescaped.
const PAYLOAD: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

struct Fixture {
    app: Router,
    store: SharedStore,
    clock: ManualClock,
    ticket: i64,
    /// The host named [`PAYLOAD`].
    host: String,
    /// The id of `viewer-token`.
    viewer_token_id: String,
    _dir: tempfile::TempDir,
}

/// Makes an API token `token` for `name`; its id.
async fn api_token(store: &SharedStore, name: &str, role: Role, token: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    store
        .create_api_token(
            &NewApiToken {
                technician_name: name.into(),
                role,
                token_id: id.clone(),
                token_sha256: crate::secrets::token_hash(token),
                expires_at_ms: None,
            },
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("token");
    id
}

/// A console with an admin token `admin-token`, a viewer token
/// `viewer-token`, and a host named [`PAYLOAD`] with one ticket titled
/// [`PAYLOAD`].
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .expect("open");
    let store: SharedStore = Arc::new(sqlite);
    let clock = ManualClock::new(1_800_000_000_000);
    let ca = crate::pki::CertificateAuthority::generate().expect("CA");
    let ca = crate::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).expect("load CA");
    let ctx = ServerContext {
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        ca: Arc::new(crate::server::rotation::LiveCas::single(ca)),
        replica: "test".into(),
        shutdown: CancellationToken::new(),
        dispatch: Arc::default(),
        audit: Arc::new(crate::audit::AuditAnchor::load_or_create(dir.path()).expect("audit key")),
    };
    api_token(&store, "ada", Role::Admin, "admin-token").await;
    let viewer_token_id = api_token(&store, "val", Role::Viewer, "viewer-token").await;
    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                id: "e1".into(),
                token_sha256: crate::secrets::token_hash("enroll"),
                expires_at_ms: i64::MAX,
                uses: 1,
                created_by: "test".into(),
                relink_host: None,
            },
            &AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("enrollment token");
    let cert = |host_id: &str| {
        Ok(HostCert {
            cert_pem: format!("PEM for {host_id}"),
            serial_hex: "01".into(),
            sha256_hex: format!("sha-{host_id}"),
            ca_sha256: "ca-1".into(),
        })
    };
    let enrolled = store
        .enroll(
            &EnrollRequest {
                token_sha256: crate::secrets::token_hash("enroll"),
                hostname: PAYLOAD.into(),
                hardware_uuid: String::new(),
                hardware_serial: String::new(),
                source_addr: "192.0.2.7".into(),
                csr_der: b"csr".to_vec(),
            },
            0,
            &cert,
        )
        .await
        .expect("enroll");
    let EnrollOutcome::Enrolled { host_id, .. } = enrolled else {
        panic!("expected an enrolled host, got {enrolled:?}");
    };
    let ticket = store
        .create_ticket(
            &host_id,
            PAYLOAD,
            None,
            "ada",
            &AuditEntry::system("test", "", ""),
            clock.now_ms(),
        )
        .await
        .expect("ticket")
        .id;
    Fixture {
        app: router(Console::new(ctx)),
        store,
        clock,
        ticket,
        host: host_id,
        viewer_token_id,
        _dir: dir,
    }
}

async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.expect("infallible")
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).expect("request")
}

fn post(path: &str, cookie: &str, form: &str) -> Request<Body> {
    Request::post(path)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request")
}

/// The value a response sets for cookie `name`.
fn set_cookie(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Signs in through the form with `fields` (after the nonce); the session
/// cookie, or the failed response.
async fn sign_in(app: &Router, fields: &str) -> Result<String, Response<Body>> {
    let page = send(app, get("/sign-in", None)).await;
    let nonce = set_cookie(&page, SIGN_IN_COOKIE).expect("a nonce cookie");
    let response = send(
        app,
        post(
            "/sign-in",
            &format!("{SIGN_IN_COOKIE}={nonce}"),
            &format!("nonce={nonce}&{fields}"),
        ),
    )
    .await;
    match set_cookie(&response, SESSION_COOKIE) {
        Some(secret) if response.status() == StatusCode::SEE_OTHER => {
            Ok(format!("{SESSION_COOKIE}={secret}"))
        }
        _ => Err(response),
    }
}

async fn signed_in(app: &Router, token: &str) -> String {
    sign_in(app, &format!("method=token&token={token}"))
        .await
        .unwrap_or_else(|r| panic!("sign-in failed: {}", r.status()))
}

/// The CSRF token a signed-in page carries.
async fn csrf_of(app: &Router, cookie: &str) -> String {
    let page = body_text(send(app, get("/", Some(cookie))).await).await;
    let start = page
        .find("name=\"csrf-token\" content=\"")
        .expect("a CSRF meta tag")
        + "name=\"csrf-token\" content=\"".len();
    page[start..]
        .split('"')
        .next()
        .expect("its value")
        .to_owned()
}

async fn worklog_notes(store: &SharedStore, ticket: i64) -> Vec<String> {
    let (_, log) = store.ticket(ticket).await.expect("read").expect("ticket");
    log.into_iter().map(|e| e.note).collect()
}

fn location(response: &Response<Body>) -> &str {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    for (path, cookie) in [
        ("/sign-in", None),
        ("/", None),
        ("/", Some(cookie.as_str())),
        ("/queue/rows", Some(cookie.as_str())),
        ("/assets/console.js", None),
        ("/no-such-page", Some(cookie.as_str())),
    ] {
        let response = send(&f.app, get(path, cookie)).await;
        let headers = response.headers();
        let csp = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"));
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
    }
}

#[tokio::test]
async fn the_session_cookie_is_secure_http_only_and_same_site_strict() {
    let f = fixture().await;
    let page = send(&f.app, get("/sign-in", None)).await;
    let nonce = set_cookie(&page, SIGN_IN_COOKIE).expect("nonce");
    let response = send(
        &f.app,
        post(
            "/sign-in",
            &format!("{SIGN_IN_COOKIE}={nonce}"),
            &format!("nonce={nonce}&method=token&token=admin-token"),
        ),
    )
    .await;
    let set = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(SESSION_COOKIE))
        .expect("a session cookie")
        .to_owned();
    for part in [
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
}

#[tokio::test]
async fn a_post_without_its_csrf_token_is_refused() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let note = format!("/tickets/{}/note", f.ticket);
    for form in [
        "value=none".to_owned(),
        "value=wrong&csrf=dpc_0000".to_owned(),
    ] {
        let response = send(&f.app, post(&note, &cookie, &form)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{form}");
    }
    let header_wrong = Request::post(&note)
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", "dpc_0000")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("value=header-wrong"))
        .expect("request");
    assert_eq!(
        send(&f.app, header_wrong).await.status(),
        StatusCode::FORBIDDEN
    );
    let notes = worklog_notes(&f.store, f.ticket).await;
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("none") || n.contains("wrong"))
    );

    let response = send(
        &f.app,
        post(&note, &cookie, &format!("value=by+form&csrf={csrf}")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/tickets/{}", f.ticket));
    let by_header = Request::post(&note)
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("value=by+header"))
        .expect("request");
    assert_eq!(
        send(&f.app, by_header).await.status(),
        StatusCode::SEE_OTHER
    );
    let notes = worklog_notes(&f.store, f.ticket).await;
    assert!(notes.iter().any(|n| n.contains("by form")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("by header")), "{notes:?}");
}

#[tokio::test]
async fn a_viewer_sees_no_actions_and_a_forged_post_is_refused() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "viewer-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let page = body_text(
        send(
            &f.app,
            get(&format!("/tickets/{}", f.ticket), Some(&cookie)),
        )
        .await,
    )
    .await;
    assert!(
        page.contains("What fired it"),
        "the viewer reads the ticket"
    );
    assert!(
        !page.contains(&format!("/tickets/{}/note", f.ticket)),
        "no action forms"
    );
    assert!(!page.contains("/audit\""), "no audit log in the navigation");

    let audit_before = f
        .store
        .list_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .len();
    for action in ["note", "resolve", "assign", "escalate"] {
        let response = send(
            &f.app,
            post(
                &format!("/tickets/{}/{action}", f.ticket),
                &cookie,
                &format!("value=forged&csrf={csrf}"),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{action}");
        assert!(
            body_text(response)
                .await
                .contains("needs the technician role")
        );
    }
    let audit_page = send(&f.app, get("/audit", Some(&cookie))).await;
    assert_eq!(audit_page.status(), StatusCode::FORBIDDEN);
    assert!(
        !worklog_notes(&f.store, f.ticket)
            .await
            .iter()
            .any(|n| n.contains("forged"))
    );
    let audit_after = f
        .store
        .list_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .len();
    assert_eq!(audit_before, audit_after, "a refused action is not audited");
}

#[tokio::test]
async fn an_action_is_audited_as_the_api_audits_it() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let response = send(
        &f.app,
        post(
            &format!("/tickets/{}/resolve", f.ticket),
            &cookie,
            &format!("value=replaced+the+disk&csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let entries = f
        .store
        .list_audit(&AuditQuery {
            action_prefix: Some("ticket.".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let resolved = entries
        .iter()
        .find(|e| e.action.contains("resolve"))
        .unwrap_or_else(|| panic!("no resolve entry in {entries:?}"));
    assert_eq!(resolved.technician_name.as_deref(), Some("ada"));
    let (ticket, _) = f
        .store
        .ticket(f.ticket)
        .await
        .expect("read")
        .expect("ticket");
    assert_eq!(ticket.status, "resolved");
    let kb = body_text(send(&f.app, get("/kb?q=disk", Some(&cookie))).await).await;
    assert!(
        kb.contains("replaced the disk"),
        "the resolution is found in the KB"
    );
}

#[tokio::test]
async fn an_idle_or_old_session_goes_back_to_sign_in() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    assert_eq!(
        send(&f.app, get("/", Some(&cookie))).await.status(),
        StatusCode::OK
    );
    f.clock.advance(Duration::from_millis(
        u64::try_from(IDLE_TIMEOUT_MS).expect("positive"),
    ));
    let response = send(&f.app, get("/", Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/sign-in");
    let htmx = Request::get("/queue/rows")
        .header(header::COOKIE, &cookie)
        .header("hx-request", "true")
        .body(Body::empty())
        .expect("request");
    let response = send(&f.app, htmx).await;
    assert_eq!(response.headers()["hx-redirect"], "/sign-in");

    // Used every 50 minutes it stays, until 12 hours after sign-in.
    let cookie = signed_in(&f.app, "admin-token").await;
    for step in 1..=16 {
        f.clock.advance(Duration::from_secs(50 * 60));
        let response = send(&f.app, get("/", Some(&cookie))).await;
        if response.status() != StatusCode::OK {
            assert_eq!(location(&response), "/sign-in");
            assert_eq!(
                step,
                15,
                "ended after {} minutes, not at 12 hours",
                step * 50
            );
            return;
        }
    }
    panic!("a session used all along outlived its absolute expiry");
}

#[tokio::test]
async fn revoking_its_api_token_ends_a_session_at_once() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "viewer-token").await;
    assert_eq!(
        send(&f.app, get("/", Some(&cookie))).await.status(),
        StatusCode::OK
    );
    let revoked = f
        .store
        .revoke_api_token(
            &f.viewer_token_id,
            "ada",
            &AuditEntry::system("api-token.revoke", &f.viewer_token_id, "test"),
            f.clock.now_ms(),
        )
        .await
        .expect("revoke");
    assert!(
        matches!(revoked, crate::store::RevokeOutcome::Revoked),
        "{revoked:?}"
    );
    let response = send(&f.app, get("/", Some(&cookie))).await;
    assert_eq!(location(&response), "/sign-in");
    let again = sign_in(&f.app, "method=token&token=viewer-token")
        .await
        .expect_err("a revoked token signs in no more");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_sign_ins_from_one_address_are_limited() {
    let f = fixture().await;
    let from = super::auth::ClientAddr("192.0.2.9:5000".parse().expect("address"));
    let mut last = StatusCode::OK;
    for _ in 0..=crate::server::limits::MAX_FAILED_ATTEMPTS {
        let page = send(&f.app, get("/sign-in", None)).await;
        let nonce = set_cookie(&page, SIGN_IN_COOKIE).expect("nonce");
        let mut request = post(
            "/sign-in",
            &format!("{SIGN_IN_COOKIE}={nonce}"),
            &format!("nonce={nonce}&method=token&token=dpt_guess"),
        );
        request.extensions_mut().insert(from);
        last = send(&f.app, request).await.status();
    }
    assert_eq!(
        last,
        StatusCode::TOO_MANY_REQUESTS,
        "the 11th guess in a minute"
    );
}

#[tokio::test]
async fn a_password_signs_in_a_wrong_one_does_not_and_sign_out_ends_the_session() {
    let f = fixture().await;
    let hash = crate::secrets::hash_password("a long enough password").expect("hash");
    f.store
        .create_local_user(
            &NewLocalUser {
                name: "wes".into(),
                role: Role::Technician,
                password_hash: hash,
            },
            &|_: &String| AuditEntry::system("test", "", ""),
            0,
        )
        .await
        .expect("account");
    for wrong in [
        "method=password&name=wes&password=wrong",
        "method=password&name=nobody&password=a+long+enough+password",
        "method=token&token=dpt_unknown",
    ] {
        let refused = sign_in(&f.app, wrong).await.expect_err("refused");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let cookie = sign_in(
        &f.app,
        "method=password&name=wes&password=a+long+enough+password",
    )
    .await
    .unwrap_or_else(|r| panic!("sign-in failed: {}", r.status()));
    let page = body_text(send(&f.app, get("/", Some(&cookie))).await).await;
    assert!(page.contains("wes (technician)"));
    let csrf = csrf_of(&f.app, &cookie).await;
    let out = send(&f.app, post("/sign-out", &cookie, &format!("csrf={csrf}"))).await;
    assert_eq!(location(&out), "/sign-in");
    assert_eq!(set_cookie(&out, SESSION_COOKIE).as_deref(), Some(""));
    let after = send(&f.app, get("/", Some(&cookie))).await;
    assert_eq!(
        location(&after),
        "/sign-in",
        "the old cookie no longer works"
    );

    // A sign-in form posted without its own nonce cookie is refused.
    let forged = send(
        &f.app,
        post(
            "/sign-in",
            "",
            "nonce=abc&method=password&name=wes&password=a+long+enough+password",
        ),
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, SESSION_COOKIE).is_none());
}

/// A second sign-in page (another tab, or a page the browser fetched by
/// itself) keeps the browser's nonce, so the form on screen still works;
/// a nonce that is not one of ours is replaced.
#[tokio::test]
async fn a_second_sign_in_page_does_not_void_the_first() {
    let f = fixture().await;
    let first = send(&f.app, get("/sign-in", None)).await;
    let nonce = set_cookie(&first, SIGN_IN_COOKIE).expect("nonce");
    let jar = format!("{SIGN_IN_COOKIE}={nonce}");
    let second = send(&f.app, get("/sign-in", Some(&jar))).await;
    assert_eq!(
        set_cookie(&second, SIGN_IN_COOKIE).as_deref(),
        Some(nonce.as_str())
    );
    let signed = send(
        &f.app,
        post(
            "/sign-in",
            &jar,
            &format!("nonce={nonce}&method=token&token=admin-token"),
        ),
    )
    .await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&signed, SESSION_COOKIE).is_some());

    let odd = format!("{SIGN_IN_COOKIE}=<chosen-by-someone>");
    let page = send(&f.app, get("/sign-in", Some(&odd))).await;
    let minted = set_cookie(&page, SIGN_IN_COOKIE).expect("nonce");
    assert_eq!(minted.len(), 64, "{minted}");
}

#[tokio::test]
async fn text_from_employees_and_pcs_renders_as_text() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let note = format!(
        "value={}&csrf={csrf}",
        serde_urlencoded::to_string([("v", PAYLOAD)])
            .expect("encode")
            .trim_start_matches("v=")
    );
    let response = send(
        &f.app,
        post(&format!("/tickets/{}/note", f.ticket), &cookie, &note),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    for path in [
        "/".to_owned(),
        "/queue/rows".to_owned(),
        format!("/tickets/{}", f.ticket),
        "/fleet".to_owned(),
    ] {
        let page = body_text(send(&f.app, get(&path, Some(&cookie))).await).await;
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: the payload is not shown as text"
        );
        assert!(!page.contains("<script>alert"), "{path}: a live script tag");
        assert!(!page.contains("<img src=x"), "{path}: a live img tag");
        // Every script the page loads is a file of the console's.
        for tag in page.split("<script").skip(1) {
            assert!(
                tag.starts_with(" src=\"/assets/"),
                "{path}: inline script {tag}"
            );
        }
    }
}

#[tokio::test]
async fn the_fleet_takes_the_clis_filters_and_refuses_a_bad_one() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "viewer-token").await;
    let page = body_text(send(&f.app, get("/fleet", Some(&cookie))).await).await;
    assert!(
        page.contains("0 online") && page.contains("1 offline"),
        "the overview counts"
    );
    let filtered = body_text(
        send(
            &f.app,
            get("/fleet?offline=on&os=nothing-like-it", Some(&cookie)),
        )
        .await,
    )
    .await;
    assert!(filtered.contains("No hosts match."));
    let bad = send(&f.app, get("/fleet?software=openssl%3C%3C3", Some(&cookie))).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad_mac = send(&f.app, get("/fleet?mac=zz", Some(&cookie))).await;
    assert_eq!(bad_mac.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn grpc_requests_are_told_apart_by_their_content_type() {
    let grpc = Request::post("/deskpulse.v1.Technician/WhoAmI")
        .header(header::CONTENT_TYPE, "application/grpc+proto")
        .body(())
        .expect("request");
    assert!(super::is_grpc(&grpc));
    let form = Request::post("/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(())
        .expect("request");
    assert!(!super::is_grpc(&form));
    assert!(!super::is_grpc(
        &Request::get("/").body(()).expect("request")
    ));
}

#[tokio::test]
async fn the_vendored_files_are_the_ones_their_readme_names() {
    let readme = include_str!("../../web/vendor/README.md");
    let files: [(&str, &[u8]); 3] = [
        (
            "htmx/htmx.min.js",
            include_bytes!("../../web/vendor/htmx/htmx.min.js"),
        ),
        (
            "uplot/uPlot.iife.min.js",
            include_bytes!("../../web/vendor/uplot/uPlot.iife.min.js"),
        ),
        (
            "uplot/uPlot.min.css",
            include_bytes!("../../web/vendor/uplot/uPlot.min.css"),
        ),
    ];
    for (path, bytes) in files {
        let line = format!("{}  {path}", crate::secrets::sha256_hex(bytes));
        assert!(
            readme.lines().any(|l| l == line),
            "collector/web/vendor/README.md does not list {line:?}: update its hashes"
        );
    }
    let f = fixture().await;
    let js = send(&f.app, get("/assets/htmx.min.js", None)).await;
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let missing = send(&f.app, get("/assets/../Cargo.toml", None)).await;
    assert_ne!(missing.status(), StatusCode::OK);
}

/// Stores an inventory for the fixture's host whose host name, OS and a
/// package name are [`PAYLOAD`], and health samples at `cpu_at` (ms, CPU
/// percent) with a temperature reading.
async fn host_reports(f: &Fixture, cpu_at: &[(i64, f32)]) {
    use crate::store::{IncomingReport, ReportPayload};
    use deskpulse_proto::v1::{
        HealthSample, Inventory, OsInfo, Package, SoftwareInfo, TemperatureReading,
    };
    use prost::Message;
    let inventory = Inventory {
        os: Some(OsInfo {
            hostname: PAYLOAD.into(),
            name: PAYLOAD.into(),
            version: "12".into(),
            ..Default::default()
        }),
        software: Some(SoftwareInfo {
            packages: vec![Package {
                ecosystem: "deb".into(),
                name: PAYLOAD.into(),
                version: "1.0".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut reports = vec![IncomingReport {
        host_id: f.host.clone(),
        spool_id: "spool".into(),
        seq: 1,
        held_from_seq: 0,
        collected_at_ms: f.clock.now_ms() - 3 * 3_600_000,
        payload: ReportPayload::Inventory {
            facts: Box::new(crate::facts::inventory_facts(&inventory)),
            inventory: Box::new(inventory),
            hostname: PAYLOAD.into(),
            os_name: PAYLOAD.into(),
            os_version: "12".into(),
        },
    }];
    for (seq, (at, cpu)) in (2..).zip(cpu_at) {
        let sample = HealthSample {
            cpu_percent: *cpu,
            memory_used_percent: 40.0,
            temperatures: vec![TemperatureReading {
                sensor: PAYLOAD.into(),
                celsius: 55.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        reports.push(IncomingReport {
            host_id: f.host.clone(),
            spool_id: "spool".into(),
            seq,
            held_from_seq: 0,
            collected_at_ms: *at,
            payload: ReportPayload::Health {
                encoded: sample.encode_to_vec(),
                free: crate::facts::health_free(&sample),
                reading: crate::facts::health_reading(&sample),
                readings: crate::facts::health_readings(&sample, *at),
            },
        });
    }
    f.store
        .store_reports(&reports, f.clock.now_ms())
        .await
        .expect("store the reports");
}

async fn audit_actions(store: &SharedStore) -> Vec<(String, Option<String>, String)> {
    store
        .list_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|e| (e.action, e.technician_name, e.detail))
        .collect()
}

#[tokio::test]
async fn the_host_page_shows_every_section_with_pc_text_as_text() {
    let f = fixture().await;
    let now = f.clock.now_ms();
    host_reports(&f, &[(now - 3_600_000, 12.5)]).await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let response = send(&f.app, get(&format!("/hosts/{}", f.host), Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = body_text(response).await;
    for section in deskpulse_proto::sections::ALL {
        let name = deskpulse_proto::sections::name(section);
        assert!(
            page.contains(&format!("data-section=\"{name}\"")),
            "no {name} section"
        );
    }
    for part in [
        "Health now",
        "Health history",
        "Change timeline",
        "Diagnostic runs",
        "class=\"chart\"",
        &format!("data-health=\"/hosts/{}/health?range=24h\"", f.host),
        &format!("data-health=\"/hosts/{}/health?range=7d\"", f.host),
        &format!("href=\"/tickets/{}\"", f.ticket),
        "id=\"run-diagnostic\"",
        "name=\"diagnostic\"",
        "<option value=\"tcp_connect\"",
        "id=\"live-output\"",
    ] {
        assert!(page.contains(part), "the page lacks {part}");
    }
    // tcp_connect's fields, typed: a host name, and a port 1-65535.
    let template = page
        .split("<template data-diagnostic=\"tcp_connect\">")
        .nth(1)
        .and_then(|rest| rest.split("</template>").next())
        .expect("tcp_connect's fields");
    assert!(template.contains("name=\"host\""), "{template}");
    assert!(
        template.contains("type=\"number\" name=\"port\" min=\"1\" max=\"65535\""),
        "{template}"
    );
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script>alert"), "a live script tag");
    assert!(!page.contains("<img src=x"), "a live img tag");
    for tag in page.split("<script").skip(1) {
        assert!(tag.starts_with(" src=\"/assets/"), "inline script {tag}");
    }
    // The fleet, the queue and the ticket link to it.
    let link = format!("href=\"/hosts/{}\"", f.host);
    for path in [
        "/fleet".to_owned(),
        "/".to_owned(),
        format!("/tickets/{}", f.ticket),
    ] {
        let other = body_text(send(&f.app, get(&path, Some(&cookie))).await).await;
        assert!(other.contains(&link), "{path} does not link the host page");
    }
    let missing = send(&f.app, get("/hosts/no-such-host", Some(&cookie))).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_chart_data_is_the_stored_health_history() {
    let f = fixture().await;
    let now = f.clock.now_ms();
    host_reports(
        &f,
        &[
            (now - 3 * 86_400_000, 5.0),
            (now - 2 * 3_600_000, 10.0),
            (now - 3_600_000, 20.0),
            (now - 600_000, 30.0),
        ],
    )
    .await;
    let cookie = signed_in(&f.app, "viewer-token").await;
    let read = |range: &'static str| {
        let app = f.app.clone();
        let cookie = cookie.clone();
        let host = f.host.clone();
        async move {
            let response = send(
                &app,
                get(
                    &format!("/hosts/{host}/health?range={range}"),
                    Some(&cookie),
                ),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{range}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let data: serde_json::Value =
                serde_json::from_str(&body_text(response).await).expect("JSON");
            data
        }
    };
    let day = read("24h").await;
    let cpu: Vec<f64> = day["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["cpu_percent"].as_f64())
        .collect();
    assert_eq!(cpu, [10.0, 20.0, 30.0], "{day}");
    assert_eq!(day["points"][2]["at_ms"], now - 600_000);
    assert_eq!(day["points"][0]["memory_used_percent"], 40.0);
    assert_eq!(day["to_ms"], now);
    assert_eq!(day["from_ms"], now - 86_400_000);
    let week = read("7d").await;
    assert_eq!(
        week["points"].as_array().map(Vec::len),
        Some(4),
        "the week has the older sample too: {week}"
    );
    let bad = send(
        &f.app,
        get(&format!("/hosts/{}/health?range=1y", f.host), Some(&cookie)),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let missing = send(&f.app, get("/hosts/nope/health", Some(&cookie))).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_viewer_cannot_run_a_diagnostic_and_the_refusal_is_audited() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "viewer-token").await;
    let page =
        body_text(send(&f.app, get(&format!("/hosts/{}", f.host), Some(&cookie))).await).await;
    assert!(
        !page.contains("id=\"run-diagnostic\""),
        "a viewer has no run form"
    );
    assert!(page.contains("needs the technician role"));
    let csrf = csrf_of(&f.app, &cookie).await;
    let form = format!("csrf={csrf}&diagnostic=tcp_connect&host=127.0.0.1&port=80");
    let run = format!("/hosts/{}/run", f.host);
    let refused = send(&f.app, post(&run, &cookie, &form)).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        body_text(refused)
            .await
            .contains("running a diagnostic needs the technician role; val has the viewer role")
    );
    let streamed = Request::post(&run)
        .header(header::COOKIE, &cookie)
        .header(header::ACCEPT, super::host::NDJSON)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("request");
    assert_eq!(send(&f.app, streamed).await.status(), StatusCode::FORBIDDEN);
    let jobs = f
        .store
        .list_jobs(&crate::store::JobQuery {
            host_id: Some(f.host.clone()),
            state: None,
            limit: 10,
        })
        .await
        .expect("jobs");
    assert!(jobs.is_empty(), "no job was made: {jobs:?}");
    let refusals: Vec<_> = audit_actions(&f.store)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "diagnostic.refuse")
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[0].1.as_deref(), Some("val"));
    assert!(refusals[0].2.starts_with("tcp_connect: "), "{refusals:?}");
}

#[tokio::test]
async fn bad_parameters_are_refused_with_the_catalogs_one_line() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let run = format!("/hosts/{}/run", f.host);
    let refused = send(
        &f.app,
        post(
            &run,
            &cookie,
            &format!("csrf={csrf}&diagnostic=tcp_connect&host=127.0.0.1&port=70000"),
        ),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let page = body_text(refused).await;
    assert!(
        page.contains("<p class=\"error\">port must be between 1 and 65535</p>"),
        "{page}"
    );
    for (form, line) in [
        (
            "diagnostic=tcp_connect&host=127.0.0.1&port=x",
            "port \\\"x\\\" is not a whole number in range",
        ),
        ("diagnostic=tcp_connect&host=127.0.0.1", "port is required"),
        (
            "diagnostic=no_such_thing",
            "unknown diagnostic \\\"no_such_thing\\\"",
        ),
        (
            "diagnostic=tcp_connect&host=127.0.0.1&port=80&url=http://x",
            "tcp_connect has no parameter \\\"url\\\"",
        ),
    ] {
        let streamed = Request::post(&run)
            .header(header::COOKIE, &cookie)
            .header(header::ACCEPT, super::host::NDJSON)
            .header("x-csrf-token", &csrf)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .expect("request");
        let response = send(&f.app, streamed).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form}");
        let body = body_text(response).await;
        assert_eq!(body.lines().count(), 1, "{body}");
        assert!(body.starts_with("{\"error\":"), "{body}");
        assert!(body.contains(line), "{form}: {body}");
    }
    let refusals = audit_actions(&f.store)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "diagnostic.refuse")
        .count();
    assert_eq!(refusals, 5, "every refusal is audited, as the API's are");
}

#[tokio::test]
async fn a_run_for_an_offline_host_is_queued_and_said_so() {
    let f = fixture().await;
    let cookie = signed_in(&f.app, "admin-token").await;
    let csrf = csrf_of(&f.app, &cookie).await;
    let run = format!("/hosts/{}/run", f.host);
    let streamed = Request::post(&run)
        .header(header::COOKIE, &cookie)
        .header(header::ACCEPT, super::host::NDJSON)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "csrf={csrf}&diagnostic=tcp_connect&host=127.0.0.1&port=80&count="
        )))
        .expect("request");
    let response = send(&f.app, streamed).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        super::host::NDJSON
    );
    let body = body_text(response).await;
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert_eq!(lines[0]["job"]["state"], "queued");
    assert_eq!(lines[0]["job"]["params"], "host=127.0.0.1 port=80");
    assert!(
        lines[1]["queued"]
            .as_str()
            .is_some_and(|q| q.contains("offline"))
    );

    // Without script, the form is answered with the host's jobs.
    let plain = send(
        &f.app,
        post(
            &run,
            &cookie,
            &format!("csrf={csrf}&diagnostic=tcp_connect&host=127.0.0.1&port=81"),
        ),
    )
    .await;
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&plain), format!("/hosts/{}#jobs", f.host));
    let page =
        body_text(send(&f.app, get(&format!("/hosts/{}", f.host), Some(&cookie))).await).await;
    assert!(page.contains("host=127.0.0.1 port=81"), "the job is listed");
    let asked: Vec<_> = audit_actions(&f.store)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "diagnostic.request")
        .collect();
    assert_eq!(asked.len(), 2, "each run is audited: {asked:?}");
    assert!(
        asked
            .iter()
            .all(|(_, name, _)| name.as_deref() == Some("ada"))
    );
}

/// Issue 23: the ticket page shows the fixes suggested when the ticket
/// opened, with their reason, and an earlier resolution written by anyone
/// renders as text.
#[tokio::test]
async fn the_ticket_page_shows_its_suggested_fixes_as_text() {
    let f = fixture().await;
    let by = AuditEntry::system("test", "", "");
    let fix = format!("Reinstalled the spooler {PAYLOAD}");
    f.store
        .update_ticket(
            f.ticket,
            &crate::store::TicketChange::Resolve(fix.clone()),
            "ada",
            &by,
            f.clock.now_ms(),
        )
        .await
        .expect("update")
        .expect("resolved");
    let new = f
        .store
        .create_ticket(
            &f.host,
            "alert script img spooler",
            None,
            "ada",
            &by,
            f.clock.now_ms(),
        )
        .await
        .expect("ticket")
        .id;
    let cookie = signed_in(&f.app, "admin-token").await;
    let page = body_text(send(&f.app, get(&format!("/tickets/{new}"), Some(&cookie))).await).await;
    assert!(page.contains("aria-label=\"Suggested fixes\""), "{page}");
    assert!(
        page.contains("Reinstalled the spooler &lt;script&gt;"),
        "{page}"
    );
    assert!(
        page.contains(&format!("href=\"/tickets/{}\"", f.ticket)),
        "{page}"
    );
    assert!(page.contains("similar text"), "{page}");
    assert!(page.contains("aria-label=\"Change correlation\""), "{page}");
    assert!(!page.contains("<script>alert"), "a live script tag");
}
