//! The console on an address of its own (`--web-listen`): TLS with the
//! server certificate the TLS port uses (followed through CA rotation),
//! offering HTTP/2 and HTTP/1.1, for browsers and proxies that the TLS
//! port's HTTP/2-only admission would turn away. gRPC is not served here.
//!
//! Bounded like the TLS port: at most [`MAX_CONNECTIONS`] sockets at once,
//! TLS finished within the handshake deadline, an HTTP/1.1 request's
//! headers within [`HEADER_DEADLINE`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::auth::ClientAddr;
use crate::server::admission::HANDSHAKE_DEADLINE;

/// Sockets open at once on the console's own address.
pub const MAX_CONNECTIONS: usize = 512;
/// How long an HTTP/1.1 client has to send a request's headers.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// The TLS settings of the TLS port with the console's ALPN: HTTP/2 and
/// HTTP/1.1. The client-certificate settings stay (a client without one is
/// welcome, as on the TLS port).
fn web_tls(port: &TlsAcceptor) -> TlsAcceptor {
    let mut config = port.config().as_ref().clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown`, with the TLS port's
/// current settings from `tls`.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accepting a web console connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "web console connections at their cap; closed one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = web_tls(&tls.borrow());
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    debug!(%peer, %error, "a web console TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "a web console TLS handshake ran out of time");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ClientAddr(peer));
                let app = app.clone();
                async move {
                    let response = app.oneshot(request).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(%peer, %error, "a web console connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    }
}
