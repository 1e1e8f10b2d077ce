//! Presses, comments and typed commands: the token names the card (and so the channel
//! it was posted to), the engine checks the person and decides; the answer goes back
//! privately to whoever pressed.

use super::{blocking, Hub};
use crate::card::{outcome_line, CallbackData, Card};
use crate::channel::{Channel, ClickAnswer, PlatformUser};
use palisade_approvals::{ApprovalError, ApprovalStatus, ApproverIdentity, Button, Choice};
use palisade_store::ApprovalCard;
use std::sync::Arc;

/// What a typed decision is told when the id names no approval, or one this person may
/// not decide: the same words, so neither is told apart.
pub(super) const NO_SUCH_APPROVAL: &str =
    "No pending approval with that id for you; nothing was decided.";
/// A press on a card by someone not listed (the card already says whose it is).
const NOT_AN_APPROVER: &str = "You are not an approver of this agent; nothing was decided.";

/// Warnings about presses anyone on a platform can send in a loop (forged, replayed,
/// from another channel): one line a second at most (see `palisade_policy::log_budget`).
static REFUSED_PRESSES: palisade_policy::log_budget::LogBudget =
    palisade_policy::log_budget::LogBudget::new();

impl Hub {
    /// Who is deciding, for the engine. Named by the platform's user id (labelled):
    /// a refused attempt is logged and audited under it, never under a display name
    /// the person chose; a listed approver's decision records the name they were
    /// listed under (the engine puts it in).
    pub(super) fn identity(channel: &Arc<dyn Channel>, user: &PlatformUser) -> ApproverIdentity {
        let labelled = format!("user id {}", user.id);
        ApproverIdentity::chat(channel.name(), channel.platform(), &user.id, &labelled)
    }

    /// `/approve ID …` or `/deny ID …` typed by one of the channel's approvers. Anyone
    /// who is not an approver of that approval's agent here is told the same as for an
    /// id that does not exist (so an approver of one agent cannot learn another's
    /// approval ids, agents or outcomes); the attempt is still audited.
    pub(super) async fn decide_typed(
        &self,
        channel: &Arc<dyn Channel>,
        user: &PlatformUser,
        (id, choice, comment): TextDecision,
    ) -> ClickAnswer {
        let store = self.inner.store.clone();
        let (wanted, channel_name, user_id) =
            (id.clone(), channel.name().to_string(), user.id.clone());
        let found = blocking(move || {
            let approval = match store.get_approval(&wanted) {
                Ok(approval) => approval,
                Err(palisade_store::StoreError::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            let listed = store
                .find_approver(&approval.agent, &channel_name, &user_id)?
                .is_some();
            Ok(Some((approval.id, listed)))
        })
        .await;
        let identity = Self::identity(channel, user);
        match found {
            Ok(Some((_, true))) => self.decide(id, identity, choice, comment, None).await,
            Ok(Some((id, false))) => {
                let engine = self.inner.engine.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    engine.refused(&id, &identity, "not an approver of this agent")
                })
                .await;
                ClickAnswer::Refused(NO_SUCH_APPROVAL.into())
            }
            Ok(None) => {
                tracing::info!(channel = channel.name(), user = %user.id, "a typed decision named no approval");
                ClickAnswer::Refused(NO_SUCH_APPROVAL.into())
            }
            Err(error) => {
                tracing::warn!(channel = channel.name(), %error, "could not look up a typed decision's approval");
                ClickAnswer::Refused("Palisade could not look the approval up; try again.".into())
            }
        }
    }

    /// The card a token names, if it was posted on this channel.
    pub(super) async fn card(
        &self,
        channel: &Arc<dyn Channel>,
        token: &str,
    ) -> Result<(ApprovalCard, palisade_store::Approval), ClickAnswer> {
        let store = self.inner.store.clone();
        let owned = token.to_string();
        match blocking(move || store.card_by_token(&owned)).await {
            Ok(Some((card, approval))) if card.channel == channel.name() => Ok((card, approval)),
            Ok(Some((card, _))) => {
                if let Some(similar_lines_suppressed) = REFUSED_PRESSES.take() {
                    tracing::warn!(channel = channel.name(), card_channel = %card.channel, similar_lines_suppressed, "a card's button came back on another channel; refused");
                }
                Err(ClickAnswer::Refused(
                    "This button does not belong here; nothing was decided.".into(),
                ))
            }
            Ok(None) => {
                if let Some(similar_lines_suppressed) = REFUSED_PRESSES.take() {
                    tracing::warn!(
                        channel = channel.name(),
                        similar_lines_suppressed,
                        "a button press named no card this host posted; refused"
                    );
                }
                Err(ClickAnswer::Refused(
                    "This card is not known here; nothing was decided.".into(),
                ))
            }
            Err(error) => Err(ClickAnswer::Refused(format!(
                "Palisade could not look the card up: {error}"
            ))),
        }
    }

    pub(super) async fn on_click(
        &self,
        channel: &Arc<dyn Channel>,
        data: &str,
        user: &PlatformUser,
    ) -> ClickAnswer {
        let Some(data) = CallbackData::decode(data) else {
            if let Some(similar_lines_suppressed) = REFUSED_PRESSES.take() {
                tracing::warn!(channel = channel.name(), user = %user.id, similar_lines_suppressed, "a button press with unknown data; refused");
            }
            return ClickAnswer::Refused(
                "This button is not one of Palisade's; nothing was decided.".into(),
            );
        };
        let (_, approval) = match self.card(channel, &data.token).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let identity = Self::identity(channel, user);
        if data.button == Button::DenyWithComment {
            if approval.status != ApprovalStatus::Pending {
                return ClickAnswer::Refused(format!(
                    "Already decided: {}",
                    outcome_line(&approval)
                ));
            }
            let store = self.inner.store.clone();
            let (agent, channel_name, user_id) = (
                approval.agent.clone(),
                channel.name().to_string(),
                user.id.clone(),
            );
            let listed =
                blocking(move || store.find_approver(&agent, &channel_name, &user_id)).await;
            return match listed {
                Ok(Some(_)) => ClickAnswer::AskComment {
                    token: data.token,
                    title: approval.title,
                },
                Ok(None) => {
                    let engine = self.inner.engine.clone();
                    let id = approval.id.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        engine.refused(&id, &identity, "not an approver of this agent")
                    })
                    .await;
                    ClickAnswer::Refused(NOT_AN_APPROVER.into())
                }
                Err(error) => ClickAnswer::Refused(error.to_string()),
            };
        }
        self.decide(
            approval.id,
            identity,
            data.button.choice(),
            None,
            Some(&data.token),
        )
        .await
    }

    pub(super) async fn on_comment(
        &self,
        channel: &Arc<dyn Channel>,
        token: &str,
        user: &PlatformUser,
        text: &str,
    ) -> ClickAnswer {
        let (_, approval) = match self.card(channel, token).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        self.decide(
            approval.id,
            Self::identity(channel, user),
            Choice::Deny,
            Some(text.to_string()),
            Some(token),
        )
        .await
    }

    pub(super) async fn decide(
        &self,
        id: String,
        identity: ApproverIdentity,
        choice: Choice,
        comment: Option<String>,
        card_token: Option<&str>,
    ) -> ClickAnswer {
        let engine = self.inner.engine.clone();
        let decided = tokio::task::spawn_blocking(move || {
            engine.decide(&id, &identity, choice, comment.as_deref())
        })
        .await;
        match decided {
            Ok(Ok(approval)) => {
                self.inner.wake.notify_one();
                let text = outcome_line(&approval);
                match card_token {
                    Some(token) => ClickAnswer::Decided {
                        text,
                        card: Box::new(Card::new(&approval, token)),
                    },
                    None => ClickAnswer::Done(text),
                }
            }
            Ok(Err(ApprovalError::NotAnApprover { .. })) => {
                ClickAnswer::Refused(NOT_AN_APPROVER.into())
            }
            Ok(Err(ApprovalError::NotFound(_))) => ClickAnswer::Refused(NO_SUCH_APPROVAL.into()),
            Ok(Err(error)) => ClickAnswer::Refused(error.to_string()),
            Err(error) => ClickAnswer::Refused(format!("the decision failed: {error}")),
        }
    }
}

/// A decision typed as text: approval id, choice, comment.
pub(super) type TextDecision = (String, Choice, Option<String>);

/// `/approve ID [once|1h|always]` or `/deny ID [comment]`: `None` for anything else,
/// the usage line for a malformed command.
pub(super) fn text_command(text: &str) -> Option<Result<TextDecision, String>> {
    let (command, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let command = command.split('@').next().unwrap_or(command);
    let usage = || "Use /approve ID once|1h|always or /deny ID [comment]".to_string();
    match command {
        "/approve" => {
            let mut words = rest.split_whitespace();
            let Some(id) = words.next() else {
                return Some(Err(usage()));
            };
            let choice = match words.next() {
                None => Choice::Once,
                Some(word) => match word.parse::<Choice>() {
                    Ok(choice) if choice.approves() => choice,
                    _ => return Some(Err(usage())),
                },
            };
            Some(Ok((id.to_string(), choice, None)))
        }
        "/deny" => {
            let rest = rest.trim();
            let (id, comment) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if id.is_empty() {
                return Some(Err(usage()));
            }
            let comment = comment.trim();
            Some(Ok((
                id.to_string(),
                Choice::Deny,
                (!comment.is_empty()).then(|| comment.to_string()),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands_parse() {
        assert_eq!(
            text_command("/approve apr_abc 1h"),
            Some(Ok(("apr_abc".into(), Choice::ForHour, None)))
        );
        assert_eq!(
            text_command("/approve@palisade_bot apr_abc"),
            Some(Ok(("apr_abc".into(), Choice::Once, None)))
        );
        assert_eq!(
            text_command("/deny apr_abc use the team list"),
            Some(Ok((
                "apr_abc".into(),
                Choice::Deny,
                Some("use the team list".into())
            )))
        );
        assert!(matches!(text_command("/approve"), Some(Err(_))));
        assert!(matches!(text_command("/approve apr_x deny"), Some(Err(_))));
        assert_eq!(text_command("hello /approve"), None);
    }
}
