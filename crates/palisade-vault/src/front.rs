//! The proxy front door: one HTTP/1.1 connection from an agent (TCP or its Unix
//! socket), on which it sends CONNECT, absolute-form requests, or — on the TCP
//! listener only — calls to the admin API.

use crate::body::ProxyBody;
use crate::pipeline::{self, Scheme, Target};
use crate::respond::{refusal, refuse};
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
use tokio::io::{AsyncRead, AsyncWrite};

/// Which listener a connection came in on; an agent socket is its own identity.
#[derive(Clone, Debug)]
pub enum Entry {
    Tcp,
    Agent(AgentName),
}

/// Largest request head accepted; larger ones get 431 from hyper.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve_connection<I>(shared: Arc<Shared>, io: I, entry: Entry)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = shared.shutdown.clone();
    let service = {
        let shared = shared.clone();
        service_fn(move |req| front(shared.clone(), entry.clone(), req))
    };
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
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = crate::stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn front(
    shared: Arc<Shared>,
    entry: Entry,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if request.method() == Method::CONNECT {
        let agent = match authenticate(&shared, &entry, request.headers()) {
            Ok(agent) => agent,
            Err(response) => return Ok(*response),
        };
        let Some(target) = request
            .uri()
            .authority()
            .and_then(|a| Target::parse_authority(a.as_str(), Scheme::Https))
        else {
            return Ok(refusal(
                &ErrorBody::new(GatewayErrorKind::BadRequest, "")
                    .with_message("CONNECT needs a target of the form host:port"),
            ));
        };
        if shared.is_shutting_down() {
            return Ok(refuse(GatewayErrorKind::GatewayRestarting, &target.host));
        }
        let on_upgrade = hyper::upgrade::on(request);
        let tracker = shared.tasks.clone();
        tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => tunnel::run(shared, agent, target, upgraded).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        return Ok(Response::new(ProxyBody::empty()));
    }
    if request.uri().scheme().is_some() {
        let agent = match authenticate(&shared, &entry, request.headers()) {
            Ok(agent) => agent,
            Err(response) => return Ok(*response),
        };
        let Some(target) = Target::from_uri(request.uri()) else {
            return Ok(refusal(
                &ErrorBody::new(GatewayErrorKind::BadRequest, "")
                    .with_message("only http:// and https:// URLs with a valid host are proxied"),
            ));
        };
        return pipeline::handle(shared, agent, Arc::new(target), request).await;
    }
    match entry {
        Entry::Tcp => Ok(crate::admin::route(shared, request).await),
        Entry::Agent(_) => Ok(refusal(
            &ErrorBody::new(GatewayErrorKind::BadRequest, "").with_message(
                "this socket is an HTTP proxy: send CONNECT host:port or an absolute http(s):// URL",
            ),
        )),
    }
}

/// The agent behind a request: the socket's owner, or the token in `Proxy-Authorization`.
fn authenticate(
    shared: &Shared,
    entry: &Entry,
    headers: &http::HeaderMap,
) -> Result<AgentName, Box<Response<ProxyBody>>> {
    let token = match entry {
        Entry::Agent(name) => return Ok(name.clone()),
        Entry::Tcp => headers
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_password),
    };
    let unauthorized = |message: &str| {
        Box::new(refusal(
            &ErrorBody::new(GatewayErrorKind::ProxyAuthRequired, "").with_message(message),
        ))
    };
    let Some(token) = token else {
        return Err(unauthorized(
            "Proxy authentication required: send Proxy-Authorization: Basic base64(\"x:\" + TOKEN) with the agent's token (`palisade agents token NAME`).",
        ));
    };
    let snapshot = shared.snapshot.load();
    match snapshot.agent_for_token(&token) {
        Some(agent) => Ok(agent.clone()),
        None => Err(unauthorized(
            "The proxy token is not known to this gateway (revoked or mistyped); get the current one with `palisade agents token NAME`.",
        )),
    }
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
