//! The web server's own accept loop: a bounded number of connections, each of which
//! must send a request head within [`HEADER_READ_TIMEOUT`] (also between requests on a
//! kept-alive one) and a request's body within [`BODY_READ_TIMEOUT`]. Connections from
//! anyone but the user running the host (another local user, or a client elsewhere when
//! the listener is not loopback's) share [`OTHERS_MAX_CONNECTIONS`] of the places, so
//! another user of this machine who holds every place it may, sending bodies a byte at
//! a time, leaves the owner's browser, `palisade login`, `send` and `chat` served.
//!
//! `axum::serve` accepts without limit and never times a connection out, and this
//! listener is shared with the Slack and Discord webhooks that a reverse proxy may
//! expose: 20,000 idle connections took every descriptor the host process may open,
//! and with them the gateway's listener, the channels' connections and the audit
//! anchor. Here a full server closes new connections at once, and each connection is
//! hyper's HTTP/1.1 with axum's router as the service.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Of those, the most that connections from anyone but the host's own user may hold.
pub const OTHERS_MAX_CONNECTIONS: usize = 64;
/// A request's body must have arrived whole this long after its head: a body sent a
/// byte at a time held its connection for as long as the sender liked. Bodies here are
/// small (2 MiB at most), so this is 100 KiB/s at the very least.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// A connection must send a whole request head within this time, the first one and
/// each next one on a kept-alive connection (browsers open a new one).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stop waits for the requests under way.
const DRAIN: Duration = Duration::from_secs(10);

/// The local address a connection came in on, in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ServerAddress(pub std::net::SocketAddr);

/// Serves `app` on `listener` until `stop` turns true, with each connection's peer
/// address as [`ConnectInfo`] and its own as [`ServerAddress`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let others = Arc::new(Semaphore::new(OTHERS_MAX_CONNECTIONS));
    let owner = nix::unistd::geteuid().as_raw();
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin.
                    tracing::warn!(%error, "web server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
        };
        // The address the connection came in on (the listener's, or, bound to every
        // address, the one the client chose): the peer check needs the whole pair.
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // Whose connection this is, asked of the kernel for this one socket (a netlink
        // round trip) before it takes a place: asked afterwards, a flood of another
        // user's connections held the places while their owners were looked up.
        let others_place = match crate::peer::uid_of(peer, local) == Some(owner) {
            true => None,
            false => match others.clone().try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    tracing::debug!(%peer, "web server: others' share full, connection closed");
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "web server full: connection closed");
            continue;
        };
        let app = app.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _places = (place, others_place);
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(ServerAddress(local));
                    let request = request.map(|body| {
                        axum::body::Body::new(DeadlineBody::new(body, BODY_READ_TIMEOUT))
                    });
                    let mut app = app.clone();
                    async move { app.call(request).await }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
    Ok(())
}

/// A request body that fails once its time is up, so a handler reading it is not held
/// by a sender that never finishes. Written here: tower-http's body timeout bounds the
/// wait for each frame, which a byte every few seconds always meets.
struct DeadlineBody {
    inner: Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    within: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, within: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
            within,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {} s",
                this.within.as_secs()
            )
            .into())));
        }
        std::pin::Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
