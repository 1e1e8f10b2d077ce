//! The agent-to-agent allow-list as typed: which agent may message which, and in which
//! directions a person approves each message. Nothing is allowed by default. The store
//! writes and audits each change (`agent.allow`, `agent.disallow`); the host reads the
//! list for every message between agents, so a change is in force for the next one.

use crate::HostError;
use palisade_policy::{AgentName, Profile};
use palisade_store::input::clean;
use palisade_store::{AgentLink, Store};

fn agent(name: &str) -> Result<AgentName, HostError> {
    AgentName::new(name).map_err(|e| HostError::Invalid(e.to_string()))
}

/// `(outbound, inbound)` from `outbound`, `inbound` or `both`; none: no approval.
fn directions(approve: Option<&str>) -> Result<(bool, bool), HostError> {
    match approve {
        None => Ok((false, false)),
        Some("outbound") => Ok((true, false)),
        Some("inbound") => Ok((false, true)),
        Some("both") => Ok((true, true)),
        Some(other) => Err(HostError::Invalid(format!(
            "--approve {:?} is invalid: use outbound, inbound or both",
            clean(other)
        ))),
    }
}

/// Lets agent `from` message agent `to`; `approve` (`outbound`, `inbound` or `both`)
/// puts a person before those directions. Allowing an allowed pair again replaces its
/// approvals.
pub fn allow(
    store: &Store,
    from: &str,
    to: &str,
    approve: Option<&str>,
) -> Result<AgentLink, HostError> {
    let (from, to) = (agent(from)?, agent(to)?);
    let (outbound, inbound) = directions(approve)?;
    Ok(store.allow_agent(&from, &to, outbound, inbound)?)
}

/// Stops agent `from` messaging agent `to`.
pub fn disallow(store: &Store, from: &str, to: &str) -> Result<(), HostError> {
    let (from, to) = (agent(from)?, agent(to)?);
    Ok(store.disallow_agent(&from, &to)?)
}

/// What a person approves on an allow-list entry, in words; `None` when nobody is asked.
pub fn approval_words(link: &AgentLink) -> Option<&'static str> {
    match (link.approve_outbound, link.approve_inbound) {
        (false, false) => None,
        (true, false) => Some("approved before each message leaves"),
        (false, true) => Some("approved before each message is delivered"),
        (true, true) => Some("approved in both directions"),
    }
}

/// What a person approves on `link` because it crosses between compartments (an
/// action agent's text reaching a research agent), in words; `None` when it does not.
/// This holds whatever the entry's `--approve` says (see `a2a.rs`).
pub fn compartment_words(store: &Store, link: &AgentLink) -> Result<Option<String>, HostError> {
    let from = store.get_agent(&link.from)?.profile;
    let to = store.get_agent(&link.to)?.profile;
    Ok(match (from, to) {
        (Profile::Action, Profile::Research) => Some(format!(
            "each message approved before it leaves: {} is an action agent, {} a research agent",
            link.from, link.to
        )),
        (Profile::Research, Profile::Action) => Some(format!(
            "each answer approved before {} gets it: {} is an action agent, {} a research agent",
            link.from, link.to, link.from
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_replace_and_disallow_with_one_line_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::Home::at(dir.path().join("home"))).unwrap();
        for name in ["a", "b"] {
            store
                .create_agent(&AgentName::new(name).unwrap(), Profile::Research)
                .unwrap();
        }
        let link = allow(&store, "a", "b", Some("inbound")).unwrap();
        assert_eq!(
            approval_words(&link),
            Some("approved before each message is delivered")
        );
        let link = allow(&store, "a", "b", None).unwrap();
        assert_eq!(
            approval_words(&link),
            None,
            "allowing again replaces the approvals"
        );
        assert_eq!(
            allow(&store, "a", "b", Some("sideways"))
                .unwrap_err()
                .to_string(),
            "--approve \"sideways\" is invalid: use outbound, inbound or both"
        );
        assert!(allow(&store, "a", "a", None)
            .unwrap_err()
            .to_string()
            .contains("cannot be allowed to message itself"));
        assert_eq!(store.list_agent_links(None).unwrap().len(), 1);
        disallow(&store, "a", "b").unwrap();
        assert_eq!(
            disallow(&store, "a", "b").unwrap_err().to_string(),
            "allow-list entry \"a -> b\" not found"
        );
        assert!(store.list_agent_links(None).unwrap().is_empty());
    }
}
