//! The foundation end to end: a real collector on 127.0.0.1:0, real agents
//! enrolling with real tokens and certificates, reports over mutual TLS, and
//! the technician API and CLI reading them back.

use std::time::Duration;

use deskpulse_proto::v1::agent_message::Kind;
use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
use deskpulse_proto::v1::collector_message::Kind as Reply;
use deskpulse_proto::v1::report::Payload;
use deskpulse_proto::v1::technician_client::TechnicianClient;
use deskpulse_proto::v1::{
    AgentMessage, CreateEnrollmentTokenRequest, GetHostRequest, HealthSample, Hello,
    ListHostsRequest, Report, ReportPart,
};
use deskpulse_tests::{Agent, Collector, raw::RawCodec, test_hello, wait_for};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::metadata::MetadataValue;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[test]
fn an_enrolled_agent_reports_and_technicians_see_it_in_the_cli() {
    let collector = Collector::start();
    let agent = Agent::new();
    let enrolled = agent
        .enroll(&collector, &collector.enrollment_token(1))
        .expect_code(0);
    assert!(
        enrolled.stdout.starts_with("enrolled as host "),
        "{}",
        enrolled.stdout
    );
    let host_id = agent.host_id();

    let once = agent.command(&["run", "--once"]).expect_code(0);
    assert!(once.stdout.contains("all acknowledged"), "{}", once.stdout);

    let token = collector.admin_token();
    let hosts = collector.cli(&token, &["--json", "hosts"]).expect_code(0);
    let hosts = json(&hosts.stdout);
    let hosts = hosts.as_array().expect("array");
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["host_id"], host_id.as_str());
    let hostname = hosts[0]["hostname"].as_str().expect("hostname").to_owned();
    assert!(!hostname.is_empty());
    assert!(hosts[0]["last_seen"].is_string());
    // `run --once` says goodbye, so the host is offline right after.
    assert_eq!(hosts[0]["presence"], "offline");

    let table = collector.cli(&token, &["hosts"]).expect_code(0);
    assert!(table.stdout.starts_with("HOSTNAME"), "{}", table.stdout);
    assert!(table.stdout.contains(&host_id), "{}", table.stdout);

    let show = collector
        .cli(&token, &["host", "show", &hostname, "--json"])
        .expect_code(0);
    let show = json(&show.stdout);
    assert_eq!(show["host_id"], host_id.as_str());
    assert_eq!(show["goodbye_reason"], "service-stop", "{show}");
    let logical = show["inventory"]["cpu"]["logical_cores"]
        .as_u64()
        .expect("cpu cores");
    assert!(logical >= 1);
    assert!(
        show["health"]["memory_used_percent"].as_f64().is_some(),
        "{show}"
    );

    // A prefix of the host id works as HOST too.
    let by_prefix = collector
        .cli(&token, &["host", "show", &host_id[..8]])
        .expect_code(0);
    assert!(by_prefix.stdout.contains(&host_id), "{}", by_prefix.stdout);
    let missing = collector
        .cli(&token, &["host", "show", "no-such-host"])
        .expect_code(1);
    assert!(
        missing.error_line().contains("no host matches"),
        "{}",
        missing.stderr
    );
}

#[test]
fn enrollment_tokens_are_single_use_and_unknown_ones_are_refused() {
    let collector = Collector::start();
    let token = collector.enrollment_token(1);
    Agent::new().enroll(&collector, &token).expect_code(0);

    let reused = Agent::new().enroll(&collector, &token).expect_code(1);
    assert!(
        reused.error_line().contains("no uses left"),
        "{}",
        reused.stderr
    );

    let unknown = Agent::new()
        .enroll(
            &collector,
            "dpe_0000000000000000000000000000000000000000000000000000000000000000",
        )
        .expect_code(1);
    assert!(
        unknown.error_line().contains("not known"),
        "{}",
        unknown.stderr
    );
    assert!(
        collector.logs().contains("refused an enrollment"),
        "{}",
        collector.logs()
    );
}

#[test]
fn enrolling_with_the_ca_pin_works_and_a_wrong_pin_is_refused() {
    let collector = Collector::start();
    let export = collector.admin(&["ca", "export"]).expect_code(0);
    assert!(export.stdout.starts_with("-----BEGIN CERTIFICATE-----"));
    let pin = export
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("ca-sha256 "))
        .expect("pin on stderr")
        .to_owned();

    let wrong = "0".repeat(64);
    let agent = Agent::new();
    let refused = agent
        .command(&[
            "enroll",
            "--collector",
            &collector.url(),
            "--token",
            "x",
            "--ca-sha256",
            &wrong,
        ])
        .expect_code(1);
    assert!(
        refused.error_line().contains("--ca-sha256"),
        "{}",
        refused.stderr
    );

    let token = collector.enrollment_token(1);
    agent
        .command(&[
            "enroll",
            "--collector",
            &collector.url(),
            "--token",
            &token,
            "--ca-sha256",
            &pin,
        ])
        .expect_code(0);
    agent.command(&["run", "--once"]).expect_code(0);
}

#[tokio::test]
async fn the_agent_service_refuses_callers_without_a_fleet_certificate() {
    install_crypto();
    let collector = Collector::start();
    let hello = AgentMessage {
        kind: Some(Kind::Hello(Hello::default())),
    };

    // No client certificate at all: the interceptor refuses, and says so.
    let channel = collector.channel(None).await;
    let status = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(vec![hello.clone()]))
        .await
        .expect_err("no certificate must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("enroll first"), "{status:?}");
    assert!(
        wait_for(Duration::from_secs(5), || collector
            .logs()
            .contains("refused an agent call without a client certificate")
            .then_some(()))
        .is_some(),
        "the refusal is logged: {}",
        collector.logs()
    );

    // A certificate from another CA never gets past the TLS handshake.
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = Collector::start_in(other, &[]);
    let impostor = Agent::new();
    impostor
        .enroll(&other_ca, &other_ca.enrollment_token(1))
        .expect_code(0);
    let (cert, key) = impostor.identity();
    let ca = std::fs::read_to_string(collector.ca_file()).expect("ca");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(collector.url())
            .expect("url")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        AgentServiceClient::new(channel)
            .session(tokio_stream::iter(vec![hello.clone()]))
            .await
            .map(|_| ())
    };
    let refused = attempt
        .await
        .expect_err("a foreign certificate must be refused");
    assert_ne!(refused.code(), Code::Ok);

    // The impostor's own report never reached this collector.
    let token = collector.admin_token();
    let hosts = json(
        &collector
            .cli(&token, &["--json", "hosts"])
            .expect_code(0)
            .stdout,
    );
    assert_eq!(hosts.as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn api_tokens_are_checked_and_roles_enforced() {
    install_crypto();
    let collector = Collector::start();
    let viewer = collector.api_token("vera", "viewer");

    let wrong = collector
        .cli("dpt_not-a-real-token", &["hosts"])
        .expect_code(1);
    assert!(
        wrong.error_line().contains("unknown or revoked"),
        "{}",
        wrong.stderr
    );

    collector.cli(&viewer, &["hosts"]).expect_code(0);
    let denied = collector
        .cli(&viewer, &["enroll-token", "create"])
        .expect_code(1);
    assert!(
        denied
            .error_line()
            .contains("needs the admin role; vera has the viewer role"),
        "{}",
        denied.stderr
    );

    let channel = collector.channel(None).await;
    let mut api = TechnicianClient::new(channel);
    let mut request = tonic::Request::new(CreateEnrollmentTokenRequest::default());
    let header: MetadataValue<_> = format!("Bearer {viewer}").parse().expect("header");
    request.metadata_mut().insert("authorization", header);
    let status = api
        .create_enrollment_token(request)
        .await
        .expect_err("viewer");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = api
        .list_hosts(ListHostsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // An admin's token made through the API enrolls an agent.
    let admin = collector.admin_token();
    let made = collector
        .cli(&admin, &["enroll-token", "create", "--uses", "1"])
        .expect_code(0);
    let token = made.stdout.trim();
    assert!(
        token.starts_with("dpe_"),
        "secret alone on stdout: {}",
        made.stdout
    );
    Agent::new().enroll(&collector, token).expect_code(0);

    // A technician name keeps its role.
    let clash = collector
        .admin(&["token", "create", "--name", "vera", "--role", "admin"])
        .expect_code(2);
    assert!(
        clash.error_line().contains("exists with role viewer"),
        "{}",
        clash.stderr
    );
}

fn report(seq: u64, payload: Payload) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::Report(Report {
            sent_at_unix_ms: 0,
            spool_id: "test-spool".into(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: 1_700_000_000_000 + seq as i64,
            payload: Some(payload),
        })),
    }
}

/// One report part.
fn part(data: Vec<u8>, last: bool) -> AgentMessage {
    AgentMessage {
        kind: Some(Kind::ReportPart(ReportPart { data, last })),
    }
}

/// The error a session that sends `messages` with `identity` ends with.
async fn session_error(
    collector: &Collector,
    identity: (&str, &str),
    messages: impl IntoIterator<Item = AgentMessage>,
) -> tonic::Status {
    let channel = collector.channel(Some(identity)).await;
    let messages: Vec<AgentMessage> = messages.into_iter().collect();
    let response = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages))
        .await;
    first_error(response).await
}

#[tokio::test]
async fn malformed_and_oversized_messages_get_clear_errors_and_others_keep_being_served() {
    install_crypto();
    let collector = Collector::start();
    let token = collector.enrollment_token(2);
    let bad = Agent::new();
    bad.enroll(&collector, &token).expect_code(0);
    let good = Agent::new();
    good.enroll(&collector, &token).expect_code(0);
    let (cert, key) = bad.identity();

    // Garbage bytes after a valid Hello.
    let channel = collector.channel(Some((&cert, &key))).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let messages = vec![
        test_hello().encode_to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 0x0f],
    ];
    let path = http_path("/deskpulse.v1.AgentService/Session");
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            path,
            RawCodec,
        )
        .await;
    let status = first_error(response).await;
    assert!(
        status.message().contains("malformed agent message"),
        "{status:?}"
    );

    // A message past the size limit.
    let huge = report(
        1,
        Payload::Health(HealthSample {
            filesystems: vec![deskpulse_proto::v1::FilesystemUsage {
                mount_point: "x".repeat(5 * 1024 * 1024),
                ..Default::default()
            }],
            ..Default::default()
        }),
    );
    let status = session_error(&collector, (&cert, &key), [test_hello(), huge]).await;
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");

    // A report without payload is rejected by itself; the stream goes on
    // and a valid report after it is acknowledged.
    let channel = collector.channel(Some((&cert, &key))).await;
    let empty = AgentMessage {
        kind: Some(Kind::Report(Report {
            sent_at_unix_ms: 0,
            spool_id: "test-spool".into(),
            seq: 7,
            held_from_seq: 0,
            collected_at_unix_ms: 1,
            payload: None,
        })),
    };
    // One that says its spool no longer holds it.
    let mut not_held = report(6, Payload::Health(HealthSample::default()));
    if let Some(Kind::Report(r)) = &mut not_held.kind {
        r.held_from_seq = 9;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(test_hello()).await.expect("send");
    tx.send(empty).await.expect("send");
    tx.send(not_held).await.expect("send");
    tx.send(report(8, Payload::Health(HealthSample::default())))
        .await
        .expect("send");
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    for (seq, reason) in [(7, "payload"), (6, "held_from_seq")] {
        let reply = replies.message().await.expect("reply").expect("some");
        match reply.kind {
            Some(Reply::Rejected(rejected)) => {
                assert_eq!(rejected.seq, seq);
                assert!(rejected.reason.contains(reason), "{rejected:?}");
            }
            other => panic!("expected a rejection of seq {seq}, got {other:?}"),
        }
    }
    let third = replies.message().await.expect("reply").expect("some");
    assert!(
        matches!(third.kind, Some(Reply::Ack(ref a)) if a.seq == 8),
        "{third:?}"
    );
    drop(tx);

    // Meanwhile the other agent is served as usual.
    good.command(&["run", "--once"]).expect_code(0);
    let admin = collector.admin_token();
    let channel = collector.channel(None).await;
    let mut api = TechnicianClient::new(channel);
    let mut request = tonic::Request::new(GetHostRequest {
        host: good.host_id(),
        health_since_unix_ms: 0,
    });
    let header: MetadataValue<_> = format!("Bearer {admin}").parse().expect("header");
    request.metadata_mut().insert("authorization", header);
    let host = api.get_host(request).await.expect("get host").into_inner();
    assert!(host.inventory.is_some());
}

#[tokio::test]
async fn a_report_sent_in_parts_is_joined_and_acknowledged_and_bad_parts_get_clear_errors() {
    install_crypto();
    let collector = Collector::start();
    let token = collector.enrollment_token(1);
    let agent = Agent::new();
    agent.enroll(&collector, &token).expect_code(0);
    let (cert, key) = agent.identity();
    let packages = (0..1500)
        .map(|i| deskpulse_proto::v1::Package {
            ecosystem: "dpkg".into(),
            name: format!("package-{i}"),
            version: format!("1.{i}-1"),
            ..Default::default()
        })
        .collect();
    let inventory = Report {
        sent_at_unix_ms: 0,
        spool_id: "test-spool".into(),
        seq: 1,
        held_from_seq: 0,
        collected_at_unix_ms: 1_700_000_000_000,
        payload: Some(Payload::Inventory(deskpulse_proto::v1::Inventory {
            schema_version: 1,
            software: Some(deskpulse_proto::v1::SoftwareInfo {
                packages,
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let parts = deskpulse_proto::parts::report_messages(inventory);
    assert!(parts.len() > 3, "{} parts", parts.len());

    // Joined, stored and acknowledged as one report.
    let channel = collector.channel(Some((&cert, &key))).await;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(test_hello()).await.expect("send");
    for part in parts.iter().cloned() {
        tx.send(part).await.expect("send");
    }
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("some");
    assert!(
        matches!(reply.kind, Some(Reply::Ack(ref a)) if a.seq == 1),
        "{reply:?}"
    );
    drop(tx);
    let admin = collector.admin_token();
    let found = collector
        .cli(&admin, &["--json", "hosts", "--software", "package-1499"])
        .expect_code(0);
    assert_eq!(
        json(&found.stdout).as_array().map(Vec::len),
        Some(1),
        "{}",
        found.stdout
    );

    // A whole report before the last part of the one before it.
    let interleaved = [
        test_hello(),
        parts[0].clone(),
        report(2, Payload::Health(HealthSample::default())),
    ];
    let status = session_error(&collector, (&cert, &key), interleaved).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("a report arrived before the last part of the report before it"),
        "{status:?}"
    );

    // Parts that join into something that is not a report.
    let garbage = [test_hello(), part(vec![0xff; 64], true)];
    let status = session_error(&collector, (&cert, &key), garbage).await;
    assert!(
        status
            .message()
            .contains("malformed agent message: the parts of a report do not decode"),
        "{status:?}"
    );

    // Parts that add up past the largest report an agent may send, each
    // within the largest message the transport takes (256 KiB).
    let big = std::iter::once(test_hello())
        .chain(std::iter::repeat_n(part(vec![0; 128 * 1024], false), 40));
    let status = session_error(&collector, (&cert, &key), big).await;
    assert!(
        status
            .message()
            .contains("a report sent in parts is larger than 4194304 bytes"),
        "{status:?}"
    );
}

/// The error a streaming call ends with: at once, or after some replies.
async fn first_error<T>(
    response: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> tonic::Status {
    let mut stream = match response {
        Err(status) => return status,
        Ok(response) => response.into_inner(),
    };
    loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => return status,
            None => panic!("the stream ended without an error"),
        }
    }
}

fn http_path(path: &'static str) -> tonic::codegen::http::uri::PathAndQuery {
    tonic::codegen::http::uri::PathAndQuery::from_static(path)
}

#[tokio::test]
async fn the_port_serves_grpc_health_and_reflection() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    install_crypto();
    let collector = Collector::start();
    let channel = collector.channel(None).await;
    for service in [
        "deskpulse.v1.AgentService",
        "deskpulse.v1.Enrollment",
        "deskpulse.v1.Technician",
    ] {
        let reply = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(reply.status, 1, "{service} is SERVING");
    }

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("some");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected a service list, got {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "deskpulse.v1.AgentService",
        "deskpulse.v1.Technician",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }

    // The same list through v1alpha, which grpcurl and older clients ask.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
        let reply = replies.message().await.expect("reply").expect("some");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("expected a service list, got {reply:?}");
        };
        // Each version names itself as the reflection service; the rest
        // is the same list.
        let alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        let without_reflection = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|name| !name.starts_with("grpc.reflection."))
                .cloned()
                .collect()
        };
        assert_eq!(
            without_reflection(&alpha),
            without_reflection(&names),
            "v1alpha lists what v1 does"
        );
        assert!(
            alpha.contains(&"grpc.reflection.v1alpha.ServerReflection".to_owned()),
            "{alpha:?}"
        );
    }
}
