//! Idle timeouts for connections whose bytes the gateway only moves along
//! (keep-alive HTTP, dashboard websockets, spliced scheduler traffic): the
//! socket is wrapped so that every byte read or written marks it active, and
//! a watchdog shuts it down (shutdown(2), which wakes whoever holds it) after
//! `timeout` without a byte either way.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved a byte, and how long it may stay silent.
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    timeout_ms: AtomicU64,
    /// The socket while its owner holds it; `None` once dropped, so the
    /// watchdog never shuts down a descriptor number that was reused.
    fd: Mutex<Option<RawFd>>,
    /// Ends the watchdog with the connection (not at its next deadline), so
    /// a churn of short connections leaves no sleeping tasks behind.
    closed: tokio::sync::Notify,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A new limit from now on (e.g. when a request upgrades to a websocket).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Time until the connection counts as idle; `None`: it is idle now.
    fn remaining(&self) -> Option<Duration> {
        let idle = self.base.elapsed().as_millis() as u64 - self.last_ms.load(Ordering::Relaxed);
        let timeout = self.timeout_ms.load(Ordering::Relaxed);
        (idle < timeout).then(|| Duration::from_millis(timeout - idle))
    }
}

/// A socket that records its activity.
pub struct Tracked<S: AsRawFd> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsRawFd> Tracked<S> {
    /// Wraps `inner` and starts its watchdog.
    pub fn new(inner: S, timeout: Duration) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            fd: Mutex::new(Some(inner.as_raw_fd())),
            closed: tokio::sync::Notify::new(),
        });
        tokio::spawn(watchdog(activity.clone()));
        (Self { inner, activity: activity.clone() }, activity)
    }
}

impl<S: AsRawFd> Drop for Tracked<S> {
    fn drop(&mut self) {
        // Runs before `inner` closes the descriptor.
        *self.activity.fd.lock().expect("fd lock") = None;
        self.activity.closed.notify_one();
    }
}

async fn watchdog(activity: Arc<Activity>) {
    loop {
        match activity.remaining() {
            Some(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = activity.closed.notified() => return,
            },
            None => {
                if let Some(fd) = *activity.fd.lock().expect("fd lock") {
                    // The descriptor is still open: its owner clears `fd`
                    // under this lock before closing it.
                    nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both).ok();
                }
                return;
            }
        }
        if activity.fd.lock().expect("fd lock").is_none() {
            return;
        }
    }
}

impl<S: AsRawFd> AsRawFd for Tracked<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<S: AsyncRead + AsRawFd + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + AsRawFd + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// splice(2) relays move bytes with `try_io`: a successful call is activity.
#[cfg(target_os = "linux")]
impl tokio_splice::Stream for Tracked<tokio::net::TcpStream> {
    fn poll_read_ready_n(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
    fn poll_write_ready_n(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_write_ready(cx)
    }
    fn try_io_n<R>(
        &self,
        interest: tokio::io::Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let result = self.inner.try_io(interest, f);
        if result.is_ok() {
            self.activity.touch();
        }
        result
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected (client, server) pair on loopback.
    pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn a_silent_connection_is_shut_down_and_an_active_one_is_not() {
        let (mut client, server) = tcp_pair().await;
        let (mut server, _) = Tracked::new(server, Duration::from_millis(300));
        // Traffic every 100 ms keeps it open past the timeout.
        for _ in 0..6 {
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then silence: the server side sees end-of-stream within the timeout.
        let started = Instant::now();
        let mut b = [0u8; 1];
        assert_eq!(server.read(&mut b).await.unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
