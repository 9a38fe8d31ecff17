//! The listener: accepts connections and hands each request to the [`Host`]. Like
//! `spin up`, it speaks HTTP/1.1 and HTTP/2 over cleartext with prior knowledge
//! (h2c; `curl --http2-prior-knowledge`), told apart by the connection preface.
//!
//! It is built to outlive hostile clients ([`crate::limits`]):
//!
//! * a failed `accept` never ends the loop: a client that reset before it was
//!   accepted is skipped, and when the process is out of descriptors (or memory)
//!   the loop backs off (10 ms, doubling to 1 s) and tries again, so the host serves
//!   again as soon as the connections that used them up are gone;
//! * each connection is admitted within the connection caps, or answered `503`/`429`
//!   as JSON and closed;
//! * a connection must start its request within the header timeout, and hyper
//!   closes one whose head is not complete by then.
//!
//! Admitted connections are served on the per-core [`Workers`] when the host has
//! any ([`crate::HostConfig::workers`]), else on the listener's runtime.

use crate::limits::{self, Admitted, ServerLimits};
use crate::runtime::Host;
use crate::workers::Workers;
use anyhow::Result;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The first wait after an `accept` that failed for want of resources.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between two such attempts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a refused connection may take to read its answer.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves until the task is dropped (the workers stop with it).
pub async fn serve(host: Arc<Host>, listener: TcpListener) -> Result<()> {
    let workers = match host.workers() {
        0 => None,
        n => Some(Workers::start(n)?),
    };
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                admit(&host, workers.as_ref(), socket, peer);
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed: backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Errors of one connection (not of the listener): skip it and go on.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves `socket` when the caps admit it (on the next worker, if there are
/// workers), else answers the refusal and closes it.
fn admit(host: &Arc<Host>, workers: Option<&Workers>, socket: TcpStream, peer: SocketAddr) {
    match host.connections().admit(peer.ip(), host.limits()) {
        Ok(admitted) => {
            set_nodelay(&socket, host.tcp_nodelay());
            let Some(workers) = workers else {
                tokio::spawn(serve_connection(host.clone(), socket, peer, admitted));
                return;
            };
            let socket = match socket.into_std() {
                Ok(socket) => socket,
                Err(e) => {
                    return tracing::debug!(%peer, error = %e, "connection lost before serving")
                }
            };
            let host = host.clone();
            workers.spawn(move || async move {
                // Registered with the worker's own runtime.
                if let Ok(socket) = TcpStream::from_std(socket) {
                    serve_connection(host, socket, peer, admitted).await;
                }
            });
        }
        Err(over) => {
            tracing::debug!(%peer, ?over, "connection refused: over a connection limit");
            tokio::spawn(refuse(socket, limits::raw_response(&limits::refusal(over))));
        }
    }
}

/// Writes a refusal to a connection that is not served, and closes it.
async fn refuse(mut socket: TcpStream, response: Vec<u8>) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        socket.write_all(&response).await?;
        socket.shutdown().await
    })
    .await;
}

/// Serves one admitted connection; its place is freed when it ends.
async fn serve_connection(
    host: Arc<Host>,
    socket: TcpStream,
    peer: SocketAddr,
    _admitted: Admitted,
) {
    // The HTTP version is told from the first bytes, which hyper waits for without a
    // deadline: a connection that sends nothing is closed here instead.
    let limits = host.limits().clone();
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_timeout, socket.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let service = hyper::service::service_fn(move |req| {
        let host = host.clone();
        async move { Ok::<_, std::convert::Infallible>(host.handle(req, peer).await) }
    });
    if let Err(e) = builder(&limits)
        .serve_connection(TokioIo::new(socket), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// hyper's server with the header timeout (HTTP/1.1) and keepalive pings (h2c).
fn builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    builder
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
pub async fn spawn(host: Arc<Host>, addr: &str) -> Result<SocketAddr> {
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

    #[test]
    fn only_per_connection_errors_are_skipped_without_a_pause() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE: out of descriptors, the listener waits and tries again.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }
}
