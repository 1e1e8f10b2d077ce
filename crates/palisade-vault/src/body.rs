//! Body types of the proxy.
//!
//! Written by hand rather than boxed: the forward body must replay the prefix the
//! vault read for rules and summaries before streaming the rest, and the response
//! body must cut an upstream that goes silent, arming its timer only when the stream
//! actually stalls so the hot path pays no timer per response.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body sent upstream: an optional prefix already read, then the rest.
pub struct ForwardBody {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<http::HeaderMap>,
}

impl ForwardBody {
    pub fn streaming(body: Incoming) -> Self {
        ForwardBody {
            prefix: None,
            rest: Some(body),
            trailers: None,
        }
    }
    pub fn empty() -> Self {
        ForwardBody {
            prefix: None,
            rest: None,
            trailers: None,
        }
    }
    /// Reads up to about `limit` bytes (whole frames) within `timeout`; returns the body
    /// that replays them followed by the rest, and a copy of what was read.
    pub async fn read_prefix(
        mut body: Incoming,
        limit: usize,
        timeout: Duration,
    ) -> Result<(ForwardBody, Bytes), BoxError> {
        use http_body_util::BodyExt;
        let mut buf = bytes::BytesMut::new();
        let mut trailers = None;
        let mut ended = false;
        let read = async {
            while buf.len() < limit {
                match body.frame().await {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(e)) => return Err(BoxError::from(e)),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => buf.extend_from_slice(&data),
                        Err(frame) => {
                            trailers = frame.into_trailers().ok();
                            ended = true;
                            break;
                        }
                    },
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| BoxError::from("timed out reading the request body"))??;
        let prefix = buf.freeze();
        Ok((
            ForwardBody {
                prefix: Some(prefix.clone()),
                rest: if ended { None } else { Some(body) },
                trailers,
            },
            prefix,
        ))
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        if let Some(rest) = self.rest.as_mut() {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(|p| p.is_empty())
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + prefix);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
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
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(inner: Incoming, idle_timeout: Duration) -> Self {
        ProxyBody::Upstream {
            inner,
            idle_timeout,
            idle: None,
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

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream {
                inner,
                idle_timeout,
                idle,
            } => match Pin::new(inner).poll_frame(cx) {
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
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

use std::future::Future;
