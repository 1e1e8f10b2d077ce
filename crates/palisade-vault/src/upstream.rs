//! The client side of the vault: pooled HTTP/1.1 and HTTP/2 connections to upstreams,
//! through the guarded resolver, trusting the system roots plus `--upstream-ca`.
//! Redirects are never followed (the agent sees the 3xx). WebSocket handshakes use a
//! separate HTTP/1.1-only client because an upgrade needs a connection of its own.

use crate::body::ForwardBody;
use crate::net_guard::{GuardedResolver, NetGuard};
use crate::{VaultConfig, VaultError};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

pub struct UpstreamClient {
    /// Offers h2 and HTTP/1.1; used when the agent itself spoke HTTP/2.
    pub pooled: Client<Connector, ForwardBody>,
    /// HTTP/1.1 only, pooled; used when the agent spoke HTTP/1.1, so concurrent agent
    /// connections get concurrent upstream connections instead of all being multiplexed
    /// onto one h2 connection (which capped throughput at 16 connections in bench/).
    pub http1: Client<Connector, ForwardBody>,
    pub upgrades: Client<Connector, ForwardBody>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(config: &VaultConfig, guard: Arc<NetGuard>) -> Result<Self, VaultError> {
        let http = |guard: Arc<NetGuard>| {
            let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(guard));
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(config.connect_timeout));
            http.set_keepalive(Some(Duration::from_secs(60)));
            http
        };
        let tls = crate::tls::upstream_client_config(&config.upstream_ca, &[])?;
        let pooled_connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http(guard.clone()));
        let http1_connector = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http(guard.clone()))
        };
        let upgrade_connector = http1_connector();
        let http1 = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(http1_connector());
        let pooled = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(pooled_connector);
        let upgrades = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(0)
            .build(upgrade_connector);
        Ok(UpstreamClient {
            pooled,
            http1,
            upgrades,
            header_timeout: config.upstream_timeout,
            idle_timeout: config.idle_timeout,
        })
    }
}
