//! Helpers shared by the web UI's test binaries.

use palisade_store::{AuditFilter, Store};

/// Fails unless each of `events` has an audit row (of `agent`, when given) whose actor
/// is the web UI's admin.
pub fn assert_audited_as_admin(store: &Store, agent: Option<&str>, events: &[&str]) {
    let actors: Vec<(String, String)> = store
        .list_audit(&AuditFilter {
            agent: agent.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter_map(|row| Some((row.entry.event, row.entry.actor?)))
        .collect();
    for event in events {
        assert!(
            actors.contains(&(event.to_string(), "web:admin".to_string())),
            "{event} not audited as web:admin: {actors:?}"
        );
    }
}

/// Logs in at `base` with the one-time login token `token`, as a browser's first visit
/// does; the session's `name=value` cookie pair.
pub async fn log_in(client: &reqwest::Client, base: &str, token: &str) -> String {
    let response = client
        .get(format!("{base}/login?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER, "login");
    session_cookie(&response).expect("a session cookie")
}

/// The `name=value` pair of the cookie a response sets, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    let set = response.headers().get("set-cookie")?.to_str().ok()?;
    Some(set.split(';').next()?.trim().to_string())
}
