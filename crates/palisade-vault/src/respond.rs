//! Turning refusals into HTTP responses, and the header hygiene every forwarded
//! message gets.

use crate::body::ProxyBody;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use palisade_policy::{ErrorBody, GatewayErrorKind};

/// A JSON refusal with `x-should-retry` (and `Retry-After` when known).
pub fn refusal(body: &ErrorBody) -> Response<ProxyBody> {
    let json = body.to_json();
    let mut response = Response::new(ProxyBody::full(json));
    *response.status_mut() =
        http::StatusCode::from_u16(body.status()).unwrap_or(http::StatusCode::FORBIDDEN);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        HeaderName::from_static("x-should-retry"),
        HeaderValue::from_static(if body.should_retry() { "true" } else { "false" }),
    );
    if let Some(seconds) = body.retry_after_seconds {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if body.kind == Some(GatewayErrorKind::ProxyAuthRequired) {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"palisade\""),
        );
    }
    response
}

/// A JSON response for the admin API.
pub fn json(status: http::StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Headers of one hop. `Trailer` is not among them: it declares end-to-end trailer
/// fields, and without it an HTTP/1.1 hop drops the trailers (RFC 9110, 6.6.2).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Moves an answer's transfer codings other than `chunked` (`Transfer-Encoding: gzip,
/// chunked`) to the end of its `Content-Encoding`. hyper undoes only the chunking, so
/// the body is still in those codings, and `Transfer-Encoding` is a header of one hop:
/// without this the client got the compressed bytes with nothing saying so, and the
/// search for credentials sent back ([`crate::reflect`]) saw them compressed. As
/// content codings, the client reads them and the search decodes them (or refuses an
/// answer in a coding it cannot read). A value that is not text counts as a coding no
/// one can read.
pub fn transfer_codings_to_content(headers: &mut HeaderMap) {
    let codings: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text
                .split(',')
                .map(|coding| coding.trim().to_string())
                .collect::<Vec<_>>(),
            Err(_) => vec!["unreadable".to_string()],
        })
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked"))
        .collect();
    for coding in codings {
        let value = HeaderValue::from_str(&coding)
            .unwrap_or_else(|_| HeaderValue::from_static("unreadable"));
        headers.append(header::CONTENT_ENCODING, value);
    }
}

/// Removes hop-by-hop headers (and those named by `Connection`). With `keep_upgrade`,
/// `Connection: upgrade` and `Upgrade` survive so a WebSocket handshake can pass.
/// `TE: trailers` is kept because gRPC-style clients need it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(text) = value.to_str() {
            for token in text.split(',') {
                let token = token.trim();
                if keep_upgrade && token.eq_ignore_ascii_case("upgrade") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a request asks for a WebSocket (HTTP/1.1 upgrade).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_named_ones_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get(header::PROXY_AUTHORIZATION).is_none());
        assert!(h.get("proxy-connection").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::UPGRADE).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "yes");
    }

    #[test]
    fn websocket_handshake_headers_survive_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }
}
