//! Phase 6, hold: a request a `require_approval` rule matched, or that the agent's
//! dial covers (a credentialed request: every one, the first per host and hour, or
//! writes), waits for a person.
//!
//! The approval itself is the engine's (`palisade-approvals`): this phase asks it to
//! create one (kind credential use, held by this process), waits on the engine's hold
//! table, and asks it to close the approval when nobody decided.
//!
//! What is approved is what is sent: the whole body is read before the approval is
//! shown (up to `--max-judged-body`; a larger one is refused with 413
//! `request_too_large_for_approval`), the summary is built from all of it, the card
//! carries its size and SHA-256, and exactly those bytes go upstream. Holds are bounded:
//! a per-agent share of the hold table is reserved first (429
//! `too_many_pending_approvals` beyond it), the wait ends on a decision, the expiry or
//! shutdown, and a client that goes away cancels its approval and frees its slot.

use super::{audit, policy, Decision, Refusal, RequestBody, Scheme, Target};
use crate::conn::ClientConnection;
use crate::state::Shared;
use palisade_approvals::{ApprovalKind, Holder, HoldsFull, NewRequest, Outcome};
use palisade_policy::dial::ApprovalFrequency;
use palisade_policy::{
    AgentName, CanonicalPath, ErrorBody, GatewayErrorKind, RulePolicy, SecretPolicy,
};
use palisade_store::ApprovalStatus;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Characters of the body shown in the approval's context (the summary has its own).
const BODY_PREVIEW_CHARS: usize = 2000;

/// The request being held, as the hold phase needs it.
pub(super) struct Held<'a> {
    pub agent: &'a AgentName,
    pub target: &'a Target,
    /// The agent's connection: the hold ends when it goes away.
    pub client: &'a ClientConnection,
    pub parts: &'a http::request::Parts,
    pub path: &'a CanonicalPath,
    pub reason: HoldReason<'a>,
    pub secret: Option<&'a SecretPolicy>,
}

/// Why a request is held: a `require_approval` rule, or the agent's dial.
#[derive(Clone, Copy, Debug)]
pub(super) enum HoldReason<'a> {
    Rule(&'a RulePolicy),
    Dial(ApprovalFrequency),
}

impl HoldReason<'_> {
    /// The rule's name, or `dial:FREQUENCY` (what the audit row and the card record).
    pub fn name(&self) -> String {
        match self {
            HoldReason::Rule(rule) => rule.name.clone(),
            HoldReason::Dial(frequency) => format!("{DIAL_PREFIX}{frequency}"),
        }
    }

    fn approval_timeout_ms(&self) -> Option<i64> {
        match self {
            HoldReason::Rule(rule) => rule.approval_timeout_ms.filter(|ms| *ms > 0),
            HoldReason::Dial(_) => None,
        }
    }
}

/// How holds by the dial are named (`dial:every`, `dial:first-use`, `dial:writes`).
const DIAL_PREFIX: &str = "dial:";
/// How long a person's approval of a first use covers later requests to that host.
const FIRST_USE_WINDOW_MS: i64 = 60 * 60 * 1000;

/// Whether a `first-use` dial's hold can be skipped: a person approved a request of
/// this agent to this host and port with this secret, held by the same dial, within the
/// last hour. (Keyed on the host alone, one approved GET to one port let a DELETE with
/// another credential through to another service of the same address.) The approval's
/// id, for the audit row of the request it lets through.
pub(super) async fn approved_recently(
    shared: &Shared,
    agent: &AgentName,
    target: &Target,
    secret: Option<&SecretPolicy>,
    frequency: ApprovalFrequency,
) -> Option<String> {
    if frequency != ApprovalFrequency::FirstUse {
        return None;
    }
    let store = shared.store.clone();
    let (agent, host, port) = (agent.clone(), target.host.clone(), target.port);
    let secret_id = secret.map(|s| s.id);
    let secret = secret.map(|s| s.name.clone());
    let rule = format!("{DIAL_PREFIX}{frequency}");
    let since = palisade_store::now_ms() - FIRST_USE_WINDOW_MS;
    tokio::task::spawn_blocking(move || {
        let approved = palisade_store::ApprovedUse {
            agent: &agent,
            host: &host,
            port,
            secret: secret.as_deref(),
            secret_id,
            rule: &rule,
        };
        store.approved_since(&approved, since)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .flatten()
}

pub(super) async fn hold(
    shared: &Arc<Shared>,
    held: Held<'_>,
    body: &mut RequestBody,
    audit: &mut audit::Pending,
) -> Result<(), Refusal> {
    let host = held.target.host.as_str();
    let mut slot = shared.holds.reserve(held.agent).map_err(|full| {
        let reason = full.reason(held.agent, shared.config.max_holds_per_agent);
        let mut body = ErrorBody::new(GatewayErrorKind::TooManyPendingApprovals, host)
            .with_rule(&held.reason.name())
            .with_message(format!(
                "Not held for approval: {reason}. The request to {host} was not sent."
            ));
        if let HoldsFull::Abandoning { retry_after_secs } = full {
            body = body.with_retry_after(retry_after_secs);
        }
        Refusal::new(Decision::TooManyPendingApprovals, body)
    })?;
    let limit = shared.config.max_judged_body;
    let data = body.read(shared, held.agent, limit).await.map_err(|e| {
        policy::read_refusal(
            e,
            host,
            Decision::TooLargeForApproval,
            GatewayErrorKind::RequestTooLargeForApproval,
        )
    })?;
    let view = policy::decoded_view(&held.parts.headers, data, limit, host)?;
    let timeout = approval_timeout(shared, &held);
    let new = approval_for(&held, data, &view, timeout);

    // The approval is created on a blocking thread that finishes even if this request
    // is dropped meanwhile (its client gone); the guard and that thread agree through
    // `state` on who cancels it, so no approval is ever left pending without a request.
    let mut cancel = CancelOnDrop {
        shared: Arc::clone(shared),
        agent: held.agent.clone(),
        state: Arc::new(std::sync::Mutex::new(Creation::Creating)),
        armed: true,
    };
    let engine = shared.engine.clone();
    let state = Arc::clone(&cancel.state);
    let created = tokio::task::spawn_blocking(move || {
        let approval = engine.request(new)?;
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if *state == Creation::Abandoned {
            engine.close(&approval.id, ApprovalStatus::Cancelled)?;
        } else {
            *state = Creation::Created(approval.id.clone());
        }
        Ok::<_, palisade_approvals::ApprovalError>(approval)
    })
    .await;
    let approval = match created {
        Ok(Ok(approval)) => approval,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not record an approval");
            cancel.armed = false;
            return Err(restarting(host));
        }
        Err(_) => return Err(restarting(host)),
    };
    let id = approval.id.clone();
    audit.record().approval_id = Some(id.clone());
    tracing::info!(approval = %id, title = %approval.title, "request held for approval");
    let decided = slot.wait_for(&id);
    let mut shutdown = shared.shutdown.clone();
    let client_gone = held.client.activity.gone();
    let outcome = tokio::select! {
        decided = decided => decided.unwrap_or(Outcome::Cancelled),
        _ = client_gone => {
            // Dropping the guard cancels the approval; nobody is left to answer.
            drop(slot);
            drop(cancel);
            return Err(Refusal::of(Decision::ClientGone, GatewayErrorKind::GatewayRestarting, host));
        }
        _ = tokio::time::sleep(timeout) => {
            close(shared, &id, ApprovalStatus::TimedOut).await
        }
        _ = crate::stopped(&mut shutdown) => {
            close(shared, &id, ApprovalStatus::Cancelled).await
        }
    };
    cancel.armed = false;
    drop(slot);
    let rule = &held.reason.name();
    match outcome {
        Outcome::Approved { approver } => {
            audit.record().actor = approver;
            Ok(())
        }
        Outcome::Denied { approver, comment } => {
            audit.record().actor = approver.clone();
            let mut body = ErrorBody::new(GatewayErrorKind::ApprovalDenied, host).with_rule(rule);
            body.approval_id = Some(id);
            body.approver = approver;
            body.comment = comment;
            Err(Refusal::new(Decision::Denied, body))
        }
        Outcome::TimedOut => Err(Refusal::new(
            Decision::TimedOut,
            ErrorBody::new(GatewayErrorKind::ApprovalTimedOut, host)
                .with_rule(rule)
                .with_approval_id(id),
        )),
        Outcome::Cancelled => Err(Refusal::of(
            Decision::Cancelled,
            GatewayErrorKind::GatewayRestarting,
            host,
        )),
    }
}

/// How long this request waits: its rule's approval timeout, else its agent's, else
/// the gateway's.
fn approval_timeout(shared: &Shared, held: &Held<'_>) -> std::time::Duration {
    if let Some(ms) = held.reason.approval_timeout_ms() {
        return std::time::Duration::from_millis(ms.unsigned_abs());
    }
    shared
        .snapshot
        .load()
        .approval_timeouts
        .get(held.agent)
        .copied()
        .unwrap_or(shared.config.approval_timeout)
}

/// The approval a person is shown: a summary of the whole body, and its size and
/// digest, so the bytes approved can be told apart from any others.
fn approval_for(
    held: &Held<'_>,
    data: &[u8],
    view: &[u8],
    timeout: std::time::Duration,
) -> NewRequest {
    let target = held.target;
    let parts = held.parts;
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{}?{query}", held.path),
        None => held.path.to_string(),
    };
    // The summary shows the scheme and any non-default port of the real target.
    let shown_target = match target.scheme {
        Scheme::Http => format!("http://{}{path_and_query}", target.authority()),
        Scheme::Https => path_and_query.clone(),
    };
    let mut summary = palisade_approvals::summarize(
        &parts.method,
        &target.authority(),
        &shown_target,
        &parts.headers,
        view,
    );
    // What approving lets out besides the request: the approver should not have to
    // open the context to see which key goes with it. First among the lines (after the
    // warnings), so lines the agent made many or long cannot push them off a card.
    let mut facts = vec![match held.secret {
        Some(secret) => format!(
            "With the secret {} (added by the vault if approved)",
            secret.name
        ),
        None => "No secret is added: the request goes as the agent wrote it".into(),
    }];
    let digest = hex::encode(Sha256::digest(data));
    if !data.is_empty() {
        facts.push(format!(
            "Body: {} bytes, SHA-256 {}…",
            data.len(),
            &digest[..16]
        ));
        summary.detail.push_str(&format!(
            "\n\nBody sent if approved: {} bytes, SHA-256 {digest}",
            data.len()
        ));
    }
    summary.add_after_notices(facts);
    let url = match target.uri("/") {
        Some(base) => format!(
            "{}{}",
            base.to_string().trim_end_matches('/'),
            redact_query(&path_and_query)
        ),
        None => redact_query(&path_and_query),
    };
    let context = serde_json::json!({
        "method": parts.method.as_str(),
        "url": url,
        "host": target.host,
        // An "always" grant names this port only (another port is another service).
        "port": target.port,
        "path": held.path.as_str(),
        "headers": redacted_headers(&parts.headers),
        // Redacted as the card's summary is (review: the web page's context showed an
        // `api_key` the card hid).
        "bodyPreview": String::from_utf8_lossy(&palisade_approvals::summary::redacted_body(view))
            .chars()
            .take(BODY_PREVIEW_CHARS)
            .collect::<String>(),
        "bodyBytes": data.len(),
        "bodySha256": digest,
        "rule": held.reason.name(),
        "secret": held.secret.map(|s| s.name.clone()),
        "secret_id": held.secret.map(|s| s.id),
    });
    NewRequest {
        kind: ApprovalKind::CredentialUse,
        agent: held.agent.clone(),
        summary,
        context,
        timeout,
        holder: Some(Holder::this_process()),
        request_key: None,
    }
}

fn restarting(host: &str) -> Refusal {
    Refusal::of(
        Decision::GatewayRestarting,
        GatewayErrorKind::GatewayRestarting,
        host,
    )
}

/// Closes a pending approval; if a decision raced in first, that decision stands.
async fn close(shared: &Shared, id: &str, status: ApprovalStatus) -> Outcome {
    let engine = shared.engine.clone();
    let owned = id.to_string();
    let closed = tokio::task::spawn_blocking(move || engine.close(&owned, status)).await;
    match closed {
        Ok(Ok(approval)) => Outcome::of(&approval).unwrap_or(Outcome::TimedOut),
        _ => match status {
            ApprovalStatus::Cancelled => Outcome::Cancelled,
            _ => Outcome::TimedOut,
        },
    }
}

/// Where the approval of a held request is in its creation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Creation {
    Creating,
    Created(String),
    /// The request was dropped before its approval existed: whoever creates it closes it.
    Abandoned,
}

/// Cancels the approval when the held request's future is dropped before it ended
/// (the client closed its connection or stream), whether or not the approval exists yet.
struct CancelOnDrop {
    shared: Arc<Shared>,
    agent: AgentName,
    state: Arc<std::sync::Mutex<Creation>>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Its card may already be in front of a person: counted against the agent.
        self.shared.holds.note_abandoned(&self.agent);
        let id = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::replace(&mut *state, Creation::Abandoned) {
                Creation::Created(id) => id,
                // The creating thread sees `Abandoned` and closes it itself.
                Creation::Creating | Creation::Abandoned => return,
            }
        };
        tracing::info!(approval = %id, "the client went away while its request was held; approval cancelled");
        let engine = self.shared.engine.clone();
        let closing = move || {
            if let Err(e) = engine.close(&id, ApprovalStatus::Cancelled) {
                tracing::warn!(approval = %id, error = %e, "could not cancel an abandoned approval");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(closing);
            }
            Err(_) => closing(),
        }
    }
}

/// Header names and values for a person's eyes, with anything credential-like hidden
/// (the same naming test the approval summaries use).
pub fn redacted_headers(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let shown = if palisade_approvals::summary::is_secret_name(name.as_str()) {
            palisade_approvals::summary::redacted(
                String::from_utf8_lossy(value.as_bytes()).chars().count(),
            )
        } else {
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(200)
                .collect()
        };
        map.insert(name.as_str().to_string(), serde_json::Value::String(shown));
    }
    map
}

/// The path with values of credential-like query parameters hidden.
fn redact_query(path_and_query: &str) -> String {
    match path_and_query.split_once('?') {
        Some((path, query)) => {
            format!(
                "{path}?{}",
                palisade_approvals::summary::redacted_query(query)
            )
        }
        None => path_and_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_like_query_values_are_hidden() {
        assert_eq!(
            redact_query("/x?api_key=abc&q=cats&token=zz"),
            "/x?api_key=[redacted]&q=cats&token=[redacted]"
        );
        assert_eq!(redact_query("/plain"), "/plain");
    }
}
