//! The WebSocket listener under the fake platforms' real-time APIs (Slack's Socket
//! Mode, Discord's gateway): one runtime thread, a handler per connection given the
//! request's path and query, stopped (with every connection) on drop.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::WebSocketStream;

pub(crate) type Socket = WebSocketStream<TcpStream>;

pub(crate) type WsHandler = Arc<
    dyn Fn(String, Socket, watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

pub(crate) struct WsServer {
    pub(crate) addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl WsServer {
    pub(crate) fn start(name: &str, handler: WsHandler) -> std::io::Result<WsServer> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop_sender, stop) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("fake-{name}-ws-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let mut stopped = stop.clone();
                    loop {
                        let (stream, _) = tokio::select! {
                            _ = stopped.changed() => return,
                            accepted = listener.accept() => match accepted {
                                Ok(pair) => pair,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            },
                        };
                        let handler = Arc::clone(&handler);
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            let target = Arc::new(Mutex::new(String::new()));
                            let seen = Arc::clone(&target);
                            // The handshake's callback signature is tungstenite's.
                            #[allow(clippy::result_large_err)]
                            let callback = move |request: &Request, response: Response| {
                                if let Ok(mut seen) = seen.lock() {
                                    *seen = request.uri().to_string();
                                }
                                Ok(response)
                            };
                            let accepted = tokio::time::timeout(
                                Duration::from_secs(10),
                                tokio_tungstenite::accept_hdr_async(stream, callback),
                            )
                            .await;
                            let Ok(Ok(socket)) = accepted else { return };
                            let target = target.lock().map(|t| t.clone()).unwrap_or_default();
                            handler(target, socket, stop).await;
                        });
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(WsServer {
            addr,
            stop: Some(stop_sender),
            thread: Some(thread),
        })
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
