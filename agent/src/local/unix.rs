//! The local endpoint on Linux and macOS: a socket file in the state dir,
//! mode 0666 so every local user can reach it. The service names the
//! caller from the socket's peer credentials, through `etc/passwd` under
//! the system root.

use std::io;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Endpoint, Service};
use crate::issue;

/// Serves the socket until `shutdown`. The caller holds the state dir
/// lock, so a socket file left on disk is stale and removed.
pub(super) async fn serve(
    endpoint: &Endpoint,
    service: Service,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let path = endpoint.address();
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
                Ok((mut stream, _)) => {
                    let service = service.clone();
                    tokio::spawn(async move {
                        let caller = |stream: &UnixStream| {
                            let uid = stream.peer_cred().ok()?.uid();
                            Some(issue::os_user(&service.system_root, uid))
                        };
                        if let Err(error) = super::answer(&mut stream, &service, caller).await {
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

/// Connects to the socket; `Ok(None)` when no service listens there.
pub(super) async fn connect(
    endpoint: &Endpoint,
    _timeout: Duration,
) -> io::Result<Option<UnixStream>> {
    match UnixStream::connect(endpoint.address()).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
