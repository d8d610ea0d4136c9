//! The shared protocol and request handling, over in-memory streams: what
//! both the Unix socket and the Windows pipe do with what a client sends.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::session::LiveStatus;

/// A service whose live status says it is connected with 3 reports
/// waiting, and the queue its reports land in.
fn service(request_timeout: Duration) -> (Service, mpsc::Receiver<IssueRequest>) {
    let live = Arc::new(Mutex::new(LiveStatus {
        status: Status {
            connected: true,
            unacknowledged: 3,
            ..Status::default()
        },
    }));
    let (issues, queue) = mpsc::channel(8);
    let mut service = Service::new(live, issues, PathBuf::from("/nonexistent-root"));
    service.request_timeout = request_timeout;
    (service, queue)
}

/// How a client ends what it sends.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// It waits for the reply.
    Wait,
    /// It closes its side, as a client that hangs up does.
    HangUp,
}

/// Answers one connection on which the client sends `bytes`, naming the
/// caller `caller`; returns what the service did and what the client read.
async fn answer_raw(
    service: &Service,
    bytes: &[u8],
    then: Then,
    caller: Option<&str>,
) -> (io::Result<()>, Vec<u8>) {
    let (mut client, mut server) = duplex(4 * MAX_REQUEST);
    client.write_all(bytes).await.expect("write");
    if then == Then::HangUp {
        client.shutdown().await.expect("hang up");
    }
    let answered = answer(&mut server, service, |_: &DuplexStream| {
        caller.map(str::to_owned)
    })
    .await;
    drop(server);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.expect("read");
    (answered, reply)
}

fn error_message(reply: &[u8]) -> String {
    match serde_json::from_slice(reply) {
        Ok(LocalReply::Error { message }) => message,
        other => panic!(
            "expected an error reply, got {other:?} from {:?}",
            String::from_utf8_lossy(reply)
        ),
    }
}

#[tokio::test]
async fn a_client_asking_for_status_gets_the_live_status() {
    let (service, _queue) = service(REQUEST_TIMEOUT);
    let (client, mut server) = duplex(MAX_REQUEST);
    let (asked, answered) = tokio::join!(
        exchange(client, &LocalRequest::Status, REQUEST_TIMEOUT),
        answer(&mut server, &service, |_| None)
    );
    answered.expect("answered");
    match asked.expect("a reply") {
        LocalReply::Status(status) => {
            assert!(status.connected);
            assert_eq!(status.unacknowledged, 3);
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_gets_a_one_line_error_reply() {
    let (service, mut queue) = service(REQUEST_TIMEOUT);
    for garbage in [
        &b"hello\n"[..],
        b"\xff\xfe\x00 not text\n",
        b"{\"request\":\"format-disk\"}\n",
        b"{\"request\":\"report-issue\"}\n",
        b"\n",
    ] {
        let (answered, reply) = answer_raw(&service, garbage, Then::Wait, Some("tester")).await;
        answered.expect("answered");
        let message = error_message(&reply);
        assert!(message.starts_with("bad request: "), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(reply.ends_with(b"}\n"), "one reply line");
    }
    // A client that hangs up without a newline: what it sent is read.
    let (answered, reply) = answer_raw(&service, b"{\"request\":", Then::HangUp, None).await;
    answered.expect("answered");
    assert!(error_message(&reply).starts_with("bad request: EOF while parsing"));
    assert!(queue.try_recv().is_err(), "nothing was reported");
}

#[tokio::test]
async fn a_request_line_longer_than_the_bound_is_refused() {
    let (service, _queue) = service(REQUEST_TIMEOUT);
    // A line of exactly MAX_REQUEST bytes is read and handled: its text is
    // too long for a report, which only a parsed request can say.
    let head = br#"{"request":"report-issue","text":""#;
    let tail = b"\"}\n";
    let mut line = head.to_vec();
    line.resize(MAX_REQUEST - tail.len(), b'x');
    line.extend_from_slice(tail);
    assert_eq!(line.len(), MAX_REQUEST);
    let (_, reply) = answer_raw(&service, &line, Then::Wait, Some("tester")).await;
    let message = error_message(&reply);
    assert!(
        message.contains("characters; the most is 2000"),
        "{message}"
    );

    // One byte more is refused unread.
    line.insert(head.len(), b'x');
    let (answered, reply) = answer_raw(&service, &line, Then::Wait, Some("tester")).await;
    answered.expect("answered");
    assert_eq!(
        error_message(&reply),
        "the request is longer than 65536 bytes; refused"
    );
}

#[tokio::test]
async fn a_silent_client_gets_no_reply_and_is_dropped() {
    let (service, _queue) = service(Duration::from_millis(100));
    let (answered, reply) = answer_raw(&service, b"", Then::Wait, None).await;
    let error = answered.expect_err("dropped");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(
        error.to_string().contains("no request within 100ms"),
        "{error}"
    );
    assert!(reply.is_empty(), "{:?}", String::from_utf8_lossy(&reply));

    // Half a request and then silence is silence too.
    let (answered, reply) = answer_raw(&service, b"{\"request\":\"sta", Then::Wait, None).await;
    assert_eq!(
        answered.expect_err("dropped").kind(),
        io::ErrorKind::TimedOut
    );
    assert!(reply.is_empty());
}

#[tokio::test]
async fn a_report_is_spooled_under_the_name_the_transport_gives() {
    let (service, mut queue) = service(REQUEST_TIMEOUT);
    // The service loop's part: spool it and say it is connected, then
    // record the ticket the collector's Ack names (issue 23).
    let (ledger, recorded) = (service.ledger.clone(), service.tickets_recorded.clone());
    let spooled = tokio::spawn(async move {
        let request = queue.recv().await.expect("a report");
        let _ = request.reply.send(Ok(true));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(issue::lock(&ledger).record_ticket(&request.report_key, 42));
        recorded.notify_waiters();
        (request.text, request.os_user)
    });
    let (answered, reply) = answer_raw(
        &service,
        b"{\"request\":\"report-issue\",\"text\":\"  VPN drops hourly \"}\n",
        Then::Wait,
        Some(r"OFFICE\alice"),
    )
    .await;
    answered.expect("answered");
    match serde_json::from_slice(&reply) {
        Ok(LocalReply::Reported {
            connected,
            os_user,
            ticket,
            ..
        }) => {
            assert!(connected);
            assert_eq!(os_user, r"OFFICE\alice");
            assert_eq!(ticket, Some(42), "the number the Ack named");
        }
        other => panic!("expected Reported, got {other:?}"),
    }
    assert_eq!(
        spooled.await.expect("joined"),
        ("VPN drops hourly".to_owned(), r"OFFICE\alice".to_owned())
    );
}

#[tokio::test]
async fn a_report_from_a_caller_the_transport_cannot_name_is_refused() {
    let (service, mut queue) = service(REQUEST_TIMEOUT);
    for caller in [None, Some("")] {
        let (_, reply) = answer_raw(
            &service,
            b"{\"request\":\"report-issue\",\"text\":\"help\"}\n",
            Then::Wait,
            caller,
        )
        .await;
        assert_eq!(
            error_message(&reply),
            "the service cannot tell which user is asking"
        );
    }
    // A bad text is refused before anything else, whoever asks.
    let (_, reply) = answer_raw(
        &service,
        b"{\"request\":\"report-issue\",\"text\":\"bell\\u0007\"}\n",
        Then::Wait,
        Some("tester"),
    )
    .await;
    assert!(error_message(&reply).contains("control character U+0007"));
    assert!(queue.try_recv().is_err(), "nothing was reported");
}

#[tokio::test]
async fn a_report_is_refused_while_the_service_loop_is_stopping() {
    let (service, queue) = service(REQUEST_TIMEOUT);
    drop(queue);
    let (_, reply) = answer_raw(
        &service,
        b"{\"request\":\"report-issue\",\"text\":\"help\"}\n",
        Then::Wait,
        Some("tester"),
    )
    .await;
    assert_eq!(
        error_message(&reply),
        "the agent service is stopping; try again"
    );
}

#[tokio::test]
async fn a_client_whose_service_hangs_up_or_mumbles_gets_a_clear_error() {
    let (client, server) = duplex(MAX_REQUEST);
    drop(server);
    let error = exchange(client, &LocalRequest::Status, REQUEST_TIMEOUT)
        .await
        .expect_err("no service");
    // Writing into a closed stream or reading nothing back: either way the
    // client says the service did not answer.
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
        ),
        "{error}"
    );

    let (client, mut server) = duplex(MAX_REQUEST);
    let mumble = async {
        let mut request = vec![0; 64];
        let _ = server.read(&mut request).await;
        server.write_all(b"ok\n").await.expect("write");
    };
    let (asked, ()) = tokio::join!(
        exchange(client, &LocalRequest::Status, REQUEST_TIMEOUT),
        mumble
    );
    let error = asked.expect_err("unreadable");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("unreadable answer"), "{error}");
}

#[test]
fn the_pipe_name_is_a_short_hash_of_the_state_dir() {
    let name = pipe_name(r"C:\ProgramData\Deskpulse\agent");
    let hash = name
        .strip_prefix(r"\\.\pipe\deskpulse-agent-")
        .expect("the pipe namespace and the agent's prefix");
    assert_eq!(hash.len(), 16);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");

    // One directory, however Windows spells it, is one pipe.
    for spelling in [
        r"\\?\C:\ProgramData\Deskpulse\agent",
        r"c:\programdata\deskpulse\AGENT",
        r"C:\ProgramData\Deskpulse\agent\",
    ] {
        assert_eq!(pipe_name(spelling), name, "{spelling}");
    }
    assert_eq!(
        pipe_name(r"\\?\UNC\server\share\agent"),
        pipe_name(r"\\server\share\agent")
    );
    // Another directory is another pipe.
    assert_ne!(pipe_name(r"C:\ProgramData\Deskpulse\agent2"), name);
    assert_ne!(pipe_name(r"D:\ProgramData\Deskpulse\agent"), name);
}
