//! The control channel between a sandbox and the palisade process that started it: the
//! sandbox's only way to its vault, and its lifeline.
//!
//! No vault socket of the host is ever mounted into a sandbox. The parent hands the shim
//! one end of a socket pair as an inherited descriptor (bubblewrap passes it through;
//! podman with `--preserve-fds`). docker cannot pass a descriptor into a container, so
//! for docker the parent listens on a socket in the sandbox's private run directory,
//! mounted into the sandbox, and serves the first connection, the shim's, which it
//! makes before the command starts. For each connection a client in the sandbox makes to
//! the shim, the shim asks the parent over this channel; the parent connects to the
//! agent's vault socket itself and passes the connected descriptor back
//! (`SCM_RIGHTS`). So:
//!
//! - a vault socket is reached only by palisade processes, never by a sandbox, whatever
//!   is mounted into it, and the vault can hold each connection's peer to exactly that
//!   (see `palisade_vault::PeerRule`);
//! - nothing in a sandbox's `/proc/self/mountinfo` names where the sockets live;
//! - the sandbox's user needs no permission on any socket (podman's mapped uid);
//! - when the parent dies, its end closes and the shim ends the sandbox (the lifeline).
//!
//! The same channel reaches the host's socket for the agent's runner, when the sandbox
//! runs one: the shim offers it inside as an abstract socket ([`crate::paths::HOST_SOCKET`]).
//!
//! The protocol is one byte each way, one request at a time: the shim sends `c` (the
//! vault) or `h` (the host); the parent answers `k` with the descriptor, or `u` if the
//! target was unreachable or the sandbox has none. Anything else from the sandbox closes
//! the channel, which ends the sandbox.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

const REQUEST_VAULT: u8 = b'c';
const REQUEST_HOST: u8 = b'h';
const CONNECTED: u8 = b'k';
const UNREACHABLE: u8 = b'u';
/// How long the parent waits for the vault to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A new channel: the parent's end and the sandbox's end (both close-on-exec; the
/// runtime makes the sandbox's end inheritable in its child only).
pub(crate) fn channel() -> std::io::Result<(std::os::unix::net::UnixStream, OwnedFd)> {
    let (parent, sandbox) = std::os::unix::net::UnixStream::pair()?;
    Ok((parent, OwnedFd::from(sandbox)))
}

/// What the parent connects to for a sandbox (host paths).
#[derive(Clone, Debug)]
pub(crate) struct Targets {
    pub(crate) vault: PathBuf,
    pub(crate) host: Option<PathBuf>,
}

/// What a sandbox asks its parent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Vault,
    Host,
}

/// Serves the shim's requests until the channel closes or the task is aborted (which
/// closes the parent's end: the shim then ends the sandbox).
pub(crate) fn serve(
    parent: std::os::unix::net::UnixStream,
    targets: Targets,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    parent.set_nonblocking(true)?;
    let parent = UnixStream::from_std(parent)?;
    Ok(tokio::spawn(serve_requests(parent, targets)))
}

/// As [`serve`], for the first connection on `listener` (docker: see the module doc).
pub(crate) fn serve_first_connection(
    listener: std::os::unix::net::UnixListener,
    targets: Targets,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        if let Ok((control, _)) = listener.accept().await {
            drop(listener);
            serve_requests(control, targets).await;
        }
    }))
}

async fn serve_requests(mut control: UnixStream, targets: Targets) {
    let mut request = [0u8; 1];
    loop {
        let target = match control.read(&mut request).await {
            Ok(1) if request[0] == REQUEST_VAULT => Some(&targets.vault),
            Ok(1) if request[0] == REQUEST_HOST => targets.host.as_ref(),
            // Closed, failed, or not the protocol: the channel ends with the sandbox.
            _ => return,
        };
        let connected = match target {
            Some(path) => tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let sent = match connected {
            Some(stream) => send_descriptor(&control, stream.as_raw_fd()).await,
            None => control.write_all(&[UNREACHABLE]).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn send_descriptor(control: &UnixStream, fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let fds = [fd];
    control
        .async_io(Interest::WRITABLE, || {
            sendmsg::<UnixAddr>(
                control.as_raw_fd(),
                &[IoSlice::new(&[CONNECTED])],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        })
        .await
        .map(drop)
}

/// The shim's side: asks the parent for connections (to the vault, or to the host for
/// a runner), and tells when the parent is gone.
#[derive(Clone)]
pub struct ParentDialer {
    requests: mpsc::Sender<(Target, oneshot::Sender<Option<OwnedFd>>)>,
    closed: watch::Receiver<bool>,
}

impl ParentDialer {
    /// Takes over the inherited descriptor `fd` (the sandbox's end of the channel). Must
    /// be called inside a tokio runtime.
    ///
    /// # Safety
    /// `fd` must be an open socket descriptor that nothing else in the process uses.
    pub unsafe fn from_inherited(fd: RawFd) -> std::io::Result<Self> {
        // SAFETY: the caller owns `fd`.
        let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        stream.set_nonblocking(true)?;
        Ok(Self::from_stream(UnixStream::from_std(stream)?))
    }

    /// Connects to the parent's control socket at `path` (docker).
    pub async fn connect(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::from_stream(UnixStream::connect(path).await?))
    }

    fn from_stream(stream: UnixStream) -> Self {
        let (requests, receiver) = mpsc::channel(1024);
        let (closed_sender, closed) = watch::channel(false);
        tokio::spawn(async move {
            control_loop(stream, receiver).await;
            let _ = closed_sender.send(true);
        });
        ParentDialer { requests, closed }
    }

    /// A new connection to the agent's vault, or `None` if the vault (or the parent) is
    /// unreachable.
    pub async fn dial(&self) -> Option<tokio::net::UnixStream> {
        self.dial_target(Target::Vault).await
    }

    /// A new connection to `target`, or `None` if it (or the parent) is unreachable.
    pub async fn dial_target(&self, target: Target) -> Option<tokio::net::UnixStream> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((target, reply)).await.ok()?;
        let fd = answer.await.ok()??;
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true).ok()?;
        tokio::net::UnixStream::from_std(stream).ok()
    }

    /// Resolves once the parent's end is closed (it died or ended the sandbox).
    pub async fn parent_gone(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

/// Sends one request at a time and waits for its answer; between requests, anything
/// readable (the parent closing its end, or bytes it should not send) ends the loop.
async fn control_loop(
    mut control: UnixStream,
    mut requests: mpsc::Receiver<(Target, oneshot::Sender<Option<OwnedFd>>)>,
) {
    loop {
        let (target, reply_to) = tokio::select! {
            request = requests.recv() => match request {
                Some(request) => request,
                None => return,
            },
            readable = control.readable() => {
                if readable.is_err() {
                    return;
                }
                let mut byte = [0u8; 1];
                match control.try_read(&mut byte) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    _ => return,
                }
            }
        };
        let request = match target {
            Target::Vault => REQUEST_VAULT,
            Target::Host => REQUEST_HOST,
        };
        if control.write_all(&[request]).await.is_err() {
            return;
        }
        match receive_answer(&control).await {
            Ok(answer) => {
                let _ = reply_to.send(answer);
            }
            Err(_) => return,
        }
    }
}

/// Reads the parent's one-byte answer and the descriptor that comes with `k`.
async fn receive_answer(control: &UnixStream) -> std::io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    control
        .async_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let message = recvmsg::<UnixAddr>(
                control.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            if message.bytes == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut received = None;
            for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    for fd in fds {
                        // SAFETY: the kernel just installed `fd` in this process for us.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        received.get_or_insert(fd);
                    }
                }
            }
            Ok((byte[0], received))
        })
        .await
        .and_then(|(byte, fd)| match (byte, fd) {
            (CONNECTED, Some(fd)) => Ok(Some(fd)),
            (UNREACHABLE, None) => Ok(None),
            _ => Err(std::io::ErrorKind::InvalidData.into()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[tokio::test]
    async fn a_dialed_connection_reaches_the_vault_socket_and_a_closed_parent_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vault.sock");
        let vault = tokio::net::UnixListener::bind(&socket).unwrap();
        let (parent, sandbox) = channel().unwrap();
        let targets = Targets {
            vault: socket.clone(),
            host: None,
        };
        let server = serve(parent, targets).unwrap();
        // SAFETY: the test owns the sandbox's end and hands it over.
        let dialer = unsafe { ParentDialer::from_inherited(sandbox.into_raw_fd()) }.unwrap();
        let mut client = dialer.dial().await.expect("connected");
        // No host socket for this sandbox: answered, not hung on.
        assert!(dialer.dial_target(Target::Host).await.is_none());
        let (mut accepted, _) = vault.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buffer = [0u8; 4];
        accepted.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"ping");
        // An unreachable vault is answered, not hung on.
        drop(vault);
        std::fs::remove_file(&socket).unwrap();
        assert!(dialer.dial().await.is_none());
        // The parent's end closing is the lifeline.
        server.abort();
        tokio::time::timeout(Duration::from_secs(5), dialer.parent_gone())
            .await
            .expect("parent seen gone");
        assert!(dialer.dial().await.is_none());
    }

    #[tokio::test]
    async fn a_control_socket_serves_its_first_connection_only() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vault.sock");
        let _vault = tokio::net::UnixListener::bind(&socket).unwrap();
        let control = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&control).unwrap();
        let targets = Targets {
            vault: socket,
            host: None,
        };
        let _server = serve_first_connection(listener, targets).unwrap();
        let dialer = ParentDialer::connect(&control).await.unwrap();
        assert!(dialer.dial().await.is_some());
        // Once the shim is connected nobody else is served: the listener is gone. A
        // connect can still succeed for a moment when another thread of this process
        // forked while the listener was open (the child holds a copy until it execs):
        // the connection then waits in a backlog nobody accepts from, and its request
        // is never answered with a descriptor.
        if let Ok(second) = ParentDialer::connect(&control).await {
            let dialed = tokio::time::timeout(Duration::from_secs(5), second.dial()).await;
            assert!(
                matches!(dialed, Ok(None) | Err(_)),
                "a second connection was served"
            );
        }
    }
}
