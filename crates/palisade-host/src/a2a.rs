//! Agent-to-agent messages: the `ask_agent` and `tell_agent` host tools.
//!
//! What crosses between agents is gated and cleaned, in this order:
//! 1. the allow-list: `from` may message `to` only if an owner said so
//!    (`palisade agents allow FROM --to TO`); nothing is allowed by default;
//! 2. loops and storms: the message carries the chain of agents it passed through; a
//!    chain that would visit an agent twice (A → B → A) is a cycle and is stopped (the
//!    owners are told), a chain longer than [`HOP_LIMIT`] is stopped, and each pair may
//!    exchange at most [`PAIR_LIMIT`] messages an hour, and each agent send at most
//!    [`SENDER_LIMIT`] in all (an allow-list of many agents is no multiplier);
//! 3. the sanitizer (`palisade_policy::sanitize`, at the receiving agent's strictness):
//!    plain, inert text, labelled with its origin, never passed off as the user's words;
//! 4. a person, if the allow-list entry asks for it in either direction, through the
//!    approval engine with the sanitized text on the card;
//! 5. the receiving agent's durable queue, in the session it keeps with that sender.
//!
//! `ask_agent` then waits (bounded) for the answer, which is sanitized at the asking
//! agent's strictness before the asking agent sees it. Every refusal and every message
//! sent is an audit row (`agent.message`). A message is keyed by the sending turn and
//! its text, so a turn delivered again after a restart does not send it twice.

use crate::host::{HostInner, StreamEvent};
use palisade_approvals::{ApprovalKind, NewRequest, Outcome};
use palisade_policy::sanitize::{self, Options, Strictness};
use palisade_policy::{AgentName, Profile};
use palisade_store::{AgentRecord, AuditEntry, InboundMessage, MessageOrigin};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Most agents a chain of messages may pass through (the sender included).
pub const HOP_LIMIT: usize = 4;
/// Messages one agent may send another per hour.
pub const PAIR_LIMIT: u32 = 30;
/// Messages one agent may send all others together per hour.
pub const SENDER_LIMIT: u32 = 60;
const PAIR_WINDOW: Duration = Duration::from_secs(3600);
/// How long `ask_agent` waits for the answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest message an agent may send another (before sanitizing).
const MAX_TEXT_BYTES: usize = 32 * 1024;

/// Whether the calling agent waits for the other agent's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    ForReply,
    No,
}

/// Runs `ask_agent` / `tell_agent {agent, text}` for the agent of `message`; (ok, answer).
pub(crate) async fn send(
    inner: &Arc<HostInner>,
    message: &InboundMessage,
    to: &str,
    text: &str,
    wait: Wait,
) -> (bool, String) {
    match try_send(inner, message, to, text, wait).await {
        Ok(answer) => (true, answer),
        Err(reason) => (false, reason),
    }
}

async fn try_send(
    inner: &Arc<HostInner>,
    message: &InboundMessage,
    to: &str,
    text: &str,
    wait: Wait,
) -> Result<String, String> {
    let tool = match wait {
        Wait::ForReply => "ask_agent",
        Wait::No => "tell_agent",
    };
    let from = message.agent.clone();
    let to: AgentName = match to.parse() {
        Ok(to) => to,
        Err(_) => {
            // The name as given, escaped and cut: it is the agent's text.
            let given = palisade_store::input::clean(to);
            audit(
                inner,
                &from,
                "bad_recipient",
                serde_json::json!({ "to": given, "message_id": message.id }),
            )
            .await;
            return Err(format!("{tool} needs \"agent\": the name of another agent"));
        }
    };
    if text.trim().is_empty() || text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "{tool} needs a \"text\" of 1 to {MAX_TEXT_BYTES} bytes"
        ));
    }
    // What every row of this message names: the receiver and the sender's message.
    let about = serde_json::json!({ "to": to.as_str(), "message_id": message.id });
    let with = |extra: serde_json::Value| {
        let mut detail = about.clone();
        if let (Some(detail), serde_json::Value::Object(extra)) = (detail.as_object_mut(), extra) {
            detail.extend(extra);
        }
        detail
    };
    if to == from {
        audit(inner, &from, "to_itself", about.clone()).await;
        return Err("an agent cannot message itself".into());
    }
    let store = inner.store.clone();
    let (f, t) = (from.clone(), to.clone());
    let link = blocking(move || store.agent_link(&f, &t)).await?;
    let Some(link) = link else {
        audit(inner, &from, "not_allowed", about.clone()).await;
        return Err(format!(
            "agent {from} may not message agent {to}: it is not on {from}'s allow-list. Tell the user; the owner can allow it with `palisade agents allow {from} --to {to}`."
        ));
    };

    // Loops and storms.
    let mut chain = message
        .origin
        .as_ref()
        .map(|origin| origin.chain.clone())
        .unwrap_or_default();
    chain.push(from.clone());
    if let Err(stop) = check_chain(&chain, &to) {
        let (decision, path) = match &stop {
            ChainStop::Cycle { path, .. } => ("cycle", path.clone()),
            ChainStop::HopLimit { path, .. } => ("hop_limit", path.clone()),
        };
        audit(
            inner,
            &from,
            decision,
            with(serde_json::json!({ "path": path })),
        )
        .await;
        return Err(stop.to_string());
    }
    // Waits across conversations: agents that ask each other in a ring (A asks B, B
    // asks C, C asks A, each in a conversation of its own) would each wait the whole
    // ask timeout, their slots taken and their own people waiting behind them.
    let _waiting = match wait {
        Wait::ForReply => match inner.waits.begin(&from, &to) {
            Ok(waiting) => Some(waiting),
            Err(ring) => {
                let path = ring
                    .iter()
                    .map(AgentName::as_str)
                    .collect::<Vec<_>>()
                    .join(" → ");
                audit(
                    inner,
                    &from,
                    "deadlock",
                    with(serde_json::json!({ "path": path })),
                )
                .await;
                return Err(format!(
                    "not sent: {to} is itself waiting for an answer that waits on you ({path}), so you would both wait until the ask times out. Answer with what you have, or use tell_agent."
                ));
            }
        },
        Wait::No => None,
    };
    let store = inner.store.clone();
    let (f, t) = (from.clone(), to.clone());
    let counted = blocking(move || send_place(&store, &f, &t, palisade_store::now_ms())).await?;
    if let Err(over) = counted {
        audit(inner, &from, "rate_limited", about.clone()).await;
        return Err(over);
    }

    // Both agents as they are now: the receiver's strictness, and whether the message
    // leaves an action agent's compartment for a research agent's.
    let (sender, receiver) = (record(inner, &from).await, record(inner, &to).await);
    // Cleaned at the receiver's strictness, labelled with its origin.
    let receiver_strictness = strictness(receiver.as_ref());
    let clean = sanitize::sanitize(
        text,
        &Options {
            strictness: receiver_strictness,
            max_chars: sanitize::DEFAULT_MAX_CHARS,
        },
    )
    .text;
    if clean.trim().is_empty() {
        return Err("not sent: nothing is left of the message once cleaned".into());
    }
    let digest = hex::encode(&Sha256::digest(text.as_bytes())[..16]);
    let key = format!("a2a:{from}:{}:{to}:{digest}", message.id);
    // From here on rows name the message's key: the digest of its text, and the key
    // its approvals carry (`KEY:out`, `KEY:in`, `KEY:answer`).
    let keyed = with(serde_json::json!({ "key": key }));

    // A person, where the allow-list asks for one, and always for what leaves an
    // action agent's compartment for a research agent.
    let leaves_compartment = crosses_compartment(sender.as_ref(), receiver.as_ref());
    let outbound = link.approve_outbound || leaves_compartment;
    for (wanted, inbound) in [(outbound, false), (link.approve_inbound, true)] {
        if !wanted {
            continue;
        }
        let owner = if inbound { to.clone() } else { from.clone() };
        let ask = Ask {
            owner: owner.clone(),
            waiting: from.clone(),
            kind: if inbound {
                ApprovalKind::AgentMessageIn
            } else {
                ApprovalKind::AgentMessageOut
            },
            summary: palisade_approvals::summary::agent_message(
                from.as_str(),
                to.as_str(),
                &clean,
                inbound,
            ),
            context: serde_json::json!({
                "from": from.as_str(),
                "to": to.as_str(),
                "message_id": message.id,
                "chain": chain.iter().map(AgentName::as_str).collect::<Vec<_>>(),
            }),
            request_key: format!("{key}:{}", if inbound { "in" } else { "out" }),
        };
        match person_decides(inner, ask).await? {
            None => {}
            Some(Refused::Denied { approver, comment }) => {
                audit(inner, &from, "denied", keyed.clone()).await;
                return Ok(format!(
                    "not sent: {approver} denied the message to {to}{}.",
                    said(inner, &from, comment).await
                ));
            }
            Some(Refused::TimedOut) => {
                audit(inner, &from, "timed_out", keyed.clone()).await;
                return Ok(format!(
                    "not sent: nobody approved the message to {to} in time."
                ));
            }
        }
    }

    // Into the receiver's durable queue.
    let origin = MessageOrigin {
        from: from.clone(),
        chain: chain.clone(),
    };
    let labelled = sanitize::label(&format!("agent {from}"), &clean);
    let store = inner.store.clone();
    let (receiver, message_key) = (to.clone(), key.clone());
    let (accepted, new) =
        blocking(move || store.accept_agent_message(&receiver, &origin, &message_key, &labelled))
            .await?;
    // Subscribed before the wake, so the answer cannot slip past.
    let mut events = inner.subscribe(accepted.message_id);
    if new {
        let mut sent = keyed.clone();
        sent["delivered_as"] = accepted.message_id.into();
        audit(inner, &from, "sent", sent).await;
    }
    inner
        .wake(&to)
        .map_err(|e| format!("the message to {to} is stored but {to} could not be woken: {e}"))?;
    if wait == Wait::No {
        // No id: the store's count every agent's messages, and the gap between two
        // told a research agent how many messages others had sent meanwhile.
        return Ok(format!("delivered to {to}; it answers in its own time."));
    }

    // The answer, cleaned at the asking agent's strictness.
    let reply = wait_for_reply(inner, accepted.message_id, &mut events).await;
    let Some((answer, is_error)) = reply else {
        return Err(format!(
            "{to} did not answer within {} minutes; its answer stays in its own history. Go on without it, or ask again later.",
            ASK_TIMEOUT.as_secs() / 60
        ));
    };
    // Both agents read again: the wait may have lasted minutes, and what is in force
    // now decides.
    let (asker, asked) = (record(inner, &from).await, record(inner, &to).await);
    // Cleaned at the asking agent's strictness and labelled, an error as much as an
    // answer: its text comes from the other agent's model or model server.
    let asker_strictness = strictness(asker.as_ref());
    let clean_answer = sanitize::sanitize(
        &answer,
        &Options {
            strictness: asker_strictness,
            max_chars: sanitize::DEFAULT_MAX_CHARS,
        },
    )
    .text;
    // What an action agent answers a research agent leaves its compartment: a person
    // sees it first, an error as much as an answer.
    if crosses_compartment(asked.as_ref(), asker.as_ref()) {
        let ask = Ask {
            owner: to.clone(),
            waiting: from.clone(),
            kind: ApprovalKind::AgentMessageOut,
            summary: palisade_approvals::summary::agent_answer(
                to.as_str(),
                from.as_str(),
                &clean_answer,
            ),
            context: serde_json::json!({
                "from": to.as_str(),
                "to": from.as_str(),
                "answer_to": accepted.message_id,
            }),
            request_key: format!("{key}:answer"),
        };
        // The answer's rows are the asked agent's, about the asking one.
        let answer_row = serde_json::json!({ "to": from.as_str(), "key": key, "answer_to": accepted.message_id });
        match person_decides(inner, ask).await? {
            None => {}
            Some(Refused::Denied { approver, comment }) => {
                audit(inner, &to, "answer_denied", answer_row).await;
                return Err(format!(
                    "{to} answered, but {approver} did not let its answer out of {to}'s compartment{}. Go on without it.",
                    said(inner, &from, comment).await
                ));
            }
            Some(Refused::TimedOut) => {
                audit(inner, &to, "answer_timed_out", answer_row).await;
                return Err(format!(
                    "{to} answered, but nobody let its answer out of {to}'s compartment in time. Go on without it."
                ));
            }
        }
    }
    if is_error {
        return Err(format!(
            "{to} could not answer. {}",
            sanitize::label(&format!("agent {to} (its error)"), &clean_answer)
        ));
    }
    Ok(sanitize::label(
        &format!("agent {to} (its answer)"),
        &clean_answer,
    ))
}

/// Waits (bounded) for the stored reply to `message_id`: (text, is_error).
async fn wait_for_reply(
    inner: &HostInner,
    message_id: i64,
    events: &mut tokio::sync::broadcast::Receiver<StreamEvent>,
) -> Option<(String, bool)> {
    let deadline = tokio::time::Instant::now() + ASK_TIMEOUT;
    let mut shutdown = inner.shutdown.clone();
    loop {
        let store = inner.store.clone();
        if let Ok(Some(reply)) = blocking(move || store.get_reply(message_id)).await {
            return Some((reply.text, reply.is_error));
        }
        tokio::select! {
            event = events.recv() => match event {
                Ok(StreamEvent::Reply { text, is_error }) => return Some((text, is_error)),
                Ok(_) => {}
                // Lagged or closed: look at the store again (with a pause if closed).
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            },
            _ = tokio::time::sleep_until(deadline) => return None,
            _ = crate::host::stopped(&mut shutdown) => return None,
        }
    }
}

/// The agent's sanitizing strictness (its dial; balanced by default).
/// A request to a person about text crossing between agents.
struct Ask {
    /// The agent whose approvers decide.
    owner: AgentName,
    /// The agent whose turn waits meanwhile: the sender, whose share of waiting
    /// approvals it takes (never the receiver's, which a sender could fill).
    waiting: AgentName,
    kind: ApprovalKind,
    summary: palisade_approvals::summary::Summary,
    context: serde_json::Value,
    request_key: String,
}

/// Why a person did not let text cross.
enum Refused {
    Denied {
        approver: String,
        comment: Option<String>,
    },
    TimedOut,
}

/// Asks a person through the approval engine: `None` when approved.
async fn person_decides(inner: &Arc<HostInner>, ask: Ask) -> Result<Option<Refused>, String> {
    let Ok(mut slot) = inner.holds.reserve(&ask.waiting) else {
        return Err(format!(
            "{} already waits for {} approvals; wait for those first",
            ask.waiting,
            crate::approvals::MAX_WAITING_PER_AGENT
        ));
    };
    let request = NewRequest {
        kind: ask.kind,
        agent: ask.owner.clone(),
        summary: ask.summary,
        context: ask.context,
        timeout: crate::approvals::agent_timeout(inner, &ask.owner).await,
        holder: None,
        request_key: Some(ask.request_key),
    };
    Ok(
        match crate::approvals::ask_person(inner, &mut slot, request).await? {
            Outcome::Approved { .. } => None,
            Outcome::Denied { approver, comment } => Some(Refused::Denied {
                approver: approver.unwrap_or_else(|| "a person".into()),
                comment,
            }),
            Outcome::TimedOut | Outcome::Cancelled => Some(Refused::TimedOut),
        },
    )
}

/// A person's comment on a denial as the agent `reader` is told it: cleaned at its
/// strictness like everything else its model reads, `, saying: …`.
async fn said(inner: &HostInner, reader: &AgentName, comment: Option<String>) -> String {
    let Some(comment) = comment else {
        return String::new();
    };
    let options = Options {
        strictness: strictness(record(inner, reader).await.as_ref()),
        max_chars: 1000,
    };
    format!(", saying: {}", sanitize::sanitize(&comment, &options).text)
}

/// Counts a message from `from` to `to` against both of its hourly limits, the pair's
/// and the sender's, or against neither: `Err` is what the sending agent is told.
fn send_place(
    store: &palisade_store::Store,
    from: &AgentName,
    to: &AgentName,
    now_ms: i64,
) -> Result<Result<(), String>, palisade_store::StoreError> {
    let (sender, pair) = (format!("a2a-from:{from}"), format!("a2a:{from}:{to}"));
    let limits = [(sender.as_str(), SENDER_LIMIT), (pair.as_str(), PAIR_LIMIT)];
    Ok(
        match store.rate_acquire_all(&limits, PAIR_WINDOW, now_ms)? {
            Ok(_) => Ok(()),
            Err((index, retry_after)) => {
                let minutes = retry_after.as_secs().div_ceil(60);
                Err(if index == 0 {
                    format!(
                    "not sent: {from} sent {SENDER_LIMIT} messages to other agents in the last hour, the most allowed; retry in {minutes} minutes."
                )
                } else {
                    format!(
                    "not sent: {from} sent {to} {PAIR_LIMIT} messages in the last hour, the most allowed; retry in {minutes} minutes."
                )
                })
            }
        },
    )
}

/// Whether text from agent `sender` to agent `receiver` leaves an action agent's
/// compartment for a research agent's: a research agent holds no sensitive data, and
/// what an action agent says may carry what its credentials fetched. An agent whose
/// record cannot be read counts as crossing.
fn crosses_compartment(sender: Option<&AgentRecord>, receiver: Option<&AgentRecord>) -> bool {
    !matches!(
        (sender.map(|r| r.profile), receiver.map(|r| r.profile)),
        (Some(Profile::Research), _) | (_, Some(Profile::Action))
    )
}

/// An agent's record as stored now; `None` if it cannot be read.
async fn record(inner: &HostInner, agent: &AgentName) -> Option<AgentRecord> {
    let store = inner.store.clone();
    let name = agent.clone();
    blocking(move || store.get_agent(&name)).await.ok()
}

/// How strictly messages for the agent of `record` are cleaned: its dial's setting.
fn strictness(record: Option<&AgentRecord>) -> Strictness {
    record
        .map(|record| palisade_policy::dial::Dial::from_settings(&record.settings).sanitize)
        // An agent that cannot be read is cleaned for most strictly.
        .unwrap_or(Strictness::Strict)
}

/// One `agent.message` audit row: the sender, the receiver and what happened.
/// Rows of refused messages (off the allow-list, a loop, too many hops, over the rate)
/// cost the sending agent nothing, so one turn's thousands of calls could write
/// thousands of rows: each agent may have a burst of this many, then this many a
/// second; the rest are counted on the next row written.
const REFUSAL_ROWS_BURST: f64 = 100.0;
const REFUSAL_ROWS_PER_SECOND: f64 = 10.0;

pub(crate) fn refusal_budget() -> palisade_policy::budget::AgentBuckets {
    palisade_policy::budget::AgentBuckets::new(REFUSAL_ROWS_BURST, REFUSAL_ROWS_PER_SECOND)
}

/// `Some(rows left out before this one)` when the row of `from`'s message with
/// `decision` is written: always for what was sent or what a person decided, within
/// `budget` for refusals.
fn row_allowed(
    budget: &palisade_policy::budget::AgentBuckets,
    from: &AgentName,
    decision: &str,
) -> Option<u64> {
    match decision {
        "not_allowed" | "cycle" | "hop_limit" | "rate_limited" | "bad_recipient" | "to_itself" => {
            budget.take(from.as_str())
        }
        _ => Some(0),
    }
}

async fn audit(inner: &HostInner, from: &AgentName, decision: &str, mut detail: serde_json::Value) {
    let Some(left_out) = row_allowed(&inner.message_refusals, from, decision) else {
        return;
    };
    if left_out > 0 {
        detail["similar_rows_suppressed"] = left_out.into();
    }
    let entry = AuditEntry {
        event: "agent.message".into(),
        agent: Some(from.to_string()),
        decision: Some(decision.into()),
        actor: Some(format!("agent:{from}")),
        detail: Some(detail),
        ..AuditEntry::default()
    };
    let store = inner.store.clone();
    if let Err(error) = blocking(move || store.append_audit(&entry)).await {
        tracing::warn!(%error, "could not audit an agent-to-agent message");
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, palisade_store::StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(format!("a store task failed: {error}")),
    }
}

/// Which agents wait for which others' answers right now: one edge per `ask_agent` in
/// progress (an agent may wait on several at once, one per slot).
#[derive(Default)]
pub(crate) struct Waits(std::sync::Mutex<Vec<(AgentName, AgentName)>>);

/// `from` waits for `to` while this lives.
pub(crate) struct Waiting<'a> {
    waits: &'a Waits,
    edge: (AgentName, AgentName),
}

impl Waits {
    fn edges(&self) -> std::sync::MutexGuard<'_, Vec<(AgentName, AgentName)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `from` waits for `to`, unless `to` already waits, directly or
    /// through others, for `from`: then the ring (`from`, `to`, …, `from`).
    fn begin(&self, from: &AgentName, to: &AgentName) -> Result<Waiting<'_>, Vec<AgentName>> {
        let mut edges = self.edges();
        if let Some(path) = waits_for(&edges, to, from) {
            let mut ring = vec![from.clone()];
            ring.extend(path);
            return Err(ring);
        }
        edges.push((from.clone(), to.clone()));
        Ok(Waiting {
            waits: self,
            edge: (from.clone(), to.clone()),
        })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut edges = self.waits.edges();
        if let Some(index) = edges.iter().position(|edge| *edge == self.edge) {
            edges.swap_remove(index);
        }
    }
}

/// The agents from `start` to `goal` (both included) along `edges`, if `start` waits
/// for `goal` through them. Breadth first, each agent visited once.
fn waits_for(
    edges: &[(AgentName, AgentName)],
    start: &AgentName,
    goal: &AgentName,
) -> Option<Vec<AgentName>> {
    let mut came_from: HashMap<&AgentName, &AgentName> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(agent) = queue.pop_front() {
        if agent == goal {
            let mut path = vec![agent.clone()];
            let mut at = agent;
            while let Some(previous) = came_from.get(at) {
                path.push((*previous).clone());
                at = previous;
            }
            path.reverse();
            return Some(path);
        }
        for (_, next) in edges.iter().filter(|(waiter, _)| waiter == agent) {
            if next != start && !came_from.contains_key(next) {
                came_from.insert(next, agent);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Why a chain of agent messages stops before reaching the next agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChainStop {
    /// The next agent is already in the chain (A → B → A).
    Cycle { to: String, path: String },
    /// The chain already passed through more than [`HOP_LIMIT`] agents.
    HopLimit { agents: usize, path: String },
}

impl std::fmt::Display for ChainStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainStop::Cycle { to, path } => write!(
                f,
                "not sent: {to} is already part of this conversation ({path}), so this would loop. Answer with what you have instead."
            ),
            ChainStop::HopLimit { agents, path } => write!(
                f,
                "not sent: this conversation already passed through {agents} agents ({path}), the most allowed. Answer with what you have instead."
            ),
        }
    }
}

/// Whether a message whose chain of senders is `chain` (oldest first, the sender
/// last) may go on to `to`: never back to an agent already in it, and never past
/// [`HOP_LIMIT`] agents.
fn check_chain(chain: &[AgentName], to: &AgentName) -> Result<(), ChainStop> {
    let path = || {
        chain
            .iter()
            .chain(std::iter::once(to))
            .map(AgentName::as_str)
            .collect::<Vec<_>>()
            .join(" → ")
    };
    if chain.contains(to) {
        return Err(ChainStop::Cycle {
            to: to.to_string(),
            path: path(),
        });
    }
    if chain.len() > HOP_LIMIT {
        return Err(ChainStop::HopLimit {
            agents: chain.len(),
            path: path(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<AgentName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// One agent's loop of refused messages writes a bounded number of rows; what it
    /// sends, and what a person decides, is always written.
    #[test]
    fn refused_messages_write_rows_within_a_budget() {
        let budget = refusal_budget();
        let (looping, other) = ("looper".parse().unwrap(), "other".parse().unwrap());
        let written = (0..1000)
            .filter(|_| row_allowed(&budget, &looping, "not_allowed").is_some())
            .count();
        // The burst, and what a second's rate adds while the loop runs.
        assert!((100..=110).contains(&written), "{written}");
        for decision in ["sent", "denied", "timed_out"] {
            assert_eq!(row_allowed(&budget, &looping, decision), Some(0));
        }
        assert_eq!(row_allowed(&budget, &other, "cycle"), Some(0));
    }

    /// Agents asking each other in a ring, each in a conversation of its own, would
    /// all wait the whole ask timeout: the ask that closes the ring is refused with the
    /// ring named, and an ask ended lets the next one through.
    #[test]
    fn an_ask_that_closes_a_ring_of_waiting_agents_is_refused() {
        let [res, act, c, d] = ["res", "act", "c", "d"].map(|n| n.parse::<AgentName>().unwrap());
        let waits = Waits::default();
        let first = waits.begin(&res, &act).unwrap();
        let second = waits.begin(&act, &c).unwrap();
        // Waiting for one agent twice, or two agents for one, is no ring.
        let also = waits.begin(&res, &act).unwrap();
        let other = waits.begin(&d, &act).unwrap();
        let ring = waits.begin(&c, &res).err().expect("a ring");
        assert_eq!(ring, names(&["c", "res", "act", "c"]));
        assert_eq!(
            waits.begin(&act, &res).err(),
            Some(names(&["act", "res", "act"]))
        );
        drop(second);
        // act no longer waits for c: c may ask res.
        let closing = waits.begin(&c, &res).unwrap();
        drop((first, also, other, closing));
        assert!(waits.edges().is_empty());
    }

    /// A sender allowed to message many agents is held to one total an hour, not the
    /// pair's limit once per agent; a pair is held to its own limit below that.
    #[test]
    fn a_sender_is_limited_in_all_as_well_as_per_agent() {
        let dir = tempfile::tempdir().unwrap();
        let store = palisade_store::Store::open(&palisade_store::Home::at(dir.path().join("home")))
            .unwrap();
        let [sender, other] = ["sender", "other"].map(|n| n.parse::<AgentName>().unwrap());
        let receivers: Vec<AgentName> = (0..4).map(|i| format!("to{i}").parse().unwrap()).collect();
        let now = 1_800_000_000_000;
        let send = |from: &AgentName, to: &AgentName| send_place(&store, from, to, now).unwrap();
        for _ in 0..PAIR_LIMIT {
            send(&sender, &receivers[0]).unwrap();
        }
        let pair_full = send(&sender, &receivers[0]).unwrap_err();
        assert!(pair_full.contains("sent to0 30 messages"), "{pair_full}");
        let mut sent = PAIR_LIMIT;
        for to in receivers[1..].iter().cycle() {
            if send(&sender, to).is_err() {
                break;
            }
            sent += 1;
        }
        assert_eq!(sent, SENDER_LIMIT);
        let sender_full = send(&sender, &receivers[3]).unwrap_err();
        assert!(
            sender_full.contains("60 messages to other agents in the last hour"),
            "{sender_full}"
        );
        // Another sender is not held by this one's total.
        send(&other, &receivers[0]).unwrap();
    }

    #[test]
    fn a_chain_stops_at_a_cycle_and_past_the_hop_limit() {
        let to = |n: &str| n.parse::<AgentName>().unwrap();
        assert_eq!(check_chain(&names(&["a"]), &to("b")), Ok(()));
        // Ping-pong: b answering back to a is a cycle, named by its path.
        let stop = check_chain(&names(&["a", "b"]), &to("a")).unwrap_err();
        assert_eq!(
            stop,
            ChainStop::Cycle {
                to: "a".into(),
                path: "a → b → a".into()
            }
        );
        assert!(stop.to_string().contains("a → b → a"));
        // A long ring without repeats: exactly HOP_LIMIT senders may still pass it on.
        let ring: Vec<String> = (0..=HOP_LIMIT).map(|i| format!("agent{i}")).collect();
        let ring: Vec<&str> = ring.iter().map(String::as_str).collect();
        assert_eq!(check_chain(&names(&ring[..HOP_LIMIT]), &to("next")), Ok(()));
        let stop = check_chain(&names(&ring), &to("next")).unwrap_err();
        assert!(
            matches!(&stop, ChainStop::HopLimit { agents, .. } if *agents == HOP_LIMIT + 1),
            "{stop:?}"
        );
        assert!(stop.to_string().contains("agent0 → agent1"), "{stop}");
        // A cycle is named as one even in a chain at the limit.
        assert!(matches!(
            check_chain(&names(&ring), &to("agent2")),
            Err(ChainStop::Cycle { .. })
        ));
    }
}
