//! Turning an agent's dial: a preset sets every knob, a knob named alone overrides it,
//! and what was not named stays as the agent has it. Stored in the agent's settings
//! JSON (`approvals`, `sanitize`) next to keys this code does not know, which are kept.
//!
//! Every value is parsed before the agent is read, and nothing is written when one is
//! refused, so a bad value changes nothing wherever it was typed.

use crate::HostError;
use palisade_policy::dial::{ApprovalFrequency, Dial, Preset};
use palisade_policy::sanitize::Strictness;
use palisade_policy::AgentName;
use palisade_store::Store;

/// The dial as typed; `None` leaves a knob as the preset (or, without one, the agent)
/// has it.
#[derive(Clone, Debug, Default)]
pub struct DialDraft {
    /// `strict`, `balanced` or `relaxed`.
    pub preset: Option<String>,
    /// `every`, `first-use`, `writes` or `never`.
    pub approvals: Option<String>,
    /// `strict`, `balanced` or `relaxed`.
    pub sanitize: Option<String>,
}

impl DialDraft {
    /// Whether anything is to change (without, [`dial`] only reads).
    pub fn is_empty(&self) -> bool {
        self.preset.is_none() && self.approvals.is_none() && self.sanitize.is_none()
    }
}

fn parsed<T: std::str::FromStr<Err = String>>(
    text: &Option<String>,
) -> Result<Option<T>, HostError> {
    text.as_deref()
        .map(|text| text.parse::<T>().map_err(HostError::Invalid))
        .transpose()
}

/// Applies `draft` to agent `name`'s dial and returns the dial in force afterwards
/// (with an empty draft: the current one, nothing written). The write is audited as
/// `agent.update` with the store handle's actor and reaches every running gateway
/// before this returns; the host reads the sanitizing strictness for each message.
pub fn dial(store: &Store, name: &str, draft: &DialDraft) -> Result<Dial, HostError> {
    let name = AgentName::new(name).map_err(|e| HostError::Invalid(e.to_string()))?;
    let preset: Option<Preset> = parsed(&draft.preset)?;
    let approvals: Option<ApprovalFrequency> = parsed(&draft.approvals)?;
    let sanitize: Option<Strictness> = parsed(&draft.sanitize)?;
    let agent = store.get_agent(&name)?;
    let mut dial = preset
        .map(Preset::dial)
        .unwrap_or_else(|| Dial::from_settings(&agent.settings));
    if let Some(approvals) = approvals {
        dial.approvals = approvals;
    }
    if let Some(sanitize) = sanitize {
        dial.sanitize = sanitize;
    }
    if !draft.is_empty() {
        let mut value = agent.settings.clone();
        if !value.is_object() {
            value = serde_json::json!({});
        }
        if let Some(object) = value.as_object_mut() {
            object.insert("approvals".into(), dial.approvals.as_str().into());
            object.insert("sanitize".into(), dial.sanitize.as_str().into());
        }
        store.update_agent_settings(&name, &value)?;
    }
    Ok(dial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Profile;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::Home::at(dir.path().join("home"))).unwrap();
        store
            .create_agent(&AgentName::new("mailer").unwrap(), Profile::Action)
            .unwrap();
        store
            .update_agent_settings(
                &AgentName::new("mailer").unwrap(),
                &serde_json::json!({ "model": "m", "future_key": 7 }),
            )
            .unwrap();
        (dir, store)
    }

    fn settings(store: &Store) -> serde_json::Value {
        store
            .get_agent(&AgentName::new("mailer").unwrap())
            .unwrap()
            .settings
    }

    #[test]
    fn a_preset_then_a_knob_over_it_keeping_other_settings() {
        let (_dir, store) = store();
        assert_eq!(
            dial(&store, "mailer", &DialDraft::default()).unwrap(),
            Dial::default()
        );
        let strict = DialDraft {
            preset: Some("strict".into()),
            ..DialDraft::default()
        };
        assert_eq!(
            dial(&store, "mailer", &strict).unwrap().preset(),
            Some(Preset::Strict)
        );
        let custom = dial(
            &store,
            "mailer",
            &DialDraft {
                approvals: Some("first-use".into()),
                ..DialDraft::default()
            },
        )
        .unwrap();
        assert_eq!(custom.approvals, ApprovalFrequency::FirstUse);
        assert_eq!(custom.sanitize, Strictness::Strict, "kept from the preset");
        let stored = settings(&store);
        assert_eq!(stored["approvals"], "first-use");
        assert_eq!(stored["sanitize"], "strict");
        assert_eq!(stored["future_key"], 7, "unknown keys are kept");
    }

    #[test]
    fn a_bad_value_writes_nothing() {
        let (_dir, store) = store();
        let before = settings(&store);
        for (draft, line) in [
            (
                DialDraft {
                    preset: Some("lax".into()),
                    approvals: Some("every".into()),
                    ..DialDraft::default()
                },
                "preset \"lax\" is unknown: use strict, balanced or relaxed",
            ),
            (
                DialDraft {
                    preset: Some("strict".into()),
                    approvals: Some("sometimes".into()),
                    ..DialDraft::default()
                },
                "approval frequency \"sometimes\" is unknown: use every, first-use, writes or never",
            ),
        ] {
            assert_eq!(dial(&store, "mailer", &draft).unwrap_err().to_string(), line);
        }
        assert!(dial(&store, "ghost", &DialDraft::default())
            .unwrap_err()
            .to_string()
            .contains("ghost"));
        assert_eq!(settings(&store), before);
    }
}
