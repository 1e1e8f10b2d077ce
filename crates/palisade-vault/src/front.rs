//! The proxy front door: one HTTP/1.1 connection from an agent (TCP or its Unix
//! socket), on which it sends CONNECT, absolute-form requests, or — on the TCP
//! listener only — calls to the admin API. Authentication happens here (the socket is
//! the identity; on TCP the token in `Proxy-Authorization`), and so does the agent's
//! share of connections on the TCP listener.

use crate::conn::{
    Activity, ClientConnection, ClientSocket, ConnectionPermits, InFlight, Tracked, Watched,
};
use crate::pipeline::audit::{refused_at_front, refused_head, Record};
use crate::pipeline::{self, Decision, Scheme, Target};
use crate::respond::refusal;
use crate::state::Shared;
use crate::tunnel;
use base64::Engine;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which listener a connection came in on; an agent socket is its own identity.
#[derive(Clone, Debug)]
pub enum Entry {
    Tcp,
    Agent(AgentName),
}

/// Largest request head accepted; larger ones get 431 from hyper.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A connection must send its first request head within this time.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection's context: who it is, what it may hold, when it last did something.
#[derive(Clone)]
struct Connection {
    shared: Arc<Shared>,
    entry: Entry,
    permits: Arc<ConnectionPermits>,
    activity: Arc<Activity>,
    /// On an agent's socket: cancelled when the agent is deleted, which ends the
    /// connection (its tunnels and WebSockets watch it too). On the TCP listener each
    /// request brings its own, that of the token it shows.
    socket_revoked: Option<CancellationToken>,
}

pub async fn serve_connection<I>(
    shared: Arc<Shared>,
    io: I,
    entry: Entry,
    permits: Arc<ConnectionPermits>,
) where
    I: ClientSocket,
{
    let mut shutdown = shared.shutdown.clone();
    let activity = Activity::new();
    let socket_revoked = match &entry {
        // An agent this snapshot does not know (gone before its socket was removed):
        // its requests are refused in the admit phase.
        Entry::Agent(agent) => Some(
            shared
                .snapshot
                .load()
                .revocations
                .of_agent(agent)
                .unwrap_or_default(),
        ),
        Entry::Tcp => None,
    };
    let revoked = socket_revoked.clone().unwrap_or_default();
    let entry_agent = match &entry {
        Entry::Agent(agent) => Some(agent.clone()),
        Entry::Tcp => None,
    };
    let evicted = permits.evicted();
    let io = Watched::new(io, activity.clone()).holding(permits.clone());
    let connection = Connection {
        shared: shared.clone(),
        entry,
        permits,
        activity: activity.clone(),
        socket_revoked,
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let connection = connection.clone();
        async move {
            let mut in_flight = connection.activity.start_request();
            let response = front(connection, req, &mut in_flight).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // A client may shut down its write side after a complete request (`nc -N`,
        // some shims); it still gets its answer instead of a dropped connection.
        .half_close(true)
        .max_buf_size(MAX_HEAD_BYTES);
    let builder = builder.http1_only();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = shared.config.client_idle_timeout;
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(error) = served {
                refused_head(&shared, entry_agent.as_ref(), "", error.as_ref()).await;
            }
        }
        _ = activity.idle(HEADER_READ_TIMEOUT.min(idle), idle) => {
            tracing::debug!("closing an idle client connection");
        }
        _ = revoked.cancelled() => {
            tracing::debug!("closing an agent socket's connection: the agent was deleted");
        }
        _ = evicted.cancelled() => {
            tracing::debug!("closing a connection that never authenticated: newer ones pushed it out");
        }
        _ = crate::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn front(
    connection: Connection,
    request: Request<Incoming>,
    in_flight: &mut InFlight,
) -> Response<crate::body::ProxyBody> {
    let shared = &connection.shared;
    if request.method() == Method::CONNECT {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let caller = match admit(&connection, request.headers(), "CONNECT", &authority, "").await {
            Ok(caller) => caller,
            Err(response) => return response,
        };
        // Authority form only (`host:port`): a CONNECT to `http://host:port` has one
        // too, and one target has one spelling.
        let authority_form =
            request.uri().scheme().is_none() && request.uri().path_and_query().is_none();
        let parsed = authority_form
            .then(|| Target::parse_authority(&authority, Scheme::Https))
            .flatten();
        let Some(target) = parsed else {
            let body = ErrorBody::new(GatewayErrorKind::BadRequest, "")
                .with_message("CONNECT needs a target of the form host:port: a DNS name or an IP address in its one usual form (dotted IPv4; an IPv6 address that spells no IPv4 one, such as ::ffff:a.b.c.d), a port in decimal digits");
            let response = refusal(&body);
            let record = Record::about(Some(&caller.agent), "CONNECT", &authority, "");
            refused_at_front(
                shared,
                record,
                Decision::BadRequest,
                response.status().as_u16(),
            )
            .await;
            return response;
        };
        if shared.is_shutting_down() {
            return refusal(&ErrorBody::new(
                GatewayErrorKind::GatewayRestarting,
                &target.host,
            ));
        }
        let on_upgrade = hyper::upgrade::on(request);
        let tracker = shared.tasks.clone();
        let shared = shared.clone();
        let permits = connection.permits.clone();
        let activity = connection.activity.clone();
        tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    tunnel::run(shared, caller, target, upgraded, permits, activity).await
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(crate::body::ProxyBody::empty());
    }
    if request.uri().scheme().is_some() {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        // Each request on this listener carries its token, checked here.
        let tunnel::Caller { agent, revoked, .. } =
            match admit(&connection, request.headers(), &method, &authority, &path).await {
                Ok(caller) => caller,
                Err(response) => return response,
            };
        let Some(target) = Target::from_uri(request.uri()) else {
            let body = ErrorBody::new(GatewayErrorKind::BadRequest, "")
                .with_message("only http:// and https:// URLs with a valid host are proxied");
            let response = refusal(&body);
            let record = Record::about(Some(&agent), &method, &authority, request.uri().path());
            refused_at_front(
                shared,
                record,
                Decision::BadRequest,
                response.status().as_u16(),
            )
            .await;
            return response;
        };
        let client = ClientConnection {
            activity: connection.activity.clone(),
            permits: connection.permits.clone(),
            upstream: None,
            token: None,
            revoked: revoked.clone(),
        };
        let placed = in_flight.hold_place(&shared.limits.requests_of(&agent));
        // A stream outlives the check of its token: it is cut if the token is revoked.
        in_flight.end_when(revoked);
        let Ok(response) = pipeline::handle(
            shared.clone(),
            agent,
            Arc::new(target),
            request,
            client,
            placed,
        )
        .await;
        return response;
    }
    match &connection.entry {
        Entry::Tcp => crate::admin::route(shared.clone(), request, &connection.permits).await,
        Entry::Agent(_) => refusal(&ErrorBody::new(GatewayErrorKind::BadRequest, "").with_message(
            "this socket is an HTTP proxy: send CONNECT host:port or an absolute http(s):// URL",
        )),
    }
}

/// The agent behind a request, the digest of the token it showed (none on an agent's
/// socket) and what revokes it, counted against its share of connections; otherwise the
/// refusal (407 without a known token, 503 beyond the agent's share), audited.
async fn admit(
    connection: &Connection,
    headers: &http::HeaderMap,
    method: &str,
    authority: &str,
    path: &str,
) -> Result<tunnel::Caller, Response<crate::body::ProxyBody>> {
    let shared = &connection.shared;
    let caller = match authenticate(connection, headers).await {
        Ok(caller) => caller,
        Err(body) => {
            // And the connection ends: one that never authenticates may not stay open
            // by sending a request now and then (see conn.rs on its place).
            let mut response = refusal(&body);
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            let record = Record::about(None, method, authority, path);
            refused_at_front(
                shared,
                record,
                Decision::ProxyAuthRequired,
                response.status().as_u16(),
            )
            .await;
            return Err(response);
        }
    };
    let agent = &caller.agent;
    if !connection.permits.ensure_agent(&shared.limits, agent) {
        let body = ErrorBody::new(GatewayErrorKind::TooManyConnections, "").with_message(format!(
            "Agent {agent} has {} connections open through the gateway, the most it may have. Close idle connections or reuse them, then retry.",
            shared.limits.per_agent_max()
        ));
        let mut response = refusal(&body);
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        let record = Record::about(Some(agent), method, authority, path);
        refused_at_front(
            shared,
            record,
            Decision::TooManyConnections,
            response.status().as_u16(),
        )
        .await;
        return Err(response);
    }
    Ok(caller)
}

/// The agent behind a request: the socket's owner, or the token in `Proxy-Authorization`.
/// A token the snapshot does not know is looked up in the store once (it may belong to
/// an agent created a moment ago) before the request is refused.
async fn authenticate(
    connection: &Connection,
    headers: &http::HeaderMap,
) -> Result<tunnel::Caller, ErrorBody> {
    let shared = &connection.shared;
    let token = match &connection.entry {
        Entry::Agent(name) => {
            return Ok(tunnel::Caller {
                agent: name.clone(),
                token: None,
                revoked: connection.socket_revoked.clone().unwrap_or_default(),
            })
        }
        Entry::Tcp => headers
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_password),
    };
    let unauthorized = |message: &str| {
        ErrorBody::new(GatewayErrorKind::ProxyAuthRequired, "").with_message(message)
    };
    let Some(token) = token else {
        return Err(unauthorized(
            "Proxy authentication required: send Proxy-Authorization: Basic base64(\"x:\" + TOKEN) with the agent's token (`palisade agents token NAME`).",
        ));
    };
    // Hashed once: the snapshot and the store know tokens by digest, and a tunnel keeps
    // it to notice a rotation.
    let digest: Arc<str> = Arc::from(crate::state::token_digest(&token));
    if let Some(caller) = caller_of_token(shared, digest.clone()) {
        return Ok(caller);
    }
    let unknown = || {
        unauthorized(
            "The proxy token is not known to this gateway (revoked or mistyped); get the current one with `palisade agents token NAME`.",
        )
    };
    let Ok(_permit) = shared.token_lookups.try_acquire() else {
        return Err(unknown());
    };
    let store = shared.store.clone();
    let hash = Arc::clone(&digest);
    let known = tokio::task::spawn_blocking(move || store.token_hash_known(&hash))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if known && shared.reload_snapshot().await.is_ok() {
        if let Some(caller) = caller_of_token(shared, digest) {
            return Ok(caller);
        }
    }
    Err(unknown())
}

/// The agent whose token has `digest` and what revokes that token, read from one
/// snapshot (so a rotation that snapshot predates still reaches the caller).
fn caller_of_token(shared: &Shared, digest: Arc<str>) -> Option<tunnel::Caller> {
    let snapshot = shared.snapshot.load();
    let agent = snapshot.agent_of_token_digest(&digest)?;
    let revoked = snapshot.revocations.of_token(agent, &digest)?;
    Some(tunnel::Caller {
        agent: agent.clone(),
        token: Some(digest),
        revoked,
    })
}

/// The password of a `Basic` credential (`x:TOKEN` → `TOKEN`).
fn basic_password(value: &str) -> Option<String> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_yield_the_password() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("x:pal_token")
        );
        assert_eq!(basic_password(&header).as_deref(), Some("pal_token"));
        assert_eq!(basic_password("Bearer abc"), None);
        assert_eq!(basic_password("Basic !!!"), None);
        let empty = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("x:")
        );
        assert_eq!(basic_password(&empty), None);
    }
}
