//! The engine: creates approvals, decides them, closes them.
//!
//! Deciding checks, in order: the approval exists and is still pending (else "already
//! decided by …"), the approver may decide it (a chat user must be listed as an
//! approver of the agent on that channel; anyone else is refused and the attempt
//! audited), the kind offers the choice, and a "for 1 h" or "always" choice can be
//! written as a rule no wider than the request (exact host, method and path, this
//! agent only). Then the store writes the decision, the rule and the audit row in one
//! transaction that succeeds only while the approval is pending and unexpired, so the
//! first valid decision wins across threads and processes.
//!
//! Closing is for what no person decided: an expiry (fails closed: denied), a
//! requester that went away, a gateway that stopped or died holding the request.

use crate::approver::{ApproverIdentity, Surface};
use crate::choice::{clean_comment, Choice};
use crate::clock::{Clock, SystemClock};
use crate::events::{Event, Events};
use crate::holder::Holder;
use crate::kind::ApprovalKind;
use crate::summary::Summary;
use palisade_policy::{AgentName, HostPattern, MethodPattern, PathPattern, RuleAction, Scope};
use palisade_store::{
    Approval, ApprovalDecision, ApprovalStatus, NewApproval, NewRule, Store, StoreError,
};
use std::sync::Arc;
use std::time::Duration;

/// How long an approval waits for a person unless a rule or agent says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an "approve for 1 h" grant lasts.
pub const GRANT_FOR: Duration = Duration::from_secs(3600);

/// Why a decision was not taken. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Store(StoreError),
    #[error("approval {0} not found; check the id (`palisade approvals list --all`)")]
    NotFound(String),
    #[error("approval {id} was already decided: {} by {}", status_words(*.status), .by.as_deref().unwrap_or("nobody (it closed by itself)"))]
    AlreadyDecided {
        id: String,
        status: ApprovalStatus,
        by: Option<String>,
        at_ms: Option<i64>,
    },
    #[error(
        "approval {0} expired before it was decided, so it was denied; the agent may ask again"
    )]
    Expired(String),
    #[error("{who} is not an approver of agent {agent} on this channel; ask the owner to run `palisade approvers add`")]
    NotAnApprover { who: String, agent: AgentName },
    #[error("{reason}")]
    ChoiceNotOffered { reason: String },
}

fn status_words(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => "left pending",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Denied => "denied",
        ApprovalStatus::TimedOut => "closed after its expiry (denied)",
        ApprovalStatus::Cancelled => "cancelled (its requester went away)",
    }
}

impl From<StoreError> for ApprovalError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound {
                what: "approval",
                name,
            } => ApprovalError::NotFound(name),
            StoreError::Expired(id) => ApprovalError::Expired(id),
            other => ApprovalError::Store(other),
        }
    }
}

/// How an approval ended, as a waiter needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved {
        approver: Option<String>,
    },
    Denied {
        approver: Option<String>,
        comment: Option<String>,
    },
    TimedOut,
    Cancelled,
}

impl Outcome {
    /// `None` while the approval is pending.
    pub fn of(approval: &Approval) -> Option<Outcome> {
        match approval.status {
            ApprovalStatus::Pending => None,
            ApprovalStatus::Approved => Some(Outcome::Approved {
                approver: approval.approver.clone(),
            }),
            ApprovalStatus::Denied => Some(Outcome::Denied {
                approver: approval.approver.clone(),
                comment: approval.comment.clone(),
            }),
            ApprovalStatus::TimedOut => Some(Outcome::TimedOut),
            ApprovalStatus::Cancelled => Some(Outcome::Cancelled),
        }
    }
}

/// What a requester asks a person.
pub struct NewRequest {
    pub kind: ApprovalKind,
    pub agent: AgentName,
    pub summary: Summary,
    /// Facts for machines and for granting (`method`, `host`, `path`, `rule` for a
    /// credential use).
    pub context: serde_json::Value,
    pub timeout: Duration,
    /// Set when this process holds a live request that dies with it.
    pub holder: Option<Holder>,
    /// Set for approvals a requester may ask for again after a restart: the same key
    /// returns the same approval.
    pub request_key: Option<String>,
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
    events: Events,
}

impl Engine {
    pub fn new(store: Store, events: Events) -> Engine {
        Engine {
            store,
            clock: Arc::new(SystemClock),
            events,
        }
    }

    /// The same engine reading time from `clock` (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Engine {
        self.clock = clock;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Creates an approval (or, for a known `request_key`, finds the existing one).
    pub fn request(&self, request: NewRequest) -> Result<Approval, ApprovalError> {
        let timeout_ms = i64::try_from(request.timeout.as_millis()).unwrap_or(i64::MAX / 4);
        let approval = self.store.create_approval(NewApproval {
            kind: request.kind.as_str().to_string(),
            agent: request.agent,
            title: request.summary.title,
            lines: request.summary.lines,
            detail: request.summary.detail,
            context: request.context,
            expires_at_ms: self.clock.now_ms().saturating_add(timeout_ms),
            holder: request.holder.map(|h| h.as_str().to_string()),
            request_key: request.request_key,
        })?;
        self.events.publish(match approval.status {
            ApprovalStatus::Pending => Event::Created(approval.clone()),
            _ => Event::Closed(approval.clone()),
        });
        Ok(approval)
    }

    pub fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        Ok(self.store.get_approval(id)?)
    }

    /// Decides approval `id` as `approver`. The comment is kept with any choice and, on
    /// a denial, returned to the agent.
    pub fn decide(
        &self,
        id: &str,
        approver: &ApproverIdentity,
        choice: Choice,
        comment: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let approval = self.store.get_approval(id)?;
        if approval.status != ApprovalStatus::Pending {
            return Err(already_decided(approval));
        }
        let listed_name = self.authorize(&approval, approver)?;
        let kind: ApprovalKind =
            approval
                .kind
                .parse()
                .map_err(|reason| ApprovalError::ChoiceNotOffered {
                    reason: format!("approval {id} has an unknown kind ({reason})"),
                })?;
        if !kind.offers(choice) {
            return Err(ApprovalError::ChoiceNotOffered {
                reason: format!(
                    "\"{}\" is not offered for {} ({}); approve once or deny",
                    choice.as_str(),
                    kind.label().to_lowercase(),
                    id
                ),
            });
        }
        let grant = match choice {
            Choice::ForHour | Choice::Always => Some(self.grant_for(&approval, choice)?),
            Choice::Once | Choice::Deny => None,
        };
        let mut identity = approver.clone();
        if let Some(name) = listed_name {
            identity.display_name = name;
        }
        let decision = ApprovalDecision {
            approve: choice.approves(),
            approver: identity.shown(),
            comment: comment.and_then(clean_comment),
            choice: choice.as_str().to_string(),
            approver_channel: identity.channel().to_string(),
            approver_user: identity.user_id.clone(),
            approver_name: identity.display_name.clone(),
            grant,
        };
        match self.store.decide_approval(id, &decision) {
            Ok(decided) => {
                tracing::info!(approval = %id, choice = choice.as_str(), approver = %decision.approver, "approval decided");
                if kind == ApprovalKind::AccessRequest && decided.status == ApprovalStatus::Approved
                {
                    self.admit_sender(&decided);
                }
                self.events.publish(Event::Closed(decided.clone()));
                Ok(decided)
            }
            Err(StoreError::AlreadyDecided(_)) => {
                Err(already_decided(self.store.get_approval(id)?))
            }
            Err(StoreError::Expired(id)) => {
                if let Ok(closed) = self.store.get_approval(&id) {
                    self.events.publish(Event::Closed(closed));
                }
                Err(ApprovalError::Expired(id))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Checks that `approver` may decide `approval`; for a listed chat approver,
    /// returns the name they were listed under (the platform's name is not trusted).
    fn authorize(
        &self,
        approval: &Approval,
        approver: &ApproverIdentity,
    ) -> Result<Option<String>, ApprovalError> {
        match &approver.surface {
            // The owner's own surfaces: whoever can use them owns the home.
            Surface::Cli | Surface::Web | Surface::AdminApi => Ok(None),
            Surface::Chat { channel, .. } => {
                match self
                    .store
                    .find_approver(&approval.agent, channel, &approver.user_id)?
                {
                    Some(listed) => Ok(Some(listed.display_name)),
                    None => {
                        self.refused(&approval.id, approver, "not an approver of this agent");
                        Err(ApprovalError::NotAnApprover {
                            who: approver.shown(),
                            agent: approval.agent.clone(),
                        })
                    }
                }
            }
        }
    }

    /// An approved access request lets its sender talk to the agent on that channel
    /// (not decide its approvals). Best effort here: the channel also admits the
    /// sender when they write again and finds the request approved.
    fn admit_sender(&self, approval: &Approval) {
        let field = |name: &str| approval.context.get(name).and_then(|v| v.as_str());
        let (Some(channel), Some(user)) = (field("channel"), field("user_id")) else {
            return;
        };
        let name = field("display_name").unwrap_or(user);
        if let Err(error) = self.store.add_sender(&approval.agent, channel, user, name) {
            tracing::warn!(approval = %approval.id, %error, "could not admit the sender of an approved access request");
        }
    }

    /// Audits a refused attempt to decide (best effort: the refusal stands either way).
    pub fn refused(&self, id: &str, approver: &ApproverIdentity, reason: &str) {
        tracing::warn!(approval = %id, who = %approver.shown(), %reason, "refused a decision");
        if let Err(error) =
            self.store
                .audit_refused_decision(id, approver.channel(), &approver.user_id, reason)
        {
            tracing::warn!(%error, "could not audit a refused decision");
        }
    }

    /// The rule a "for 1 h" or "always" choice creates: this agent, this exact host
    /// and port (when the approval recorded it; older ones did not, and their grant
    /// names every port as it always did), method and path, allowed, just above the rule that held the request, in its
    /// layer. Refused when the request cannot be written that narrowly.
    fn grant_for(&self, approval: &Approval, choice: Choice) -> Result<NewRule, ApprovalError> {
        let not_offered = |why: &str| ApprovalError::ChoiceNotOffered {
            reason: format!(
                "\"{}\" cannot be granted for approval {}: {why}; approve once instead",
                choice.as_str(),
                approval.id
            ),
        };
        let field = |name: &str| {
            approval
                .context
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let (host, path, method) = exact_patterns(approval).map_err(&not_offered)?;
        let Some(rule_name) = field("rule") else {
            return Err(not_offered("the rule that held it is not recorded"));
        };
        let rules = self.store.list_rules()?;
        let holding = rules
            .iter()
            .find(|rule| rule.name == rule_name)
            .ok_or_else(|| not_offered("the rule that held it no longer exists"))?;
        let scope: Scope = holding
            .scope
            .parse()
            .map_err(|_| not_offered("the holding rule's scope is unreadable"))?;
        let expires_at_ms = match choice {
            Choice::ForHour => Some(
                self.clock
                    .now_ms()
                    .saturating_add(GRANT_FOR.as_millis() as i64),
            ),
            _ => None,
        };
        let grant = NewRule {
            name: format!(
                "{}-{}",
                if choice == Choice::ForHour {
                    "approved-1h"
                } else {
                    "always-allowed"
                },
                approval.id
            ),
            host,
            path: Some(path),
            method,
            action: RuleAction::Allow,
            agent: Some(approval.agent.clone()),
            priority: holding.priority.saturating_add(1),
            expires_at_ms,
            body_contains: None,
            scope,
            approval_timeout_ms: None,
        };
        Ok(grant)
    }

    /// Closes a pending approval nobody decided; a decision that raced in first stands.
    pub fn close(&self, id: &str, status: ApprovalStatus) -> Result<Approval, ApprovalError> {
        let approval = self.store.close_approval(id, status)?;
        self.events.publish(Event::Closed(approval.clone()));
        Ok(approval)
    }

    /// Closes (denied, as timed out) every pending approval past its expiry.
    pub fn expire_overdue(&self) -> Result<Vec<Approval>, ApprovalError> {
        let expired = self.store.expire_overdue_approvals(self.clock.now_ms())?;
        for approval in &expired {
            tracing::info!(approval = %approval.id, "approval expired; denied");
            self.events.publish(Event::Closed(approval.clone()));
        }
        Ok(expired)
    }

    /// Cancels pending approvals whose holding process is gone (a gateway killed while
    /// it held the request: nobody is left to send it, so the cards must say so).
    pub fn cancel_orphaned_holds(&self) -> Result<Vec<Approval>, ApprovalError> {
        let mut cancelled = Vec::new();
        for approval in self.store.held_approvals()? {
            let alive = approval.holder.as_deref().is_some_and(Holder::is_alive);
            if !alive {
                let closed = self.close(&approval.id, ApprovalStatus::Cancelled)?;
                tracing::info!(approval = %closed.id, "the process holding this request is gone; approval cancelled");
                cancelled.push(closed);
            }
        }
        Ok(cancelled)
    }
}

/// The host a rule for exactly one held request names, from the request's recorded
/// `context`: with the port the request went to (another port of a host is another
/// service), written as [`HostPattern`] reads it (`[::1]:8080`). The port is the one
/// the vault recorded, or, for an approval recorded before it did, the one of its URL
/// (the scheme's when the URL names none). None when there is no readable port.
/// The exact host (with its port), path and method a lasting choice ("for 1 h",
/// "always") would allow for a held request, or why it cannot be written that narrowly
/// (then only "once" is offered: cards leave the lasting buttons out, and the engine
/// refuses them).
pub fn exact_patterns(
    approval: &Approval,
) -> Result<(HostPattern, PathPattern, MethodPattern), &'static str> {
    let field = |name: &str| approval.context.get(name).and_then(|v| v.as_str());
    let (Some(host), Some(path), Some(method)) = (field("host"), field("path"), field("method"))
    else {
        return Err("the request's host, path or method is not recorded");
    };
    // A `*` in the host or path would make the pattern wider than the request.
    if host.contains('*') || path.contains('*') {
        return Err("its host or path contains `*`");
    }
    let host =
        host_with_port(host, &approval.context).ok_or("its recorded port is not a number")?;
    let host = HostPattern::parse(&host).map_err(|_| "its host is not a plain name")?;
    let path =
        PathPattern::parse(path).map_err(|_| "its path cannot be written as an exact pattern")?;
    let method =
        MethodPattern::exact(method).map_err(|_| "its method is not one of the standard ones")?;
    Ok((host, path, method))
}

pub fn host_with_port(host: &str, context: &serde_json::Value) -> Option<String> {
    let port = match context.get("port") {
        Some(port) => u16::try_from(port.as_u64()?).ok()?,
        None => {
            let url: http::Uri = context.get("url")?.as_str()?.parse().ok()?;
            match (url.port_u16(), url.scheme_str()) {
                (Some(port), _) => port,
                (None, Some("https")) => 443,
                (None, Some("http")) => 80,
                _ => return None,
            }
        }
    };
    Some(match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    })
}

fn already_decided(approval: Approval) -> ApprovalError {
    ApprovalError::AlreadyDecided {
        id: approval.id,
        status: approval.status,
        by: approval.approver,
        at_ms: approval.decided_at_ms,
    }
}
