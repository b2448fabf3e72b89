//! The one port. A connection that opens with a TLS ClientHello for
//! `daskgateway-<name>` goes, still encrypted, to that cluster's scheduler
//! (handed over or spliced); everything else is HTTP (the API and the
//! dashboards). Every connection holds a slot of a fixed cap, and none may
//! stay silent for long: a flood of stalled clients is closed, not queued.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::backends::handoff;
use crate::config::ConnectionLimits;
use crate::http::metrics;
use crate::http::state::Gateway;
use crate::proxy::idle::Tracked;
use crate::proxy::sni::{self, Hello};

const SNI_PREFIX: &str = "daskgateway-";
/// Most bytes hyper buffers per connection for a request head (its default
/// is ~400 KiB): with the connection cap, this bounds the memory a flood of
/// huge headers can take.
const MAX_HEAD_BUFFER: usize = 64 * 1024;
/// Copy buffers where splice(2) is unavailable: large enough that a busy
/// Dask transfer is not syscall-bound.
#[cfg(not(target_os = "linux"))]
const SPLICE_BUFFER: usize = 256 * 1024;

/// The timeouts of [`ConnectionLimits`], as durations.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub header_read: Duration,
    pub http_idle: Duration,
    pub websocket_idle: Duration,
    pub relay_idle: Duration,
}

impl From<&ConnectionLimits> for Timeouts {
    fn from(c: &ConnectionLimits) -> Self {
        Self {
            first_byte: Duration::from_secs_f64(c.first_byte_timeout),
            header_read: Duration::from_secs_f64(c.header_read_timeout),
            http_idle: Duration::from_secs_f64(c.http_idle_timeout),
            websocket_idle: Duration::from_secs_f64(c.websocket_idle_timeout),
            relay_idle: Duration::from_secs_f64(c.relay_idle_timeout),
        }
    }
}

/// The graceful stop of the HTTP side: once [`Drain::stop`] is called the
/// listeners accept no more, idle keep-alive connections close, and a
/// connection with a request in flight closes once it is answered.
/// Scheduler connections (handed over or relayed) are not waited for.
#[derive(Clone)]
pub struct Drain {
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// One clone per open HTTP connection.
    open: Arc<()>,
}

impl Default for Drain {
    fn default() -> Self {
        Self { stopping: Arc::new(tokio::sync::watch::channel(false).0), open: Arc::new(()) }
    }
}

impl Drain {
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        stopping.wait_for(|s| *s).await.ok();
    }

    /// Waits until every HTTP connection has closed, or `within`; returns
    /// how many are still open.
    pub async fn drained(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let open = Arc::strong_count(&self.open) - 1;
            if open == 0 || Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Which listener a connection came in on (a metric label).
#[derive(Debug, Clone, Copy)]
pub enum Port {
    /// The public port: API, dashboards and scheduler TLS.
    Public,
    /// The schedulers' own: heartbeats only, HTTP only.
    Heartbeat,
}

impl Port {
    fn label(self) -> &'static str {
        match self {
            Port::Public => "public",
            Port::Heartbeat => "heartbeat",
        }
    }
}

/// Accepts connections until the process ends. Over `max_connections`, a
/// new connection is closed at once (the client may retry) rather than
/// waiting for a slot: the backlog stays empty and the port stays live.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    gateway: Arc<Gateway>,
    port: Port,
    max_connections: usize,
    timeouts: Timeouts,
    drain: Drain,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let timeouts = Arc::new(timeouts);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Returning drops the listener: new connections are refused.
            _ = drain.stopped() => return Ok(()),
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            gateway.metrics.connection_refused(port.label());
            drop(stream);
            continue;
        };
        stream.set_nodelay(true).ok();
        let (app, gateway, timeouts) = (app.clone(), gateway.clone(), timeouts.clone());
        let drain = drain.clone();
        // Counted from accept, not from the task's first poll: a request
        // accepted after this one sees it in the gauge.
        let open = metrics::OpenConnection::new(&gateway.metrics, port.label());
        tokio::spawn(async move {
            let _open = open;
            let mut first = [0u8; 1];
            match tokio::time::timeout(timeouts.first_byte, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == 0x16 && matches!(port, Port::Public) => {
                    route_tls(stream, &gateway, &timeouts).await
                }
                Ok(Ok(1)) => serve_http(stream, app, &timeouts, &drain).await,
                _ => {}
            }
            drop(slot);
        });
    }
}

async fn serve_http(stream: TcpStream, app: Router, timeouts: &Timeouts, drain: &Drain) {
    let _open = drain.open.clone();
    let (io, activity) = Tracked::new(stream, timeouts.http_idle);
    let websocket_idle = timeouts.websocket_idle;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (app, activity) = (app.clone(), activity.clone());
        async move {
            let response = app.oneshot(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // The connection becomes a dashboard websocket.
                activity.set_timeout(websocket_idle);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(MAX_HEAD_BUFFER)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = drain.stopped() => {
            // Closes now if idle, else after the response in flight.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Sends a scheduler connection on, its ClientHello still unread in the
/// socket: handed over to a scheduler on this machine when the backend
/// allows, relayed otherwise.
async fn route_tls(stream: TcpStream, gateway: &Gateway, timeouts: &Timeouts) {
    let deadline = Instant::now() + timeouts.first_byte;
    let Some(server_name) = peek_server_name(&stream, deadline).await else { return };
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
    let (mut client, _) = Tracked::new(stream, timeouts.relay_idle);
    relay(&mut client, &mut upstream).await;
}

/// The server name of the ClientHello at the head of `stream`, read with
/// MSG_PEEK so the scheduler still receives every byte. `None`: not TLS,
/// too large, or not all there by `deadline`.
async fn peek_server_name(stream: &TcpStream, deadline: Instant) -> Option<Option<String>> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; sni::MAX_HELLO + 1024];
    let mut seen = 0;
    loop {
        tokio::time::timeout_at(deadline, stream.readable()).await.ok()?.ok()?;
        // Nothing new since the last peek: report WouldBlock, which clears
        // the readiness, so the next `readable()` waits for more bytes.
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = nix::sys::socket::recv(
                stream.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            )
            .map_err(std::io::Error::from)?;
            if n == seen && n > 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match peeked {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        };
        seen = n;
        match sni::parse(&buf[..n]) {
            Hello::Complete(name) => return Some(name),
            Hello::Incomplete if n < buf.len() => continue,
            _ => return None,
        }
    }
}

/// On Linux the bytes go socket → pipe → socket inside the kernel (splice(2)):
/// the gateway never copies a scheduler's traffic through its own memory,
/// which leaves the CPU to the TLS ends of the connection.
#[cfg(target_os = "linux")]
async fn relay(client: &mut Tracked<TcpStream>, scheduler: &mut TcpStream) {
    if let Err(e) = tokio_splice::zero_copy_bidirectional(client, scheduler).await {
        debug!(error = %e, "scheduler connection ended with an error");
    }
}

#[cfg(not(target_os = "linux"))]
async fn relay(client: &mut Tracked<TcpStream>, scheduler: &mut TcpStream) {
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(client, scheduler, SPLICE_BUFFER, SPLICE_BUFFER)
            .await
    {
        debug!(error = %e, "scheduler connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_sni_peek_waits_for_a_hello_split_across_segments() {
        let (mut client, server) = crate::proxy::idle::tests::tcp_pair().await;
        let hello = sni::tests::hello(Some("daskgateway-abc"), 16384);
        let (head, tail) = hello.split_at(7);
        client.write_all(head).await.unwrap();
        let peek = tokio::spawn(async move {
            peek_server_name(&server, Instant::now() + Duration::from_secs(5)).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(tail).await.unwrap();
        assert_eq!(peek.await.unwrap(), Some(Some("daskgateway-abc".into())));
    }

    #[tokio::test]
    async fn the_sni_peek_gives_up_at_its_deadline() {
        let (mut client, server) = crate::proxy::idle::tests::tcp_pair().await;
        client.write_all(&[0x16, 3, 1]).await.unwrap();
        let started = Instant::now();
        let found = peek_server_name(&server, started + Duration::from_millis(300)).await;
        assert_eq!(found, None);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
