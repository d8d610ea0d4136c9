//! The running service's local socket (D12): `status` (and later
//! `report-issue`) ask the service through it. One JSON request line, one
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
}

/// A reply on the local socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum LocalReply {
    /// The live status.
    Status(Status),
    /// The request was not understood.
    Error {
        /// Why.
        message: String,
    },
}

#[cfg(unix)]
pub use unix::{ask, serve};

#[cfg(unix)]
mod unix {
    use std::path::Path;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{UnixListener, UnixStream};
    use tokio_util::sync::CancellationToken;
    use tracing::{debug, warn};

    use super::{LocalReply, LocalRequest};
    use crate::session::SharedStatus;

    /// The longest request line accepted.
    const MAX_REQUEST: u64 = 64 * 1024;

    /// Serves the socket at `path` until `shutdown`. The caller holds the
    /// state dir lock, so a socket file left on disk is stale and removed.
    pub async fn serve(
        path: &Path,
        live: SharedStatus,
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
                        let live = live.clone();
                        tokio::spawn(async move {
                            if let Err(error) = answer(stream, live).await {
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

    async fn answer(stream: UnixStream, live: SharedStatus) -> std::io::Result<()> {
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
                let status = live.lock().map(|l| l.status.clone()).unwrap_or_default();
                LocalReply::Status(status)
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

    /// Sends one request to the service at `path`. `Ok(None)` when no
    /// service listens there.
    pub async fn ask(path: &Path, request: &LocalRequest) -> std::io::Result<Option<LocalReply>> {
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
        tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(read).read_line(&mut line),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        serde_json::from_str(&line)
            .map(Some)
            .map_err(std::io::Error::other)
    }
}
