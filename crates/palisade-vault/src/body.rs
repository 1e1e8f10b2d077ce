//! Body types of the proxy.
//!
//! Written by hand rather than boxed: the forward body is either the agent's stream or
//! the exact bytes the gateway read and judged (a body rule or an approval saw them, so
//! those bytes and no others go upstream), and the response body must cut an upstream
//! that goes silent (arming its timer only when the stream actually stalls, so the hot
//! path pays no timer per response) and must end cleanly where an HTTP/1.1 upstream
//! ends a close-delimited body without a TLS `close_notify`.

use crate::body_budget::{Exhausted, Reservation};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body sent upstream.
pub enum ForwardBody {
    /// The agent's body, streamed as it arrives.
    Streaming(Incoming),
    /// A body read whole before it was judged; exactly these bytes are sent.
    Buffered {
        data: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
        /// The bytes it holds of its agent's share, given back when it is dropped
        /// (once sent).
        reserved: Option<Reservation>,
    },
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("the body could not be read: {0}")]
    Failed(String),
    #[error("the gateway holds as many bodies in memory as it may")]
    Busy(Exhausted),
}

impl ForwardBody {
    pub fn empty() -> Self {
        ForwardBody::Buffered {
            data: None,
            trailers: None,
            reserved: None,
        }
    }

    /// Reads the whole body (at most `limit` bytes) within `timeout`, drawing each
    /// frame's bytes from `reserved` before keeping them. On failure the body may be
    /// partly read; what is left can still be drained.
    pub async fn read_whole(
        body: &mut Incoming,
        limit: usize,
        timeout: Duration,
        reserved: &mut Reservation,
    ) -> Result<(Bytes, Option<http::HeaderMap>), ReadError> {
        use http_body_util::BodyExt;
        if body.size_hint().lower() > limit as u64 {
            return Err(ReadError::TooLarge { limit });
        }
        let mut buf = BytesMut::new();
        let mut trailers = None;
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ReadError::Failed(e.to_string()))?;
                match frame.into_data() {
                    Ok(data) => {
                        if buf.len() + data.len() > limit {
                            return Err(ReadError::TooLarge { limit });
                        }
                        reserved.grow(data.len()).map_err(ReadError::Busy)?;
                        buf.extend_from_slice(&data);
                    }
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        break;
                    }
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ReadError::TimedOut(timeout))??;
        Ok((buf.freeze(), trailers))
    }
}

/// Whether a request trailer field may go upstream: only those that carry a checksum
/// or a timing of the body (`content-digest`, `repr-digest`, `content-md5`,
/// `x-amz-checksum-crc32`, `server-timing`). Some servers merge trailers into the head
/// (Apache's `MergeTrailers`), and a field there is judged nowhere: a method override,
/// a routing field (`x-original-url`, `x-forwarded-host`), a credential (`authorization`,
/// a secret's own header name), framing. Few clients send request trailers at all.
fn trailer_passes(name: &http::HeaderName) -> bool {
    let name = name.as_str();
    name.contains("checksum")
        || name.ends_with("digest")
        || name == "content-md5"
        || name == "server-timing"
}

/// Removes from an agent's request trailers every field that may not go upstream
/// ([`trailer_passes`]).
pub(crate) fn clean_trailers(trailers: &mut http::HeaderMap) {
    let dropped: Vec<http::HeaderName> = trailers
        .keys()
        .filter(|name| !trailer_passes(name))
        .cloned()
        .collect();
    for name in dropped {
        trailers.remove(name);
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ForwardBody::Streaming(incoming) => match Pin::new(incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    Poll::Ready(Some(Ok(match frame.into_trailers() {
                        Ok(mut trailers) => {
                            clean_trailers(&mut trailers);
                            Frame::trailers(trailers)
                        }
                        Err(frame) => frame,
                    })))
                }
                other => other,
            },
            ForwardBody::Buffered { data, trailers, .. } => {
                if let Some(data) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|mut t| {
                    clean_trailers(&mut t);
                    Ok(Frame::trailers(t))
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ForwardBody::Streaming(incoming) => incoming.is_end_stream(),
            ForwardBody::Buffered { data, trailers, .. } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Streaming(incoming) => incoming.size_hint(),
            ForwardBody::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// The body returned to the agent: an upstream stream (cut when idle) or a full buffer.
pub enum ProxyBody {
    Upstream {
        inner: Incoming,
        idle_timeout: Duration,
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
        /// An HTTP/1.x response with neither length nor chunking: it ends when the
        /// upstream closes, so an unclean close (no TLS `close_notify`) is its end, not
        /// an error.
        close_delimited: bool,
        /// Whether the response's `Content-Length` (if any) is owed: not for a 204 or
        /// 304 answer, whose length names a representation not sent.
        length_owed: bool,
    },
    Full(Option<Bytes>),
    /// A response from a host the gateway sends secrets to, with them masked wherever
    /// the upstream sent it back.
    Masked(Box<crate::reflect::Masked>),
    /// An upstream body with its compression undone (see [`crate::decoded`]).
    Decoded(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl ProxyBody {
    pub fn upstream(
        inner: Incoming,
        idle_timeout: Duration,
        close_delimited: bool,
        length_owed: bool,
    ) -> Self {
        ProxyBody::Upstream {
            inner,
            idle_timeout,
            idle: None,
            close_delimited,
            length_owed,
        }
    }
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}; the response was cut")]
pub struct IdleTimeout(Duration);

/// An upstream body that ended before the length its head announced: hyper reads an
/// HTTP/2 `RST_STREAM` (or `GOAWAY`) of reason `NO_ERROR` before the stream's end as
/// the body's end. Passed on as one, only hyper's server refusing a body shorter than
/// its `Content-Length` kept the client from taking it whole, after the bytes kept back
/// for masking had been handed to it; ended here, in error, they never are.
#[derive(Debug, thiserror::Error)]
#[error("the upstream ended the response {0} bytes short of its Content-Length")]
pub struct ShortBody(u64);

/// Whether an upstream body error is the connection ending without a clean TLS close.
fn is_unclean_close(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        source = e.source();
    }
    false
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Masked(masked) => Pin::new(masked.as_mut()).poll_frame(cx),
            ProxyBody::Decoded(decoded) => Pin::new(decoded).poll_frame(cx),
            ProxyBody::Upstream {
                inner,
                idle_timeout,
                idle,
                close_delimited,
                length_owed,
            } => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) if *close_delimited && is_unclean_close(&e) => {
                    palisade_policy::budgeted!(warn, "the upstream ended a close-delimited response without a TLS close_notify; passed on as the end of the body");
                    Poll::Ready(None)
                }
                Poll::Ready(None) if *length_owed && inner.size_hint().lower() > 0 => {
                    let short = inner.size_hint().lower();
                    palisade_policy::budgeted!(
                        warn,
                        "the upstream ended a response {short} bytes short of its Content-Length; the client's response is cut, not ended"
                    );
                    Poll::Ready(Some(Err(ShortBody(short).into())))
                }
                Poll::Ready(frame) => {
                    *idle = None;
                    Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
                }
                Poll::Pending => {
                    let timeout = *idle_timeout;
                    let sleep = idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    match sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(timeout).into()))),
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Masked(masked) => masked.is_end_stream(),
            ProxyBody::Decoded(decoded) => decoded.is_end_stream(),
            // A stream reset short of its length reads as ended too: not ended here,
            // so the next poll finds it short.
            ProxyBody::Upstream {
                inner, length_owed, ..
            } => inner.is_end_stream() && !(*length_owed && inner.size_hint().lower() > 0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Masked(masked) => masked.size_hint(),
            ProxyBody::Decoded(decoded) => decoded.size_hint(),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod trailer_tests {
    use super::*;

    /// A request trailer passes only when it carries a checksum or a timing: not a
    /// method override, a routing field, a credential, framing or the host.
    #[test]
    fn request_trailers_keep_only_checksums_and_timings() {
        let mut trailers = http::HeaderMap::new();
        for (name, value) in [
            ("x-http-method-override", "DELETE"),
            ("x-method-override", "DELETE"),
            ("host", "evil.example"),
            ("content-length", "0"),
            ("proxy-authorization", "Basic eDp5"),
            ("authorization", "Bearer mine"),
            ("x-api-key", "mine"),
            ("x-original-url", "/admin/x"),
            ("x-forwarded-host", "evil.example"),
            ("cookie", "a=b"),
            ("x-amz-checksum-crc32", "abc"),
            ("content-digest", "sha-256=:x:"),
        ] {
            trailers.insert(name, value.parse().unwrap());
        }
        clean_trailers(&mut trailers);
        let mut left: Vec<&str> = trailers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-digest", "x-amz-checksum-crc32"]);
    }
}
