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
/// retired: Anthropic's `not_found_error`, OpenAI's `model_not_found`, and the
/// `404 … model …` of other OpenAI-compatible servers. Such a refusal will not change
/// on a retry; the person has to choose another model.
pub fn is_model_unavailable(status: u16, kind: &str, message: &str) -> bool {
    matches!(
        kind,
        "not_found_error" | "model_not_found" | "NotFoundError"
    ) || (status == 404 && message.to_ascii_lowercase().contains("model"))
}

/// The one line a person sees when `model` is not available to `agent`.
pub fn model_unavailable_message(model: &str, agent: &str) -> String {
    format!(
        "model {model} is not available: choose another on the agent page or with `palisade agents edit {agent} --model M`"
    )
}

#[cfg(test)]
mod tests {
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
