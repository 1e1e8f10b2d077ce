//! An agent's effective policy in plain words: its compartment, the credentials the
//! vault injects for it, its dial, whom it may message and who may message it, and the
//! rules bound to it. `palisade agents show` prints these lines; the web UI's agent
//! page shows the same ones.

use super::links::approval_words;
use crate::HostError;
use palisade_policy::dial::Dial;
use palisade_policy::{HostPattern, Profile};
use palisade_store::{AgentRecord, Store};

/// The host of a secret's pattern without its port (said apart, [`port_words`]).
fn host_words(pattern: &str) -> String {
    HostPattern::parse(pattern).map_or_else(|_| pattern.to_string(), |p| p.host().to_string())
}

/// Which ports of its host a secret goes to, in words: on one address different ports
/// are different services, so a person reading this should see which.
fn port_words(pattern: &str) -> String {
    match HostPattern::parse(pattern).ok().and_then(|p| p.port()) {
        Some(port) => format!("on port {port} only"),
        None => "on every port".to_string(),
    }
}

/// The lines, in the order a person would ask about them.
pub fn plain_words(store: &Store, agent: &AgentRecord) -> Result<Vec<String>, HostError> {
    let name = &agent.name;
    let mut lines = vec![match agent.profile {
        Profile::Research => format!(
            "{name} is a research agent: it may reach any host on the internet, and it can never hold a sensitive secret."
        ),
        Profile::Action => format!(
            "{name} is an action agent: it may reach only the hosts its secrets and rules name; it may hold sensitive secrets."
        ),
    }];
    let granted: Vec<_> = store
        .list_secrets()?
        .into_iter()
        .filter(|secret| secret.agents.contains(name))
        .collect();
    if granted.is_empty() {
        lines.push(format!("The vault injects no credential for {name}."));
    }
    for secret in &granted {
        lines.push(format!(
            "The vault injects {}{} for {}{} {} ({}).",
            secret.name,
            if secret.sensitive { " (sensitive)" } else { "" },
            host_words(&secret.host_pattern),
            secret.path_pattern.as_deref().unwrap_or(""),
            port_words(&secret.host_pattern),
            secret.injection
        ));
    }
    lines.extend(Dial::from_settings(&agent.settings).explain());
    let links = store.list_agent_links(Some(name))?;
    let approval = |link| {
        approval_words(link)
            .map(|words| format!(", {words}"))
            .unwrap_or_default()
    };
    let (to, from): (Vec<_>, Vec<_>) = links.iter().partition(|link| &link.from == name);
    if to.is_empty() {
        lines.push(format!("{name} may message no other agent."));
    }
    let crossing = |link| {
        super::links::compartment_words(store, link)
            .map(|words| words.map(|words| format!(" ({words})")).unwrap_or_default())
    };
    for link in to {
        lines.push(format!(
            "{name} may message {}{}{}.",
            link.to,
            approval(link),
            crossing(link)?
        ));
    }
    for link in from {
        lines.push(format!(
            "{} may message {name}{}{}.",
            link.from,
            approval(link),
            crossing(link)?
        ));
    }
    let rules: Vec<String> = store
        .list_rules()?
        .into_iter()
        .filter(|rule| rule.agent.as_ref() == Some(name))
        .map(|rule| rule.name)
        .collect();
    if !rules.is_empty() {
        lines.push(format!(
            "Rules bound to {name}: {} (and every rule not bound to an agent).",
            rules.join(", ")
        ));
    }
    Ok(lines)
}
