//! Ending what a credential opened once the credential no longer holds.
//!
//! The admit phase refuses the next request of a tunnel whose token was rotated, or of
//! an agent that was deleted; but a WebSocket after its handshake, a response still
//! streaming and an idle tunnel send no next request, so they would run on under a
//! credential the person has withdrawn. Each agent therefore has a cancellation token
//! that ends with the agent (`alive`, which its socket's connections watch), and under
//! it one per proxy token that ends when that token stops being the agent's (which
//! the connections, tunnels, WebSockets and streams opened with the token watch).
//!
//! The tokens live in the policy snapshot, so a connection takes its own from the very
//! snapshot that admitted it, without a lock; a new snapshot carries over those whose
//! credential still holds, and the gateway cancels the others once the new snapshot
//! is in force (so whatever the old snapshot admitted after the cancel is cancelled
//! from the start). A change to one agent wakes only that agent's connections.

use palisade_policy::AgentName;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

/// What one agent's connections were admitted under.
struct AgentCredentials {
    /// When the agent was created: an agent deleted and created again under its name
    /// between two reloads is another agent, and the first one's connections end.
    created_at_ms: i64,
    /// Cancelled when the agent is deleted (its socket's connections end with it).
    alive: CancellationToken,
    /// One per proxy token, by digest, each a child of `alive`: cancelled when that
    /// token is no longer the agent's.
    tokens: HashMap<String, CancellationToken>,
}

/// Whose credential ended, for the log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The agent was deleted (or deleted and created again).
    Agent(AgentName),
    /// A proxy token of the agent was replaced or revoked.
    Token(AgentName),
    /// A local address the agent's connections may have reached is no longer allowed.
    LocalAllowance(AgentName),
}

impl Ended {
    /// One line for the gateway's log.
    pub fn log(&self) {
        match self {
            Ended::Agent(agent) => tracing::info!(
                agent = %agent,
                "agent {agent} no longer exists: ending its connections, tunnels, WebSockets and streams"
            ),
            Ended::Token(agent) => tracing::info!(
                agent = %agent,
                "agent {agent}'s proxy token changed: ending the connections, tunnels, WebSockets and streams opened with the previous one"
            ),
            Ended::LocalAllowance(agent) => tracing::info!(
                agent = %agent,
                "a local address is no longer allowed: ending agent {agent}'s tunnels, WebSockets and streams, which may have reached it"
            ),
        }
    }
}

/// Every agent's cancellation tokens, as of one snapshot.
#[derive(Default)]
pub struct Revocations {
    agents: HashMap<AgentName, AgentCredentials>,
}

impl Revocations {
    /// Fresh tokens for `agents` (name and creation time) and their proxy tokens
    /// (digest → agent).
    pub fn new(
        agents: impl IntoIterator<Item = (AgentName, i64)>,
        tokens: &HashMap<String, AgentName>,
    ) -> Self {
        let mut by_agent: HashMap<AgentName, AgentCredentials> = agents
            .into_iter()
            .map(|(agent, created_at_ms)| {
                let credentials = AgentCredentials {
                    created_at_ms,
                    alive: CancellationToken::new(),
                    tokens: HashMap::new(),
                };
                (agent, credentials)
            })
            .collect();
        for (digest, agent) in tokens {
            if let Some(credentials) = by_agent.get_mut(agent) {
                let token = credentials.alive.child_token();
                credentials.tokens.insert(digest.clone(), token);
            }
        }
        Revocations { agents: by_agent }
    }

    /// What ends the connections of `agent`'s socket: its deletion. `None` for an
    /// agent this snapshot does not know.
    pub fn of_agent(&self, agent: &AgentName) -> Option<CancellationToken> {
        self.agents.get(agent).map(|c| c.alive.clone())
    }

    /// What ends what was opened with the proxy token whose digest is `digest`: the
    /// token no longer being `agent`'s, or the agent's deletion.
    pub fn of_token(&self, agent: &AgentName, digest: &str) -> Option<CancellationToken> {
        self.agents.get(agent)?.tokens.get(digest).cloned()
    }

    /// Gives every proxy token a new cancellation token and returns the previous ones,
    /// to be cancelled once this set is in force: whatever was opened with any token
    /// ends (agents' sockets stay up, and their clients connect again).
    pub fn renew_tokens(&mut self) -> Vec<(Ended, CancellationToken)> {
        let mut ended = Vec::new();
        for (agent, credentials) in self.agents.iter_mut() {
            for token in credentials.tokens.values_mut() {
                let old = std::mem::replace(token, credentials.alive.child_token());
                ended.push((Ended::LocalAllowance(agent.clone()), old));
            }
        }
        ended
    }

    /// Keeps the tokens of `previous` whose credential still holds here, and returns
    /// those of `previous` that no longer hold, to be cancelled once this set is in
    /// force.
    pub fn carry_over(&mut self, previous: &Revocations) -> Vec<(Ended, CancellationToken)> {
        let mut ended = Vec::new();
        for (agent, old) in &previous.agents {
            let Some(new) = self
                .agents
                .get_mut(agent)
                .filter(|new| new.created_at_ms == old.created_at_ms)
            else {
                ended.push((Ended::Agent(agent.clone()), old.alive.clone()));
                continue;
            };
            new.alive = old.alive.clone();
            for (digest, token) in new.tokens.iter_mut() {
                *token = match old.tokens.get(digest) {
                    Some(kept) => kept.clone(),
                    None => new.alive.child_token(),
                };
            }
            for (digest, token) in &old.tokens {
                if !new.tokens.contains_key(digest) {
                    ended.push((Ended::Token(agent.clone()), token.clone()));
                }
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> AgentName {
        text.parse().unwrap()
    }

    fn set(agents: &[(&str, i64, &str)]) -> Revocations {
        let tokens = agents
            .iter()
            .map(|(agent, _, digest)| (digest.to_string(), name(agent)))
            .collect();
        Revocations::new(
            agents
                .iter()
                .map(|(agent, created, _)| (name(agent), *created)),
            &tokens,
        )
    }

    /// Carries `previous` into `next`, cancels what ended as the gateway does, and
    /// returns what ended.
    fn install(previous: &Revocations, next: &mut Revocations) -> Vec<Ended> {
        next.carry_over(previous)
            .into_iter()
            .map(|(ended, token)| {
                token.cancel();
                ended
            })
            .collect()
    }

    #[test]
    fn an_unchanged_token_keeps_its_connections() {
        let first = set(&[("a", 1, "t1"), ("b", 2, "u1")]);
        let token = first.of_token(&name("a"), "t1").unwrap();
        let mut second = set(&[("a", 1, "t1"), ("b", 2, "u1")]);
        assert!(install(&first, &mut second).is_empty());
        assert!(!token.is_cancelled());
        // Still the same token: a later rotation reaches connections admitted earlier.
        let mut third = set(&[("a", 1, "t2"), ("b", 2, "u1")]);
        assert_eq!(install(&second, &mut third), vec![Ended::Token(name("a"))]);
        assert!(token.is_cancelled());
    }

    #[test]
    fn a_rotated_token_ends_only_what_it_opened() {
        let first = set(&[("a", 1, "t1"), ("b", 2, "u1")]);
        let old = first.of_token(&name("a"), "t1").unwrap();
        let socket = first.of_agent(&name("a")).unwrap();
        let other = first.of_token(&name("b"), "u1").unwrap();
        let mut second = set(&[("a", 1, "t2"), ("b", 2, "u1")]);
        assert_eq!(install(&first, &mut second), vec![Ended::Token(name("a"))]);
        assert!(old.is_cancelled());
        assert!(!socket.is_cancelled(), "the socket has no token to rotate");
        assert!(!other.is_cancelled());
        let new = second.of_token(&name("a"), "t2").unwrap();
        assert!(!new.is_cancelled());
        assert!(second.of_token(&name("a"), "t1").is_none());
        // The new token's connections still end with the agent.
        let mut third = set(&[("b", 2, "u1")]);
        assert_eq!(install(&second, &mut third), vec![Ended::Agent(name("a"))]);
        assert!(new.is_cancelled() && socket.is_cancelled());
    }

    #[test]
    fn an_agent_deleted_and_created_again_is_another_agent() {
        let first = set(&[("a", 1, "t1")]);
        let socket = first.of_agent(&name("a")).unwrap();
        let mut second = set(&[("a", 5, "t1")]);
        assert_eq!(install(&first, &mut second), vec![Ended::Agent(name("a"))]);
        assert!(socket.is_cancelled());
        assert!(!second.of_agent(&name("a")).unwrap().is_cancelled());
        assert!(!second.of_token(&name("a"), "t1").unwrap().is_cancelled());
    }

    #[test]
    fn a_token_moved_to_another_agent_is_not_the_first_ones() {
        let first = set(&[("a", 1, "t1"), ("b", 2, "u1")]);
        assert!(first.of_token(&name("b"), "t1").is_none());
    }
}
