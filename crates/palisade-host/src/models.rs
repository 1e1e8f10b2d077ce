//! Which models an agent's provider offers, and whether its model answers: asked
//! through the vault like every other request, so the key is injected there and
//! nothing outside the vault ever holds it.
//!
//! The host connects to the agent's vault socket (the socket is the agent's identity;
//! the vault admits processes of its own user) and sends an absolute-form
//! `https://…/v1/models` request with a placeholder key, exactly as the agent's runner
//! would. The vault injects the agent's key, applies its rules and audits the request.
//! Anthropic (`GET /v1/models`, paged with `after_id`) and OpenAI-compatible servers
//! (`GET /v1/models`) are understood. Every wait is bounded.
//!
//! hyper's client connection is used directly (not a pooled client) because each
//! request goes over its own Unix socket connection to the vault, in proxy form.

use crate::settings::AgentSettings;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use palisade_policy::models::{newest_of_family, ListedModel, DEFAULT_FAMILY};
use palisade_policy::AgentName;
use palisade_store::Store;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// What the runner sends as its key; the vault swaps in the real one.
const PLACEHOLDER_KEY: &str = "palisade-placeholder-key";
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Longest answer read (a model list is a few KiB).
const MAX_BODY: usize = 1024 * 1024;
/// Pages of an Anthropic model list followed at most.
const MAX_PAGES: usize = 10;

/// Why the models could not be listed or the model did not answer. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("cannot reach the vault socket {socket}: {detail}; is `palisade up` running?")]
    Vault { socket: String, detail: String },
    #[error("the model API refused ({status} {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("the model API did not answer within {0} s")]
    Timeout(u64),
    #[error("the model API's answer is not what was expected: {0}")]
    Malformed(String),
    #[error("{0}")]
    Agent(String),
}

impl ModelsError {
    /// Whether the provider said the model does not exist (or was retired).
    pub fn is_model_not_found(&self) -> bool {
        match self {
            ModelsError::Refused {
                status,
                kind,
                message,
            } => palisade_policy::models::is_model_unavailable(*status, kind, message),
            _ => false,
        }
    }
}

/// `https://api.anthropic.com`, `http://127.0.0.1:8080` (an OpenAI-style `/v1` suffix
/// removed: the paths below add it).
fn api_root(settings: &AgentSettings) -> String {
    let base = settings.effective_base_url();
    let base = base.trim_end_matches('/');
    base.strip_suffix("/v1").unwrap_or(base).to_string()
}

struct Answer {
    status: u16,
    body: Bytes,
}

/// Sends one request through the vault socket and reads the whole answer.
async fn send(
    socket: &Path,
    request: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, ModelsError> {
    let vault = |detail: String| ModelsError::Vault {
        socket: socket.display().to_string(),
        detail,
    };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| vault(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| vault(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| vault(e.to_string()))?;
            let status = response.status().as_u16();
            let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY);
            let body = limited
                .collect()
                .await
                .map_err(|e| ModelsError::Malformed(format!("cannot read the answer: {e}")))?
                .to_bytes();
            Ok(Answer { status, body })
        }
        .await;
        driver.abort();
        result
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ModelsError::Timeout(timeout.as_secs()))?
}

fn request(
    settings: &AgentSettings,
    method: http::Method,
    url: &str,
    body: Option<Value>,
) -> Result<http::Request<Full<Bytes>>, ModelsError> {
    let mut builder = http::Request::builder().method(method).uri(url);
    builder = if settings.provider == "openai" {
        builder.header("authorization", format!("Bearer {PLACEHOLDER_KEY}"))
    } else {
        builder
            .header("x-api-key", PLACEHOLDER_KEY)
            .header("anthropic-version", ANTHROPIC_VERSION)
    };
    if let Ok(uri) = url.parse::<http::Uri>() {
        if let Some(authority) = uri.authority() {
            builder = builder.header("host", authority.as_str());
        }
    }
    let body = match body {
        Some(value) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(body))
        .map_err(|e| ModelsError::Malformed(format!("cannot build the request: {e}")))
}

/// `(kind, message)` of an error answer in any of the shapes seen: the vault's
/// `{error, message}`, Anthropic's `{type: "error", error: {type, message}}`, OpenAI's
/// `{error: {message, type, code}}`.
fn refusal(answer: &Answer) -> ModelsError {
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let (kind, message) = match value.get("error") {
        Some(Value::String(kind)) => (kind.clone(), text(value.get("message"))),
        Some(Value::Object(inner)) => (
            text(inner.get("type"))
                .or_else(|| text(inner.get("code")))
                .unwrap_or_else(|| "error".into()),
            text(inner.get("message")),
        ),
        _ => ("error".into(), None),
    };
    let message = message.unwrap_or_else(|| {
        String::from_utf8_lossy(&answer.body)
            .chars()
            .take(200)
            .collect()
    });
    ModelsError::Refused {
        status: answer.status,
        kind,
        message: message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The models the agent's provider lists, asked through the agent's vault socket.
pub async fn list(
    vault_socket: &Path,
    settings: &AgentSettings,
    timeout: Duration,
) -> Result<Vec<ListedModel>, ModelsError> {
    let root = api_root(settings);
    let mut models = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let url = match (&after, settings.provider.as_str()) {
            (_, "openai") => format!("{root}/v1/models"),
            (None, _) => format!("{root}/v1/models?limit=1000"),
            (Some(id), _) => format!(
                "{root}/v1/models?limit=1000&after_id={}",
                percent_encode(id)
            ),
        };
        let answer = send(
            vault_socket,
            request(settings, http::Method::GET, &url, None)?,
            timeout,
        )
        .await?;
        if !(200..300).contains(&answer.status) {
            return Err(refusal(&answer));
        }
        let page: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| ModelsError::Malformed(format!("not JSON: {e}")))?;
        let data = page
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| ModelsError::Malformed("no `data` list".into()))?;
        for item in data {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                continue;
            };
            let created_at = item
                .get("created_at")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    // OpenAI: Unix seconds.
                    let seconds = item.get("created").and_then(Value::as_u64)?;
                    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
                    Some(humantime::format_rfc3339_seconds(time).to_string())
                });
            models.push(ListedModel {
                id: id.to_string(),
                created_at,
            });
        }
        let more = page.get("has_more").and_then(Value::as_bool) == Some(true);
        let last = page
            .get("last_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        match (more, last) {
            (true, Some(last)) if settings.provider != "openai" => after = Some(last),
            _ => break,
        }
    }
    models.dedup_by(|a, b| a.id == b.id);
    Ok(models)
}

/// The model to use from a provider's list: the newest of the default family for
/// Anthropic (`None` when the family is absent), else the newest listed.
pub fn pick(settings: &AgentSettings, listed: &[ListedModel]) -> Option<String> {
    if settings.provider == "openai" {
        return listed
            .iter()
            .max_by(|a, b| a.created_at.cmp(&b.created_at))
            .map(|m| m.id.clone());
    }
    newest_of_family(listed, DEFAULT_FAMILY)
}

/// What [`choose_for`] found.
#[derive(Clone, Debug)]
pub struct Choice {
    /// Everything the provider listed.
    pub listed: Vec<ListedModel>,
    /// The model the agent uses now.
    pub model: String,
    /// Whether it was changed to the newest of the default family.
    pub changed: bool,
}

/// Asks `agent`'s provider (through the vault socket at `vault_socket`) which models
/// it offers and, if the newest of the default family (any, for an OpenAI-compatible
/// server) differs from the agent's model, switches the agent to it. Used when a key
/// is added, so a new agent starts on the provider's current model.
pub async fn choose_for(
    store: &Store,
    vault_socket: &Path,
    agent: &AgentName,
    timeout: Duration,
) -> Result<Choice, ModelsError> {
    let record = {
        let (store, agent) = (store.clone(), agent.clone());
        tokio::task::spawn_blocking(move || store.get_agent(&agent))
            .await
            .map_err(|e| ModelsError::Agent(e.to_string()))?
            .map_err(|e| ModelsError::Agent(e.to_string()))?
    };
    let settings = AgentSettings::from_json(&record.settings)
        .map_err(|e| ModelsError::Agent(e.to_string()))?;
    let listed = list(vault_socket, &settings, timeout).await?;
    let Some(newest) = pick(&settings, &listed).filter(|m| *m != settings.model) else {
        return Ok(Choice {
            listed,
            model: settings.model,
            changed: false,
        });
    };
    let draft = crate::agents::AgentDraft {
        model: Some(newest.clone()),
        ..Default::default()
    };
    let (store, name) = (store.clone(), agent.to_string());
    tokio::task::spawn_blocking(move || crate::agents::edit(&store, &name, &draft))
        .await
        .map_err(|e| ModelsError::Agent(e.to_string()))?
        .map_err(|e| ModelsError::Agent(e.to_string()))?;
    Ok(Choice {
        listed,
        model: newest,
        changed: true,
    })
}

/// One tiny request to the agent's model through the vault (`palisade doctor
/// --online`): a one-token answer to "ping". `Ok` with the model that answered.
pub async fn probe(
    vault_socket: &Path,
    settings: &AgentSettings,
    timeout: Duration,
) -> Result<String, ModelsError> {
    let root = api_root(settings);
    let (url, body) = if settings.provider == "openai" {
        (
            format!("{root}/v1/chat/completions"),
            serde_json::json!({
                "model": settings.model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}],
            }),
        )
    } else {
        (
            format!("{root}/v1/messages"),
            serde_json::json!({
                "model": settings.model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}],
            }),
        )
    };
    let answer = send(
        vault_socket,
        request(settings, http::Method::POST, &url, Some(body))?,
        timeout,
    )
    .await?;
    if !(200..300).contains(&answer.status) {
        return Err(refusal(&answer));
    }
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    Ok(value
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&settings.model)
        .to_string())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_picks() {
        let mut settings = AgentSettings::default();
        assert_eq!(api_root(&settings), "https://api.anthropic.com");
        settings.provider = "openai".into();
        settings.base_url = Some("http://127.0.0.1:8080/v1/".into());
        assert_eq!(api_root(&settings), "http://127.0.0.1:8080");
        let listed = vec![
            ListedModel {
                id: "a".into(),
                created_at: Some("2026-01-01T00:00:00Z".into()),
            },
            ListedModel {
                id: "b".into(),
                created_at: Some("2026-06-01T00:00:00Z".into()),
            },
        ];
        assert_eq!(pick(&settings, &listed).as_deref(), Some("b"));
        assert_eq!(pick(&AgentSettings::default(), &listed), None);
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn refusals_of_every_shape() {
        let answer = |status, body: &str| Answer {
            status,
            body: Bytes::from(body.to_string()),
        };
        let anthropic = refusal(&answer(
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#,
        ));
        assert!(anthropic.is_model_not_found(), "{anthropic}");
        let vault = refusal(&answer(
            403,
            r#"{"error":"blocked_by_policy","message":"no"}"#,
        ));
        assert!(!vault.is_model_not_found());
        assert!(vault.to_string().contains("blocked_by_policy"));
        let openai = refusal(&answer(
            400,
            r#"{"error":{"message":"m","type":null,"code":"model_not_found"}}"#,
        ));
        assert!(openai.is_model_not_found());
    }
}
