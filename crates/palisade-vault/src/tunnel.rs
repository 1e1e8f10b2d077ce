//! Inside a CONNECT tunnel: terminate the agent's TLS with a leaf for the CONNECT
//! host, then serve HTTP/1.1 or HTTP/2 (by ALPN) and run each request through the
//! pipeline. A client that speaks plain text instead of TLS gets a readable 400. The
//! tunnel keeps the connection's permits (its place under the connection caps) and is
//! closed once idle, like the connection it came from.

use crate::conn::{Activity, ClientConnection, ConnectionPermits, Tracked};
use crate::pipeline::{self, Target};
use crate::state::Shared;
use crate::upstream::OwnedUpstream;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a tunnel keeps its upstream connection with no request in flight.
const UPSTREAM_QUIET: Duration = Duration::from_secs(2);
/// How much of its request bodies an HTTP/2 agent may send before the gateway has
/// passed them on (its flow-control window, per stream and per tunnel): what arrived is
/// kept while the upstream is slow to take it, so this bounds what one tunnel holds
/// (hyper's default, 1 MiB, let an agent's 256 tunnels hold 256 MiB). Agents are
/// sandboxes and containers of this machine, so a window update is back in
/// microseconds and the window does not set their speed.
const AGENT_H2_WINDOW: u32 = 256 * 1024;

/// Who opened a tunnel: the agent, the digest of the token it showed (none on its
/// socket), and what ends the tunnel when that credential no longer holds (the token
/// rotated, the agent deleted).
pub struct Caller {
    pub agent: AgentName,
    pub token: Option<Arc<str>>,
    pub revoked: CancellationToken,
}

pub async fn run(
    shared: Arc<Shared>,
    caller: Caller,
    target: Target,
    upgraded: Upgraded,
    permits: Arc<ConnectionPermits>,
    activity: Arc<Activity>,
) {
    let Caller {
        agent,
        token,
        revoked,
    } = caller;
    // `permits` is held until the tunnel ends, and by a WebSocket upgraded inside it
    // until that ends: the tunnel and the WebSocket are the same client connection.
    let io = TokioIo::new(upgraded);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    tokio::pin!(acceptor);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.as_mut()).await {
        Ok(Ok(start)) => start,
        Ok(Err(_)) => {
            if let Some(mut io) = acceptor.take_io() {
                let body = ErrorBody::new(GatewayErrorKind::BadRequest, &target.host)
                    .with_message(
                        "expected a TLS handshake after CONNECT; to send plain HTTP, use an absolute http:// URL without CONNECT",
                    )
                    .to_json();
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-should-retry: false\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = io.write_all(response.as_bytes()).await;
                    let _ = io.shutdown().await;
                })
                .await;
            }
            return;
        }
        Err(_) => return,
    };
    let config = match shared.ca.server_config(&target.host) {
        Ok(config) => config,
        Err(e) => {
            palisade_policy::budgeted!(warn, host = %target.host, error = %e, "cannot mint a leaf certificate");
            return;
        }
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(host = %target.host, error = %e, "agent TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let host = target.host.clone();
    let tunnel_agent = agent.clone();
    let target = Arc::new(target);
    let upstream = Arc::new(shared.upstream.owned_by(&agent));
    let service = {
        let shared = shared.clone();
        let upstream = upstream.clone();
        let activity = activity.clone();
        let permits = permits.clone();
        let revoked = revoked.clone();
        // The agent's share of requests in flight, looked up once per tunnel.
        let requests = shared.limits.requests_of(&agent);

        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut in_flight = activity.start_request();
            let placed = in_flight.hold_place(&requests);
            // Boxed once here: hyper moves the service's future into its own slot, and
            // the pipeline's future is a few KiB (memmove under hyper's `recv_msg` was
            // ~2 % of the gateway's profile at 16 connections in bench/vault.sh; the
            // A/B after boxing showed no change beyond that machine's noise).
            let handled = Box::pin(pipeline::handle(
                shared.clone(),
                agent.clone(),
                target.clone(),
                req,
                ClientConnection {
                    activity: activity.clone(),
                    permits: permits.clone(),
                    upstream: Some(upstream.clone()),
                    token: token.clone(),
                    revoked: revoked.clone(),
                },
                placed,
            ));
            async move {
                let Ok(response) = handled.await;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Tracked::new(body, in_flight)),
                )
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(crate::front::HEADER_READ_TIMEOUT)
        .max_buf_size(crate::front::MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(crate::upstream::H2_SEND_BUFFER)
        .initial_stream_window_size(AGENT_H2_WINDOW)
        .initial_connection_window_size(AGENT_H2_WINDOW);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    let mut shutdown = shared.shutdown.clone();
    tokio::pin!(conn);
    let idle = shared.config.client_idle_timeout;
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(error) = served {
                crate::pipeline::audit::refused_head(&shared, Some(&tunnel_agent), &host, error.as_ref()).await;
            }
        }
        _ = activity.idle(idle, idle) => {
            tracing::debug!(host = %host, "closing an idle tunnel");
        }
        _ = release_when_quiet(&activity, &upstream) => {}
        _ = revoked.cancelled() => {
            // Dropping the connection ends every stream in it, idle or not.
            tracing::debug!(host = %host, "closing a tunnel: the credential it was opened with was revoked");
        }
        _ = crate::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Hands the tunnel's upstream connection to its agent's idle ones whenever the tunnel
/// has been quiet for [`UPSTREAM_QUIET`], so an idle tunnel holds one descriptor, not
/// two; between a release and the next request it sleeps. Never resolves.
async fn release_when_quiet(activity: &Activity, upstream: &OwnedUpstream) {
    loop {
        upstream.kept().await;
        loop {
            tokio::time::sleep(UPSTREAM_QUIET).await;
            if activity.is_quiet(UPSTREAM_QUIET) {
                upstream.release();
                break;
            }
        }
    }
}
