//! A small JSON-over-HTTPS client for the platforms' REST APIs.
//!
//! Written on the hyper/rustls stack the vault already uses rather than with each
//! platform's SDK: the three platforms need a dozen calls between them, every one a
//! JSON POST or GET; the SDKs would bring three more HTTP stacks (and, for some, TLS
//! backends other than rustls with ring), while what matters here is the same for all
//! of them and is easier to guarantee in one place: a base URL that can point at a
//! test server, a timeout on every call, a bound on every response read, tokens never
//! in logs or errors, and no credential sent in clear to anything but a loopback
//! address.

use crate::platform_text::Scrubber;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

/// Largest response body read from a platform.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: no answer within {seconds} s")]
    Timeout { what: String, seconds: u64 },
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("{what}: the answer is not the JSON expected ({reason})")]
    Malformed { what: String, reason: String },
}

impl HttpError {
    /// Whether retrying later could help (network trouble, rate limits, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Timeout { .. } | HttpError::Transport { .. } => true,
            HttpError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client for one API base URL (`https://api.telegram.org`, or a test server).
#[derive(Clone)]
pub struct ApiClient {
    client: Client<Https, Full<Bytes>>,
    base: Arc<url::Url>,
    timeout: Duration,
    /// Keeps the channel's secrets out of what the platform answers (see
    /// [`crate::platform_text`]).
    scrubber: Scrubber,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

/// ring, as everywhere in Palisade.
pub fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The ring provider supports the default versions; this cannot happen.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

/// Whether `url` may carry a credential: HTTPS, or plain HTTP to a loopback address.
pub fn check_base_url(url: &url::Url) -> Result<(), String> {
    match url.scheme() {
        "https" | "wss" => Ok(()),
        "http" | "ws" if is_loopback(url) => Ok(()),
        "http" | "ws" => Err(format!(
            "{url} is plain {} to a non-loopback address; a token would travel in clear: use https",
            url.scheme()
        )),
        other => Err(format!("{url}: scheme {other} is not supported")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

impl ApiClient {
    pub fn new(base: &str, timeout: Duration) -> Result<ApiClient, HttpError> {
        let mut base = url::Url::parse(base)
            .map_err(|e| HttpError::Config(format!("API base URL {base:?} is invalid: {e}")))?;
        check_base_url(&base).map_err(HttpError::Config)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(ApiClient {
            client,
            base: Arc::new(base),
            timeout,
            scrubber: Scrubber::default(),
        })
    }

    /// The same client, keeping `scrubber`'s secrets out of every error it makes of a
    /// platform's answer.
    pub fn scrubbing(mut self, scrubber: Scrubber) -> ApiClient {
        self.scrubber = scrubber;
        self
    }

    /// A platform's text made fit for an error or a log line: this channel's secrets
    /// replaced, printable, bounded.
    pub fn clean(&self, text: &str) -> String {
        self.scrubber.clean(text)
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// `POST base + path` with a JSON body; `what` names the call in errors (never the
    /// URL, which may hold a token).
    pub async fn post_json(
        &self,
        what: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, HeaderMap, serde_json::Value), HttpError> {
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::Config(e.to_string()))?;
        self.call(
            what,
            Method::POST,
            path,
            headers,
            // With its charset, as Slack asks; one header, never a second beside it
            // (a strict server refuses a request with two).
            Some(("application/json; charset=utf-8", bytes)),
            timeout,
        )
        .await
    }

    pub async fn get_json(
        &self,
        what: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, serde_json::Value), HttpError> {
        self.call(what, Method::GET, path, headers, None, None)
            .await
    }

    pub async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, HeaderMap, serde_json::Value), HttpError> {
        let url = self
            .base
            // `./` keeps a first segment with a colon (a Telegram token, `bot123:ABC`)
            // from being read as a URL scheme.
            .join(&format!("./{}", path.trim_start_matches('/')))
            .map_err(|e| HttpError::Config(format!("{what}: cannot build the request URL: {e}")))?;
        let mut request = Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| HttpError::Config(format!("{what}: a header value is invalid")))?;
            if name.eq_ignore_ascii_case("authorization") {
                value.set_sensitive(true);
            }
            request = request.header(*name, value);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(http::header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| HttpError::Config(format!("{what}: {e}")))?;
        let timeout = timeout.unwrap_or(self.timeout);
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| HttpError::Transport {
                        what: what.to_string(),
                        reason: describe(&e),
                    })?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::Transport {
                    what: what.to_string(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, HttpError>((status, headers, bytes))
        };
        let (status, headers, bytes) =
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| HttpError::Timeout {
                    what: what.to_string(),
                    seconds: timeout.as_secs(),
                })??;
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(json) => json,
                Err(e) if status.is_success() => {
                    return Err(HttpError::Malformed {
                        what: what.to_string(),
                        reason: e.to_string(),
                    })
                }
                // Whole here: secrets are replaced before the text is cut.
                Err(_) => serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            }
        };
        if !status.is_success() && !(200..300).contains(&status.as_u16()) {
            let retry_after = retry_after(&headers, &json);
            let shown = match &json {
                serde_json::Value::String(text) => self.scrubber.clean(text),
                other => self.scrubber.clean(&other.to_string()),
            };
            return Err(HttpError::Status {
                what: what.to_string(),
                status,
                body: shown,
                retry_after,
            });
        }
        Ok((status, headers, json))
    }
}

/// Longest wait a platform may ask for before a call is tried again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How long the platform asked to wait: the `Retry-After` header (Slack, Discord), or
/// the answer's `retry_after` (Discord, seconds with a fraction) or
/// `parameters.retry_after` (Telegram). Bounded by [`MAX_RETRY_AFTER`]; a value that is
/// not a finite number of seconds is no answer.
fn retry_after(headers: &HeaderMap, json: &serde_json::Value) -> Option<Duration> {
    let header = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok());
    let body = json
        .get("retry_after")
        .or_else(|| json.pointer("/parameters/retry_after"))
        .and_then(serde_json::Value::as_f64);
    header
        .or(body)
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// One line, without the URL (which may carry a token, as Telegram's does).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = if error.is_connect() {
        String::from("cannot connect")
    } else {
        String::from("the connection failed")
    };
    let mut current = std::error::Error::source(error);
    while let Some(cause) = current {
        let shown = cause.to_string();
        if !shown.contains("://") {
            text.push_str(": ");
            text.push_str(&shown);
        }
        current = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_a_colon_stays_under_the_base() {
        let base = url::Url::parse("http://127.0.0.1:9/api/").unwrap();
        let url = base.join(&format!("./{}", "bot123:secret/getMe")).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/api/bot123:secret/getMe");
        assert!(base.join("bot123:secret/getMe").unwrap().scheme() == "bot123");
    }

    #[test]
    fn tokens_never_go_in_clear_beyond_loopback() {
        for ok in [
            "https://api.telegram.org",
            "http://127.0.0.1:9000",
            "http://localhost:1/x",
            "http://[::1]:80",
            "wss://gateway.discord.gg",
        ] {
            assert!(
                check_base_url(&url::Url::parse(ok).unwrap()).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://api.telegram.org",
            "ws://10.0.0.1:80",
            "ftp://127.0.0.1",
        ] {
            assert!(
                check_base_url(&url::Url::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
