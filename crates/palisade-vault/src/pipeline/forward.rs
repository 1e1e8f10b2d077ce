//! Phase 8, forward: `Host` is rebuilt from the target (never the inner header; the
//! hop-by-hop headers and the proxy credential went in the canonical phase, before the
//! request was judged), and the request goes upstream over the connection that fits:
//! the tunnel's own HTTP/1.1 connection where the agent spoke HTTP/1.1 in a tunnel, the
//! agent's pooled client otherwise (HTTP/2 where the agent spoke HTTP/2 and the server
//! offers it), a connection of its own for a WebSocket upgrade. Bodies stream both
//! ways; redirects are passed back, never followed.

use super::{error_chain, Decision, Refusal, Target};
use crate::body::{ForwardBody, ProxyBody};
use crate::conn::ClientConnection;
use crate::decoded;
use crate::net_guard::find_local_refused;
use crate::reflect::{Masked, Reflection, Report, Scanner};
use crate::respond::{is_websocket_upgrade, strip_hop_by_hop, transfer_codings_to_content};
use crate::state::Shared;
use crate::upstream::{is_no_room, UpstreamError};
use http::{Request, Response};
use http_body::Body;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind};
use std::sync::Arc;

/// What the agent is told when `target` could not be reached: the address with its
/// port, and what to check for the common causes (nothing listening, a name that does
/// not resolve) rather than the HTTP client's error chain alone.
fn unreachable(target: &Target, error: &(dyn std::error::Error + 'static), cause: &str) -> String {
    let address = format!("{}:{}", target.host, target.port);
    let io = crate::find_cause::<std::io::Error>(error).map(std::io::Error::kind);
    match io {
        Some(std::io::ErrorKind::ConnectionRefused) => format!(
            "Nothing answered at {address} (connection refused): is the server running, and on that port?"
        ),
        Some(std::io::ErrorKind::ConnectionReset) => format!(
            "{address} closed the connection before answering; retry later."
        ),
        _ if cause.contains("dns error") || cause.contains("failed to lookup") => format!(
            "The name {} does not resolve; check the host name.",
            target.host
        ),
        _ => format!("Could not reach {address}: {cause}. Check the address, or retry later."),
    }
}

pub(super) async fn forward(
    shared: &Shared,
    agent: &AgentName,
    target: &Target,
    client: &ClientConnection,
    mut parts: http::request::Parts,
    body: ForwardBody,
    masking: Option<(Arc<Reflection>, Report)>,
) -> Result<Response<ProxyBody>, Refusal> {
    let host = target.host.as_str();
    let agent_version = parts.version;
    let head_request = parts.method == http::Method::HEAD;
    let websocket = parts.version == http::Version::HTTP_11 && is_websocket_upgrade(&parts.headers);
    let client_upgrade = if websocket {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    // A WebSocket is relayed unjudged once the upstream accepts it, so the handshake
    // must be one: the agent's key, and the upstream's answer to it (see below).
    let websocket_key = match websocket {
        true => match websocket_key(&parts.headers) {
            Some(key) => Some(key),
            None => {
                return Err(Refusal::new(
                    Decision::BadRequest,
                    ErrorBody::new(GatewayErrorKind::BadRequest, host).with_message(
                        "A WebSocket handshake needs one Sec-WebSocket-Key (16 bytes in base64) and Sec-WebSocket-Version: 13.",
                    ),
                ))
            }
        },
        false => None,
    };
    // An HTTP/1.1 agent's request goes upstream over HTTP/1.1 with the target's own
    // `Host`. An HTTP/2 agent's request carries the target in the URI's authority, and
    // the client writes `Host` from it if the upstream turns out to speak HTTP/1.1.
    if agent_version == http::Version::HTTP_2 {
        parts.headers.remove(http::header::HOST);
    } else {
        parts
            .headers
            .insert(http::header::HOST, target.host_header());
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let Some(uri) = target.uri_of(path_and_query) else {
        return Err(Refusal::of(
            Decision::BadRequest,
            GatewayErrorKind::BadRequest,
            host,
        ));
    };
    parts.uri = uri;
    if masking.is_some() {
        // The response is searched for the credential, so it must come readable.
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    if websocket && masking.is_some() {
        // Messages are searched for the credential: they must come uncompressed.
        parts.headers.remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
    }
    guard_against_desync(&mut parts, &body);
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let request = Request::from_parts(parts, body);
    let upstream = &shared.upstream;
    let send = async {
        let sent = if websocket {
            upstream.clients_of(agent).upgrades.request(request).await
        } else if agent_version == http::Version::HTTP_2 {
            upstream.clients_of(agent).pooled.request(request).await
        } else if let Some(owned) = &client.upstream {
            return upstream.send_owned(owned, request).await;
        } else {
            upstream.clients_of(agent).http1.request(request).await
        };
        sent.map_err(UpstreamError::from)
    };
    let sent = tokio::time::timeout(upstream.header_timeout, send).await;
    let mut response = match sent {
        Err(_) => {
            return Err(Refusal::of(
                Decision::UpstreamTimeout,
                GatewayErrorKind::UpstreamTimeout,
                host,
            ))
        }
        Ok(Err(e)) => {
            if is_no_room(&*e) {
                return Err(Refusal::new(
                    Decision::TooManyConnections,
                    ErrorBody::new(GatewayErrorKind::TooManyConnections, host).with_message(
                        "The gateway has no room for another upstream connection now. Retry later.",
                    ),
                ));
            }
            if find_local_refused(&*e).is_some() {
                // The allowance that would let it through names this port alone.
                return Err(super::local::refused(
                    host,
                    &format!("{host}:{}", target.port),
                ));
            }
            if crate::find_cause::<hyper::Error>(&*e).is_some_and(hyper::Error::is_parse_too_large)
            {
                return Err(Refusal::new(
                    Decision::UnreadableResponse,
                    ErrorBody::new(GatewayErrorKind::UnreadableResponse, host).with_message(
                        format!(
                            "{host} answered with a response head larger than the gateway reads ({} KiB); the answer was not passed on.",
                            crate::upstream::MAX_RESPONSE_HEAD / 1024
                        ),
                    ),
                ));
            }
            let cause = error_chain(&*e);
            tracing::debug!(host, error = %cause, "upstream request failed");
            return Err(Refusal::new(
                Decision::UpstreamUnreachable,
                ErrorBody::new(GatewayErrorKind::UpstreamUnreachable, host)
                    .with_message(unreachable(target, &*e, &cause)),
            ));
        }
        Ok(Ok(response)) => response,
    };
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    // Only a WebSocket the upstream accepted by the handshake's rules is relayed: a 101
    // without its accept (a front end passing on a backend's status, say) would make
    // the agent's next bytes go upstream as requests nobody judged.
    if switching
        && !websocket_key
            .as_deref()
            .is_some_and(|key| accepts_websocket(response.headers(), key))
    {
        return Err(Refusal::new(
            Decision::UnreadableResponse,
            ErrorBody::new(GatewayErrorKind::UnreadableResponse, host).with_message(format!(
                "{host} switched protocols without accepting a WebSocket handshake (no valid Sec-WebSocket-Accept); the connection was not passed on."
            )),
        ));
    }
    let mut masking = masking.map(|(reflection, report)| (reflection, Some(report)));
    if let Some((reflection, report)) = &mut masking {
        if let Some(owner) = reflection.mask_headers(response.headers_mut()) {
            if let Some(report) = report.take() {
                report.send("headers", owner);
            }
        }
        if let Some(owner) = reflection.mask_reason(response.extensions_mut()) {
            if let Some(report) = report.take() {
                report.send("status line", owner);
            }
        }
    }
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            // Compression, if the upstream accepted it, sets the first reserved bit.
            let compressed = response
                .headers()
                .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .any(|value| {
                    value
                        .to_str()
                        .is_ok_and(|v| v.to_ascii_lowercase().contains("permessage-deflate"))
                });
            let reserved = if compressed { 0x40 } else { 0 };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            relay_upgraded(
                shared,
                client,
                client_upgrade,
                upstream_upgrade,
                masking.take(),
                reserved,
            );
        }
    }
    let close_delimited = !head_request && is_close_delimited(&response);
    let (mut head, incoming) = response.into_parts();
    // A length beside `Transfer-Encoding` is not the body's: the coding frames it, and
    // a proxy removes the length (RFC 9112, 6.3). Passed on, an HTTP/1.1 client read
    // that many bytes of the body and an HTTP/2 client reset the stream.
    if head.headers.contains_key(http::header::TRANSFER_ENCODING) {
        head.headers.remove(http::header::CONTENT_LENGTH);
    }
    transfer_codings_to_content(&mut head.headers);
    strip_hop_by_hop(&mut head.headers, switching);
    // The answer to a HEAD ends with its head, whatever length it announces (an HTTP/2
    // client resets a stream whose announced length never arrives).
    let mut body = if switching || head_request {
        ProxyBody::empty()
    } else {
        let status = head.status;
        let length_owed = !(status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED);
        ProxyBody::upstream(
            incoming,
            shared.upstream.idle_timeout,
            close_delimited,
            length_owed,
        )
    };
    if let Some((reflection, report)) = masking {
        body = searched(
            shared,
            agent,
            host,
            &mut head.headers,
            body,
            reflection,
            report,
        )?;
    }
    Ok(Response::from_parts(head, body))
}

/// `body` searched for the credentials `reflection` spells ([`Masked`]), decoded first
/// if the upstream compressed it although the gateway asked for `identity`; an empty
/// body (HEAD, 204, 304, a zero length) has nothing to search. Refused when it cannot
/// be decoded, or its decoders do not fit in the agent's share of body memory.
fn searched(
    shared: &Shared,
    agent: &AgentName,
    host: &str,
    headers: &mut http::HeaderMap,
    mut body: ProxyBody,
    reflection: Arc<Reflection>,
    report: Option<Report>,
) -> Result<ProxyBody, Refusal> {
    if !matches!(body, ProxyBody::Upstream { .. }) || body.is_end_stream() {
        return Ok(body);
    }
    match decoded::codings(headers) {
        Ok(codings) if codings.is_empty() => {}
        Ok(codings) => {
            let mut reserved = shared.bodies.reserve(agent);
            if reserved.grow(decoded::memory_for(&codings)).is_err() {
                return Err(Refusal::new(
                    Decision::TooManyBufferedBodies,
                    ErrorBody::new(GatewayErrorKind::TooManyBufferedBodies, host).with_message(
                        format!(
                            "The answer from {host} came compressed and must be decoded to check it for credentials, and this agent's other requests already hold as much of the gateway's memory as it may. Retry when those requests are done."
                        ),
                    ),
                ));
            }
            // Passed on decoded, so the search sees what the client will read.
            headers.remove(http::header::CONTENT_ENCODING);
            headers.remove(http::header::CONTENT_LENGTH);
            body = decoded::decoded(body, &codings, reserved);
        }
        Err(coding) => {
            palisade_policy::budgeted!(warn, host,
                    coding,
                    "an answer from a host the gateway sends credentials to came in an encoding the gateway cannot read; refused");
            return Err(Refusal::of(
                Decision::UnreadableResponse,
                GatewayErrorKind::UnreadableResponse,
                host,
            ));
        }
    }
    Ok(ProxyBody::Masked(Box::new(Masked::new(
        body, reflection, report,
    ))))
}

/// The agent's `Sec-WebSocket-Key`, if its handshake has one key of 16 bytes in base64
/// and version 13 (RFC 6455, section 4.1).
fn websocket_key(headers: &http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let mut keys = headers.get_all(http::header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return None;
    };
    let key = key.to_str().ok()?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    let version = headers.get(http::header::SEC_WEBSOCKET_VERSION)?;
    (decoded.len() == 16 && version.as_bytes() == b"13").then(|| key.to_string())
}

/// Whether the upstream's 101 accepts a WebSocket handshake with `key`: `Upgrade:
/// websocket` and the `Sec-WebSocket-Accept` only a WebSocket server computes from it.
fn accepts_websocket(headers: &http::HeaderMap, key: &str) -> bool {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let expected = base64::engine::general_purpose::STANDARD
        .encode(Sha1::new().chain_update(key).chain_update(GUID).finalize());
    let mut accepts = headers.get_all(http::header::SEC_WEBSOCKET_ACCEPT).iter();
    let accepted = matches!(
        (accepts.next(), accepts.next()),
        (Some(accept), None) if accept.as_bytes() == expected.as_bytes()
    );
    upgrade && accepted
}

/// Relays a connection upgraded on both sides (a WebSocket) until either side ends it.
/// It is still the client connection it was upgraded from: it keeps that connection's
/// places under the gateway's and its agent's caps, and is closed once no byte has
/// moved either way for the client idle timeout, when the credential it was opened with
/// is revoked (`revocation.rs`), or when the gateway stops. The agent's frames are
/// checked to be a client's frames; when its host is one the gateway sends credentials
/// to, the upstream's frames are searched for them as they stream (see
/// [`relay_websocket`]). `reserved`: the frame bits the accepted compression uses.
fn relay_upgraded(
    shared: &Shared,
    client: &ClientConnection,
    client_upgrade: OnUpgrade,
    upstream_upgrade: OnUpgrade,
    masking: Option<(Arc<Reflection>, Option<Report>)>,
    reserved: u8,
) {
    let permits = Arc::clone(&client.permits);
    let activity = Arc::clone(&client.activity);
    let revoked = client.revoked.clone();
    let idle = shared.config.client_idle_timeout;
    let mut shutdown = shared.shutdown.clone();
    shared.tasks.spawn(async move {
        let _permits = permits;
        let relay = async {
            if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                let client = TokioIo::new(client);
                let upstream = TokioIo::new(upstream);
                let scanner = masking.map(|(reflection, report)| {
                    Scanner::new(reflection, report, "websocket")
                });
                relay_websocket(client, upstream, scanner, reserved).await
            }
        };
        tokio::select! {
            _ = relay => {}
            _ = activity.idle(idle, idle) => {
                tracing::debug!("closing an idle upgraded connection");
            }
            _ = revoked.cancelled() => {
                tracing::debug!("closing a WebSocket: the credential it was opened with was revoked");
            }
            _ = crate::stopped(&mut shutdown) => {}
        }
    });
}

/// Relays a WebSocket: the agent's frames checked to be a client's frames and copied
/// ([`crate::ws_masked::relay_from_agent`]; anything else ends it), the upstream's
/// copied, or to a host the gateway sends credentials to searched for them
/// ([`crate::ws_masked::relay_from_upstream`], with `scanner`). It ends when the
/// upstream's side ends (or fails a check); the agent's end only shuts the upstream's
/// writing side.
async fn relay_websocket<C, U>(client: C, upstream: U, scanner: Option<Scanner>, reserved: u8)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, upstream_write) = tokio::io::split(upstream);
    let outbound = async {
        match crate::ws_masked::relay_from_agent(client_read, upstream_write, reserved).await {
            Ok(()) => std::future::pending::<()>().await,
            Err(e) => {
                tracing::debug!(error = %e, "a WebSocket ended: the agent sent what is not a frame")
            }
        }
    };
    let inbound = async {
        match scanner {
            Some(mut scanner) => {
                if let Err(e) =
                    crate::ws_masked::relay_from_upstream(upstream_read, client_write, &mut scanner)
                        .await
                {
                    tracing::debug!(error = %e, "a WebSocket carrying a credential ended");
                }
            }
            None => {
                let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
            }
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// An HTTP/1.x response whose body ends when the connection closes: no length, no
/// chunking, and a status that has a body.
fn is_close_delimited<B>(response: &Response<B>) -> bool {
    let status = response.status();
    response.version() <= http::Version::HTTP_11
        && !status.is_informational()
        && status != http::StatusCode::NO_CONTENT
        && status != http::StatusCode::NOT_MODIFIED
        && !response
            .headers()
            .contains_key(http::header::CONTENT_LENGTH)
        && !response
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING)
}

/// Keeps a body the upstream may leave unread from becoming its next request, which
/// nobody judged and which would carry the credential of the request after it (a
/// request desync):
///
/// - A request with a body goes with `Connection: close`, so an HTTP/1.1 upstream
///   connection ends with its answer and nothing sent after it is read as another
///   request. Whether an upstream read the body cannot be told from outside: a server
///   may skip a GET's body, or answer a POST (a 401, or a handler that never reads)
///   without reading it, and the gateway has sent it all by then. An HTTP/2 upstream
///   frames every body and keeps its connection (the client drops the header there).
/// - `Expect: 100-continue` is not passed on: the gateway sends the body anyway.
/// - `Content-Length` is written as the number it is (`05` → `5`), as every server reads
///   it.
fn guard_against_desync(parts: &mut http::request::Parts, body: &ForwardBody) {
    parts.headers.remove(http::header::EXPECT);
    let length = body.size_hint().exact();
    if let Some(length) = length {
        if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(length),
            );
        }
    }
    if length != Some(0) && !body.is_end_stream() {
        parts.headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes upstream of a request's head: no `Expect`, `Content-Length` as its
    /// number, and `Connection: close` for a request with a body, whatever its method.
    #[test]
    fn heads_are_shaped_so_no_unread_body_becomes_a_request_whatever_the_method() {
        let shaped = |method: &str, body: &'static [u8], headers: &[(&str, &str)]| {
            let mut builder = http::Request::builder().method(method).uri("/x");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let (mut parts, ()) = builder.body(()).unwrap().into_parts();
            let body = ForwardBody::Buffered {
                data: Some(bytes::Bytes::from_static(body)),
                trailers: None,
                reserved: None,
            };
            guard_against_desync(&mut parts, &body);
            parts.headers
        };
        let get = shaped(
            "GET",
            b"hello",
            &[("content-length", "05"), ("expect", "100-continue")],
        );
        assert_eq!(get["content-length"], "5");
        assert_eq!(get["connection"], "close");
        assert!(get.get("expect").is_none());
        for method in ["POST", "PROPFIND", "FOO"] {
            let other = shaped(method, b"hello", &[("content-length", "5")]);
            assert_eq!(other["connection"], "close", "{method}");
        }
        let empty = shaped("GET", b"", &[]);
        assert!(empty.get("connection").is_none() && empty.get("content-length").is_none());
    }

    /// RFC 6455's own example, and what is not a handshake.
    #[test]
    fn a_websocket_is_accepted_only_by_the_answer_to_its_key() {
        let mut request = http::HeaderMap::new();
        request.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(websocket_key(&request), None, "no version");
        request.insert("sec-websocket-version", "13".parse().unwrap());
        let key = websocket_key(&request).expect("a key");
        let mut answer = http::HeaderMap::new();
        answer.insert("upgrade", "websocket".parse().unwrap());
        assert!(!accepts_websocket(&answer, &key), "no accept");
        answer.insert(
            "sec-websocket-accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
        );
        assert!(accepts_websocket(&answer, &key));
        answer.insert("upgrade", "h2c".parse().unwrap());
        assert!(!accepts_websocket(&answer, &key), "another protocol");
        request.insert("sec-websocket-key", "c2hvcnQ=".parse().unwrap());
        assert_eq!(websocket_key(&request), None, "not 16 bytes");
    }
}
