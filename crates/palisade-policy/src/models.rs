//! The model a new agent thinks with, one constant for the whole workspace (the host's
//! agent settings, the runner's provider defaults and the CLI's help all read it), and
//! how to pick the newest model of its family from what a provider offers.
//!
//! Kept here, in the pure crate every other crate depends on, so no second spelling of
//! the default can drift from the first.

/// The default model: an active one (late 2026, Anthropic's `claude-sonnet-4-6`, whose
/// retirement is announced for no sooner than 2027-02-17). `claude-sonnet-4-5` is
/// deprecated and past its announced retirement.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-6";

/// The family the default belongs to: its id without the version.
pub const DEFAULT_FAMILY: &str = "claude-sonnet";

/// Where an agent of the `anthropic` provider calls its model unless its settings name
/// another base URL.
pub const DEFAULT_ANTHROPIC_URL: &str = "https://api.anthropic.com";

/// What the runner adds to a turn's error when the model's API refused the key (401):
/// the host takes it off again when the agent has no key for that API at all, and says
/// which to grant instead.
pub const KEY_REFUSED_ADVICE: &str = ". The model's API did not accept the key the vault sent: replace it (`palisade secrets list` names the secret for that API; `palisade secrets rotate NAME`, or on the web UI: Vault, that secret, Rotate), then send the message again";

/// The calls an agent makes to its own model's API, as its settings (`provider`,
/// `base_url`) name it: the model call the runner makes every step (`POST
/// /v1/messages`, or `/v1/chat/completions` for OpenAI-compatible servers) and the
/// model list the host reads (`GET /v1/models`), at the base URL's scheme, host, port
/// and path. The dial never holds these: an agent whose every thought waited for a
/// person could not work, and its model's provider sees all it thinks anyway. Rules
/// (`require_approval`, `block`, rate limits) apply to them as to any request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelApi {
    https: bool,
    /// Lower case; IPv6 without brackets.
    host: String,
    port: u16,
    /// Each call's method and canonical path.
    calls: Vec<(http::Method, String)>,
}

impl ModelApi {
    /// The model API an agent's settings JSON names; `None` if it names none that
    /// parses (an OpenAI-compatible agent without a base URL, an unknown provider, a
    /// URL that is not http or https).
    pub fn from_settings(settings: &serde_json::Value) -> Option<ModelApi> {
        let text = |key: &str| settings.get(key).and_then(serde_json::Value::as_str);
        let provider = text("provider").unwrap_or("anthropic");
        let base = match (text("base_url"), provider) {
            (Some(url), "anthropic" | "openai") => url,
            (None, "anthropic") => DEFAULT_ANTHROPIC_URL,
            _ => return None,
        };
        let uri: http::Uri = base.parse().ok()?;
        let https = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // The host and the OpenAI-compatible runner drop a trailing `/v1` from the base
        // URL; the Anthropic runner appends to the base URL as it is.
        let path = uri.path().trim_end_matches('/');
        let root = path.strip_suffix("/v1").unwrap_or(path);
        let mut calls = vec![(http::Method::GET, format!("{root}/v1/models"))];
        if provider == "openai" {
            calls.push((http::Method::POST, format!("{root}/v1/chat/completions")));
        } else {
            calls.push((http::Method::POST, format!("{root}/v1/messages")));
            calls.push((http::Method::POST, format!("{path}/v1/messages")));
        }
        let calls = calls
            .into_iter()
            .filter_map(|(method, raw)| {
                let canonical = crate::CanonicalPath::parse(&raw).ok()?;
                Some((method, canonical.as_str().to_string()))
            })
            .collect();
        Some(ModelApi {
            https,
            host,
            port,
            calls,
        })
    }

    /// Whether a request is one of these calls. `host` as the gateway holds it (lower
    /// case, IPv6 without brackets), `path` canonical.
    pub fn covers(
        &self,
        https: bool,
        host: &str,
        port: u16,
        method: &http::Method,
        path: &crate::CanonicalPath,
    ) -> bool {
        self.https == https
            && self.port == port
            && self.host == host
            && self
                .calls
                .iter()
                .any(|(m, p)| m == method && p == path.as_str())
    }
}

/// One model a provider lists (`GET /v1/models`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedModel {
    pub id: String,
    /// RFC 3339 creation time, when the provider gives one (Anthropic does).
    pub created_at: Option<String>,
}

/// The family of a model id: `claude-sonnet-4-6-20261001` → `claude-sonnet`; the
/// leading words before the first all-digit part.
pub fn family(id: &str) -> String {
    id.split('-')
        .take_while(|part| !part.chars().all(|c| c.is_ascii_digit()) || part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The version parts of an id, for ordering: `claude-sonnet-4-6-20261001` → [4, 6, 20261001].
fn version(id: &str) -> Vec<u64> {
    id.split('-').filter_map(|part| part.parse().ok()).collect()
}

/// The newest model of `family` in `listed`: the latest creation time where the
/// provider gives them, else the highest version; `None` if the family is absent.
pub fn newest_of_family(listed: &[ListedModel], family_name: &str) -> Option<String> {
    listed
        .iter()
        .filter(|m| family(&m.id) == family_name)
        .max_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| version(&a.id).cmp(&version(&b.id)))
        })
        .map(|m| m.id.clone())
}

/// Whether a model API's refusal says the requested model does not exist or was
/// retired: OpenAI's `model_not_found`, and a `not_found_error` (Anthropic's) or a
/// 404 (other OpenAI-compatible servers) that names the model. Such a refusal will not
/// change on a retry; the person has to choose another model. A 404 that does not
/// name it is a path the server does not have (a base URL that is wrong), which no
/// other model would mend.
pub fn is_model_unavailable(status: u16, kind: &str, message: &str) -> bool {
    let names_a_model = message.to_ascii_lowercase().contains("model");
    kind == "model_not_found"
        || (matches!(kind, "not_found_error" | "NotFoundError") && names_a_model)
        || (status == 404 && names_a_model)
}

/// What a person is told when the model server answers 404 for its endpoint without
/// naming the model: the server does not speak that API, or not at that URL.
pub const NO_SUCH_ENDPOINT_ADVICE: &str = ". The server has no such endpoint: check the agent's provider (Anthropic, or OpenAI-compatible for most local servers) and its base URL, on the agent page or with `palisade agents show`";

/// The one line a person sees when `model` is not available to `agent`.
pub fn model_unavailable_message(model: &str, agent: &str) -> String {
    format!(
        "model {model} is not available: choose another on the agent page or with `palisade agents edit {agent} --model M`"
    )
}

#[cfg(test)]
mod tests {
    use super::ModelApi;
    use crate::CanonicalPath;
    use http::Method;
    use serde_json::json;

    #[test]
    fn the_model_api_is_read_from_the_agents_settings() {
        // No settings: Anthropic's API.
        let anthropic = json!({});
        let local =
            json!({"provider": "openai", "base_url": "http://127.0.0.1:8080/v1/", "model": "m"});
        let proxied = json!({"provider": "anthropic", "base_url": "https://[::1]:9000/llm"});
        let (get, post) = (Method::GET, Method::POST);
        let api = "api.anthropic.com";
        // (settings, https, host, port, method, path, one of its calls)
        let cases = [
            (&anthropic, true, api, 443, &post, "/v1/messages", true),
            (&anthropic, true, api, 443, &get, "/v1/models", true),
            // Another spelling of the same path is the same call.
            (&anthropic, true, api, 443, &post, "//v1/./messages", true),
            // Only those calls, there.
            (
                &anthropic,
                true,
                api,
                443,
                &post,
                "/v1/messages/batches",
                false,
            ),
            (&anthropic, true, api, 443, &post, "/v1/files", false),
            (&anthropic, true, api, 443, &get, "/v1/messages", false),
            (&anthropic, true, api, 8443, &post, "/v1/messages", false),
            (&anthropic, false, api, 443, &post, "/v1/messages", false),
            (
                &anthropic,
                true,
                "evil.example",
                443,
                &post,
                "/v1/messages",
                false,
            ),
            (
                &local,
                false,
                "127.0.0.1",
                8080,
                &post,
                "/v1/chat/completions",
                true,
            ),
            (&local, false, "127.0.0.1", 8080, &get, "/v1/models", true),
            (
                &local,
                false,
                "127.0.0.1",
                8080,
                &post,
                "/v1/messages",
                false,
            ),
            (&proxied, true, "::1", 9000, &post, "/llm/v1/messages", true),
            (&proxied, true, "::1", 9000, &post, "/v1/messages", false),
        ];
        for (settings, https, host, port, method, path, expected) in cases {
            let model = ModelApi::from_settings(settings).unwrap();
            let path = CanonicalPath::parse(path).unwrap();
            assert_eq!(
                model.covers(https, host, port, method, &path),
                expected,
                "{settings} {host}:{port} {method} {path}"
            );
        }

        // Nothing that parses: no model API.
        for settings in [
            json!({"provider": "openai"}),
            json!({"provider": "x"}),
            json!({"base_url": "ftp://x/"}),
        ] {
            assert_eq!(ModelApi::from_settings(&settings), None, "{settings}");
        }
    }

    #[test]
    fn unavailable_models_are_recognised() {
        assert!(is_model_unavailable(
            404,
            "not_found_error",
            "model: claude-x"
        ));
        assert!(is_model_unavailable(400, "model_not_found", ""));
        assert!(is_model_unavailable(
            404,
            "error",
            "The model `x` does not exist"
        ));
        assert!(!is_model_unavailable(404, "error", "no such route"));
        // Anthropic's answer to a path it does not have (a base URL that is wrong).
        assert!(!is_model_unavailable(404, "not_found_error", "Not Found"));
        assert!(!is_model_unavailable(403, "blocked_by_policy", "model"));
        assert!(!model_unavailable_message("m", "a").contains('\n'));
    }

    use super::*;

    fn listed(id: &str, created: Option<&str>) -> ListedModel {
        ListedModel {
            id: id.into(),
            created_at: created.map(str::to_string),
        }
    }

    #[test]
    fn families_are_the_words_before_the_version() {
        assert_eq!(family("claude-sonnet-4-6"), "claude-sonnet");
        assert_eq!(family("claude-sonnet-4-5-20250929"), "claude-sonnet");
        assert_eq!(family("claude-opus-4-1"), "claude-opus");
        assert_eq!(family("gpt-4o"), "gpt-4o");
        assert_eq!(family(DEFAULT_MODEL), DEFAULT_FAMILY);
    }

    #[test]
    fn the_newest_of_the_family_is_chosen() {
        let models = [
            listed("claude-sonnet-4-5-20250929", Some("2025-09-29T00:00:00Z")),
            listed("claude-opus-4-7", Some("2026-11-20T00:00:00Z")),
            listed("claude-sonnet-4-6", Some("2026-06-01T00:00:00Z")),
            listed("claude-haiku-4-5", Some("2026-10-01T00:00:00Z")),
        ];
        assert_eq!(
            newest_of_family(&models, "claude-sonnet").as_deref(),
            Some("claude-sonnet-4-6")
        );
        // Without creation times, the version decides.
        let models = [
            listed("claude-sonnet-4-5", None),
            listed("claude-sonnet-4-10", None),
        ];
        assert_eq!(
            newest_of_family(&models, "claude-sonnet").as_deref(),
            Some("claude-sonnet-4-10")
        );
        assert_eq!(newest_of_family(&models, "claude-opus"), None);
    }
}
