//! The plain-HTTP server under every fake platform: one runtime thread, one handler
//! function, stopped (and every connection closed) on drop.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

pub(crate) type Handler = Arc<
    dyn Fn(
            http::request::Parts,
            Bytes,
        ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(name: &str, handler: Handler) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop_sender, mut stop) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("fake-{name}-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        let (stream, _) = tokio::select! {
                            _ = stop.changed() => return,
                            accepted = listener.accept() => match accepted {
                                Ok(pair) => pair,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            },
                        };
                        let handler = Arc::clone(&handler);
                        tokio::spawn(async move {
                            let service = service_fn(move |request: Request<Incoming>| {
                                let handler = Arc::clone(&handler);
                                async move {
                                    let (parts, body) = request.into_parts();
                                    // As strict servers (aiohttp) answer: a request
                                    // with two Content-Type headers is refused.
                                    if parts.headers.get_all("content-type").iter().count() > 1 {
                                        return Ok::<_, std::convert::Infallible>(json(
                                            400,
                                            &serde_json::json!({"ok": false, "error": "duplicate Content-Type header"}),
                                        ));
                                    }
                                    let body = Limited::new(body, 8 * 1024 * 1024)
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    Ok::<_, std::convert::Infallible>(handler(parts, body).await)
                                }
                            });
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                        });
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Server {
            addr,
            stop: Some(stop_sender),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
