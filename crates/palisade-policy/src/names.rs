//! Agent names and profiles.

use std::fmt;
use std::str::FromStr;

/// A validated agent name: 1–63 chars of `[a-z0-9_-]`, starting with a letter or digit.
/// Safe to use as a file name, socket name and SQL value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
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
        todo!("validate {name}")
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
        todo!("parse {s}")
    }
}
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
