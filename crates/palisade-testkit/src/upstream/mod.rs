//! A recording HTTPS server that stands in for the internet in tests.
//!
//! The vault's promises are about what reaches an upstream: which key header, no
//! proxy credential, nothing at all while an approval is held. So the upstream
//! records every request it receives ([`Upstream::requests`]) and answers with an
//! echo of what it saw. It speaks HTTP/1.1 and h2 (ALPN) over TLS signed by a
//! [`TestCa`], optionally plain HTTP on a second port, and serves the special
//! endpoints listed in [`routes`].
//!
//! The server runs on its own thread with its own current-thread tokio runtime, so
//! synchronous and asynchronous tests use it alike; dropping the [`Upstream`] stops
//! the accept loops, drops every connection with the runtime and joins the thread.

mod llm;
mod routes;

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{HeaderMap, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::TestCa;
use crate::KitError;

pub use llm::ScriptedTurn;

/// Most bytes of a request body kept in [`RecordedRequest::body`].
pub const RECORDED_BODY_MAX: usize = 1024 * 1024;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent (`/v1/messages?beta=true`).
    pub path_and_query: String,
    /// Header names lowercase, in arrival order, values lossily decoded.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// The body as received, up to its first [`RECORDED_BODY_MAX`] bytes.
    pub body: bytes::Bytes,
    /// `HTTP/1.1` or `HTTP/2`.
    pub version: String,
    /// Whether it arrived over TLS (false on the plain HTTP port).
    pub tls: bool,
    /// Which of the upstream's connections it came on, numbered from 1 in the order
    /// they were accepted.
    pub connection: u64,
    /// When its head arrived (benchmarks measure up to here).
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query)
    }

    /// The recorded body parsed as JSON (for model requests: model, messages, tools).
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// The model API key the request carried: `x-api-key`, else the token of an
    /// `Authorization: Bearer` header (the current Anthropic SDK sends the latter).
    pub fn api_key(&self) -> Option<&str> {
        self.header("x-api-key").or_else(|| {
            self.header("authorization").and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
        })
    }

    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The models `/v1/models` lists until a test says otherwise: `(id, created_at)`.
pub const DEFAULT_MODELS: [(&str, &str); 5] = [
    ("claude-opus-4-1", "2025-08-05T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5", "2025-10-15T00:00:00Z"),
    ("claude-sonnet-4-6", "2026-02-17T00:00:00Z"),
    ("claude-opus-4-6", "2026-02-04T00:00:00Z"),
];

/// State shared between the server thread and the test.
pub(crate) struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    arrived: Condvar,
    anthropic_script: Mutex<VecDeque<ScriptedTurn>>,
    openai_script: Mutex<VecDeque<ScriptedTurn>>,
    /// What `/v1/models` lists: `(id, created_at)`.
    models: Mutex<Vec<(String, String)>>,
    /// Models the model endpoints answer "not found" for.
    retired: Mutex<Vec<String>>,
    /// The only key `/v1/models` takes, when set ([`Upstream::accept_only_key`]).
    valid_key: Mutex<Option<String>>,
    /// Connections accepted so far, and those still open.
    accepted: AtomicU64,
    open: AtomicUsize,
    /// [`UpstreamBuilder::max_concurrent_streams`].
    max_streams: Option<u32>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            requests: Mutex::default(),
            arrived: Condvar::new(),
            anthropic_script: Mutex::default(),
            openai_script: Mutex::default(),
            models: Mutex::new(
                DEFAULT_MODELS
                    .iter()
                    .map(|(id, at)| (id.to_string(), at.to_string()))
                    .collect(),
            ),
            retired: Mutex::default(),
            valid_key: Mutex::default(),
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            max_streams: None,
        }
    }
}

impl Shared {
    /// Whether only one key is accepted and `request` carries another.
    pub(crate) fn wrong_key(&self, request: &http::Request<()>) -> bool {
        let Some(valid) = lock(&self.valid_key).clone() else {
            return false;
        };
        let headers = request.headers();
        let given = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            });
        given.is_some_and(|given| given != valid)
    }

    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
        self.arrived.notify_all();
    }

    pub(crate) fn next_anthropic_turn(&self) -> Option<ScriptedTurn> {
        lock(&self.anthropic_script).pop_front()
    }

    pub(crate) fn next_openai_turn(&self) -> Option<ScriptedTurn> {
        lock(&self.openai_script).pop_front()
    }

    pub(crate) fn models(&self) -> Vec<(String, String)> {
        let retired = lock(&self.retired).clone();
        lock(&self.models)
            .iter()
            .filter(|(id, _)| !retired.contains(id))
            .cloned()
            .collect()
    }

    pub(crate) fn is_retired(&self, model: &str) -> bool {
        lock(&self.retired).iter().any(|m| m == model)
    }
}

/// A panic in a handler must not turn every later assertion into a poison error.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Options for an [`Upstream`].
#[derive(Debug, Default)]
pub struct UpstreamBuilder {
    extra_names: Vec<String>,
    plain_http: bool,
    ipv6: bool,
    http1_only: bool,
    max_streams: Option<u32>,
}

impl UpstreamBuilder {
    /// Also make the certificate valid for `name` (e.g. `api.anthropic.test`).
    pub fn name(mut self, name: &str) -> UpstreamBuilder {
        self.extra_names.push(name.to_string());
        self
    }

    /// Also serve plain HTTP on a second port ([`Upstream::http_addr`]).
    pub fn plain_http(mut self) -> UpstreamBuilder {
        self.plain_http = true;
        self
    }

    /// Offer only HTTP/1.1 over TLS (no h2 in ALPN), like many servers: a proxy then
    /// needs one connection per request in flight.
    pub fn http1_only(mut self) -> UpstreamBuilder {
        self.http1_only = true;
        self
    }

    /// Allow at most `streams` concurrent HTTP/2 streams on each connection (servers
    /// commonly allow 100 to 250).
    pub fn max_concurrent_streams(mut self, streams: u32) -> UpstreamBuilder {
        self.max_streams = Some(streams);
        self
    }

    /// Bind `[::1]` instead of `127.0.0.1`.
    pub fn ipv6(mut self) -> UpstreamBuilder {
        self.ipv6 = true;
        self
    }

    /// Binds the listeners and starts the server thread.
    pub fn start(self, ca: &TestCa) -> Result<Upstream, KitError> {
        let names: Vec<&str> = self.extra_names.iter().map(String::as_str).collect();
        let identity = ca.issue_default(&names)?;
        let mut tls = rustls::ServerConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| KitError::Tls(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .map_err(|error| KitError::Tls(error.to_string()))?;
        tls.alpn_protocols = if self.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let bind_addr: SocketAddr = if self.ipv6 {
            (Ipv6Addr::LOCALHOST, 0).into()
        } else {
            ([127, 0, 0, 1], 0).into()
        };
        let tls_listener = bind(bind_addr)?;
        let addr = tls_listener.local_addr()?;
        let plain_listener = if self.plain_http {
            Some(bind(bind_addr)?)
        } else {
            None
        };
        let http_addr = match &plain_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            max_streams: self.max_streams,
            ..Shared::default()
        });
        let (stop_sender, stop) = watch::channel(false);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-upstream-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut loops = Vec::new();
                    loops.push(tokio::spawn(accept_loop(
                        tls_listener,
                        Some(acceptor),
                        thread_shared.clone(),
                        stop.clone(),
                    )));
                    if let Some(listener) = plain_listener {
                        loops.push(tokio::spawn(accept_loop(
                            listener,
                            None,
                            thread_shared,
                            stop.clone(),
                        )));
                    }
                    for accept in loops {
                        let _ = accept.await;
                    }
                });
                // Dropping the runtime cancels every connection task and closes
                // its socket, so nothing outlives the Upstream.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Upstream {
            addr,
            http_addr,
            shared,
            stop: Some(stop_sender),
            thread: Some(thread),
        })
    }
}

fn bind(addr: SocketAddr) -> Result<StdTcpListener, KitError> {
    let listener = StdTcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn accept_loop(
    listener: StdTcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("[palisade-testkit] upstream cannot listen: {error}");
            return;
        }
    };
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let connection = shared.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let open = OpenConnection::count(&shared);
        tokio::spawn(async move {
            let _open = open;
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    if let Ok(Ok(stream)) = handshake {
                        serve_connection(TokioIo::new(stream), shared, true, connection).await;
                    }
                }
                None => serve_connection(TokioIo::new(stream), shared, false, connection).await,
            }
        });
    }
}

/// Counts a connection as open until dropped.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn count(shared: &Arc<Shared>) -> OpenConnection {
        shared.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(shared))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, tls: bool, connection: u64)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(shared.max_streams);
    let service =
        service_fn(move |request| routes::handle(shared.clone(), tls, connection, request));
    // Errors here are clients hanging up or `/close`; nothing to report.
    let _ = builder.serve_connection_with_upgrades(io, service).await;
}

/// A running test upstream. Stops on drop.
pub struct Upstream {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Options: extra certificate names, a plain HTTP port, `[::1]`.
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// An HTTPS upstream on 127.0.0.1 with a certificate from `ca`.
    pub fn start(ca: &TestCa) -> Result<Upstream, KitError> {
        UpstreamBuilder::default().start(ca)
    }

    /// The TLS listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The plain HTTP listener's address, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// `https://localhost:PORT` (or `https://[::1]:PORT`), no trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url_for("localhost")
    }

    /// `https://HOST:PORT` for a name the certificate covers, such as
    /// `api.anthropic.test` (the proxy or a resolver must map it to loopback).
    pub fn base_url_for(&self, host: &str) -> String {
        if self.addr.is_ipv6() && host == "localhost" {
            format!("https://[::1]:{}", self.addr.port())
        } else {
            format!("https://{host}:{}", self.addr.port())
        }
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// `http://127.0.0.1:PORT` of the plain listener, when enabled.
    pub fn http_base_url(&self) -> Option<String> {
        self.http_addr.map(|addr| format!("http://{addr}"))
    }

    /// Every request received so far, in arrival order.
    /// Client connections open now (TLS and plain together).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `n` requests were received; false after `timeout`.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut requests = lock(&self.shared.requests);
        while requests.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            requests = match self.shared.arrived.wait_timeout(requests, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Queues turns for `/v1/messages`; each request takes the next one, and once
    /// the queue is empty the endpoint echoes again.
    pub fn script_anthropic(&self, turns: Vec<ScriptedTurn>) {
        lock(&self.shared.anthropic_script).extend(turns);
    }

    /// From now on `/v1/models` answers 401 to any key but `key` (`x-api-key`, or a
    /// bearer `Authorization`), as the real APIs answer a wrong key.
    pub fn accept_only_key(&self, key: &str) {
        *lock(&self.shared.valid_key) = Some(key.to_string());
    }

    /// Replaces what `/v1/models` lists: `(id, created_at)` pairs (RFC 3339).
    pub fn set_models(&self, models: &[(&str, &str)]) {
        *lock(&self.shared.models) = models
            .iter()
            .map(|(id, at)| (id.to_string(), at.to_string()))
            .collect();
    }

    /// From now on `model` is unknown: `/v1/messages` and `/v1/chat/completions`
    /// answer 404 (`not_found_error`, `model_not_found`) for it, as the real APIs do
    /// for a retired model, and `/v1/models` no longer lists it.
    pub fn retire_model(&self, model: &str) {
        lock(&self.shared.retired).push(model.to_string());
    }

    /// Queues turns for `/v1/chat/completions`, as [`Upstream::script_anthropic`].
    pub fn script_openai(&self, turns: Vec<ScriptedTurn>) {
        lock(&self.shared.openai_script).extend(turns);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

pub(crate) fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}
