//! The vault gateway: the only way out of a sandbox.
//!
//! A request goes through named phases, in order: authenticate (token on the TCP
//! listener, the socket itself on a per-agent Unix socket) → resolve the agent →
//! match policy → hold for approval → inject the credential → forward → audit.
//! The gateway MITMs every CONNECT with leaf certificates from its own CA and speaks
//! HTTP/1.1 and HTTP/2 on both sides.

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
    /// How long a held request waits for a person (default 10 min).
    pub approval_timeout: Duration,
    /// Whether to write `run/vault.json` so other commands find this gateway (false for
    /// in-process gateways started by `sandbox run`).
    pub advertise: bool,
}
