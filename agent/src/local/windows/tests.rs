//! The named pipe with real Win32 pipes: run under Wine on Linux
//! (`cargo test -p deskpulse-agent --target x86_64-pc-windows-gnu` with
//! Wine as the runner). Wine runs every process as one user, so these show
//! that the caller is named from the pipe, not that two users are told
//! apart; that needs a real Windows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{connect, current_user};
use crate::issue::IssueRequest;
use crate::local::{
    Endpoint, LocalReply, LocalRequest, MAX_REQUEST, REQUEST_TIMEOUT, Service, ask, serve,
};
use crate::session::LiveStatus;
use crate::state::{StateDir, Status};

/// How long a test waits for anything before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A pipe served for a fresh state dir. Reports are taken as an offline
/// service loop would take them, and kept as (text, reporter).
struct Served {
    _dir: tempfile::TempDir,
    endpoint: Endpoint,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    reports: Arc<Mutex<Vec<(String, String)>>>,
}

impl Served {
    async fn start(request_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let endpoint = Endpoint::of(&StateDir::new(dir.path()));
        let live = Arc::new(Mutex::new(LiveStatus {
            status: Status {
                connected: true,
                unacknowledged: 7,
                ..Status::default()
            },
        }));
        let (issues, mut queue) = mpsc::channel::<IssueRequest>(8);
        let reports = Arc::new(Mutex::new(Vec::new()));
        let kept = reports.clone();
        tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                kept.lock()
                    .expect("reports")
                    .push((request.text, request.os_user));
                let _ = request.reply.send(Ok(false));
            }
        });
        let mut service = Service::new(live, issues, dir.path().to_path_buf());
        service.request_timeout = request_timeout;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let (endpoint, shutdown) = (endpoint.clone(), shutdown.clone());
            async move { serve(&endpoint, service, shutdown).await }
        });
        let served = Self {
            _dir: dir,
            endpoint,
            shutdown,
            server,
            reports,
        };
        // The pipe opens when the server task first runs: poll until it
        // answers.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while served.status().await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pipe never answered"
            );
            tokio::task::yield_now().await;
        }
        served
    }

    /// The live status through the pipe; `None` while nothing listens.
    async fn status(&self) -> Option<Status> {
        match ask(&self.endpoint, &LocalRequest::Status, PATIENCE).await {
            Ok(Some(LocalReply::Status(status))) => Some(status),
            Ok(None) => None,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    /// Sends `bytes` as they are and returns everything the service
    /// answers until it hangs up.
    async fn send_raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut client = connect(&self.endpoint, PATIENCE)
            .await
            .expect("connect")
            .expect("the pipe is served");
        client.write_all(bytes).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, client.read_to_end(&mut answer))
            .await
            .expect("the service answers and hangs up")
            .expect("read");
        answer
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("joined")
            .expect("the pipe was served without error");
    }
}

fn error_message(answer: &[u8]) -> String {
    match serde_json::from_slice(answer) {
        Ok(LocalReply::Error { message }) => message,
        other => panic!(
            "expected an error reply, got {other:?} from {:?}",
            String::from_utf8_lossy(answer)
        ),
    }
}

#[tokio::test]
async fn status_and_reports_go_through_the_pipe_and_name_the_caller_from_it() {
    let served = Served::start(REQUEST_TIMEOUT).await;
    let status = served.status().await.expect("served");
    assert!(status.connected);
    assert_eq!(status.unacknowledged, 7);

    let me = current_user().expect("this process's account");
    assert!(me.contains('\\'), "DOMAIN\\user, got {me:?}");
    let reply = ask(
        &served.endpoint,
        &LocalRequest::ReportIssue {
            text: "  The printer on floor 3 eats paper  ".into(),
            email: None,
        },
        PATIENCE,
    )
    .await;
    match reply {
        Ok(Some(LocalReply::Reported {
            connected,
            os_user,
            ticket,
            ..
        })) => {
            assert!(!connected, "the service loop said it is offline");
            assert_eq!(ticket, None, "offline: no number yet");
            assert_eq!(os_user, me);
        }
        other => panic!("expected Reported, got {other:?}"),
    }
    // The service checks the text itself, whatever the client checked.
    let refused = ask(
        &served.endpoint,
        &LocalRequest::ReportIssue {
            text: "evil\u{1b}[2J".into(),
            email: None,
        },
        PATIENCE,
    )
    .await;
    match refused {
        Ok(Some(LocalReply::Error { message })) => {
            assert!(message.contains("control character"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        *served.reports.lock().expect("reports"),
        vec![("The printer on floor 3 eats paper".to_owned(), me)]
    );
    served.stop().await;
}

#[tokio::test]
async fn garbage_gets_an_error_reply_and_the_next_client_is_answered() {
    let served = Served::start(REQUEST_TIMEOUT).await;
    for garbage in [
        b"hello\n".to_vec(),
        b"\xff\xfe\x00 not text\n".to_vec(),
        b"{\"request\":\"format-disk\"}\n".to_vec(),
    ] {
        let message = error_message(&served.send_raw(&garbage).await);
        assert!(message.starts_with("bad request: "), "{message}");
        assert!(!message.contains('\n'));
    }
    let message = error_message(&served.send_raw(&vec![b'x'; MAX_REQUEST + 10]).await);
    assert!(message.contains("longer than 65536 bytes"), "{message}");

    assert!(served.status().await.is_some(), "the service goes on");
    assert!(served.reports.lock().expect("reports").is_empty());
    served.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_others_are_answered_meanwhile() {
    let request_timeout = Duration::from_millis(500);
    let served = Served::start(request_timeout).await;
    let opened = tokio::time::Instant::now();
    let mut silent = connect(&served.endpoint, PATIENCE)
        .await
        .expect("connect")
        .expect("the pipe is served");
    // While it says nothing, other callers are answered.
    assert!(served.status().await.is_some());

    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, silent.read_to_end(&mut answer))
        .await
        .expect("the service hangs up on a silent client")
        .expect("read");
    assert!(
        answer.is_empty(),
        "no reply to no request: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        opened.elapsed() >= request_timeout,
        "dropped only once its time was up"
    );
    assert!(served.status().await.is_some(), "the service goes on");
    served.stop().await;
}

#[tokio::test]
#[ignore = "Wine 8 ignores FILE_FLAG_FIRST_PIPE_INSTANCE; run with --ignored on a real Windows"]
async fn a_second_server_cannot_take_over_the_pipe() {
    let served = Served::start(REQUEST_TIMEOUT).await;
    let (issues, _queue) = mpsc::channel(1);
    let intruder = Service::new(
        Arc::new(Mutex::new(LiveStatus::default())),
        issues,
        std::path::PathBuf::new(),
    );
    let error = tokio::time::timeout(
        PATIENCE,
        serve(&served.endpoint, intruder, CancellationToken::new()),
    )
    .await
    .expect("the second server must not serve the pipe")
    .expect_err("the name is taken");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    assert!(
        error.to_string().contains(r"\\.\pipe\deskpulse-agent-"),
        "{error}"
    );
    let status = served.status().await.expect("still served");
    assert_eq!(status.unacknowledged, 7, "answered by the first server");
    served.stop().await;
}

#[test]
fn the_pipe_name_follows_the_state_dir_however_it_is_spelled() {
    let one = tempfile::tempdir().expect("temp dir");
    let other = tempfile::tempdir().expect("temp dir");
    let name = |path: std::path::PathBuf| Endpoint::of(&StateDir::new(path));
    assert_ne!(
        name(one.path().to_path_buf()),
        name(other.path().to_path_buf())
    );
    let shouted = one.path().to_string_lossy().to_uppercase();
    assert_eq!(name(one.path().to_path_buf()), name(shouted.into()));
    assert_eq!(name(one.path().to_path_buf()), name(one.path().join(".")));
}
