//! Hands a client's scheduler connection over to a scheduler on this machine
//! as a file descriptor (SCM_RIGHTS on a Unix datagram socket pair the
//! gateway made when it started the scheduler), instead of relaying it. The scheduler's TLS listener adopts the socket as if it had
//! accepted it (see `backends/local/handoff_preload.py`), so the client then talks
//! to the scheduler directly: no second TCP hop, no relay CPU in the gateway.
//! Only possible where gateway and scheduler share a kernel: the local backend.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use tokio::net::TcpStream;

/// Sends `stream`'s socket down `channel`, the gateway's end of a connected
/// Unix datagram pair. On success the scheduler holds its own descriptor:
/// dropping `stream` afterwards only closes the gateway's copy, the
/// connection stays open. Never blocks (the channel is non-blocking): a gone
/// or full receiver is an error, and the caller relays instead.
pub fn hand_off(stream: &TcpStream, channel: &impl AsRawFd) -> io::Result<()> {
    let fds = [stream.as_raw_fd()];
    sendmsg::<UnixAddr>(
        channel.as_raw_fd(),
        &[IoSlice::new(b"c")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::IoSliceMut;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixDatagram;

    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn the_receiver_talks_on_the_handed_over_connection() {
        let (ours, inbox) = UnixDatagram::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();

        hand_off(&accepted, &ours).unwrap();
        drop(accepted); // the gateway's copy goes; the connection must not

        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let message =
            recvmsg::<()>(inbox.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                .unwrap();
        let fd = message
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor arrives");
        // SAFETY: the descriptor was just received and is owned by nobody else.
        let received = std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        received.set_nonblocking(true).unwrap();
        let mut received = TcpStream::from_std(received).unwrap();

        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        received.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        received.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn a_gone_scheduler_is_an_error_not_a_hang() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        drop(theirs);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(hand_off(&accepted, &ours).is_err());
    }
}
