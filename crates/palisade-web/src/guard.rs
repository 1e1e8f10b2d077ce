//! What every request and response of `palisade up`'s listener goes through, the JSON
//! API included: the `Host` header check and the security headers.
//!
//! The Host check is the defence against DNS rebinding: a web page on an attacker's
//! domain whose name is re-pointed at 127.0.0.1 would otherwise reach this server as
//! "same origin". Only the listen address itself, `localhost` and the loopback
//! literals with the listen port are accepted (any IP literal with the port when the
//! server listens on all interfaces), never another name.
//!
//! The headers make pages inert outside their own origin: a Content-Security-Policy
//! that allows only this origin's script and style (no inline script at all) and no
//! framing, `nosniff`, referrers only to this origin (none at all from the login URL,
//! which carries a token), and `no-store`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The listen address and the `Host` values it answers to.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

#[derive(Debug)]
struct GuardInner {
    listen: SocketAddr,
    allowed: Vec<String>,
}

impl Guard {
    pub fn new(listen: SocketAddr) -> Guard {
        let port = listen.port();
        let mut allowed = vec![
            listen.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        allowed.sort();
        allowed.dedup();
        Guard {
            inner: Arc::new(GuardInner { listen, allowed }),
        }
    }

    /// Whether `host` (a `Host` header value) names this server.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.inner.allowed.contains(&host) {
            return true;
        }
        // Listening on all interfaces: any address literal with our port is us, and a
        // literal cannot be re-pointed the way a name can.
        if self.inner.listen.ip().is_unspecified() {
            if let Ok(addr) = host.parse::<SocketAddr>() {
                return addr.port() == self.inner.listen.port();
            }
        }
        false
    }

    /// Whether `origin` (`scheme://host[:port]`) is this server's own origin.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        match origin.strip_prefix("http://") {
            Some(host) => !host.contains('/') && self.host_allowed(host),
            None => false,
        }
    }

    pub fn listen(&self) -> SocketAddr {
        self.inner.listen
    }
}

/// Whether every host `request` names is this server: its one `Host` header and the
/// authority of an absolute-form target (`GET http://other/ HTTP/1.1`), each if there,
/// and at least one. Two `Host` headers, or a target naming another host than the
/// header, are refused: readers differ on which one counts.
fn names_only_this_server(guard: &Guard, request: &Request) -> bool {
    let headers: Vec<&HeaderValue> = request.headers().get_all(header::HOST).iter().collect();
    if headers.len() > 1 {
        return false;
    }
    let header = headers.first().map(|value| value.to_str());
    let authority = request.uri().authority().map(|a| a.as_str());
    let named: Vec<&str> = match (header, authority) {
        (Some(Err(_)), _) | (None, None) => return false,
        (Some(Ok(header)), authority) => std::iter::once(header).chain(authority).collect(),
        (None, Some(authority)) => vec![authority],
    };
    named.into_iter().all(|host| guard.host_allowed(host))
}

/// Refuses a foreign `Host`, then adds the security headers to whatever is answered.
pub async fn protect(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    // HTTP/1.1 requires Host; an absolute-form request target carries it in the URI.
    let mut response = match names_only_this_server(&guard, &request) {
        true => next.run(request).await,
        false => (
            StatusCode::MISDIRECTED_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from(format!(
                "palisade: this server answers only to http://{} (or localhost); the Host header named another site\n",
                guard.listen()
            )),
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Our own forms need their Origin: a browser sends `Origin: null` with a form
    // post under `no-referrer`. `same-origin` sends nothing to any other site; the
    // login page, whose URL carries a token, sets `no-referrer` itself.
    if !headers.contains_key(header::REFERRER_POLICY) {
        set(headers, header::REFERRER_POLICY, "same-origin");
    }
    set(headers, header::CACHE_CONTROL, "no-store");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_and_port_pass() {
        let guard = Guard::new("127.0.0.1:10254".parse().unwrap());
        for good in [
            "127.0.0.1:10254",
            "localhost:10254",
            "LOCALHOST:10254",
            "[::1]:10254",
        ] {
            assert!(guard.host_allowed(good), "{good}");
        }
        for bad in [
            "evil.example:10254",
            "127.0.0.1:80",
            "localhost",
            "127.0.0.1",
            "10.0.0.1:10254",
            "",
            "127.0.0.1:10254.evil.example",
        ] {
            assert!(!guard.host_allowed(bad), "{bad}");
        }
        assert!(guard.origin_allowed("http://127.0.0.1:10254"));
        assert!(!guard.origin_allowed("https://127.0.0.1:10254"));
        assert!(!guard.origin_allowed("http://evil.example"));
        assert!(!guard.origin_allowed("null"));
        assert!(!guard.origin_allowed("http://127.0.0.1:10254/x"));

        let any = Guard::new("0.0.0.0:8080".parse().unwrap());
        assert!(any.host_allowed("192.0.2.7:8080"));
        assert!(!any.host_allowed("192.0.2.7:9090"));
        assert!(!any.host_allowed("rebind.example:8080"));
    }
}
