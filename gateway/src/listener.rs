//! The one port. A connection that opens with a TLS ClientHello for
//! `daskgateway-<name>` goes, still encrypted, to that cluster's scheduler
//! (handed over or spliced); everything else is HTTP (the API and the
//! dashboards).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::Gateway;
use crate::handoff;
use crate::sni::{self, Hello};

const SNI_PREFIX: &str = "daskgateway-";
/// Bytes a client has to send its first bytes / ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before peeking again at a ClientHello that is not all there yet.
const HELLO_REPEEK: Duration = Duration::from_millis(2);
/// Copy buffers where splice(2) is unavailable: large enough that a busy
/// Dask transfer is not syscall-bound.
#[cfg(not(target_os = "linux"))]
const SPLICE_BUFFER: usize = 256 * 1024;

pub async fn serve(
    listener: TcpListener,
    app: Router,
    gateway: Arc<Gateway>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        let (app, gateway) = (app.clone(), gateway.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(HELLO_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == 0x16 => route_tls(stream, &gateway).await,
                Ok(Ok(1)) => serve_http(stream, app).await,
                _ => {}
            }
        });
    }
}

async fn serve_http(stream: TcpStream, app: Router) {
    let service = TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Sends a scheduler connection on, its ClientHello still unread in the
/// socket: handed over to a scheduler on this machine when the backend
/// allows, relayed otherwise.
async fn route_tls(mut stream: TcpStream, gateway: &Gateway) {
    let Some(server_name) = peek_server_name(&stream).await else { return };
    let Some(name) = server_name.as_deref().and_then(|n| n.strip_prefix(SNI_PREFIX)) else {
        debug!(?server_name, "TLS connection without a cluster name; closing");
        return;
    };
    let backend = &gateway.backend;
    if let Some(channel) = backend.handoff(name).await {
        match handoff::hand_off(&stream, &*channel) {
            Ok(()) => return gateway.metrics.scheduler_connection("handoff"),
            Err(e) => debug!(cluster = name, error = %e, "handoff refused; relaying"),
        }
    }
    let Some(target) = backend.get(name).await.and_then(|c| c.scheduler_target()) else {
        debug!(cluster = name, "TLS connection for an unknown or stopped cluster; closing");
        return;
    };
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(upstream) => upstream,
        Err(e) => {
            warn!(cluster = name, %target, error = %e, "scheduler unreachable");
            return;
        }
    };
    upstream.set_nodelay(true).ok();
    gateway.metrics.scheduler_connection("relay");
    relay(&mut stream, &mut upstream).await;
}

/// The server name of the ClientHello at the head of `stream`, read with
/// MSG_PEEK so the scheduler still receives every byte. `None`: not TLS,
/// too large, or the client was too slow.
async fn peek_server_name(stream: &TcpStream) -> Option<Option<String>> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut buf = vec![0u8; sni::MAX_HELLO + 1024];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await.ok()?.ok()?;
        match sni::parse(&buf[..n]) {
            Hello::Complete(name) => return Some(name),
            Hello::Incomplete if n > 0 && n < buf.len() => {
                // peek returns at once while any byte is buffered: wait for
                // the rest of a ClientHello split across segments.
                tokio::time::sleep(HELLO_REPEEK).await;
            }
            _ => return None,
        }
    }
}

/// On Linux the bytes go socket → pipe → socket inside the kernel (splice(2)):
/// the gateway never copies a scheduler's traffic through its own memory,
/// which leaves the CPU to the TLS ends of the connection.
#[cfg(target_os = "linux")]
async fn relay(client: &mut TcpStream, scheduler: &mut TcpStream) {
    if let Err(e) = tokio_splice::zero_copy_bidirectional(client, scheduler).await {
        debug!(error = %e, "scheduler connection ended with an error");
    }
}

#[cfg(not(target_os = "linux"))]
async fn relay(client: &mut TcpStream, scheduler: &mut TcpStream) {
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(client, scheduler, SPLICE_BUFFER, SPLICE_BUFFER)
            .await
    {
        debug!(error = %e, "scheduler connection ended with an error");
    }
}
