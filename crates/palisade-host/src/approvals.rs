//! The agent's `request_approval` host tool: the agent says what it wants to do, a
//! person decides on a card, and the tool's answer tells the agent who decided what.
//!
//! The approval is the engine's (kind tool action) and is durable: it is keyed by the
//! agent, the message being handled and the request's text, so when the host restarts
//! mid-wait and the message is delivered again, the agent's repeated call finds the
//! same approval (decided meanwhile, or still pending with its cards in place) instead
//! of asking twice. Waiting is bounded per agent and ends at the approval's expiry,
//! which denies it. Decisions made in this process arrive as engine events; decisions
//! made elsewhere (the CLI) are found by polling the store twice a second.

use crate::host::HostInner;
use palisade_approvals::{ApprovalKind, Holds, NewRequest, Outcome};
use palisade_store::{ApprovalStatus, InboundMessage};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Approvals one agent may wait for at once.
pub(crate) const MAX_WAITING_PER_AGENT: usize = 8;
/// How often decisions made by other processes are looked for.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) fn holds() -> Arc<Holds> {
    Holds::new(MAX_WAITING_PER_AGENT)
}

/// Runs `request_approval {action, details}` for the agent of `message`; (ok, answer).
pub(crate) async fn request(
    inner: &HostInner,
    message: &InboundMessage,
    action: &str,
    details: &str,
) -> (bool, String) {
    if action.trim().is_empty() {
        return (false, "request_approval needs an \"action\" string".into());
    }
    if action.len() > 1024 || details.len() > 16 * 1024 {
        return (false, "the action or its details are too long".into());
    }
    let agent = message.agent.clone();
    let Ok(mut slot) = inner.holds.reserve(&agent) else {
        return (
            false,
            format!(
                "{agent} already waits for {MAX_WAITING_PER_AGENT} approvals; wait for those first"
            ),
        );
    };
    let digest = Sha256::new()
        .chain_update(action.as_bytes())
        .chain_update([0u8])
        .chain_update(details.as_bytes())
        .finalize();
    let key = format!(
        "tool:{agent}:{}:{}",
        message.id,
        digest
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let timeout = agent_timeout(inner, &agent).await;
    let summary = palisade_approvals::summary::action(agent.as_str(), action, details);
    let context = serde_json::json!({
        "message_id": message.id,
        "session_id": message.session_id,
        "action": palisade_approvals::summary::one_line(action, 200),
    });
    let request = NewRequest {
        kind: ApprovalKind::ToolAction,
        agent,
        summary,
        context,
        timeout,
        holder: None,
        request_key: Some(key),
    };
    match ask_person(inner, &mut slot, request).await {
        Ok(outcome) => answer(outcome),
        Err(reason) => (false, reason),
    }
}

/// Asks a person (through the engine) and waits for the decision, its expiry or the
/// host's shutdown, with a place in the agent's share of waiting approvals (`slot`).
/// An approval with the same `request_key` is found again rather than asked twice, so
/// a call repeated after a restart waits on the same card. Shutdown leaves it pending.
pub(crate) async fn ask_person(
    inner: &HostInner,
    slot: &mut palisade_approvals::Slot,
    request: NewRequest,
) -> Result<Outcome, String> {
    let agent = request.agent.clone();
    // Whoever waits may go (the turn's timeout ends a tool call that waits), even while
    // the approval is being made: the card then asks about nothing, so it is cancelled
    // once made, unless the wait ended here.
    let (made, made_id) = tokio::sync::oneshot::channel();
    let mut unwaited = CancelUnwaited {
        engine: Some(inner.engine.clone()),
        made: Some(made_id),
        shutdown: inner.shutdown.clone(),
    };
    let engine = inner.engine.clone();
    let asked = tokio::task::spawn_blocking(move || {
        let asked = engine.request(request);
        if let Ok(approval) = &asked {
            let _ = made.send(approval.id.clone());
        }
        asked
    })
    .await;
    let approval = match asked {
        Ok(Ok(approval)) => approval,
        Ok(Err(error)) => return Err(format!("the approval could not be asked for: {error}")),
        Err(error) => return Err(format!("the approval task failed: {error}")),
    };
    let mut decided = slot.wait_for(&approval.id);
    // Decided before we started waiting (a repeated call after a restart).
    let engine = inner.engine.clone();
    let id = approval.id.clone();
    if let Ok(Ok(now)) = tokio::task::spawn_blocking(move || engine.get(&id)).await {
        if let Some(outcome) = Outcome::of(&now) {
            unwaited.disarm();
            return Ok(outcome);
        }
    }
    tracing::info!(approval = %approval.id, agent = %agent, "waiting for a person's approval");
    let remaining = approval
        .expires_at_ms
        .saturating_sub(inner.engine.now_ms())
        .max(0);
    let mut shutdown = inner.shutdown.clone();
    let waited = tokio::select! {
        outcome = &mut decided => Ok(outcome.unwrap_or(Outcome::Cancelled)),
        _ = tokio::time::sleep(Duration::from_millis(remaining.unsigned_abs())) => {
            let engine = inner.engine.clone();
            let id = approval.id.clone();
            let closed = tokio::task::spawn_blocking(move || engine.close(&id, ApprovalStatus::TimedOut)).await;
            match closed {
                Ok(Ok(closed)) => Ok(Outcome::of(&closed).unwrap_or(Outcome::TimedOut)),
                _ => Ok(Outcome::TimedOut),
            }
        }
        // The approval stays pending: the message is delivered again after the restart
        // and the same call finds it.
        _ = crate::host::stopped(&mut shutdown) => Err("the host is restarting; ask again".into()),
    };
    unwaited.disarm();
    waited
}

/// Cancels a pending approval when dropped still armed: its waiter went away. Not
/// when the host is stopping: the message is delivered again after the restart, and
/// the same call finds the approval still pending.
struct CancelUnwaited {
    engine: Option<palisade_approvals::Engine>,
    /// The approval's id, once the engine has made it.
    made: Option<tokio::sync::oneshot::Receiver<String>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl CancelUnwaited {
    fn disarm(&mut self) {
        self.engine = None;
    }
}

impl Drop for CancelUnwaited {
    fn drop(&mut self) {
        let Some(engine) = self.engine.take() else {
            return;
        };
        if *self.shutdown.borrow() {
            return;
        }
        let (Some(made), Ok(runtime)) = (self.made.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            // Not made (the engine refused): nothing to cancel.
            let Ok(id) = made.await else {
                return;
            };
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = engine.close(&id, ApprovalStatus::Cancelled) {
                    tracing::debug!(approval = %id, %error, "could not cancel an approval nobody waits for");
                }
            })
            .await;
        });
    }
}

/// The agent's `approval_timeout_secs` setting, else the default.
pub(crate) async fn agent_timeout(
    inner: &HostInner,
    agent: &palisade_policy::AgentName,
) -> Duration {
    let store = inner.store.clone();
    let name = agent.clone();
    let record = tokio::task::spawn_blocking(move || store.get_agent(&name)).await;
    record
        .ok()
        .and_then(Result::ok)
        .and_then(|r| r.settings.get("approval_timeout_secs")?.as_u64())
        .map(|secs| Duration::from_secs(secs.clamp(1, 3600)))
        .unwrap_or(palisade_approvals::DEFAULT_TIMEOUT)
}

/// What the agent reads.
fn answer(outcome: Outcome) -> (bool, String) {
    match outcome {
        Outcome::Approved { approver } => (
            true,
            format!(
                "approved by {}; go ahead",
                approver.as_deref().unwrap_or("a person")
            ),
        ),
        Outcome::Denied { approver, comment } => (
            true,
            format!(
                "denied by {}{}; do not do it",
                approver.as_deref().unwrap_or("a person"),
                comment
                    .map(|c| format!(", who said: {c}"))
                    .unwrap_or_default()
            ),
        ),
        Outcome::TimedOut => (
            true,
            "nobody decided in time, so it is denied; do not do it (you may ask again later)"
                .into(),
        ),
        Outcome::Cancelled => (true, "the request was cancelled; do not do it".into()),
    }
}

/// Wakes waiting calls when their approval closes: at once for decisions made in this
/// process, within [`POLL_INTERVAL`] for those made by other processes.
pub(crate) async fn follow(inner: Arc<HostInner>) {
    let mut events = inner.engine.events().subscribe();
    let mut shutdown = inner.shutdown.clone();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(palisade_approvals::Event::Closed(approval)) => {
                    inner.holds.resolve(&approval);
                }
                Ok(palisade_approvals::Event::Created(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = poll.tick() => {
                let held = inner.holds.held_ids();
                if held.is_empty() {
                    continue;
                }
                let store = inner.store.clone();
                if let Ok(Ok(decided)) = tokio::task::spawn_blocking(move || store.decided_among(&held)).await {
                    for approval in &decided {
                        inner.holds.resolve(approval);
                    }
                }
            }
            _ = crate::host::stopped(&mut shutdown) => return,
        }
    }
}
