//! Handing one message to a runner and relaying its frames until the reply is stored:
//! what the runner is given (`prepare`), the delivery loop (`deliver`), and the two
//! ways a message ends (a stored reply, or an error reply when giving up).

use crate::host::{HostInner, StreamEvent};
use crate::protocol::{AgentFrame, Delivery, HostCall, HostFrame, ProtocolError, RunnerFrame};
use crate::settings::{self, AgentSettings};
use crate::worker::Runner;
use crate::HostError;
use palisade_policy::AgentName;
use palisade_store::{InboundMessage, ReplyOutcome};
use std::sync::Arc;
use std::time::Duration;

/// How handling one delivery ended.
pub(crate) enum Outcome {
    /// Reply stored (or the message was found answered).
    Answered,
    /// The runner failed; deliver again after a back-off.
    RunnerFailed(String),
    /// The turn took longer than the turn timeout: the message got an error reply and
    /// the runner must be stopped (it may still be busy with it).
    TimedOut,
    Shutdown,
}

/// The turn went past its timeout: the message is answered with why (a turn this slow
/// would likely be as slow again, so it is not retried) and the runner is stopped.
async fn turn_timed_out(
    inner: &HostInner,
    message: &InboundMessage,
    turn_timeout: Duration,
) -> Outcome {
    let agent = &message.agent;
    let limit = humantime::format_duration(turn_timeout);
    tracing::warn!(agent = %agent, message_id = message.id, %limit, "turn timeout; stopping the runner");
    give_up(
        inner,
        message,
        &format!(
            "the agent did not finish within the turn timeout ({limit}), so its runner was stopped; \
             ask again, or raise the limit with `palisade agents edit {agent} --turn-timeout DURATION`"
        ),
    )
    .await;
    Outcome::TimedOut
}

pub(crate) async fn give_up(inner: &HostInner, message: &InboundMessage, reason: &str) {
    let text = format!("palisade: this message was not answered: {reason}");
    store_reply(inner, message.id, &text, None, true).await;
}

pub(crate) async fn store_reply(
    inner: &HostInner,
    message_id: i64,
    text: &str,
    history: Option<serde_json::Value>,
    is_error: bool,
) -> bool {
    let store = inner.store.clone();
    let owned = text.to_string();
    let stored = tokio::task::spawn_blocking(move || {
        store.store_reply(message_id, &owned, history.as_ref(), is_error)
    })
    .await;
    match stored {
        Ok(Ok(outcome)) => {
            let reply = outcome.reply().clone();
            if matches!(outcome, ReplyOutcome::AlreadyAnswered(_)) {
                tracing::info!(
                    message_id,
                    "message was already answered; kept the first reply"
                );
            }
            inner.publish(
                message_id,
                StreamEvent::Reply {
                    text: reply.text,
                    is_error: reply.is_error,
                },
            );
            true
        }
        Ok(Err(error)) => {
            tracing::error!(message_id, %error, "cannot store the reply");
            false
        }
        Err(error) => {
            tracing::error!(message_id, %error, "reply task failed");
            false
        }
    }
}

/// What the runner is given for `message`, and how long it may take.
async fn prepare(
    inner: &HostInner,
    message: &InboundMessage,
) -> Result<(Delivery, Duration), HostError> {
    let store = inner.store.clone();
    let home = inner.config.home.clone();
    let default_turn_timeout = inner.config.turn_timeout;
    let message = message.clone();
    tokio::task::spawn_blocking(move || {
        let record = store.get_agent(&message.agent)?;
        let settings = AgentSettings::from_json(&record.settings)?;
        let session = store.get_session(message.session_id)?;
        let name = message.agent.as_str();
        let instructions = settings::read_agent_file(
            &settings::instructions_path(&home, name),
            settings::MAX_INSTRUCTIONS_BYTES,
        )?;
        let memory = settings::read_agent_file(
            &settings::memory_path(&home, name),
            settings::MAX_MEMORY_BYTES,
        )?;
        let turn_timeout = settings
            .turn_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(default_turn_timeout);
        let (mounts, _) = crate::folders::mounts_for(&store, &home, &message.agent)?;
        let instructions = match crate::folders::describe(&mounts) {
            Some(folders) => format!("{}\n\n{folders}", instructions.trim_end()),
            None => instructions,
        };
        let delivery = Delivery {
            message_id: shown_id(),
            session_id: shown_id(),
            text: message.text.clone(),
            history: session.history,
            agent: AgentFrame {
                name: name.to_string(),
                base_url: settings.effective_base_url(),
                provider: settings.provider,
                model: settings.model,
                instructions,
                memory,
                tools: settings.tools,
                max_tool_iterations: settings.max_tool_iterations,
                max_output_tokens: settings.max_output_tokens,
                // What the dial says, turned or not: a dial never turned is balanced,
                // as `agents dial` shows it (web pages went to the model raw until
                // someone turned it, research agents' included).
                sanitize_web: Some(
                    palisade_policy::dial::Dial::from_settings(&record.settings)
                        .sanitize
                        .as_str()
                        .to_string(),
                ),
            },
        };
        Ok((delivery, turn_timeout))
    })
    .await
    .map_err(|e| HostError::Io(format!("prepare task failed: {e}")))?
}

/// An id for a runner to name the message (or session) in flight by, drawn for this
/// delivery. The store's ids are counters every agent moves: a research agent that saw
/// them could count the messages other agents sent between two of its own, a channel
/// an action agent could signal through, one bit a message, without a person asked.
/// 53 bits, so JSON readers that take numbers as doubles read them exactly.
fn shown_id() -> i64 {
    i64::try_from(rand::random::<u64>() >> 11).unwrap_or(1)
}

pub(crate) async fn deliver(
    inner: &Arc<HostInner>,
    agent: &AgentName,
    message: &InboundMessage,
    runner: &mut Runner,
) -> Outcome {
    let marked = {
        let store = inner.store.clone();
        let id = message.id;
        tokio::task::spawn_blocking(move || store.mark_delivered(id)).await
    };
    let message = match marked {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => return Outcome::RunnerFailed(format!("cannot mark delivery: {error}")),
        Err(error) => return Outcome::RunnerFailed(format!("delivery task failed: {error}")),
    };
    if message.status == palisade_store::MessageStatus::Answered {
        return Outcome::Answered;
    }
    if message.attempts > inner.config.max_attempts {
        give_up(
            inner,
            &message,
            &format!(
                "the agent's runner failed {} times while handling it",
                message.attempts - 1
            ),
        )
        .await;
        return Outcome::Answered;
    }
    let (delivery, turn_timeout) = match prepare(inner, &message).await {
        Ok(prepared) => prepared,
        Err(error) => {
            // Bad settings or files: the person must fix them; retrying will not help.
            give_up(inner, &message, &error.to_string()).await;
            return Outcome::Answered;
        }
    };
    let Some(conn) = runner.conn.as_mut() else {
        return Outcome::RunnerFailed("no runner connected".into());
    };
    // What the runner names this message and its session by.
    let (shown_message, shown_session) = (delivery.message_id, delivery.session_id);
    match conn.send(&HostFrame::Deliver(Box::new(delivery))).await {
        Ok(()) => {}
        Err(ProtocolError::TooLarge(size)) => {
            give_up(
                inner,
                &message,
                &format!("the conversation is too large to hand to the agent ({size} bytes); reset the session with `palisade sessions reset`"),
            )
            .await;
            return Outcome::Answered;
        }
        Err(error) => return Outcome::RunnerFailed(error.to_string()),
    }
    tracing::info!(agent = %agent, message_id = message.id, attempt = message.attempts, "delivered");
    let mut shutdown = inner.shutdown.clone();
    let mut sandbox_changes = inner.sandbox_changes.subscribe();
    let mut approvals = inner.config.approval_events.subscribe();
    let mut approvals_open = true;
    let turn_deadline = tokio::time::sleep(turn_timeout);
    tokio::pin!(turn_deadline);
    let mut streamed = 0usize;
    // Approval lines already told in this turn: the vault's engine and the host's may
    // both announce the same decision.
    let mut told = std::collections::HashSet::new();
    loop {
        let Some(conn) = runner.conn.as_mut() else {
            return Outcome::RunnerFailed("no runner connected".into());
        };
        let frame = tokio::select! {
            frame = conn.recv() => frame,
            _ = &mut turn_deadline => return turn_timed_out(inner, &message, turn_timeout).await,
            _ = crate::host::stopped(&mut shutdown) => return Outcome::Shutdown,
            event = approvals.recv(), if approvals_open => {
                use tokio::sync::broadcast::error::RecvError;
                match event {
                    Ok(event) => {
                        if let Some(text) = approval_status(&event, agent) {
                            if told.len() < 1000 && told.insert(text.clone()) {
                                inner.publish(message.id, StreamEvent::Status { message: text });
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => approvals_open = false,
                }
                continue;
            }
            _ = crate::worker::sandbox_changed(&mut sandbox_changes) => {
                // A folder taken away mid-turn is taken away now: the sandbox goes and
                // the message is delivered again to one started with what is left.
                if crate::worker::mounts_changed(inner, agent, runner.mounts.clone()).await {
                    return Outcome::RunnerFailed("the agent's folders changed".into());
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return Outcome::RunnerFailed("the runner disconnected".into()),
            Err(error) => {
                let _ = conn
                    .send(&HostFrame::Error {
                        message: error.to_string(),
                    })
                    .await;
                return Outcome::RunnerFailed(error.to_string());
            }
        };
        match frame {
            RunnerFrame::Event { message_id, event } if message_id == shown_message => {
                publish_progress(inner, message.id, &event, &mut streamed);
            }
            RunnerFrame::ToolCall {
                call_id,
                message_id,
                name,
                input,
            } if message_id == shown_message => {
                // A host tool may wait (a person's approval, another agent's answer):
                // the turn's deadline and a shutdown still end it, and so does the
                // runner going away (its card, if any, is then cancelled: the tool's
                // future is dropped), instead of the wait going on for a dead turn.
                let (ok, content) = match HostCall::parse(&name, &input) {
                    Ok(call) => {
                        let tool = crate::tools::run(inner, &message, call);
                        tokio::pin!(tool);
                        loop {
                            tokio::select! {
                                done = &mut tool => break done,
                                _ = &mut turn_deadline => return turn_timed_out(inner, &message, turn_timeout).await,
                                _ = crate::host::stopped(&mut shutdown) => return Outcome::Shutdown,
                                frame = conn.recv() => match frame {
                                    Ok(Some(RunnerFrame::Event { message_id, event })) if message_id == shown_message => {
                                        publish_progress(inner, message.id, &event, &mut streamed);
                                    }
                                    Ok(None) | Err(_) => {
                                        return Outcome::RunnerFailed("the runner went away while a host tool waited".into())
                                    }
                                    Ok(Some(other)) => {
                                        return Outcome::RunnerFailed(format!(
                                            "the runner sent an unexpected {} frame while a host tool waited",
                                            other.kind()
                                        ))
                                    }
                                },
                            }
                        }
                    }
                    Err(reason) => (false, reason),
                };
                let result = HostFrame::ToolResult {
                    call_id,
                    ok,
                    content,
                };
                if let Err(error) = conn.send(&result).await {
                    return Outcome::RunnerFailed(error.to_string());
                }
            }
            RunnerFrame::Reply {
                message_id,
                session_id,
                text,
                history,
                is_error,
            } if message_id == shown_message && session_id == shown_session => {
                if !history.is_array() {
                    return Outcome::RunnerFailed("the reply's history is not a JSON array".into());
                }
                let text = if is_error {
                    with_key_hint(inner, agent, text).await
                } else {
                    text
                };
                if store_reply(inner, message.id, &text, Some(history), is_error).await {
                    return Outcome::Answered;
                }
                return Outcome::RunnerFailed("the reply could not be stored".into());
            }
            RunnerFrame::Error {
                message_id,
                message: reason,
            } if message_id == Some(shown_message) => {
                // The runner could not handle this message (not a crash): answer with it.
                let reason: String = reason.chars().take(2000).collect();
                give_up(inner, &message, &reason).await;
                return Outcome::Answered;
            }
            other => {
                // Another message or session id, a second hello, or an unknown call:
                // the runner is confused or hostile. It gets nothing and is replaced.
                let _ = conn
                    .send(&HostFrame::Error {
                        message: format!(
                            "unexpected {} frame: only message {shown_message} of session {shown_session} is in flight",
                            other.kind(),
                        ),
                    })
                    .await;
                return Outcome::RunnerFailed(format!(
                    "the runner sent an unexpected {} frame",
                    other.kind()
                ));
            }
        }
    }
}

/// Passes a runner's progress event on to the message's watchers, until the turn has
/// streamed [`MAX_STREAMED`] bytes of it (then one line says the rest waits for the
/// answer).
fn publish_progress(
    inner: &HostInner,
    message_id: i64,
    event: &serde_json::Value,
    streamed: &mut usize,
) {
    let Some(event) = stream_event(event) else {
        return;
    };
    let before = *streamed;
    *streamed = streamed.saturating_add(streamed_size(&event));
    if *streamed <= MAX_STREAMED {
        inner.publish(message_id, event);
    } else if before <= MAX_STREAMED {
        inner.publish(
            message_id,
            StreamEvent::Status {
                message: format!(
                    "the agent has streamed more than {} MiB of text and progress in this turn; the rest is not shown until its answer",
                    MAX_STREAMED >> 20
                ),
            },
        );
    }
}

/// An error reply of an agent that has no key for its model API says so: the call went
/// out with none (a local server may need none, so it is a note, not the verdict).
async fn with_key_hint(inner: &HostInner, agent: &AgentName, text: String) -> String {
    let (store, name) = (inner.store.clone(), agent.clone());
    let found = tokio::task::spawn_blocking(move || {
        let record = store.get_agent(&name).ok()?;
        let secrets = store.list_secrets().ok()?;
        let sent = crate::setup::model_key_secret(&record, &secrets).map(|s| s.name.clone());
        Some((crate::setup::model_key_advice(&record, &secrets), sent))
    })
    .await
    .ok()
    .flatten();
    let (advice, sent) = found.unwrap_or((None, None));
    match advice {
        // The key refused is the one the vault sent: named, so the person rotates that
        // one and not another key for an earlier address (review: a new user rotated
        // the key stored for a mistyped port, and the next message failed again).
        None => match sent {
            Some(secret) if text.contains(palisade_policy::models::KEY_REFUSED_ADVICE) => text
                .replace(
                    palisade_policy::models::KEY_REFUSED_ADVICE,
                    &format!(
                        ". The model's API did not accept the key the vault sent, the secret {secret}: replace it (`palisade secrets rotate {secret}`, or on the web UI: Vault, {secret}, Rotate), then send the message again"
                    ),
                ),
            _ => text,
        },
        // No key was sent, so none is to be replaced: the runner's advice to rotate it
        // goes, and what to grant or create is said instead.
        Some(advice) => format!(
            "{} (agent {agent} has no key for its model API; if it needs one, {advice})",
            text.replace(palisade_policy::models::KEY_REFUSED_ADVICE, "")
        ),
    }
}

/// What the person waiting for a message sees while a request of its agent waits for
/// approval, and when that ends: a turn that seems to hang is usually waiting for
/// someone. (A held request does not say which of the agent's turns made it, so each
/// of its messages in flight is told.)
fn approval_status(event: &palisade_approvals::Event, agent: &AgentName) -> Option<String> {
    use palisade_store::ApprovalStatus;
    let (approval, created) = match event {
        palisade_approvals::Event::Created(approval) => (approval, true),
        palisade_approvals::Event::Closed(approval) => (approval, false),
    };
    if &approval.agent != agent {
        return None;
    }
    let id = &approval.id;
    Some(match (created, approval.status) {
        (true, ApprovalStatus::Pending) => {
            let title: String = approval.title.chars().take(200).collect();
            format!(
                "waiting for a person to approve {title} ({id}): on the web UI's Approvals page, in a linked chat, or with `palisade approvals approve {id}`"
            )
        }
        (false, ApprovalStatus::Pending) => return None,
        // Said as a chat card's last line says it.
        _ => format!("{id}: {}", palisade_approvals::outcome_line(approval)),
    })
}

/// Most a turn's events may stream to whoever watches (`palisade send`, the web UI's
/// chat, a channel), text deltas and progress (status lines, tool names) together:
/// each event is bounded, and without this their number was not (a runner streamed
/// 612 MB of text to a client in 35 s, and 180 MB of status lines in 3 s). Far more
/// than any answer; the answer itself is stored and shown whole either way.
const MAX_STREAMED: usize = 4 << 20;

/// What an event counts against [`MAX_STREAMED`]: its text, and a little for the event.
fn streamed_size(event: &StreamEvent) -> usize {
    const EVENT: usize = 16;
    EVENT
        + match event {
            StreamEvent::TextDelta { text } => text.len(),
            StreamEvent::ToolCall { name } | StreamEvent::ToolResult { name, .. } => name.len(),
            StreamEvent::Status { message } => message.len(),
            _ => 0,
        }
}

/// Maps a runner's event to what channels see (unknown kinds are dropped).
fn stream_event(event: &serde_json::Value) -> Option<StreamEvent> {
    let text = |key: &str| {
        event
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(64 * 1024).collect::<String>())
    };
    match event.get("kind").and_then(|k| k.as_str())? {
        "started" => Some(StreamEvent::Started),
        "text_delta" => Some(StreamEvent::TextDelta {
            text: text("text")?,
        }),
        "tool_call" => Some(StreamEvent::ToolCall {
            name: text("name")?,
        }),
        "tool_result" => Some(StreamEvent::ToolResult {
            name: text("name").unwrap_or_default(),
            is_error: event
                .get("is_error")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }),
        // Said in the runner's name: the person reads status lines in palisade's own
        // voice (approval waits with the command that decides them), and a runner that
        // wrote one of those could steer them to approve something else.
        "status" => Some(StreamEvent::Status {
            message: format!("the agent's runner says: {}", text("message")?),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner's status line is said in its name, never in palisade's voice, so a
    /// forged "waiting for a person to approve … `palisade approvals approve ID`" line
    /// cannot pass for the host's.
    #[test]
    fn a_runners_status_is_said_in_its_name() {
        let event = serde_json::json!({
            "kind": "status",
            "message": "waiting for a person to approve GET api.github.com/user (apr_x)",
        });
        match stream_event(&event) {
            Some(StreamEvent::Status { message }) => assert!(
                message.starts_with("the agent's runner says: waiting"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
