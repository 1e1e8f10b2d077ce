//! The runner's one HTTP client, for model APIs and `web_fetch` alike.
//!
//! Inside a sandbox the only way out is the vault's HTTP proxy (the shim on
//! `127.0.0.1:3128`), whose MITM certificates chain to a CA found in the bundle named
//! by `SSL_CERT_FILE`. So the client tunnels `https` through `CONNECT`, sends plain
//! `http` to the proxy in absolute form, and trusts the roots of that bundle on top of
//! (or instead of) the system's.
//!
//! hyper-util's legacy client does the HTTP (HTTP/2 where the tunnel's TLS offers it,
//! else HTTP/1.1); the connector here is written by hand
//! because it owns both proxy shapes (CONNECT for https, absolute form for http) with
//! one connect timeout and a bounded proxy reply, which hyper-util's `Tunnel` alone
//! does not cover. Every wait is bounded: connect (TCP plus CONNECT), response headers
//! (including TLS), and each gap between body chunks.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest proxy reply to a CONNECT that is read before giving up.
const MAX_PROXY_REPLY: usize = 16 * 1024;

/// How the client reaches the network.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `http://HOST:PORT` (optionally `http://user:token@HOST:PORT`) of the proxy
    /// every request goes through; `None` connects directly.
    pub proxy: Option<String>,
    /// A PEM bundle whose certificates are trusted as roots (the vault CA).
    pub extra_roots: Option<PathBuf>,
    /// Whether the system's trust roots are trusted too.
    pub system_roots: bool,
    /// TCP connect plus the proxy's answer to CONNECT.
    pub connect_timeout: Duration,
    /// From sending the request to the response headers (TLS included).
    pub header_timeout: Duration,
    /// Longest silence between two chunks of a response body.
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            proxy: None,
            extra_roots: None,
            system_roots: true,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl HttpConfig {
    /// The sandbox's settings: the proxy from `HTTPS_PROXY` (or `https_proxy`,
    /// `HTTP_PROXY`, `http_proxy`), extra roots from `SSL_CERT_FILE`, system roots too.
    pub fn from_env() -> HttpConfig {
        let proxy = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|value| !value.trim().is_empty());
        let extra_roots = std::env::var_os("SSL_CERT_FILE")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        HttpConfig {
            proxy,
            extra_roots,
            ..HttpConfig::default()
        }
    }
}

/// What can go wrong talking HTTP.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("bad proxy address {0:?}: expected http://HOST:PORT")]
    InvalidProxy(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("reading the response failed: {0}")]
    Body(String),
}

/// A cheap-to-clone HTTP client.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<ProxyConnector>, Full<Bytes>>,
    config: Arc<HttpConfig>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client; fails on a bad proxy address or unreadable roots.
    pub fn new(config: HttpConfig) -> Result<HttpClient, HttpError> {
        let proxy = match &config.proxy {
            Some(address) => Some(Arc::new(ProxyTarget::parse(address)?)),
            None => None,
        };
        let tls = tls_config(&config)?;
        let connector = ProxyConnector {
            proxy,
            connect_timeout: config.connect_timeout,
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            // HTTP/2 where the vault's tunnel offers it (ALPN): model calls then share
            // the vault's pooled HTTP/2 upstream connection, which it keeps after a
            // request with a body (over HTTP/1.1 it closes that, see docs/vault.md).
            .enable_http2()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(HttpClient {
            client,
            config: Arc::new(config),
        })
    }

    /// Sends `request` and waits (bounded) for the response headers.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<HttpResponse, HttpError> {
        let pending = self.client.request(request);
        let response = tokio::time::timeout(self.config.header_timeout, pending)
            .await
            .map_err(|_| HttpError::Timeout("the response headers"))?
            .map_err(|error| HttpError::Request(error_chain(&error)))?;
        let (parts, body) = response.into_parts();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            idle_timeout: self.config.idle_timeout,
        })
    }
}

/// A response whose body is read chunk by chunk, each wait bounded.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    idle_timeout: Duration,
}

impl HttpResponse {
    /// The next data chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = tokio::time::timeout(self.idle_timeout, self.body.frame())
                .await
                .map_err(|_| HttpError::Timeout("more of the response body"))?;
            match frame {
                None => return Ok(None),
                Some(Err(error)) => return Err(HttpError::Body(error_chain(&error))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers carry nothing the runner uses.
                }
            }
        }
    }

    /// Reads at most `limit` bytes of the body; the flag says whether more was cut off.
    pub async fn read_limited(mut self, limit: usize) -> Result<(Bytes, bool), HttpError> {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await? {
            let room = limit.saturating_sub(body.len());
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok((body.freeze(), true));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), false))
    }

    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// An error and its causes on one line: hyper's own messages are terse.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn tls_config(config: &HttpConfig) -> Result<rustls::ClientConfig, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    if config.system_roots {
        // Unreadable system certificates are skipped: the vault CA bundle is what
        // matters inside a sandbox.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(path) = &config.extra_roots {
        let certs = CertificateDer::pem_file_iter(path).map_err(|error| {
            HttpError::Tls(format!("cannot read CA bundle {}: {error}", path.display()))
        })?;
        for cert in certs {
            let cert = cert.map_err(|error| {
                HttpError::Tls(format!("bad certificate in {}: {error}", path.display()))
            })?;
            roots
                .add(cert)
                .map_err(|error| HttpError::Tls(format!("{}: {error}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(HttpError::Tls(
            "no trust roots: set SSL_CERT_FILE or enable system roots".to_string(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| HttpError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}

/// The proxy's address and optional credential.
#[derive(Debug)]
struct ProxyTarget {
    host: String,
    port: u16,
    authorization: Option<String>,
}

impl ProxyTarget {
    fn parse(address: &str) -> Result<ProxyTarget, HttpError> {
        let invalid = || HttpError::InvalidProxy(address.to_string());
        let uri: Uri = address.trim().parse().map_err(|_| invalid())?;
        if uri.scheme_str().is_some_and(|scheme| scheme != "http") {
            return Err(invalid());
        }
        let authority = uri.authority().ok_or_else(invalid)?;
        let host = authority.host().to_string();
        if host.is_empty() {
            return Err(invalid());
        }
        let authorization = authority.as_str().rsplit_once('@').map(|(userinfo, _)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(userinfo);
            format!("Basic {encoded}")
        });
        Ok(ProxyTarget {
            host,
            port: authority.port_u16().unwrap_or(80),
            authorization,
        })
    }
}

/// Connects to the target directly or through the proxy.
#[derive(Clone)]
struct ProxyConnector {
    proxy: Option<Arc<ProxyTarget>>,
    connect_timeout: Duration,
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<ProxiedStream, io::Error>> + Send>>;

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = ProxiedStream;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let proxy = self.proxy.clone();
        let limit = self.connect_timeout;
        Box::pin(async move {
            tokio::time::timeout(limit, connect(proxy, target))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }
}

async fn connect(proxy: Option<Arc<ProxyTarget>>, target: Uri) -> io::Result<ProxiedStream> {
    let https = target.scheme_str() == Some("https");
    let host = target
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?;
    let port = target.port_u16().unwrap_or(if https { 443 } else { 80 });
    let Some(proxy) = proxy else {
        let stream = TcpStream::connect((unbracket(host), port)).await?;
        let _ = stream.set_nodelay(true);
        return Ok(ProxiedStream {
            io: TokioIo::new(stream),
            absolute_form: false,
        });
    };
    let mut stream = TcpStream::connect((unbracket(&proxy.host), proxy.port))
        .await
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot reach proxy {}:{}: {error}", proxy.host, proxy.port),
            )
        })?;
    let _ = stream.set_nodelay(true);
    if https {
        tunnel(&mut stream, &proxy, host, port).await?;
    }
    Ok(ProxiedStream {
        io: TokioIo::new(stream),
        // Plain http goes to the proxy as `GET http://host/path`.
        absolute_form: !https,
    })
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Asks the proxy for a tunnel to `host:port` and checks it said 200.
async fn tunnel(
    stream: &mut TcpStream,
    proxy: &ProxyTarget,
    host: &str,
    port: u16,
) -> io::Result<()> {
    let mut request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    // The server speaks only after the TLS client hello, so everything read here
    // belongs to the proxy's reply.
    let mut reply = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    let head_end = loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "proxy closed the connection during CONNECT",
            ));
        }
        reply.extend_from_slice(&buffer[..read]);
        if let Some(end) = find(&reply, b"\r\n\r\n") {
            break end;
        }
        if reply.len() > MAX_PROXY_REPLY {
            return Err(io::Error::other("proxy reply to CONNECT is too long"));
        }
    };
    let head = String::from_utf8_lossy(&reply[..head_end]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status == "200" {
        return Ok(());
    }
    // A refusal from the vault carries a JSON body meant for the agent; pass on
    // what arrived with the head.
    let body = String::from_utf8_lossy(&reply[head_end + 4..]);
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!(
            "proxy refused CONNECT {host}:{port}: {status_line} {}",
            body.trim()
        ),
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A TCP stream, marked for absolute-form requests when it leads to the proxy.
struct ProxiedStream {
    io: TokioIo<TcpStream>,
    absolute_form: bool,
}

impl Connection for ProxiedStream {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.absolute_form)
    }
}

impl hyper::rt::Read for ProxiedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxiedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_address_with_credential() {
        let target = ProxyTarget::parse("http://x:token@127.0.0.1:3128").unwrap();
        assert_eq!(target.host, "127.0.0.1");
        assert_eq!(target.port, 3128);
        assert_eq!(target.authorization.as_deref(), Some("Basic eDp0b2tlbg=="));
        assert!(ProxyTarget::parse("https://127.0.0.1:3128").is_err());
        assert!(ProxyTarget::parse("not a url").is_err());
    }
}
