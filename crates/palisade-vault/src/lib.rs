//! The vault gateway: the only way out of a sandbox.
//!
//! A request goes through named phases, in order: authenticate (token on the TCP
//! listener, the socket itself on a per-agent Unix socket) → resolve the agent →
//! match policy → hold for approval → inject the credential → forward → audit.
//! The gateway MITMs every CONNECT with leaf certificates from its own CA and speaks
//! HTTP/1.1 and HTTP/2 on both sides.

pub mod admin;
mod audit_log;
pub mod body;
mod body_budget;
pub mod ca;
mod conn;
mod control;
mod decoded;
mod disk;
mod front;
mod gateway;
pub mod net_guard;
mod peer;
mod pipeline;
mod reflect;
mod respond;
mod revocation;
mod state;
mod tls;
mod tunnel;
mod upstream;
mod ws_masked;

pub use admin::{agent_environment, PLACEHOLDER_KEY};
pub use peer::PeerRule;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How to run a gateway.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    pub home: palisade_store::Home,
    /// Standalone TCP listener (token-authenticated); `None` = per-agent sockets only.
    pub listen: Option<SocketAddr>,
    /// Directory of per-agent Unix sockets; default `home.agent_socket_dir()`.
    pub socket_dir: Option<PathBuf>,
    /// Extra PEM files of CAs trusted for upstream TLS (added to the system roots).
    pub upstream_ca: Vec<PathBuf>,
    /// Host patterns allowed to resolve to loopback/private/link-local/own addresses.
    pub allow_local_upstream: Vec<String>,
    /// Names resolved to a fixed address instead of by DNS (tests and development, like
    /// curl's `--resolve`). The address is still checked: a loopback or private one
    /// needs `allow_local_upstream` as well.
    pub upstream_resolve: Vec<(String, std::net::IpAddr)>,
    /// The host's own control plane (the web UI and JSON API of `palisade up`): like
    /// the gateway's own listener, never an upstream, whatever `allow_local_upstream` says.
    pub protected: Vec<SocketAddr>,
    /// How long a held request waits for a person (default 10 min) unless its rule or
    /// its agent says otherwise.
    pub approval_timeout: Duration,
    /// Where approvals this gateway creates and decides are announced in this process
    /// (`palisade up` shares one with its chat channels); `None`: a private one.
    pub approval_events: Option<palisade_approvals::Events>,
    /// Whether to write `run/vault.json` so other commands find this gateway (false for
    /// in-process gateways started by `sandbox run`).
    pub advertise: bool,
    /// TCP connect timeout towards upstreams.
    pub connect_timeout: Duration,
    /// How long to wait for an upstream's response headers (TLS handshake included).
    pub upstream_timeout: Duration,
    /// A response body that sends nothing for this long is cut.
    pub idle_timeout: Duration,
    /// A client connection (or TLS tunnel) with no request in flight that moves no byte
    /// for this long is closed.
    pub client_idle_timeout: Duration,
    /// Most connections open at once in all, client and upstream together; `None`
    /// for what the descriptor limit allows (it is never more than that).
    pub max_connections: Option<usize>,
    /// Most client connections one agent may have open at once (its share, so one agent
    /// cannot use up what the others need); also the most upstream connections it may
    /// hold, of every kind, open or idle.
    pub max_connections_per_agent: usize,
    /// Most requests one agent may have in flight at once, over all its connections
    /// (each HTTP/2 tunnel carries up to 200 streams).
    pub max_requests_per_agent: usize,
    /// Most requests one agent may have waiting for approval at once.
    pub max_holds_per_agent: usize,
    /// Largest body the gateway reads to judge a request (body rules, approvals).
    pub max_judged_body: usize,
    /// Most bytes of bodies read whole (to judge or hold them), and of decoders for
    /// compressed answers searched for credentials, one agent may have in the gateway's
    /// memory at once; at least `max_judged_body`.
    pub max_buffered_bodies_per_agent: usize,
    /// Most bytes of such bodies in the gateway's memory at once, all agents together.
    pub max_buffered_bodies: usize,
    /// Free disk the gateway keeps under the home for its records: below it, requests
    /// that would send a credential or wait for a person are refused (see `disk.rs`).
    pub min_free_disk: u64,
    /// Below this much free disk, each agent may leave only its share of such rows
    /// (`disk.rs`), so one agent's loop does not stop every agent.
    pub disk_share_below: u64,
    /// Which processes an agent socket admits (checked with `SO_PEERCRED`).
    pub agent_peers: PeerRule,
    /// Whether to keep one socket per existing agent in the socket folder (false: serve
    /// only the sockets passed to [`Gateway::start_with_sockets`]).
    pub sockets_for_every_agent: bool,
}

impl VaultConfig {
    /// Defaults: no TCP listener, sockets under the home, 10 min approval timeout,
    /// 10 s connect, 10 min response headers, 5 min idle body, 2 min idle client
    /// connection, 256 connections and 32 held requests per agent, 4 MiB judged body,
    /// 64 MiB of bodies read whole per agent and 256 MiB in all, 128 MiB of disk kept,
    /// each agent's share of the rows counted below 1 GiB free.
    pub fn new(home: palisade_store::Home) -> Self {
        VaultConfig {
            home,
            listen: None,
            socket_dir: None,
            upstream_ca: Vec::new(),
            allow_local_upstream: Vec::new(),
            upstream_resolve: Vec::new(),
            protected: Vec::new(),
            approval_timeout: palisade_approvals::DEFAULT_TIMEOUT,
            approval_events: None,
            advertise: false,
            connect_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            client_idle_timeout: Duration::from_secs(120),
            max_connections: None,
            max_connections_per_agent: 256,
            max_requests_per_agent: 256,
            max_holds_per_agent: 32,
            max_judged_body: 4 * 1024 * 1024,
            max_buffered_bodies_per_agent: 64 * 1024 * 1024,
            max_buffered_bodies: 256 * 1024 * 1024,
            min_free_disk: disk::DEFAULT_MIN_FREE_DISK,
            disk_share_below: disk::DEFAULT_DISK_SHARE_BELOW,
            agent_peers: PeerRule::default(),
            sockets_for_every_agent: true,
        }
    }
}

/// Errors starting or running a gateway. One line each, with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] palisade_store::StoreError),
    #[error("cannot listen on {addr}: {source}; is another gateway running? (`palisade vault serve --listen ADDR` picks another address)")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("--allow-local-upstream pattern {0:?} is invalid: {1}")]
    AllowPattern(String, String),
    #[error("cannot read upstream CA file {path}: {reason}")]
    UpstreamCa { path: String, reason: String },
}

/// What `run/vault.json` says about a running gateway.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunningInfo {
    pub pid: u32,
    pub listen: Option<SocketAddr>,
    pub socket_dir: PathBuf,
    pub started_at_ms: i64,
}

/// A gateway running in this process.
pub struct Gateway {
    inner: gateway::GatewayInner,
}

impl Gateway {
    /// Loads (or creates) the CA, binds the listeners, creates one socket per agent and
    /// starts serving in the current tokio runtime.
    pub async fn start(config: VaultConfig) -> Result<Gateway, VaultError> {
        Ok(Gateway {
            inner: gateway::start(config, Vec::new()).await?,
        })
    }
    /// As [`Gateway::start`], serving sockets the caller already bound for some agents
    /// (in the socket folder, named as [`Gateway::socket_path`] names them). Whoever
    /// connects before the gateway is up waits in the socket's backlog; `palisade
    /// sandbox run` uses this to start the sandbox while the gateway starts.
    pub async fn start_with_sockets(
        config: VaultConfig,
        prebound: Vec<(palisade_policy::AgentName, std::os::unix::net::UnixListener)>,
    ) -> Result<Gateway, VaultError> {
        Ok(Gateway {
            inner: gateway::start(config, prebound).await?,
        })
    }
    /// Bound address of the TCP listener, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_addr()
    }
    /// Path of an agent's socket (exists while the agent exists).
    pub fn socket_path(&self, agent: &palisade_policy::AgentName) -> PathBuf {
        self.inner.socket_path(agent)
    }
    /// Stops accepting, lets in-flight requests finish (held approvals get 503), removes sockets.
    pub async fn shutdown(self) {
        self.inner.shutdown().await
    }
}

/// Checks `--upstream-ca` files without starting anything (cheap: the system roots are
/// not loaded), so a command can refuse a bad file before it starts a sandbox.
pub fn check_upstream_ca(paths: &[PathBuf]) -> Result<(), VaultError> {
    tls::extra_root_certificates(paths).map(drop)
}

/// The gateway advertised in `home/run/vault.json`, if its process is still alive.
pub fn running_gateway(home: &palisade_store::Home) -> Option<RunningInfo> {
    gateway::running_gateway(home)
}

/// The vault CA certificate (PEM), created on first use.
pub fn ca_certificate_pem(home: &palisade_store::Home) -> Result<String, VaultError> {
    home.ensure()?;
    Ok(ca::CertificateAuthority::load_or_create(&home.ca_dir())?
        .ca_pem()
        .to_string())
}

/// Resolves once shutdown has been signalled (or the signal's sender is gone).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Finds an error of type `T` anywhere in `error`'s source chain, including inside an
/// `io::Error` that wraps it (as connectors and resolvers report their causes).
pub(crate) fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = inner.downcast_ref::<T>() {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}
