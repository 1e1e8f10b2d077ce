//! The client side of the vault: connections to upstreams through the guarded resolver,
//! trusting the system roots plus `--upstream-ca`. Redirects are never followed (the
//! agent sees the 3xx).
//!
//! - An HTTP/1.1 tunnel owns one HTTP/1.1 connection to its target ([`OwnedUpstream`])
//!   from its first request to its end: its requests come one at a time, so a pool
//!   would only add a checkout and a spawned return per request, and an upstream
//!   connection owned by a tunnel is bounded by the tunnel's place under the connection
//!   caps. When the tunnel ends, or has been quiet for a few seconds, its connection
//!   waits a while ([`IdleUpstreams`]) for the same agent's next tunnel to the same
//!   target, so a new tunnel costs no new upstream handshake and an idle tunnel holds
//!   no upstream connection; the idle ones are few, per agent and in all, and expire.
//! - HTTP/2 agents, and absolute-form requests on the TCP listener, use pooled clients,
//!   one pool per agent: an agent's requests never wait for streams or connections that
//!   another agent's requests fill.
//! - WebSocket handshakes use an HTTP/1.1-only client without a pool, because an upgrade
//!   needs a connection of its own.
//!
//! Every upstream connection holds a place under the gateway's connection cap, and one
//! of its agent's share of upstream connections (as many as its share of client
//! connections), whatever its kind and whether open or idle, until it closes.
//!
//! The tunnels' connections are kept by hand rather than in hyper-util's pool: that
//! pool checks a connection out and back in (a spawned task) on every request, and
//! shares connections between agents; these are handed over once per quiet spell, and
//! never from one agent to another.
use crate::body::ForwardBody;
use crate::net_guard::{GuardedResolver, NetGuard};
use crate::{VaultConfig, VaultError};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use palisade_policy::AgentName;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a connection a tunnel left behind waits for the next tunnel (less if
/// the client idle timeout is less: it waits no longer than an idle tunnel would).
const IDLE_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Most connections left behind kept for one agent.
const IDLE_UPSTREAMS_PER_AGENT: usize = 32;
/// Most connections left behind kept for all agents together.
const IDLE_UPSTREAMS: usize = 1024;
/// How long a tunnel waits for the place of an idle connection it closed to make room.
const FREED_PLACE_WAIT: Duration = Duration::from_secs(1);

/// How much of its answers an HTTP/2 upstream may send before the gateway has passed
/// them on: its flow-control window, per stream and per connection. An upstream fills
/// it whether or not the agent reads, and the gateway keeps what arrived, so an agent
/// that reads nothing of large downloads holds this much per upstream connection (its
/// share of connections times this at most; hyper's default, 5 MiB per connection,
/// let one agent hold 1.25 GiB). 1 MiB still passes a single download at 20 MB/s over
/// a 50 ms path.
const UPSTREAM_H2_WINDOW: u32 = 1024 * 1024;

/// Most bytes of one HTTP/2 stream's data queued in the gateway beyond what the peer's
/// window lets it send (hyper's defaults: 1 MiB towards upstreams, 400 KB towards
/// agents, per stream: ~100 MiB for one agent's 256 requests in flight that its peer
/// reads nothing of). The window, not this queue, is what sets a stream's speed.
pub(crate) const H2_SEND_BUFFER: usize = 64 * 1024;

/// Largest response head an HTTP/1.1 upstream may send (hyper reads up to about 400 KB
/// by default, and an upstream may drip it for as long as the response timeout, so one
/// agent's share of upstream connections could hold 100 MB of heads). nginx as a proxy
/// takes 4-8 KiB; an HTTP/2 upstream's header list is held to 16 KiB.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// An error on the way upstream; its source chain names the cause (a refused local
/// address among them, see [`crate::net_guard::find_local_refused`]).
pub type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

pub struct UpstreamClient {
    /// Each agent's pooled clients, made at its first pooled request: an agent's
    /// requests never share a connection (and its streams) with another agent's.
    agents: Mutex<HashMap<AgentName, Arc<AgentClients>>>,
    pooled_connector: Counted,
    /// HTTP/1.1 only: for agents' pooled HTTP/1.1 clients, the connections tunnels
    /// own, and WebSocket handshakes.
    http1_connector: Counted,
    /// Most upstream connections of one agent, of every kind, open or idle.
    share_per_agent: usize,
    /// Connections tunnels left behind, for the next tunnel of the same agent.
    pub idle: Arc<IdleUpstreams>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl UpstreamClient {
    /// Every upstream connection holds one of `places` (the gateway's connection cap)
    /// while it is open.
    pub fn new(
        config: &VaultConfig,
        guard: Arc<NetGuard>,
        places: Arc<Semaphore>,
    ) -> Result<Self, VaultError> {
        let http = |guard: Arc<NetGuard>| {
            let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(guard));
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(config.connect_timeout));
            http.set_keepalive(Some(Duration::from_secs(60)));
            http
        };
        let tls = crate::tls::upstream_client_config(&config.upstream_ca, &[])?;
        let pooled_connector = Counted {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http(guard.clone())),
            places: places.clone(),
            agent_places: None,
        };
        let http1_connector = Counted {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http(guard.clone())),
            places: places.clone(),
            agent_places: None,
        };
        Ok(UpstreamClient {
            agents: Mutex::default(),
            pooled_connector,
            http1_connector,
            share_per_agent: config.max_connections_per_agent.max(1),
            idle: Arc::new(IdleUpstreams::new(
                config.client_idle_timeout.min(IDLE_UPSTREAM_TIMEOUT),
            )),
            header_timeout: config.upstream_timeout,
            idle_timeout: config.idle_timeout,
        })
    }
}

/// One agent's clients, and its share of upstream connections that all of them, and its
/// tunnels' own connections, draw on.
pub struct AgentClients {
    /// Offers h2 and HTTP/1.1; used when the agent itself spoke HTTP/2.
    pub pooled: Client<Counted, ForwardBody>,
    /// HTTP/1.1 only; used for absolute-form requests on the TCP listener (an HTTP/1.1
    /// agent in a tunnel has a connection of its own).
    pub http1: Client<Counted, ForwardBody>,
    /// For WebSocket handshakes: HTTP/1.1, no pool.
    pub upgrades: Client<Counted, ForwardBody>,
    share: Arc<Semaphore>,
}

/// A connector whose every connection holds a place under the gateway's connection
/// cap and (when it connects for an agent) one of the agent's share of upstream
/// connections until it closes; with no place free it fails with [`NoRoomUpstream`]
/// before connecting.
#[derive(Clone)]
pub struct Counted {
    inner: Connector,
    places: Arc<Semaphore>,
    agent_places: Option<Arc<Semaphore>>,
}

impl tower_service::Service<http::Uri> for Counted {
    type Response = CountedStream;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<CountedStream, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let agent_place = match &self.agent_places {
            Some(places) => match Arc::clone(places).try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => return Box::pin(async { Err(NoRoomUpstream.into()) }),
            },
            None => None,
        };
        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
            return Box::pin(async { Err(NoRoomUpstream.into()) });
        };
        // The resolver checks a local address with the port it is for.
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let connecting = crate::net_guard::CONNECTING_PORT.scope(port, self.inner.call(uri));
        Box::pin(async move {
            let stream = connecting.await?;
            Ok(CountedStream {
                stream,
                _places: (place, agent_place),
            })
        })
    }
}

/// An upstream connection and its place under the connection cap.
pub struct CountedStream {
    stream: Stream,
    _places: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

impl hyper::rt::Read for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
}

impl Connection for CountedStream {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}

/// Whether `error` (or an error it was caused by) is [`NoRoomUpstream`].
pub fn is_no_room(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::find_cause::<NoRoomUpstream>(error).is_some()
}

impl UpstreamClient {
    /// `agent`'s clients (shared: one reference count per request, not a copy of each
    /// client).
    pub fn clients_of(&self, agent: &AgentName) -> Arc<AgentClients> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(clients) = agents.get(agent) {
            return Arc::clone(clients);
        }
        let pool = || {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(IDLE_UPSTREAM_TIMEOUT)
                .pool_max_idle_per_host(IDLE_UPSTREAMS_PER_AGENT)
                .http1_max_buf_size(MAX_RESPONSE_HEAD)
                .http2_initial_stream_window_size(UPSTREAM_H2_WINDOW)
                .http2_initial_connection_window_size(UPSTREAM_H2_WINDOW)
                .http2_max_send_buf_size(H2_SEND_BUFFER);
            builder
        };
        // One share for all: an agent's upstream connections, open or idle, to every
        // host together.
        let share = Arc::new(Semaphore::new(self.share_per_agent));
        let with_share = |connector: &Counted| Counted {
            agent_places: Some(Arc::clone(&share)),
            ..connector.clone()
        };
        let clients = Arc::new(AgentClients {
            pooled: pool().build(with_share(&self.pooled_connector)),
            http1: pool().build(with_share(&self.http1_connector)),
            upgrades: Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .http1_max_buf_size(MAX_RESPONSE_HEAD)
                .pool_max_idle_per_host(0)
                .build(with_share(&self.http1_connector)),
            share: Arc::clone(&share),
        });
        agents.insert(agent.clone(), Arc::clone(&clients));
        clients
    }

    /// Forgets the pooled clients (and so closes the idle connections) of agents that
    /// no longer exist.
    pub fn retain_agents(&self, keep: impl Fn(&AgentName) -> bool) {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|agent, _| keep(agent));
        self.idle.retain_agents(keep);
    }

    /// The connection slot for a new tunnel of `agent`.
    pub fn owned_by(&self, agent: &AgentName) -> OwnedUpstream {
        OwnedUpstream {
            agent: agent.clone(),
            share: Arc::clone(&self.clients_of(agent).share),
            idle: Arc::clone(&self.idle),
            held: Mutex::new(None),
            released: AtomicBool::new(true),
            kept: Notify::new(),
        }
    }

    /// Sends `request` (its URI absolute) over the connection `owned` keeps for that
    /// target: the one it holds, else one its agent's last tunnel left behind, else a
    /// new one. A request that a kept connection could not take before a byte was
    /// written (the upstream closed it while idle) is sent again over a new connection.
    pub async fn send_owned(
        &self,
        owned: &OwnedUpstream,
        request: http::Request<ForwardBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let (mut parts, body) = request.into_parts();
        let connect_to = std::mem::take(&mut parts.uri);
        let key = Origin::of(&connect_to);
        // Over a connection of its own, a request names only its path (origin form).
        parts.uri = connect_to
            .path_and_query()
            .map(|p| http::Uri::from(p.clone()))
            .unwrap_or_else(|| http::Uri::from_static("/"));
        let mut request = http::Request::from_parts(parts, body);
        let mut kept = owned
            .take(&key)
            .or_else(|| self.idle.take(&owned.agent, &key));
        loop {
            let reused = kept.is_some();
            let mut sender = match kept.take() {
                Some(sender) => sender,
                None => self.connect(owned, &connect_to).await?,
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err("the upstream closed the connection at once".into());
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    owned.keep(key, sender);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    /// A new connection for `owned`'s tunnel, under its agent's share. With the share
    /// used up, the agent's oldest idle connection (if any) is closed to make room.
    async fn connect(
        &self,
        owned: &OwnedUpstream,
        uri: &http::Uri,
    ) -> Result<Sender, UpstreamError> {
        let share = &owned.share;
        if share.available_permits() == 0 && self.idle.close_oldest(&owned.agent) {
            // Its place comes back once its connection's task has seen the sender go.
            let _ = tokio::time::timeout(FREED_PLACE_WAIT, share.acquire()).await;
        }
        let mut connector = Counted {
            agent_places: Some(Arc::clone(share)),
            ..self.http1_connector.clone()
        };
        let io = tower_service::Service::call(&mut connector, uri.clone()).await?;
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// No place under the gateway's connection cap for another upstream connection.
#[derive(Debug)]
pub struct NoRoomUpstream;

impl std::fmt::Display for NoRoomUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway has no room for another upstream connection")
    }
}

impl std::error::Error for NoRoomUpstream {}

/// The scheme and authority a connection was opened to.
#[derive(Clone, PartialEq, Eq)]
struct Origin(Option<http::uri::Scheme>, Option<http::uri::Authority>);

impl Origin {
    fn of(uri: &http::Uri) -> Origin {
        Origin(uri.scheme().cloned(), uri.authority().cloned())
    }
}

type Sender = http1::SendRequest<ForwardBody>;

/// The HTTP/1.1 connection a tunnel keeps between its requests. When the tunnel ends
/// (this is dropped) a connection with no response still streaming is left for the
/// agent's next tunnel; any other closes once its response has ended.
pub struct OwnedUpstream {
    agent: AgentName,
    /// The agent's share of upstream connections.
    share: Arc<Semaphore>,
    idle: Arc<IdleUpstreams>,
    held: Mutex<Option<(Origin, Sender)>>,
    /// Whether the connection was released since it was last kept, and a signal for
    /// the first keep after that (so a quiet tunnel's watcher sleeps until then).
    released: AtomicBool,
    kept: Notify,
}

impl OwnedUpstream {
    /// The connection held for `key`; one held for another origin is left idle.
    fn take(&self, key: &Origin) -> Option<Sender> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        match held {
            Some((origin, sender)) if origin == *key => Some(sender),
            Some((origin, sender)) => {
                self.idle.give(&self.agent, origin, sender);
                None
            }
            None => None,
        }
        .filter(|sender| !sender.is_closed())
    }

    fn keep(&self, key: Origin, sender: Sender) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, sender));
        if self.released.swap(false, Ordering::Relaxed) {
            self.kept.notify_one();
        }
    }

    /// Resolves once a connection is kept after the last release (or the first).
    pub async fn kept(&self) {
        self.kept.notified().await;
    }

    /// Leaves the connection held (if any) with the agent's idle ones, where it waits
    /// for this or another of the agent's tunnels, or is closed.
    pub fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((origin, sender)) = held {
            self.idle.give(&self.agent, origin, sender);
        }
    }
}

impl Drop for OwnedUpstream {
    fn drop(&mut self) {
        self.release();
    }
}

/// Connections ended tunnels left behind, by agent: at most
/// [`IDLE_UPSTREAMS_PER_AGENT`] for one agent and [`IDLE_UPSTREAMS`] in all, each for
/// [`IDLE_UPSTREAM_TIMEOUT`] at most. A connection is only ever handed to a tunnel of
/// the agent whose tunnel left it.
pub struct IdleUpstreams {
    inner: Mutex<IdleInner>,
    timeout: Duration,
}

#[derive(Default)]
struct IdleInner {
    by_agent: HashMap<AgentName, Vec<IdleConnection>>,
    count: usize,
}

struct IdleConnection {
    origin: Origin,
    since: Instant,
    sender: Sender,
}

impl IdleConnection {
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < timeout
    }
}

impl IdleUpstreams {
    fn new(timeout: Duration) -> IdleUpstreams {
        IdleUpstreams {
            inner: Mutex::default(),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest usable connection `agent` left for `origin`.
    fn take(&self, agent: &AgentName, origin: &Origin) -> Option<Sender> {
        let now = Instant::now();
        let timeout = self.timeout;
        let mut inner = self.lock();
        let list = inner.by_agent.get_mut(agent)?;
        let before = list.len();
        list.retain(|idle| idle.usable(now, timeout));
        let found = list
            .iter()
            .rposition(|idle| idle.origin == *origin)
            .map(|at| list.remove(at).sender);
        let removed = before - list.len();
        if list.is_empty() {
            inner.by_agent.remove(agent);
        }
        inner.count -= removed;
        found
    }

    /// Keeps `sender` for `agent`'s next tunnel to `origin`, if it is ready for a
    /// request and there is room (the agent's oldest makes room for it).
    fn give(&self, agent: &AgentName, origin: Origin, sender: Sender) {
        if !sender.is_ready() {
            return;
        }
        let now = Instant::now();
        let timeout = self.timeout;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let list = inner.by_agent.entry(agent.clone()).or_default();
        let before = list.len();
        list.retain(|idle| idle.usable(now, timeout));
        if list.len() >= IDLE_UPSTREAMS_PER_AGENT {
            list.remove(0);
        }
        inner.count -= before - list.len();
        if inner.count < IDLE_UPSTREAMS {
            list.push(IdleConnection {
                origin,
                since: now,
                sender,
            });
            inner.count += 1;
        }
        if list.is_empty() {
            inner.by_agent.remove(agent);
        }
    }

    /// Closes `agent`'s oldest idle connection; whether there was one.
    fn close_oldest(&self, agent: &AgentName) -> bool {
        let mut inner = self.lock();
        let Some(list) = inner.by_agent.get_mut(agent) else {
            return false;
        };
        list.remove(0);
        if list.is_empty() {
            inner.by_agent.remove(agent);
        }
        inner.count -= 1;
        true
    }

    fn retain_agents(&self, keep: impl Fn(&AgentName) -> bool) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.by_agent.retain(|agent, list| {
            let kept = keep(agent);
            if !kept {
                inner.count -= list.len();
            }
            kept
        });
    }

    /// Closes the connections that have waited too long or that their upstream closed.
    pub fn close_expired(&self) {
        let now = Instant::now();
        let timeout = self.timeout;
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.by_agent.retain(|_, list| {
            let before = list.len();
            list.retain(|idle| idle.usable(now, timeout));
            inner.count -= before - list.len();
            !list.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::HostPattern;
    use tower_service::Service;

    fn counted(places: &Arc<Semaphore>) -> Counted {
        let guard = NetGuard::new(vec![HostPattern::parse("*").unwrap()]);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(Arc::new(guard)));
        http.enforce_http(false);
        Counted {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::upstream_client_config(&[], &[]).unwrap())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            places: Arc::clone(places),
            agent_places: None,
        }
    }

    #[tokio::test]
    async fn every_upstream_connection_holds_a_place_until_it_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: http::Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let places = Arc::new(Semaphore::new(1));
        let mut connector = counted(&places);
        let first = connector.call(uri.clone()).await.expect("a place is free");
        assert_eq!(places.available_permits(), 0);
        let refused = connector
            .call(uri.clone())
            .await
            .err()
            .expect("no place left");
        assert!(is_no_room(&*refused), "{refused}");
        drop(first);
        assert_eq!(places.available_permits(), 1);
        let _again = connector
            .call(uri.clone())
            .await
            .expect("the place was given back");

        // An agent's share is counted besides the gateway's cap.
        let places = Arc::new(Semaphore::new(4));
        let share = Arc::new(Semaphore::new(1));
        let mut agent = Counted {
            agent_places: Some(Arc::clone(&share)),
            ..counted(&places)
        };
        let held = agent.call(uri.clone()).await.expect("the share has room");
        let refused = agent
            .call(uri.clone())
            .await
            .err()
            .expect("the share is used up");
        assert!(is_no_room(&*refused), "{refused}");
        assert_eq!(places.available_permits(), 3);
        drop(held);
        assert_eq!(
            (places.available_permits(), share.available_permits()),
            (4, 1)
        );
    }
}
