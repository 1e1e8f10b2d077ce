//! A scripted platform API on 127.0.0.1 for the platform modules' unit tests: every
//! request is recorded (path and JSON body) and answered by the test's closure. The
//! full fakes, speaking each platform's whole protocol, are in `palisade-testkit` for
//! the black-box tests; these tests need only a call or two.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// An answer: status, extra headers, JSON body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, Value);

pub(crate) struct FakeApi {
    pub(crate) base: String,
    /// (path, body) of every request, in order.
    pub(crate) calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeApi {
    /// Serves until the test's runtime ends. `answer` gets the path, the body and how
    /// many requests came before this one.
    pub(crate) async fn start(
        answer: impl Fn(&str, &Value, usize) -> Answer + Send + Sync + 'static,
    ) -> FakeApi {
        let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let answer = Arc::new(answer);
        let recorded = Arc::clone(&calls);
        let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
            let (answer, recorded) = (Arc::clone(&answer), Arc::clone(&recorded));
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let before = {
                    let mut calls = crate::lock(&recorded);
                    calls.push((uri.path().to_string(), body.clone()));
                    calls.len() - 1
                };
                let (status, headers, json) = answer(uri.path(), &body, before);
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    map.insert(name, value.parse().unwrap());
                }
                (StatusCode::from_u16(status).unwrap(), map, json.to_string())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { base, calls }
    }

    pub(crate) fn calls(&self) -> Vec<(String, Value)> {
        crate::lock(&self.calls).clone()
    }
}
