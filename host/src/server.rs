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
        // SSE writes are small: without TCP_NODELAY, Nagle's algorithm and the
        // client's delayed ACK hold events back by up to ~40 ms.
        let _ = socket.set_nodelay(true);
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
