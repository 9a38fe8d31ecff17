//! The listener: accepts connections and hands each request to the [`Host`]. Like
//! `spin up`, it speaks HTTP/1.1 and HTTP/2 over cleartext with prior knowledge
//! (h2c; `curl --http2-prior-knowledge`), told apart by the connection preface.

use crate::runtime::Host;
use anyhow::Result;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves until the listener fails or the task is dropped.
pub async fn serve(host: Arc<Host>, listener: TcpListener) -> Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        set_nodelay(&socket, host.tcp_nodelay());
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let host = host.clone();
                async move { Ok::<_, std::convert::Infallible>(host.handle(req, peer).await) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Spin 4 leaves Nagle's algorithm on; the host does too unless told otherwise.
/// With it on, an SSE write that follows an unacknowledged one waits for the
/// client's delayed ACK (up to ~40 ms on Linux).
fn set_nodelay(socket: &tokio::net::TcpStream, on: bool) {
    if let Err(e) = socket.set_nodelay(on) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// Binds `addr` and serves in a background task; returns the bound address.
pub async fn spawn(host: Arc<Host>, addr: &str) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(host, listener).await {
            tracing::error!(error = %e, "listener failed");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accepted socket keeps Nagle on (as under `spin up`) unless asked.
    #[tokio::test]
    async fn accepted_sockets_get_nodelay_only_when_asked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for on in [false, true] {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            set_nodelay(&socket, on);
            assert_eq!(socket.nodelay().unwrap(), on);
        }
    }
}
