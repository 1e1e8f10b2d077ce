//! The admin API on the TCP listener (origin-form requests), shaped like OneCLI's so
//! the `@onecli-sh/sdk` used by NanoClaw works against Palisade unchanged:
//! `GET /healthz`, and with `Authorization: Bearer ADMIN_KEY`:
//! `GET /v1/container-config?agent=NAME`, `GET /v1/gateway-url`, `GET|POST /v1/agents`,
//! `GET /v1/approvals/pending` (long-poll, `exclude=` ids) and
//! `POST /v1/approvals/{id}/decision`. Agent sockets never reach this module.

use crate::body::ProxyBody;
use crate::respond::json;
use crate::state::Shared;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use palisade_approvals::{ApprovalError, ApproverIdentity, Choice};
use palisade_policy::{AgentName, Injection, Profile};
use palisade_store::{ApprovalStatus, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where containers find the vault CA (OneCLI's `caCertificateContainerPath`).
pub const CONTAINER_CA_PATH: &str = "/tmp/palisade-vault-ca.pem";
/// The key value a client sees when the real key is injected by the vault.
pub const PLACEHOLDER_KEY: &str = "palisade-placeholder-the-vault-injects-the-real-key";
const LONG_POLL: Duration = Duration::from_secs(30);
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Answers an admin API request on the TCP listener; a request with the admin key
/// marks its connection `permits` as authenticated.
pub async fn route(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    permits: &crate::conn::ConnectionPermits,
) -> Response<ProxyBody> {
    let path = request.uri().path().to_string();
    if path == "/healthz" || path == "/health" {
        return json(StatusCode::OK, &json!({"status": "ok"}));
    }
    if !authorized(&shared, request.headers()) {
        let response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer ADMIN_KEY (print it with `palisade vault admin-key`)",
        );
        // On record (the front door's budget bounds a guesser's rows): a process that
        // tries the admin API without its key is worth knowing about.
        let record =
            crate::pipeline::audit::Record::about(None, request.method().as_str(), "", &path);
        crate::pipeline::audit::refused_at_front(
            &shared,
            record,
            crate::pipeline::Decision::AdminUnauthorized,
            response.status().as_u16(),
        )
        .await;
        return response;
    }
    permits.authenticated();
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or("").to_string();
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    match (method, path.as_str()) {
        (Method::GET, "/v1/container-config") => container_config(&shared, &query, host).await,
        (Method::GET, "/v1/gateway-url") => {
            let url = format!(
                "http://{}",
                advertised_host(&shared, host.as_deref(), false)
            );
            json(StatusCode::OK, &json!({ "url": url }))
        }
        (Method::GET, "/v1/agents") => list_agents(&shared).await,
        (Method::POST, "/v1/agents") => create_agent(&shared, request).await,
        (Method::GET, "/v1/approvals/pending") => pending(&shared, &query).await,
        (Method::POST, p) if p.starts_with("/v1/approvals/") && p.ends_with("/decision") => {
            let id = p
                .trim_start_matches("/v1/approvals/")
                .trim_end_matches("/decision")
                .to_string();
            decide(&shared, &id, request).await
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

fn authorized(shared: &Shared, headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, key)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && shared.snapshot.load().is_admin_key(key.trim())
}

/// Whether every running gateway of the home (this one included) enforces the
/// configuration now in the store; else the `503 not_in_force` a change made here is
/// answered with: saved, but not in force (a rule in the database that cannot be read).
/// The gateway's own store handle does not sync (it loads its changes itself), so
/// this asks every gateway, through its control socket, as the CLI's handle does.
async fn in_force(shared: &Shared) -> Result<(), Response<ProxyBody>> {
    let store = shared.store.clone();
    let synced = blocking(move || {
        let version = store.config_version()?;
        Ok(palisade_store::gateways::sync_gateways(
            store.home(),
            version,
        ))
    })
    .await;
    let refused = match synced {
        Ok(synced) => synced.unconfirmed.into_iter().find(|g| g.refused),
        Err(e) => return Err(store_error(e)),
    };
    match refused {
        None => Ok(()),
        Some(gateway) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_in_force",
            &format!("saved, but {}; see `palisade doctor`", gateway.describe()),
        )),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(status, &json!({"error": code, "message": message}))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(StoreError::Io("a store task panicked".into())))
}

fn store_error(e: StoreError) -> Response<ProxyBody> {
    match e {
        StoreError::NotFound { .. } => error(StatusCode::NOT_FOUND, "not_found", &e.to_string()),
        StoreError::Duplicate { .. } => error(StatusCode::CONFLICT, "conflict", &e.to_string()),
        StoreError::AlreadyDecided(_) => error(StatusCode::GONE, "already_decided", &e.to_string()),
        other => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &other.to_string(),
        ),
    }
}

fn approval_error(e: ApprovalError) -> Response<ProxyBody> {
    match e {
        ApprovalError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", &e.to_string()),
        ApprovalError::AlreadyDecided { .. } | ApprovalError::Expired(_) => {
            error(StatusCode::GONE, "already_decided", &e.to_string())
        }
        ApprovalError::ChoiceNotOffered { .. } => error(
            StatusCode::BAD_REQUEST,
            "choice_not_offered",
            &e.to_string(),
        ),
        ApprovalError::NotAnApprover { .. } => {
            error(StatusCode::FORBIDDEN, "not_an_approver", &e.to_string())
        }
        ApprovalError::Store(other) => store_error(other),
    }
}

/// The host:port containers should use: the one the caller used, with loopback
/// replaced by `host.docker.internal` when `for_container` (a container's loopback is its own).
fn advertised_host(shared: &Shared, host_header: Option<&str>, for_container: bool) -> String {
    let fallback = shared
        .tcp_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.0.1:10255".into());
    let host = host_header.unwrap_or(&fallback).to_string();
    if !for_container {
        return host;
    }
    let port = host.rsplit_once(':').map(|(_, p)| p.to_string());
    let name = host
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&host)
        .trim_matches(|c| c == '[' || c == ']');
    if name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        match port {
            Some(port) => format!("host.docker.internal:{port}"),
            None => "host.docker.internal".into(),
        }
    } else {
        host
    }
}

/// The environment a client needs to use the gateway as `agent` at `proxy_url`, with
/// the CA at `ca_path`. Shared by `container-config` and `palisade vault env`.
pub fn agent_environment(
    policy: &palisade_policy::PolicySet,
    agent: &AgentName,
    proxy_url: &str,
    ca_path: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        env.insert(name.to_string(), proxy_url.to_string());
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.insert(name.to_string(), "localhost,127.0.0.1,::1".to_string());
    }
    for name in [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        env.insert(name.to_string(), ca_path.to_string());
    }
    env.insert("NODE_USE_ENV_PROXY".into(), "1".into());
    if policy
        .granted_to(agent)
        .any(|s| matches!(s.injection, Injection::Anthropic))
    {
        env.insert("ANTHROPIC_API_KEY".into(), PLACEHOLDER_KEY.into());
    }
    env
}

async fn container_config(
    shared: &Arc<Shared>,
    query: &str,
    host: Option<String>,
) -> Response<ProxyBody> {
    let agent = query_param(query, "agent").unwrap_or_else(|| "default".to_string());
    let Ok(agent) = AgentName::new(&agent) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "agent name is invalid",
        );
    };
    let store = shared.store.clone();
    let name = agent.clone();
    let issued = blocking(move || {
        store.get_agent(&name)?;
        let before = store.config_version()?;
        let token = store.agent_token(&name, false)?;
        Ok((token, store.config_version()? != before))
    })
    .await;
    let token = match issued {
        // A token issued just now (the configuration changed) works only once every
        // gateway has loaded it; one issued before needs no asking.
        Ok((token, true)) => match in_force(shared).await {
            Ok(()) => token,
            Err(response) => return response,
        },
        Ok((token, false)) => token,
        Err(e) => return store_error(e),
    };
    let proxy = format!(
        "http://x:{}@{}",
        token.expose(),
        advertised_host(shared, host.as_deref(), true)
    );
    let snapshot = shared.snapshot.load();
    let env = agent_environment(&snapshot.policy, &agent, &proxy, CONTAINER_CA_PATH);
    json(
        StatusCode::OK,
        &json!({
            "env": env,
            "caCertificate": shared.ca.ca_pem(),
            "caCertificateContainerPath": CONTAINER_CA_PATH,
        }),
    )
}

async fn list_agents(shared: &Arc<Shared>) -> Response<ProxyBody> {
    let store = shared.store.clone();
    match blocking(move || store.list_agents()).await {
        Ok(agents) => {
            let list: Vec<Value> = agents
                .iter()
                .map(|a| {
                    json!({
                        "id": a.name.as_str(),
                        "name": a.name.as_str(),
                        "identifier": a.name.as_str(),
                        "profile": a.profile.as_str(),
                        "createdAt": rfc3339(a.created_at_ms),
                    })
                })
                .collect();
            json(StatusCode::OK, &Value::Array(list))
        }
        Err(e) => store_error(e),
    }
}

async fn read_json(request: Request<Incoming>) -> Option<Value> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_ADMIN_BODY);
    let bytes = tokio::time::timeout(Duration::from_secs(10), limited.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    serde_json::from_slice(&bytes).ok()
}

async fn create_agent(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<ProxyBody> {
    let Some(body) = read_json(request).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected a JSON body",
        );
    };
    let identifier = body
        .get("identifier")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Ok(name) = AgentName::new(&identifier) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "identifier must be 1-63 lowercase letters, digits, '-' or '_'",
        );
    };
    let display = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&identifier)
        .to_string();
    let store = shared.store.clone();
    let created = blocking(move || store.create_agent(&name, Profile::Research)).await;
    if created.is_ok() {
        if let Err(response) = in_force(shared).await {
            return response;
        }
    }
    match created {
        Ok(agent) => json(
            StatusCode::CREATED,
            &json!({
                "id": agent.name.as_str(),
                "name": display,
                "identifier": agent.name.as_str(),
                "createdAt": rfc3339(agent.created_at_ms),
            }),
        ),
        Err(e) => store_error(e),
    }
}

async fn pending(shared: &Arc<Shared>, query: &str) -> Response<ProxyBody> {
    let exclude: Vec<String> = query_param(query, "exclude")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    loop {
        let notified = shared.holds.added.notified();
        let store = shared.store.clone();
        let found =
            blocking(move || store.list_approvals(Some(ApprovalStatus::Pending), 200)).await;
        let approvals = match found {
            Ok(list) => list,
            Err(e) => return store_error(e),
        };
        let requests: Vec<Value> = approvals
            .iter()
            .filter(|a| a.kind == "credential_use" && !exclude.contains(&a.id))
            .map(|a| {
                let c = &a.context;
                json!({
                    "id": a.id,
                    "method": c.get("method").cloned().unwrap_or(Value::Null),
                    "url": c.get("url").cloned().unwrap_or(Value::Null),
                    "host": c.get("host").cloned().unwrap_or(Value::Null),
                    "path": c.get("path").cloned().unwrap_or(Value::Null),
                    "headers": c.get("headers").cloned().unwrap_or_else(|| json!({})),
                    "bodyPreview": c.get("bodyPreview").cloned().unwrap_or(Value::Null),
                    "summary": a.title,
                    "agent": {"id": a.agent.as_str(), "name": a.agent.as_str(), "externalId": Value::Null},
                    "createdAt": rfc3339(a.created_at_ms),
                    "expiresAt": rfc3339(a.expires_at_ms),
                })
            })
            .collect();
        let now = tokio::time::Instant::now();
        if !requests.is_empty() || now >= deadline || shared.is_shutting_down() {
            return json(
                StatusCode::OK,
                &json!({
                    "requests": requests,
                    "timeoutSeconds": shared.config.approval_timeout.as_secs(),
                }),
            );
        }
        // Wake on a new hold, and re-check now and then for holds made by other gateways.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_secs(1)), notified).await;
    }
}

async fn decide(shared: &Arc<Shared>, id: &str, request: Request<Incoming>) -> Response<ProxyBody> {
    let Some(body) = read_json(request).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected {\"decision\": \"approve\"|\"deny\"}",
        );
    };
    // OneCLI's contract: "approve" | "deny". Palisade's choices ("1h", "always") may be
    // given in "choice" beside an approval.
    let choice = match body.get("decision").and_then(Value::as_str) {
        Some("approve") => match body.get("choice").and_then(Value::as_str) {
            None => Choice::Once,
            Some(text) => match text.parse::<Choice>() {
                Ok(choice) if choice.approves() => choice,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "choice must be \"once\", \"1h\" or \"always\"",
                    )
                }
            },
        },
        Some("deny") => Choice::Deny,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "decision must be \"approve\" or \"deny\"",
            )
        }
    };
    let approver = ApproverIdentity::admin_api(body.get("approver").and_then(Value::as_str));
    let comment = body
        .get("comment")
        .and_then(Value::as_str)
        .map(str::to_string);
    let engine = shared.engine.clone();
    let owned = id.to_string();
    let decided = tokio::task::spawn_blocking(move || {
        engine.decide(&owned, &approver, choice, comment.as_deref())
    })
    .await;
    match decided {
        Ok(Ok(approval)) => {
            shared.holds.resolve(&approval);
            json(
                StatusCode::OK,
                &json!({"id": approval.id, "status": approval.status.as_str()}),
            )
        }
        Ok(Err(e)) => approval_error(e),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the decision task failed",
        ),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
