//! The dial: how much a person is asked, and how strictly what reaches an agent is
//! cleaned, per agent. Named presets set several knobs at once; each knob can also be
//! set alone. Stored in the agent's settings (`approvals`, `sanitize`); read by the
//! vault (approval frequency, for requests that carry a credential) and the host
//! (sanitizing messages from other agents).
//!
//! An agent with no dial set keeps today's behaviour: only explicit rules ask a
//! person (`never` here), and messages are sanitized `balanced`.

use crate::sanitize::Strictness;
use std::fmt;
use std::str::FromStr;

/// When the vault asks a person before injecting one of the agent's credentials (on
/// top of what `require_approval` rules ask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApprovalFrequency {
    /// Every request that carries a credential.
    Every,
    /// The first request to a host that carries a credential, then not for an hour
    /// after a person approved one.
    FirstUse,
    /// Requests that carry a credential and may change something (any method but
    /// GET, HEAD and OPTIONS).
    Writes,
    /// Only what `require_approval` rules say.
    #[default]
    Never,
}

impl ApprovalFrequency {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalFrequency::Every => "every",
            ApprovalFrequency::FirstUse => "first-use",
            ApprovalFrequency::Writes => "writes",
            ApprovalFrequency::Never => "never",
        }
    }

    /// Whether a request with `method` that would carry a credential must be held;
    /// `opens_stream` when it asks to become a WebSocket. `FirstUse` says yes here;
    /// the vault then skips the hold when a person approved a request of this agent
    /// to the same host within the last hour.
    ///
    /// A WebSocket handshake is a GET, but what passes over the WebSocket after it is
    /// never judged (see docs/vault.md): it counts as a write, or `Writes` would let
    /// every credentialed write through a WebSocket unasked.
    pub fn holds(self, method: &http::Method, opens_stream: bool) -> bool {
        match self {
            ApprovalFrequency::Every | ApprovalFrequency::FirstUse => true,
            ApprovalFrequency::Writes => {
                opens_stream
                    || !matches!(
                        *method,
                        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
                    )
            }
            ApprovalFrequency::Never => false,
        }
    }

    fn explain(self) -> &'static str {
        match self {
            ApprovalFrequency::Every => "a person approves every request that carries one of its credentials",
            ApprovalFrequency::FirstUse => "a person approves the first request to each host and port with each of its credentials; after an approval, requests there with that credential go ahead for an hour",
            ApprovalFrequency::Writes => "a person approves every request that carries one of its credentials and may change something (not GET, HEAD or OPTIONS; a WebSocket counts as a write)",
            ApprovalFrequency::Never => "a person is asked only where a require_approval rule says so",
        }
    }
}

impl FromStr for ApprovalFrequency {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "every" => Ok(ApprovalFrequency::Every),
            "first-use" => Ok(ApprovalFrequency::FirstUse),
            "writes" => Ok(ApprovalFrequency::Writes),
            "never" => Ok(ApprovalFrequency::Never),
            other => Err(format!(
                "approval frequency {other:?} is unknown: use every, first-use, writes or never"
            )),
        }
    }
}

impl fmt::Display for ApprovalFrequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The knobs of one agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dial {
    pub approvals: ApprovalFrequency,
    /// How strictly messages from other agents are cleaned before this agent sees them.
    pub sanitize: Strictness,
}

/// Named sets of knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Ask for every credentialed request; sanitize strictly.
    Strict,
    /// Ask before credentialed writes; sanitize balanced.
    Balanced,
    /// Ask only where rules say; sanitize relaxed.
    Relaxed,
}

impl Preset {
    pub fn dial(self) -> Dial {
        match self {
            Preset::Strict => Dial {
                approvals: ApprovalFrequency::Every,
                sanitize: Strictness::Strict,
            },
            Preset::Balanced => Dial {
                approvals: ApprovalFrequency::Writes,
                sanitize: Strictness::Balanced,
            },
            Preset::Relaxed => Dial {
                approvals: ApprovalFrequency::Never,
                sanitize: Strictness::Relaxed,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Strict => "strict",
            Preset::Balanced => "balanced",
            Preset::Relaxed => "relaxed",
        }
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(Preset::Strict),
            "balanced" => Ok(Preset::Balanced),
            "relaxed" => Ok(Preset::Relaxed),
            other => Err(format!(
                "preset {other:?} is unknown: use strict, balanced or relaxed"
            )),
        }
    }
}

impl Dial {
    /// The dial stored in an agent's settings JSON (`approvals`, `sanitize`). An absent
    /// knob has its default; one that is present but unreadable (an edited database)
    /// fails closed: every credentialed request approved, strict sanitizing.
    pub fn from_settings(settings: &serde_json::Value) -> Dial {
        let value = |key: &str| settings.get(key).filter(|v| !v.is_null());
        Dial {
            approvals: match value("approvals") {
                None => ApprovalFrequency::default(),
                Some(v) => v
                    .as_str()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(ApprovalFrequency::Every),
            },
            sanitize: match value("sanitize") {
                None => Strictness::default(),
                Some(v) => v
                    .as_str()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(Strictness::Strict),
            },
        }
    }

    /// What to call these knobs: `preset NAME`, `default` (never set: only rules ask,
    /// balanced sanitizing) or `custom`.
    pub fn label(&self) -> String {
        match self.preset() {
            Some(preset) => format!("preset {}", preset.as_str()),
            None if *self == Dial::default() => "default".into(),
            None => "custom".into(),
        }
    }

    /// The preset these knobs amount to, if any.
    pub fn preset(&self) -> Option<Preset> {
        [Preset::Strict, Preset::Balanced, Preset::Relaxed]
            .into_iter()
            .find(|preset| preset.dial() == *self)
    }

    /// The knobs in plain words.
    pub fn explain(&self) -> Vec<String> {
        let sanitize = match self.sanitize {
            Strictness::Strict => "messages from other agents reach it as plain text with links reduced to their text, URLs (with or without a scheme) to the domain of their host, script and file links removed, and instruction-like text removed",
            Strictness::Balanced => "messages from other agents reach it as plain text with images and markup removed, script and file links removed, and instruction-like text removed",
            Strictness::Relaxed => "messages from other agents reach it as plain text with markup removed, quoted and labelled",
        };
        let model = if self.approvals == ApprovalFrequency::Never {
            ""
        } else {
            " Its calls to its own model are never held by the dial."
        };
        vec![
            format!(
                "Approvals ({}): {}.{model}",
                self.approvals,
                self.approvals.explain()
            ),
            format!("Sanitizing ({}): {sanitize}.", self.sanitize.as_str()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_set_every_knob_and_are_recognised() {
        for preset in [Preset::Strict, Preset::Balanced, Preset::Relaxed] {
            assert_eq!(preset.dial().preset(), Some(preset));
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
        }
        let custom = Dial {
            approvals: ApprovalFrequency::FirstUse,
            sanitize: Strictness::Strict,
        };
        assert_eq!(custom.preset(), None);
        assert_eq!(custom.label(), "custom");
        assert_eq!(Dial::default().label(), "default");
        assert_eq!(Preset::Strict.dial().label(), "preset strict");
        // Only a dial that asks says its model calls are not held.
        assert!(Preset::Strict.dial().explain()[0].contains("own model"));
        assert!(!Dial::default().explain()[0].contains("own model"));
    }

    #[test]
    fn the_dial_reads_from_settings_with_defaults() {
        assert_eq!(Dial::from_settings(&serde_json::json!({})), Dial::default());
        let dial =
            Dial::from_settings(&serde_json::json!({"approvals": "writes", "sanitize": "strict"}));
        assert_eq!(dial.approvals, ApprovalFrequency::Writes);
        assert_eq!(dial.sanitize, Strictness::Strict);
        // Unreadable knobs fail closed.
        let dial =
            Dial::from_settings(&serde_json::json!({"approvals": "sometimes", "sanitize": 3}));
        assert_eq!(dial.approvals, ApprovalFrequency::Every);
        assert_eq!(dial.sanitize, Strictness::Strict);
    }

    /// Writes are held, reads are not, and a WebSocket is a write: its handshake is a
    /// GET, but the frames after it (an e-mail sent, a payment made) are never judged.
    #[test]
    fn writes_hold_everything_but_reads() {
        let writes = ApprovalFrequency::Writes;
        assert!(!writes.holds(&http::Method::GET, false));
        assert!(!writes.holds(&http::Method::HEAD, false));
        assert!(writes.holds(&http::Method::POST, false));
        assert!(writes.holds(&http::Method::DELETE, false));
        assert!(writes.holds(&http::Method::GET, true));
        assert!(ApprovalFrequency::Every.holds(&http::Method::GET, false));
        assert!(!ApprovalFrequency::Never.holds(&http::Method::POST, false));
        assert!(!ApprovalFrequency::Never.holds(&http::Method::GET, true));
    }
}
