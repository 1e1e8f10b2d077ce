//! Agent names and profiles.

use std::fmt;
use std::str::FromStr;

/// A validated agent name: 1–63 chars of `[a-z0-9_-]`, starting with a letter or digit.
/// Safe to use as a file name, socket name and SQL value.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("agent name {0:?} is invalid: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit")]
    Invalid(String),
    #[error("profile {0:?} is unknown: use 'research' or 'action'")]
    UnknownProfile(String),
}

impl AgentName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        let bytes = name.as_bytes();
        let well_formed = (1..=63).contains(&bytes.len())
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if well_formed {
            Ok(AgentName(name.to_string()))
        } else {
            // Quoted in the error, so at most a line of it: a 5,000-character name
            // typed by mistake (or pasted) is not echoed whole.
            let shown: String = name.chars().take(80).collect();
            let shown = match shown.len() < name.len() {
                true => format!("{shown}…"),
                false => shown,
            };
            Err(NameError::Invalid(shown))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AgentName::new(&value)
    }
}
impl From<AgentName> for String {
    fn from(value: AgentName) -> Self {
        value.0
    }
}
impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for AgentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgentName::new(s)
    }
}

/// Default egress of an agent. `Research`: any host allowed unless a rule says
/// otherwise. `Action`: hosts not named by a rule or a granted secret are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Research,
    Action,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Research => "research",
            Profile::Action => "action",
        }
    }
}
impl FromStr for Profile {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.eq_ignore_ascii_case("research") {
            Ok(Profile::Research)
        } else if trimmed.eq_ignore_ascii_case("action") {
            Ok(Profile::Action)
        } else {
            Err(NameError::UnknownProfile(s.to_string()))
        }
    }
}
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names() {
        for good in ["a", "0", "mail-bot", "r_2", &"x".repeat(63)] {
            assert_eq!(AgentName::new(good).map(String::from).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a b",
            "a/b",
            "a.b",
            "é",
            &"x".repeat(64),
        ] {
            assert_eq!(
                AgentName::new(bad),
                Err(NameError::Invalid(bad.to_string()))
            );
        }
        // A long one is quoted in part.
        assert_eq!(
            AgentName::new(&"y".repeat(5000)),
            Err(NameError::Invalid(format!("{}…", "y".repeat(80))))
        );
    }

    #[test]
    fn agent_name_serde_validates() {
        let ok: AgentName = serde_json::from_str("\"bot\"").unwrap();
        assert_eq!(ok.as_str(), "bot");
        assert!(serde_json::from_str::<AgentName>("\"../etc\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"bot\"");
    }

    #[test]
    fn profiles() {
        assert_eq!("research".parse(), Ok(Profile::Research));
        assert_eq!("Action".parse(), Ok(Profile::Action));
        assert!(matches!(
            "admin".parse::<Profile>(),
            Err(NameError::UnknownProfile(_))
        ));
        assert_eq!(Profile::Action.to_string(), "action");
    }
}
