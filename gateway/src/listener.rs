//! The one port. A connection that opens with a TLS ClientHello for
//! `daskgateway-<name>` is spliced, still encrypted, to that cluster's
//! scheduler; everything else is HTTP (the API and the dashboards).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::sni::{self, Hello};

const SNI_PREFIX: &str = "daskgateway-";
/// Bytes a client has to send its first bytes / ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffers where splice(2) is unavailable: large enough that a busy
/// Dask transfer is not syscall-bound.
#[cfg(not(target_os = "linux"))]
const SPLICE_BUFFER: usize = 256 * 1024;

pub async fn serve(listener: TcpListener, app: Router, backend: Arc<dyn Backend>) -> std::io::Result<()> {
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
        let (app, backend) = (app.clone(), backend.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(HELLO_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == 0x16 => splice_tls(stream, backend).await,
                Ok(Ok(1)) => serve_http(stream, app).await,
                _ => {}
            }
        });
    }
}

async fn serve_http(stream: TcpStream, app: Router) {
    let service = TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
    if let Err(e) = connection.await {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

async fn splice_tls(mut stream: TcpStream, backend: Arc<dyn Backend>) {
    let mut hello = Vec::with_capacity(2048);
    let server_name = loop {
        match sni::parse(&hello) {
            Hello::Complete(name) => break name,
            Hello::NotTls => return,
            Hello::Incomplete if hello.len() > sni::MAX_HELLO + 1024 => return,
            Hello::Incomplete => {
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(HELLO_TIMEOUT, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => hello.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
        }
    };
    let Some(name) = server_name.as_deref().and_then(|n| n.strip_prefix(SNI_PREFIX)) else {
        debug!(?server_name, "TLS connection without a cluster name; closing");
        return;
    };
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
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    relay(&mut stream, &mut upstream).await;
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
    if let Err(e) = tokio::io::copy_bidirectional_with_sizes(client, scheduler, SPLICE_BUFFER, SPLICE_BUFFER).await {
        debug!(error = %e, "scheduler connection ended with an error");
    }
}
