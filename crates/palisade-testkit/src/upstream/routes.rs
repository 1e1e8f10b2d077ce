//! The upstream's endpoints.
//!
//! | path | answer |
//! | --- | --- |
//! | anything else | 200 JSON echo of the request (`method`, `path`, `query`, `headers`, `body_len`, `body_sha256`, `version`) |
//! | `/sse?n=N&interval_ms=M` | `text/event-stream`, N events `data: event-i`, M ms apart, each flushed alone |
//! | `/ws` | WebSocket echo; the first server message is the handshake's headers as JSON |
//! | `/status/{code}` | that status, small JSON body |
//! | `/redirect` | 302 to `/echo` (a proxy must pass it on, not follow it) |
//! | `/bytes?n=N` | N bytes of body, streamed in chunks |
//! | `/cut?length=L&text=T` | `Content-Length: L` but only T, then the stream is reset (HTTP/2 `RST_STREAM` `NO_ERROR`) or the connection closed |
//! | `/slow?ms=N` | the echo, after holding the response headers back N ms |
//! | `/close` | the connection is dropped without any response |
//! | `/page?text=T[&encoding=E]` | T as plain text; compressed with E (`gzip`, `deflate`, `br`, `zstd`) whatever the client asked, another E named in `Content-Encoding` but not applied; `&transfer=E` instead: compressed as a transfer coding (`Transfer-Encoding: E, chunked`); `&reason=R`: R as the status line's reason phrase (HTTP/1.1) |
//! | `/v1/messages` | fake Anthropic Messages API ([`super::llm`]) |
//! | `/v1/models` | fake model list, Anthropic's shape (paged) or OpenAI's ([`super::llm`]) |
//! | `/v1/chat/completions` | fake OpenAI-compatible chat API ([`super::llm`]) |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{header_pairs, llm, version_name, RecordedRequest, Shared};

/// A body error: `/cut` ends its stream with one (an HTTP/2 `RST_STREAM` whose reason
/// it names), every other body never fails.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BodyError>;

/// Returned by the service to make hyper drop the connection (used by `/close`).
#[derive(Debug)]
pub(crate) struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed on purpose by the test upstream")
    }
}

impl std::error::Error for CloseConnection {}

/// Largest `/bytes` body, so a typo cannot fill the disk of a proxy under test.
const MAX_BYTES: u64 = 1 << 30;
/// Longest `/slow` and SSE delay, so a typo cannot stall a test run.
const MAX_DELAY_MS: u64 = 120_000;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    tls: bool,
    connection: u64,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, CloseConnection> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);

    if path == "/ws" {
        shared.record(recorded(&request, 0, tls, connection));
        return Ok(websocket(&mut request));
    }
    // A 101 after which the connection goes on reading HTTP, each request that comes
    // after it recorded: one that accepts nothing (no Sec-WebSocket-Accept), as a
    // front end passing on a backend's status would send, or one that accepts the key.
    if path == "/ws-unaccepted" || path == "/ws-accepted-then-http" {
        shared.record(recorded(&request, 0, tls, connection));
        let accept = request
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|_| path == "/ws-accepted-then-http")
            .map(|key| derive_accept_key(key.as_bytes()));
        let upgrade = hyper::upgrade::on(&mut request);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let service = hyper::service::service_fn(move |next: Request<Incoming>| {
                shared.record(recorded(&next, 0, tls, connection));
                async { Ok::<_, std::convert::Infallible>(Response::new(full(Bytes::new()))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(upgraded, service)
                .await;
        });
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket");
        if let Some(accept) = accept {
            response = response.header(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        return Ok(response
            .body(full(Bytes::new()))
            .unwrap_or_else(|_| internal_error()));
    }

    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(CloseConnection),
    };
    let head = Request::from_parts(parts, ());
    let mut record = recorded(&head, body.len(), tls, connection);
    record.body = Bytes::copy_from_slice(&body[..body.len().min(super::RECORDED_BODY_MAX)]);
    shared.record(record);

    let params = QueryParams::parse(query.as_deref());
    let response = match path.as_str() {
        "/close" => return Err(CloseConnection),
        "/sse" => sse(
            params.number("n").unwrap_or(5),
            params
                .number("interval_ms")
                .unwrap_or(100)
                .min(MAX_DELAY_MS),
        ),
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(r#"{"redirect":"/echo"}"#))
            .unwrap_or_else(|_| internal_error()),
        "/bytes" => bytes_body(params.number("n").unwrap_or(1024).min(MAX_BYTES)),
        "/cut" => cut_body(
            params.number("length").unwrap_or(2048).min(MAX_BYTES),
            params.text("text").unwrap_or_default().to_string(),
        ),
        // A page whose text the test chooses (`?text=`), served as plain text; with
        // `&encoding=`, compressed that way whatever the client asked for (as some
        // servers do), an unknown encoding named but the text sent as it is.
        "/page" if params.text("reason").is_some() => {
            let text = params.text("text").unwrap_or_default().to_string();
            let reason = params
                .text("reason")
                .unwrap_or_default()
                .as_bytes()
                .to_vec();
            let mut response = Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(full(text))
                .unwrap_or_else(|_| internal_error());
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                response.extensions_mut().insert(reason);
            }
            response
        }
        "/page" => {
            let text = params.text("text").unwrap_or_default().to_string();
            // `&transfer=`: compressed as a transfer coding instead (HTTP/1.1 only).
            if let Some(coding) = params.text("transfer") {
                return Ok(Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header(header::TRANSFER_ENCODING, format!("{coding}, chunked"))
                    .body(full(encoded(text.as_bytes(), coding).await))
                    .unwrap_or_else(|_| internal_error()));
            }
            match params.text("encoding") {
                Some(encoding) => Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header(header::CONTENT_ENCODING, encoding)
                    .body(full(encoded(text.as_bytes(), encoding).await))
                    .unwrap_or_else(|_| internal_error()),
                None => Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(full(text))
                    .unwrap_or_else(|_| internal_error()),
            }
        }
        "/slow" => {
            let ms = params.number("ms").unwrap_or(1000).min(MAX_DELAY_MS);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(&head, &body)
        }
        // A response whose head carries `?n=` bytes of one header (`X-Big`), at most 1 MiB.
        "/big-head" => {
            let n = params.number("n").unwrap_or(1024).min(1 << 20) as usize;
            Response::builder()
                .header("x-big", "a".repeat(n))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(full("big head"))
                .unwrap_or_else(|_| internal_error())
        }
        "/v1/messages" => llm::anthropic(&shared, &head, &body),
        "/v1/chat/completions" => llm::openai(&shared, &head, &body),
        "/v1/models" => llm::models(&shared, &head, &params),
        _ => match path.strip_prefix("/status/") {
            Some(code) => status(code),
            None => echo(&head, &body),
        },
    };
    Ok(response)
}

fn recorded<T>(
    request: &Request<T>,
    body_len: usize,
    tls: bool,
    connection: u64,
) -> RecordedRequest {
    RecordedRequest {
        method: request.method().to_string(),
        path_and_query: request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()),
        headers: header_pairs(request.headers()),
        body_len,
        body: Bytes::new(),
        version: version_name(request.version()).to_string(),
        tls,
        connection,
        received_at: std::time::Instant::now(),
    }
}

/// `data` compressed with `encoding` (`gzip`, `deflate`, `br`, `zstd`); as it is for
/// any other name.
async fn encoded(data: &[u8], encoding: &str) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = match encoding {
        "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
        "deflate" => ZlibEncoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
        "zstd" => ZstdEncoder::new(data).read_to_end(&mut out).await,
        _ => return data.to_vec(),
    };
    read.expect("compressing in memory cannot fail");
    out
}

pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(full("test upstream could not build its response"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The request's headers as `{lowercase name: [values]}`.
pub(crate) fn headers_json(request: &Request<()>) -> serde_json::Value {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in header_pairs(request.headers()) {
        headers.entry(name).or_default().push(value);
    }
    // HTTP/2 carries the host as :authority; show it as `host` so tests can check
    // it the same way on both versions.
    if !headers.contains_key("host") {
        if let Some(authority) = request.uri().authority() {
            headers.insert("host".into(), vec![authority.to_string()]);
        }
    }
    serde_json::json!(headers)
}

fn echo(request: &Request<()>, body: &Bytes) -> Response<Body> {
    let value = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers_json(request),
        "body_len": body.len(),
        "body_sha256": hex::encode(Sha256::digest(body)),
        "version": version_name(request.version()),
    });
    json_response(StatusCode::OK, &value)
}

fn status(code: &str) -> Response<Body> {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad_status", "message": format!("not a status code: {code}")}),
        );
    };
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if no_body {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = status;
        return response;
    }
    json_response(status, &serde_json::json!({"status": status.as_u16()}))
}

fn sse(count: u64, interval_ms: u64) -> Response<Body> {
    let events = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        let frame = Frame::data(Bytes::from(format!("data: event-{i}\n\n")));
        Some((Ok::<_, BodyError>(frame), i + 1))
    });
    event_stream(BodyExt::boxed(StreamBody::new(events)))
}

pub(crate) fn event_stream(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn bytes_body(total: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= total {
            return None;
        }
        let size = CHUNK.min(total - sent);
        let chunk = Bytes::from(vec![b'x'; size as usize]);
        Some((Ok::<_, BodyError>(Frame::data(chunk)), sent + size))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    response
}

/// `Content-Length: length`, then only `text`, then the stream ends in error: over
/// HTTP/2 a `RST_STREAM` with reason `NO_ERROR` (which some clients read as a clean
/// end), over HTTP/1.1 the connection closes.
fn cut_body(length: u64, text: String) -> Response<Body> {
    // The error waits a moment, so the head and the text are on their way first.
    let frames = futures_util::stream::unfold(Some(Some(text)), |step| async move {
        match step? {
            Some(text) => Some((Ok(Frame::data(Bytes::from(text))), Some(None))),
            None => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let reset: BodyError = Box::new(h2::Error::from(h2::Reason::NO_ERROR));
                Some((Err(reset), None))
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn websocket(request: &mut Request<Incoming>) -> Response<Body> {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "not_websocket", "message": "/ws needs a WebSocket upgrade over HTTP/1.1"}),
        );
    };
    if !is_upgrade {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "not_websocket", "message": "/ws needs Upgrade: websocket"}),
        );
    }
    let handshake = Request::builder()
        .uri(request.uri().clone())
        .version(request.version())
        .body(())
        .map(|mut head| {
            *head.headers_mut() = request.headers().clone();
            head
        })
        .unwrap_or_default();
    let greeting = headers_json(&handshake).to_string();
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if socket.send(Message::text(greeting)).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            // Pings are answered by tungstenite itself; only data is echoed.
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                return;
            }
        }
        let _ = socket.close(None).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| internal_error())
}

/// Query parameters, last value wins.
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: Option<&str>) -> QueryParams {
        let pairs = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        QueryParams(pairs)
    }

    pub(crate) fn number(&self, name: &str) -> Option<u64> {
        self.text(name).and_then(|v| v.parse().ok())
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
