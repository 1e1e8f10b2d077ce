//! HTTP endpoints platforms call on `palisade up`'s listener, outside the web UI's
//! login and Host checks (a platform is not a logged-in browser, and reaches the host
//! through whatever proxy the owner puts in front): each request is authenticated by
//! its platform signature instead (checked by the channel), and bounded in size.
//!
//! - `POST /channels/slack/{name}/events`: the Slack Events API and interactivity
//!   (signing secret, v0 HMAC-SHA256 over `v0:TIMESTAMP:BODY`, 5-minute window).
//! - `POST /channels/discord/{name}/interactions`: Discord's HTTP interactions
//!   (Ed25519 over `TIMESTAMP + BODY` with the application's public key).
//!
//! A name that is not a running channel of that platform gets 404, whatever else the
//! request says.

use crate::channel::WebhookReply;
use crate::hub::Hub;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use palisade_approvals::Platform;

/// Largest request body taken from a platform.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The routes, for `palisade up` to serve beside the web UI.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/channels/slack/{name}/events", post(slack))
        .route("/channels/discord/{name}/interactions", post(discord))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(hub)
}

async fn slack(
    State(hub): State<Hub>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    answer(&hub, Platform::Slack, &name, &headers, &body).await
}

async fn discord(
    State(hub): State<Hub>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    answer(&hub, Platform::Discord, &name, &headers, &body).await
}

async fn answer(
    hub: &Hub,
    platform: Platform,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let reply = match hub.channel(name) {
        Some(channel) if channel.platform() == platform => channel.webhook(headers, body).await,
        _ => WebhookReply::text(404, "no such channel"),
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (header::CONTENT_TYPE, reply.content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        reply.body,
    )
        .into_response()
}
