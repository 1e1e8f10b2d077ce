//! What one client connection may use: a place under the gateway's connection cap and
//! under its agent's share, and time only while it is doing something.
//!
//! Without these, one agent's sandbox could open connections until the process ran out
//! of descriptors and every agent was refused. So every connection holds a permit of
//! the gateway-wide cap (taken at accept) and one of its agent's cap (at accept on an
//! agent socket, at the first authenticated request on the TCP listener); the permits
//! move with the connection into the TLS tunnel it opens. Until its first request
//! authenticates, a connection on the TCP listener also holds a place among the
//! anonymous ones (a quarter of the cap, at most 1,024), so connections that never
//! authenticate (any local process may open them) cannot take the places of the
//! agents' sockets. When those places are full, a new connection pushes out the oldest
//! one still waiting (see [`AnonymousPlace`]), so such a flood cannot keep out the
//! token-holding clients of the TCP listener either. A connection with no request
//! in flight is closed once it has been silent for the idle timeout (sooner if it never
//! sent a request), so idle tunnels do not pile up.
//!
//! Written by hand: hyper offers a header-read timeout but no idle timeout that knows
//! whether a request (a held one, a long stream) is still in flight. Nor does it say
//! when a client leaves while its request is in flight: the front door lets clients
//! half-close after a request (so hyper reads nothing more until the answer is sent),
//! so a held request watches the client's socket itself (see [`Activity::gone`]).

use crate::body::ProxyBody;
use http_body::{Body, Frame, SizeHint};
use palisade_policy::AgentName;
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The gateway-wide and per-agent connection caps.
pub struct ConnectionLimits {
    global: Arc<Semaphore>,
    global_max: usize,
    /// The most connections open at once since [`ConnectionLimits::take_peak`].
    peak: AtomicUsize,
    per_agent: Mutex<HashMap<AgentName, Arc<Semaphore>>>,
    per_agent_max: usize,
    /// Each agent's requests in flight, over all its connections and HTTP/2 streams.
    requests: Mutex<HashMap<AgentName, Arc<Semaphore>>>,
    requests_max: usize,
    /// TCP connections that have not authenticated yet.
    anonymous: Arc<Mutex<Anonymous>>,
}

/// The TCP connections that have not authenticated yet, oldest first.
struct Anonymous {
    max: usize,
    next: u64,
    waiting: std::collections::VecDeque<(u64, CancellationToken)>,
}

/// A place among the connections that have not authenticated yet. When they are as
/// many as may wait, a new one pushes out the oldest (its `evicted` is cancelled and
/// its connection closed): a client that means to authenticate does so with its first
/// request, moments after it connects, so a flood of connections that never do would
/// have to open the whole pool's worth in those moments to keep it out; refusing the
/// newest instead let a flood hold every place for as long as a head may take. Given
/// back when the connection authenticates or ends.
pub struct AnonymousPlace {
    id: u64,
    pool: Arc<Mutex<Anonymous>>,
    evicted: CancellationToken,
}

impl AnonymousPlace {
    /// Cancelled if a newer connection pushed this one out before it authenticated.
    pub fn evicted(&self) -> CancellationToken {
        self.evicted.clone()
    }
}

impl Drop for AnonymousPlace {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = pool.waiting.iter().position(|(id, _)| *id == self.id) {
            pool.waiting.remove(index);
        }
    }
}

/// The most connections that have not authenticated yet, of a gateway-wide cap.
fn anonymous_max(global: usize) -> usize {
    (global / 4).clamp(1, 1024)
}

impl ConnectionLimits {
    pub fn new(global: usize, per_agent: usize, requests_per_agent: usize) -> Self {
        ConnectionLimits {
            global: Arc::new(Semaphore::new(global.max(1))),
            global_max: global.max(1),
            peak: AtomicUsize::new(0),
            per_agent: Mutex::new(HashMap::new()),
            per_agent_max: per_agent.max(1),
            requests: Mutex::new(HashMap::new()),
            requests_max: requests_per_agent.max(1),
            anonymous: Arc::new(Mutex::new(Anonymous {
                max: anonymous_max(global.max(1)),
                next: 0,
                waiting: std::collections::VecDeque::new(),
            })),
        }
    }

    /// A place among the connections that have not authenticated yet; when they are
    /// full, the oldest of them is pushed out to make room (see [`AnonymousPlace`]).
    pub fn admit_anonymous(&self) -> AnonymousPlace {
        let mut pool = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        while pool.waiting.len() >= pool.max {
            if let Some((_, oldest)) = pool.waiting.pop_front() {
                oldest.cancel();
            }
        }
        let id = pool.next;
        pool.next += 1;
        let evicted = CancellationToken::new();
        pool.waiting.push_back((id, evicted.clone()));
        AnonymousPlace {
            id,
            pool: Arc::clone(&self.anonymous),
            evicted,
        }
    }

    pub fn per_agent_max(&self) -> usize {
        self.per_agent_max
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.global_max
            .saturating_sub(self.global.available_permits())
    }

    /// The most connections open at once since the last call (and starts counting
    /// again from those open now).
    pub fn take_peak(&self) -> usize {
        self.peak
            .swap(self.live(), Ordering::Relaxed)
            .max(self.live())
    }

    /// The gateway-wide cap's places, which upstream connections take too.
    pub fn places(&self) -> Arc<Semaphore> {
        Arc::clone(&self.global)
    }

    /// A place under the gateway-wide cap, if one is free.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        self.peak.fetch_max(self.live(), Ordering::Relaxed);
        Some(permit)
    }

    /// A place under `agent`'s cap, if one is free.
    pub fn admit_agent(&self, agent: &AgentName) -> Option<OwnedSemaphorePermit> {
        share_of(&self.per_agent, agent, self.per_agent_max)
            .try_acquire_owned()
            .ok()
    }

    /// `agent`'s share of requests in flight: a tunnel takes it once and draws a
    /// permit from it for each request (see [`InFlight::hold_place`]).
    pub fn requests_of(&self, agent: &AgentName) -> Arc<Semaphore> {
        share_of(&self.requests, agent, self.requests_max)
    }

    /// Forgets the shares of agents that no longer exist (and hold no connection or
    /// request).
    pub fn retain_agents(&self, keep: impl Fn(&AgentName) -> bool) {
        for (shares, max) in [
            (&self.per_agent, self.per_agent_max),
            (&self.requests, self.requests_max),
        ] {
            let mut map = shares.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|agent, semaphore| keep(agent) || semaphore.available_permits() < max);
        }
    }
}

/// `agent`'s semaphore in `shares`, created with `max` permits on first use.
fn share_of(
    shares: &Mutex<HashMap<AgentName, Arc<Semaphore>>>,
    agent: &AgentName,
    max: usize,
) -> Arc<Semaphore> {
    let mut map = shares.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(
        map.entry(agent.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(max))),
    )
}

/// The permits a connection holds, shared with the tunnel it opens.
#[derive(Default)]
pub struct ConnectionPermits {
    held: Mutex<Vec<(Option<AgentName>, OwnedSemaphorePermit)>>,
    /// Given back at the first request that authenticates.
    anonymous: Mutex<Option<AnonymousPlace>>,
}

impl ConnectionPermits {
    pub fn with_global(permit: OwnedSemaphorePermit) -> Arc<Self> {
        Arc::new(ConnectionPermits {
            held: Mutex::new(vec![(None, permit)]),
            anonymous: Mutex::new(None),
        })
    }

    /// Also holds a place among the connections not yet authenticated.
    pub fn with_anonymous(self: Arc<Self>, place: AnonymousPlace) -> Arc<Self> {
        *self.anonymous.lock().unwrap_or_else(|p| p.into_inner()) = Some(place);
        self
    }

    /// Cancelled if the connection was pushed out before it authenticated (never, for
    /// one that holds no such place).
    pub fn evicted(&self) -> CancellationToken {
        self.anonymous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(AnonymousPlace::evicted)
            .unwrap_or_default()
    }

    /// The connection authenticated (as an agent, or with the admin API's key): it
    /// leaves the places of connections not yet authenticated, so no flood of those
    /// pushes it out.
    pub fn authenticated(&self) {
        self.anonymous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    pub fn hold(&self, agent: AgentName, permit: OwnedSemaphorePermit) {
        self.lock().push((Some(agent), permit));
    }

    /// Whether this connection already counts against `agent`'s cap, or now does.
    pub fn ensure_agent(&self, limits: &ConnectionLimits, agent: &AgentName) -> bool {
        let mut held = self.lock();
        if held.iter().any(|(a, _)| a.as_ref() == Some(agent)) {
            return true;
        }
        match limits.admit_agent(agent) {
            Some(permit) => {
                held.push((Some(agent.clone()), permit));
                self.authenticated();
                true
            }
            None => false,
        }
    }

    /// The agent this connection counts against, once known.
    pub fn agent(&self) -> Option<AgentName> {
        self.lock().iter().find_map(|(agent, _)| agent.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Option<AgentName>, OwnedSemaphorePermit)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds since the first call (a monotonic clock an atomic can hold; tokio's, so
/// tests with a paused clock see time move).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a connection last moved a byte, how many requests it has in flight, and
/// whether its client has gone (closed or reset its side).
#[derive(Default)]
pub struct Activity {
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    used: AtomicBool,
    gone: AtomicBool,
    gone_notify: tokio::sync::Notify,
    /// The client's socket while its connection is open ([`Watched`] records it and
    /// forgets it before the socket closes), for [`Activity::gone`] to watch.
    socket: Mutex<Option<RawFd>>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        let activity = Activity::default();
        activity.last_ms.store(now_ms(), Ordering::Relaxed);
        Arc::new(activity)
    }

    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn mark_gone(&self) {
        if !self.gone.swap(true, Ordering::Relaxed) {
            self.gone_notify.notify_waiters();
        }
    }

    /// Resolves once the client has closed its side of the connection, reset it, or it
    /// failed. A client that only half-closes (shuts down writing and waits for the
    /// answer) looks the same; the gateway treats it as gone where that matters, for a
    /// held request.
    ///
    /// Seen either way: when hyper reads the end of input ([`Watched`]), or on the
    /// socket itself. hyper reads nothing from an HTTP/1.1 connection that allows
    /// half-close while its request is in flight, so a client that gave up on a held
    /// request (closed or reset) would otherwise go unnoticed until the approval's
    /// timeout, its slot taken and its card approvable.
    pub async fn gone(&self) {
        tokio::select! {
            _ = self.marked_gone() => {}
            _ = self.peer_left() => {}
        }
    }

    async fn marked_gone(&self) {
        loop {
            let notified = self.gone_notify.notified();
            if self.gone.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the client's socket shows that its peer shut down writing, closed
    /// or reset it, without reading from it (bytes of a next request stay for hyper).
    /// Watches a duplicate of the descriptor, registered on its own, so the connection's
    /// own registration is untouched; one descriptor more per held request, which the
    /// hold table bounds. Never resolves when there is no socket to watch.
    async fn peer_left(&self) {
        let duplicate = {
            let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: a recorded descriptor is open: `Watched` forgets it, under this
            // lock, before the socket it owns closes.
            socket.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned())
        };
        let watched = match duplicate {
            // SAFETY: the `AsyncFd` owns the duplicate, open until it is dropped.
            Some(Ok(fd)) => unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(std::io::Error::from),
            Some(Err(e)) => Err(e),
            None => return std::future::pending().await,
        };
        let watched = match watched {
            Ok(watched) => watched,
            Err(e) => {
                // Out of descriptors: the client is then seen leaving only if hyper reads.
                tracing::debug!(error = %e, "cannot watch a held request's client socket");
                return std::future::pending().await;
            }
        };
        loop {
            let Ok(mut ready) = watched.readable().await else {
                return std::future::pending().await;
            };
            if ready.ready().is_read_closed() || ready.ready().is_error() {
                return;
            }
            // Bytes waiting (a pipelined request), the client still there: wait for the
            // next change.
            ready.clear_ready();
        }
    }

    /// Counts a request in flight until the returned guard (and the response body it is
    /// moved into) is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.used.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight {
            activity: Arc::clone(self),
            place: None,
            revoked: None,
        }
    }

    /// Whether the connection has had no request in flight and moved no byte for `quiet`.
    pub fn is_quiet(&self, quiet: Duration) -> bool {
        let quiet_ms = now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
        self.in_flight.load(Ordering::Relaxed) == 0 && quiet_ms >= quiet.as_millis() as u64
    }

    /// Resolves when the connection has had no request in flight and moved no byte for
    /// `idle` (`first` before its first request).
    pub async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let limit = if self.used.load(Ordering::Relaxed) {
                idle
            } else {
                first
            };
            let limit_ms = limit.as_millis() as u64;
            let quiet_ms = now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && quiet_ms >= limit_ms {
                return;
            }
            let wait = if self.in_flight.load(Ordering::Relaxed) > 0 {
                limit
            } else {
                Duration::from_millis(limit_ms - quiet_ms.min(limit_ms))
            };
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }
}

/// The connection a request came on, handed to the pipeline: the hold phase watches
/// whether the client has gone, and a connection upgraded to a WebSocket keeps the
/// connection's permits and idle timeout for as long as it is relayed.
#[derive(Clone)]
pub struct ClientConnection {
    pub activity: Arc<Activity>,
    pub permits: Arc<ConnectionPermits>,
    /// A tunnel's own HTTP/1.1 connection to its target; `None` for requests on the
    /// TCP listener, which may each name another target.
    pub upstream: Option<Arc<crate::upstream::OwnedUpstream>>,
    /// The digest of the token a tunnel was opened with: its requests are refused once
    /// that token is no longer its agent's (rotated). `None` on an agent's socket, and
    /// for requests on the TCP listener, which each show their token.
    pub token: Option<Arc<str>>,
    /// Cancelled when the credential the request came with no longer holds (its token
    /// rotated, its agent deleted; see `revocation.rs`): the request, and a WebSocket
    /// it opens, end then.
    pub revoked: CancellationToken,
}

/// A request in flight on a connection, and its place under its agent's share of
/// requests once it has one.
pub struct InFlight {
    activity: Arc<Activity>,
    place: Option<OwnedSemaphorePermit>,
    /// Ends the response early (see [`InFlight::end_when`]).
    revoked: Option<CancellationToken>,
}

impl InFlight {
    /// Cuts the response's body when `revoked` is cancelled: a stream on the TCP
    /// listener, whose connection outlives the token each request shows.
    pub fn end_when(&mut self, revoked: CancellationToken) {
        self.revoked = Some(revoked);
    }

    /// Takes a place for this request from its agent's share (`requests`), held until
    /// the response has ended; false if the share is used up.
    pub fn hold_place(&mut self, requests: &Arc<Semaphore>) -> bool {
        self.place = Arc::clone(requests).try_acquire_owned().ok();
        self.place.is_some()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.activity.touch();
    }
}

/// A response body that keeps its request counted in flight until it ends, and is cut
/// if the credential it was sent under is revoked meanwhile.
pub struct Tracked {
    inner: ProxyBody,
    revoked: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _in_flight: InFlight,
}

impl Tracked {
    pub fn new(inner: ProxyBody, mut in_flight: InFlight) -> Self {
        Tracked {
            inner,
            revoked: in_flight
                .revoked
                .take()
                .map(|token| Box::pin(token.cancelled_owned())),
            _in_flight: in_flight,
        }
    }
}

/// Why a response was cut before its end.
#[derive(Debug, thiserror::Error)]
#[error("the credential this response was sent under was revoked (token rotated or agent deleted); the response was cut")]
pub struct Revoked;

impl Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(revoked) = &mut this.revoked {
            if revoked.as_mut().poll(cx).is_ready() {
                this.revoked = None;
                this.inner = ProxyBody::empty();
                tracing::debug!("cutting a response: its credential was revoked");
                return Poll::Ready(Some(Err(Revoked.into())));
            }
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's connection as the gateway accepts it: a byte stream with a socket
/// descriptor, which a held request watches for the client leaving.
pub trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn descriptor(&self) -> RawFd;
}

impl ClientSocket for tokio::net::TcpStream {
    fn descriptor(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl ClientSocket for tokio::net::UnixStream {
    fn descriptor(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl<L: ClientSocket, R: ClientSocket> ClientSocket for tokio_util::either::Either<L, R> {
    fn descriptor(&self) -> RawFd {
        match self {
            tokio_util::either::Either::Left(left) => left.descriptor(),
            tokio_util::either::Either::Right(right) => right.descriptor(),
        }
    }
}

/// An I/O stream that records when it last moved a byte, and lends its socket to
/// [`Activity::gone`] for as long as it is open.
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    /// The connection's places, kept by its lingering close (see [`linger`]).
    permits: Option<Arc<ConnectionPermits>>,
}

impl<I: ClientSocket> Watched<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        *activity.socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(io.descriptor());
        Watched {
            io,
            activity,
            permits: None,
        }
    }

    /// A socket that lingers after its connection ends still holds these places, so
    /// an agent's lingering sockets count against its own share.
    pub fn holding(mut self, permits: Arc<ConnectionPermits>) -> Self {
        self.permits = Some(permits);
        self
    }
}

impl<I> Drop for Watched<I> {
    /// Runs before the socket closes: its descriptor number may be reused from then on.
    /// The connection is over, so whatever still waits on it (an HTTP/2 stream's task
    /// may outlive it) sees its client gone.
    fn drop(&mut self) {
        let socket = self
            .activity
            .socket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(fd) = socket {
            let permits = self.permits.take();
            let agent = permits.as_ref().and_then(|permits| permits.agent());
            linger(fd, agent, permits);
        }
        self.activity.mark_gone();
    }
}

/// How long a lingering close goes on reading in all ([`linger`]).
const LINGER_FOR: Duration = Duration::from_secs(5);
/// A lingering close ends once the client has sent nothing for this long.
const LINGER_QUIET: Duration = Duration::from_secs(2);
/// Most bytes a lingering close reads away.
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Most sockets lingering at once, over every agent; beyond it a socket closes as soon
/// as what has arrived is read away.
const MAX_LINGERING: usize = 256;
/// Most sockets of one agent (or of connections not yet authenticated, together)
/// lingering at once, so one agent cannot take every place of [`MAX_LINGERING`].
const MAX_LINGERING_PER_AGENT: usize = 32;

/// A lingering socket's place among those of its agent (`None`: not authenticated).
struct LingerPlace(Option<AgentName>);

impl LingerPlace {
    fn lingering() -> std::sync::MutexGuard<'static, HashMap<Option<AgentName>, usize>> {
        static LINGERING: OnceLock<Mutex<HashMap<Option<AgentName>, usize>>> = OnceLock::new();
        LINGERING
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn take(agent: Option<AgentName>) -> Option<LingerPlace> {
        let mut lingering = Self::lingering();
        let count = lingering.entry(agent.clone()).or_default();
        if *count >= MAX_LINGERING_PER_AGENT {
            return None;
        }
        *count += 1;
        Some(LingerPlace(agent))
    }
}

impl Drop for LingerPlace {
    fn drop(&mut self) {
        let mut lingering = Self::lingering();
        if let Some(count) = lingering.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                lingering.remove(&self.0);
            }
        }
    }
}

/// What reading away a closing socket's unread bytes found.
#[derive(Debug, PartialEq)]
enum Drained {
    /// The client closed its side, the socket failed, or the bound was reached.
    Done,
    /// Nothing was waiting, and the client has not closed its side.
    Quiet,
    /// Bytes were waiting, and the client has not closed its side: it is sending.
    Sending,
}

/// Reads away (without waiting) what the client sent that nobody read, at most
/// `room` bytes.
fn drain_now(fd: RawFd, room: usize) -> (Drained, usize) {
    let mut scratch = [0u8; 16 * 1024];
    let mut drained = 0;
    while drained < room {
        // SAFETY: `fd` is open for as long as this runs (the caller owns it or a
        // duplicate of it); a non-blocking read into a local buffer.
        let read = unsafe {
            nix::libc::recv(
                fd,
                scratch.as_mut_ptr().cast(),
                scratch.len().min(room - drained),
                nix::libc::MSG_DONTWAIT,
            )
        };
        match read {
            0 => return (Drained::Done, drained),
            n if n > 0 => drained += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
                let now = if drained > 0 {
                    Drained::Sending
                } else {
                    Drained::Quiet
                };
                return (now, drained);
            }
            _ => return (Drained::Done, drained),
        }
    }
    (Drained::Done, drained)
}

/// A lingering close: the write side is shut first (so a FIN follows what was sent),
/// then what the client sent that nobody read (a request head past its bound, a body a
/// refusal did not need) is read away before the socket closes. Closed with unread
/// bytes, or meeting bytes after it closed, the socket would answer with a reset, and
/// a reset makes the client's system throw away the answer (a 431, a 503) before the
/// client reads it, and fail the client's next write: curl said "Send failure: Broken
/// pipe" instead of the refusal.
///
/// A client found still sending (bytes were waiting) is read on, in a task of its own,
/// until it closes its side, goes quiet for [`LINGER_QUIET`], or [`LINGER_FOR`] or
/// [`LINGER_BYTES`] is reached. The socket keeps its connection's places meanwhile
/// (`permits`), so an agent's lingering sockets count against its share; at most
/// [`MAX_LINGERING`] sockets linger at once, [`MAX_LINGERING_PER_AGENT`] of `agent`'s
/// (`None`: of connections not yet authenticated, together).
/// A client that closed its side first (the usual end of a connection) or sends nothing
/// (an idle connection closed) closes at once, as does any when no task can be started;
/// so does a client caught between two writes, a narrow window left open (lingering
/// after every close would keep an idle connection's place for [`LINGER_QUIET`] more).
///
/// Written by hand: hyper closes a connection by dropping its I/O, and neither hyper nor
/// tokio offers a lingering close.
pub(crate) fn linger(fd: RawFd, agent: Option<AgentName>, permits: Option<Arc<ConnectionPermits>>) {
    static LINGERING: Semaphore = Semaphore::const_new(MAX_LINGERING);
    // SAFETY: `fd` is this connection's socket, still open (its owner is being dropped
    // right after this).
    unsafe {
        nix::libc::shutdown(fd, nix::libc::SHUT_WR);
    }
    let (now, drained) = drain_now(fd, LINGER_BYTES);
    if now != Drained::Sending {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (Ok(place), Some(agent_place)) = (LINGERING.try_acquire(), LingerPlace::take(agent)) else {
        return;
    };
    // SAFETY: as above; the duplicate is a descriptor of its own, owned from here.
    let Ok(duplicate) = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() else {
        return;
    };
    runtime.spawn(async move {
        let _places = (place, agent_place, permits);
        // SAFETY: the `AsyncFd` owns the duplicate, open until it is dropped.
        let Ok(socket) =
            (unsafe { AsyncFd::register_with_interest(duplicate, Interest::READABLE) })
        else {
            return;
        };
        let deadline = Instant::now() + LINGER_FOR;
        let mut room = LINGER_BYTES - drained;
        while room > 0 {
            let Ok(Ok(mut ready)) = tokio::time::timeout_at(
                deadline.min(Instant::now() + LINGER_QUIET),
                socket.readable(),
            )
            .await
            else {
                return;
            };
            let (now, read) = drain_now(socket.as_raw_fd(), room);
            room -= read;
            if now == Drained::Done {
                return;
            }
            ready.clear_ready();
        }
    });
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let room = buf.remaining();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.activity.touch(),
            Poll::Ready(Ok(())) if room > 0 => this.activity.mark_gone(),
            Poll::Ready(Err(_)) => this.activity.mark_gone(),
            _ => {}
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_most_open_at_once_since_it_was_last_taken() {
        let limits = ConnectionLimits::new(10, 2, 4);
        let mut open: Vec<_> = (0..5).map(|_| limits.admit().unwrap()).collect();
        open.truncate(1);
        assert_eq!(limits.live(), 1);
        assert_eq!(limits.take_peak(), 5);
        // Counting starts again from what is open now.
        assert_eq!(limits.take_peak(), 1);
        let _more: Vec<_> = (0..3).map(|_| limits.admit().unwrap()).collect();
        assert_eq!(limits.take_peak(), 4);
    }

    #[test]
    fn an_agent_share_is_separate_from_others_and_returns_when_released() {
        let limits = ConnectionLimits::new(10, 2, 4);
        let a: AgentName = "a".parse().unwrap();
        let b: AgentName = "b".parse().unwrap();
        let first = limits.admit_agent(&a).unwrap();
        let _second = limits.admit_agent(&a).unwrap();
        assert!(limits.admit_agent(&a).is_none());
        assert!(limits.admit_agent(&b).is_some());
        drop(first);
        assert!(limits.admit_agent(&a).is_some());
    }

    #[test]
    fn a_connection_counts_once_against_its_agent() {
        let limits = ConnectionLimits::new(10, 1, 4);
        let a: AgentName = "a".parse().unwrap();
        let permits = ConnectionPermits::with_global(limits.admit().unwrap());
        assert!(permits.ensure_agent(&limits, &a));
        assert!(
            permits.ensure_agent(&limits, &a),
            "the same connection again"
        );
        let other = ConnectionPermits::default();
        assert!(!other.ensure_agent(&limits, &a), "a second connection of a");
    }

    /// A held request sees its client leave without anything reading the connection
    /// (hyper does not, mid-request on a connection that may be half-closed): not while
    /// the client is there, even with bytes of a next request waiting; at once when it
    /// shuts down writing, closes or resets.
    #[tokio::test]
    async fn gone_is_seen_on_the_socket_without_reading_it() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let soon = Duration::from_secs(3);
        for case in ["half-close", "close", "reset"] {
            let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let activity = Activity::new();
            let _io = Watched::new(accepted, activity.clone());
            client.write_all(b"GET /next HTTP/1.1\r\n").await.unwrap();
            assert!(
                tokio::time::timeout(Duration::from_millis(300), activity.gone())
                    .await
                    .is_err(),
                "{case}: gone while the client is there"
            );
            match case {
                "half-close" => client.shutdown().await.unwrap(),
                "close" => drop(client),
                _ => {
                    client.set_zero_linger().unwrap();
                    drop(client);
                }
            }
            assert!(
                tokio::time::timeout(soon, activity.gone()).await.is_ok(),
                "{case}: not seen"
            );
        }
        // A connection that ended is gone for whatever still waits on it.
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let activity = Activity::new();
        drop(Watched::new(accepted, activity.clone()));
        assert!(tokio::time::timeout(soon, activity.gone()).await.is_ok());
    }

    /// A socket closed while its client is still sending is read on, so the client's
    /// writes do not meet a reset, and it keeps its connection's place until the client
    /// closes its side; a client that never stops sending is cut off all the same once
    /// the lingering time is over.
    #[tokio::test]
    async fn a_closing_socket_lingers_while_its_client_sends_and_no_longer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ConnectionLimits::new(10, 2, 4);
        let closing = |client_first: &[u8]| {
            let permits = ConnectionPermits::with_global(limits.admit().unwrap());
            let first = client_first.to_vec();
            let listener = &listener;
            async move {
                let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
                let (accepted, _) = listener.accept().await.unwrap();
                let io = Watched::new(accepted, Activity::new()).holding(permits);
                client.write_all(&first).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(io);
                let mut end = [0u8; 16];
                assert_eq!(client.read(&mut end).await.unwrap(), 0, "no FIN");
                client
            }
        };

        let mut client = closing(&[b'a'; 4096]).await;
        for piece in 0..10 {
            client
                .write_all(&[b'a'; 4096])
                .await
                .unwrap_or_else(|e| panic!("piece {piece} after the close: {e}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(limits.live(), 1, "a lingering socket keeps its place");
        client.shutdown().await.unwrap();
        let released = async {
            while limits.live() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), released)
            .await
            .expect("the place is given back once the client closes its side");

        let mut client = closing(&[b'a'; 4096]).await;
        let sending = async {
            loop {
                if client.write_all(&[b'a'; 1024]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(LINGER_FOR + Duration::from_secs(5), sending)
            .await
            .expect("a client that never stops is cut off");
        assert_eq!(limits.live(), 0);
    }

    /// One agent's lingering sockets have a share of their own: past it its sockets
    /// close at once, while another agent's still linger.
    #[test]
    fn one_agent_cannot_take_every_lingering_place() {
        let greedy: AgentName = "linger-greedy".parse().unwrap();
        let other: AgentName = "linger-other".parse().unwrap();
        let mut held: Vec<LingerPlace> = (0..MAX_LINGERING_PER_AGENT)
            .map(|_| LingerPlace::take(Some(greedy.clone())).expect("within the share"))
            .collect();
        assert!(LingerPlace::take(Some(greedy.clone())).is_none());
        assert!(LingerPlace::take(Some(other.clone())).is_some());
        held.pop();
        assert!(
            LingerPlace::take(Some(greedy)).is_some(),
            "given back on drop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_in_flight() {
        let activity = Activity::new();
        let guard = activity.start_request();
        let idle = activity.idle(Duration::from_secs(1), Duration::from_secs(5));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), &mut idle)
                .await
                .is_err(),
            "idle while a request is in flight"
        );
        drop(guard);
        assert!(tokio::time::timeout(Duration::from_secs(30), idle)
            .await
            .is_ok());
    }
}
