//! One HTTP connection over a dialed stream (HTTP/1.1 or, with ALPN h2, HTTP/2) and
//! the GET the benchmark repeats on it, checked for status and body length.

use crate::dial::{Dialer, STEP_TIMEOUT};
use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

/// What every request asks for and what a good answer looks like.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// `https://host:port/path`, used as is for HTTP/2 and split into path + Host for HTTP/1.1.
    pub uri: http::Uri,
    pub expect_body_bytes: Option<usize>,
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

/// A live connection; dropping it closes the connection.
pub struct Connection {
    sender: Sender,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Dials and performs the HTTP handshake the negotiated ALPN calls for.
    pub async fn open(dialer: &Dialer) -> anyhow::Result<Connection> {
        let tls = dialer.dial().await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake failed")?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Connection {
                sender: Sender::Http2(sender),
                driver,
            })
        } else {
            let (sender, conn) = http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake failed")?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Connection {
                sender: Sender::Http1(sender),
                driver,
            })
        }
    }

    /// One GET, read to the end; fails on a non-200 status or an unexpected body size.
    pub async fn get(&mut self, spec: &RequestSpec) -> anyhow::Result<()> {
        let response = tokio::time::timeout(STEP_TIMEOUT, async {
            match &mut self.sender {
                Sender::Http1(sender) => {
                    sender.ready().await?;
                    let path = spec
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    let authority = spec.uri.authority().map_or("", |a| a.as_str()).to_string();
                    let request = http::Request::get(path)
                        .header(http::header::HOST, authority)
                        .body(Empty::new())?;
                    Ok::<_, anyhow::Error>(sender.send_request(request).await?)
                }
                Sender::Http2(sender) => {
                    sender.ready().await?;
                    let request = http::Request::get(spec.uri.clone()).body(Empty::new())?;
                    Ok(sender.send_request(request).await?)
                }
            }
        })
        .await
        .context("no response within the step timeout")??;
        let status = response.status();
        let body = tokio::time::timeout(STEP_TIMEOUT, response.into_body().collect())
            .await
            .context("response body timed out")??
            .to_bytes();
        if status != http::StatusCode::OK {
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        if let Some(expected) = spec.expect_body_bytes {
            if body.len() != expected {
                bail!("body of {} bytes, expected {expected}", body.len());
            }
        }
        Ok(())
    }
}
