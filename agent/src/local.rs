//! The running service's local socket (D12): `status` and `report-issue`
//! ask the service through it. One JSON request line, one
//! JSON reply line. On Unix it is a socket in the state dir, open to every
//! local user so employees can reach it; the service learns who asks from
//! the socket's peer credentials. The Windows named pipe is not written yet:
//! there `status` reads the saved status file.

use serde::{Deserialize, Serialize};

use crate::state::Status;

/// A request on the local socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum LocalRequest {
    /// The service's live status.
    Status,
    /// An employee's problem report; the service adds who sent it (from
    /// the peer credentials) and a health sample.
    ReportIssue {
        /// What is wrong.
        text: String,
    },
}

/// A reply on the local socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum LocalReply {
    /// The live status.
    Status(Status),
    /// The report is in the spool.
    Reported {
        /// True when the service is connected, so it is sent at once;
        /// false when it waits for the collector.
        connected: bool,
        /// Who the service recorded as the reporter.
        os_user: String,
    },
    /// The request was not understood.
    Error {
        /// Why.
        message: String,
    },
}

#[cfg(unix)]
pub use unix::{REPORT_TIMEOUT, Service, ask, serve};

#[cfg(unix)]
mod unix {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{UnixListener, UnixStream};
    use tokio::sync::{mpsc, oneshot};
    use tokio_util::sync::CancellationToken;
    use tracing::{debug, warn};

    use super::{LocalReply, LocalRequest};
    use crate::issue::{self, IssueRequest};
    use crate::session::SharedStatus;

    /// The longest request line accepted.
    const MAX_REQUEST: u64 = 64 * 1024;
    /// How long a report may take: a health sample whose slow probes are
    /// due runs `smartctl` once per disk.
    pub const REPORT_TIMEOUT: Duration = Duration::from_secs(120);

    /// What the socket hands on: the live status, the service loop's
    /// report queue, and the system root whose passwd names reporters.
    #[derive(Debug, Clone)]
    pub struct Service {
        /// The live status.
        pub live: SharedStatus,
        /// Where reports go.
        pub issues: mpsc::Sender<IssueRequest>,
        /// The system root (D13).
        pub system_root: PathBuf,
    }

    /// Serves the socket at `path` until `shutdown`. The caller holds the
    /// state dir lock, so a socket file left on disk is stale and removed.
    pub async fn serve(
        path: &Path,
        service: Service,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let service = service.clone();
                        tokio::spawn(async move {
                            if let Err(error) = answer(stream, service).await {
                                debug!(%error, "local socket client failed");
                            }
                        });
                    }
                    Err(error) => warn!(%error, "local socket accept failed"),
                },
            }
        }
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    async fn answer(stream: UnixStream, service: Service) -> std::io::Result<()> {
        let peer = stream.peer_cred().ok();
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let reply = match serde_json::from_str::<LocalRequest>(&line) {
            Ok(LocalRequest::Status) => {
                debug!(
                    uid = peer.map(|p| p.uid()),
                    "status asked on the local socket"
                );
                let status = service
                    .live
                    .lock()
                    .map(|l| l.status.clone())
                    .unwrap_or_default();
                LocalReply::Status(status)
            }
            Ok(LocalRequest::ReportIssue { text }) => {
                report(&service, text, peer.map(|p| p.uid())).await
            }
            Err(error) => LocalReply::Error {
                message: format!("bad request: {error}"),
            },
        };
        let mut text = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write.write_all(&text).await?;
        write.shutdown().await
    }

    /// Checks a report (the client's check is not trusted), names the
    /// reporter from the peer's uid, and waits until the service loop has
    /// spooled it.
    async fn report(service: &Service, text: String, uid: Option<u32>) -> LocalReply {
        let error = |message: String| LocalReply::Error { message };
        let text = match issue::validate_text(&text) {
            Ok(text) => text,
            Err(message) => return error(message),
        };
        let Some(uid) = uid else {
            return error("the service cannot tell which user is asking".into());
        };
        let os_user = issue::os_user(&service.system_root, uid);
        let (reply, answer) = oneshot::channel();
        let request = IssueRequest {
            text,
            os_user: os_user.clone(),
            reply,
        };
        if service.issues.send(request).await.is_err() {
            return error("the agent service is stopping; try again".into());
        }
        match tokio::time::timeout(REPORT_TIMEOUT, answer).await {
            Ok(Ok(Ok(connected))) => {
                debug!(uid, user = %os_user, "issue reported on the local socket");
                LocalReply::Reported { connected, os_user }
            }
            Ok(Ok(Err(message))) => error(message),
            Ok(Err(_)) => error("the agent service is stopping; try again".into()),
            Err(_) => error("the agent service did not take the report in time".into()),
        }
    }

    /// Sends one request to the service at `path` and waits up to
    /// `timeout` for the reply. `Ok(None)` when no service listens there.
    pub async fn ask(
        path: &Path,
        request: &LocalRequest,
        timeout: Duration,
    ) -> std::io::Result<Option<LocalReply>> {
        let stream = match UnixStream::connect(path).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write.write_all(&text).await?;
        let mut line = String::new();
        tokio::time::timeout(timeout, BufReader::new(read).read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        serde_json::from_str(&line)
            .map(Some)
            .map_err(std::io::Error::other)
    }
}
