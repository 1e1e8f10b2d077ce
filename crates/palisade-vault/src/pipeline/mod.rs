//! The phases one agent request goes through, in order, each in its own file:
//!
//! placed (the agent has a request in flight to spare) → admit (the gateway is up, the
//! agent still exists) → canonical (one spelling of the
//! path, ambiguous ones refused) → local (no loopback, private or own address) → policy
//! (match rules and secrets, reading the body when a body rule may decide; a request
//! that will carry a credential or be held needs room on disk for its rows, `disk.rs`)
//! → rate (count rate limits) → hold (read the whole body, ask a person, wait) → inject (write
//! the credential) → forward (send exactly what was judged) → audit (one row for every
//! outcome, written in one place).
//!
//! Each phase returns the next step or a [`Refusal`]; [`handle`] turns whichever comes
//! back into the response and the audit row, so no exit can skip the audit. Every
//! refusal happens before a byte is sent upstream.

mod admit;
pub(crate) mod audit;
pub(crate) mod canonical;
mod forward;
mod hold;
mod inject;
mod local;
mod outcome;
mod policy;
mod rate;
mod target;

pub use outcome::{Decision, Refusal};
pub use target::{Scheme, Target};

use crate::body::{ForwardBody, ProxyBody, ReadError};
use crate::body_budget::Reservation;
use crate::conn::ClientConnection;
use crate::state::{Shared, Snapshot};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use palisade_policy::{AgentName, GatewayErrorKind, RequestFacts, Verdict};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How long the gateway waits for a body it must read before judging the request.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A refused request's unread body is drained for at most this long and this much.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
const DRAIN_LIMIT: usize = 256 * 1024;

/// Runs one request through the phases; never fails at the HTTP level (refusals are
/// responses). `placed`: whether the request found a place under its agent's share of
/// requests in flight (taken by the caller, held until the response ends).
pub async fn handle(
    shared: Arc<Shared>,
    agent: AgentName,
    target: Arc<Target>,
    request: Request<Incoming>,
    client: ClientConnection,
    placed: bool,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let mut audit = audit::Pending::new(
        &shared,
        audit::Record::new(Some(&agent), &parts.method, &target, parts.uri.path()),
    );
    let mut body = RequestBody::Unread(body);
    let head_request = parts.method == http::Method::HEAD;
    // Phase 0: the request has a place under its agent's share of requests in flight.
    let outcome = if placed {
        let ran = run(
            &shared, &agent, &target, &client, parts, &mut body, &mut audit,
        );
        // A request still being judged, held or waiting for its answer when its
        // credential is revoked ends then, with the refusal the next one would get.
        tokio::select! {
            outcome = ran => outcome,
            _ = client.revoked.cancelled() => {
                Err(admit::revoked(&shared, &agent, &target.host, client.token.as_deref()))
            }
        }
    } else {
        Err(Refusal::of(
            Decision::TooManyRequestsInFlight,
            GatewayErrorKind::TooManyRequestsInFlight,
            &target.host,
        ))
    };
    let (decision, response) = match outcome {
        Ok((decision, response)) => (decision, response),
        Err(refusal) => {
            // Let the client finish sending what it started (HTTP/2 clients take a
            // stream reset before the end of their body as an error, and would
            // never see the refusal).
            body.drain_briefly().await;
            let mut response = refusal.response();
            if head_request {
                // The answer to a HEAD has no body (HTTP/2 clients reset the stream
                // on one).
                *response.body_mut() = ProxyBody::empty();
            }
            (refusal.decision, response)
        }
    };
    audit.finish(decision, response.status().as_u16()).await;
    Ok(response)
}

async fn run(
    shared: &Arc<Shared>,
    agent: &AgentName,
    target: &Arc<Target>,
    client: &ClientConnection,
    mut parts: http::request::Parts,
    body: &mut RequestBody,
    audit: &mut audit::Pending,
) -> Result<(Decision, Response<ProxyBody>), Refusal> {
    let (snapshot, profile) = admit::admit(shared, agent, &target.host, client.token.as_deref())?;
    let path = canonical::canonicalize(&mut parts, target)?;
    audit.record().set_path(path.as_str());
    local::refuse_local(shared, target)?;

    let evaluation = policy::judge(
        shared,
        &snapshot.policy,
        facts(agent, profile, &snapshot, &parts, target, &path),
        &parts.headers,
        body,
    )
    .await?;
    refuse_if_blocked(&evaluation, target, agent, audit)?;
    if evaluation.secret.is_some()
        || matches!(
            evaluation.verdict,
            Verdict::RequireApproval { .. } | Verdict::DialApproval { .. }
        )
    {
        // It would leave a row the agent does not pay for: only while there is room,
        // and while the log can be written.
        shared.disk.room_for_rows(agent.as_str(), &target.host)?;
        shared.audit.health.room_for_rows(&target.host)?;
    }
    rate::count(shared, agent, &evaluation.rate_limits, &target.host, audit).await?;

    let mut decision = Decision::Allowed;
    let reason = match evaluation.verdict {
        Verdict::RequireApproval { rule } => Some(hold::HoldReason::Rule(rule)),
        Verdict::DialApproval { frequency } => {
            match hold::approved_recently(shared, agent, target, evaluation.secret, frequency).await
            {
                // Let through on the strength of that approval: the row says which.
                Some(approval) => {
                    let record = audit.record();
                    record.rule = Some(hold::HoldReason::Dial(frequency).name());
                    // In the detail, not `approval_id`: this request was not held.
                    record.detail = Some(serde_json::json!({ "approved_by": approval }));
                    None
                }
                None => Some(hold::HoldReason::Dial(frequency)),
            }
        }
        _ => None,
    };
    // An allow rule that decided (an approval's "always" or "1 h" grant among them) is
    // named on the row, so what let a request through is in the log.
    if let (None, Some(rule)) = (&reason, evaluation.allowed_by) {
        audit.record().rule.get_or_insert_with(|| rule.name.clone());
        if rule.is_grant() {
            decision = Decision::Granted;
        }
    }
    policy::check_form(
        shared,
        &snapshot.policy,
        agent,
        &parts,
        target,
        body,
        reason.is_some(),
    )
    .await?;
    let mut secret = evaluation.secret;
    // The policy the secret was chosen under (its spellings to mask come from it too).
    let mut granted_by = &snapshot;
    // Declared here so the secret chosen after a hold can borrow from it.
    let current;
    if let Some(reason) = reason {
        audit.record().rule = Some(reason.name());
        let approval = hold::Held {
            agent,
            target,
            client,
            parts: &parts,
            path: &path,
            reason,
            secret,
        };
        hold::hold(shared, approval, body, audit).await?;
        decision = Decision::Approved;
        // The wait can last minutes: the request is sent under the policy in force when
        // the person answered, so a grant revoked or a block added meanwhile holds. The
        // approval stands for whatever asked for it (its rule or the dial); a block or a
        // default deny now is final, and the credential is the one granted now (none if
        // the grant was revoked). Rate limits were counted once.
        let (snapshot, profile) =
            admit::admit(shared, agent, &target.host, client.token.as_deref())?;
        current = snapshot;
        let now = policy::judge(
            shared,
            &current.policy,
            facts(agent, profile, &current, &parts, target, &path),
            &parts.headers,
            body,
        )
        .await?;
        refuse_if_blocked(&now, target, agent, audit)?;
        secret = now.secret;
        granted_by = &current;
    }
    if let Some(secret) = secret {
        audit.record().secret = Some(secret.name.clone());
        inject::inject(shared, target, secret, &mut parts)?;
        if decision == Decision::Allowed {
            decision = Decision::Injected;
        }
    }
    let masking = granted_by.masking_for(&target.host).map(|reflection| {
        let report = crate::reflect::Report {
            shared: Arc::clone(shared),
            carried: audit.record().secret.is_some(),
            agent: agent.clone(),
            method: parts.method.clone(),
            target: Arc::clone(target),
            path: audit.record().path.clone(),
            snapshot: Arc::clone(granted_by),
        };
        (reflection, report)
    });
    let forward_body = std::mem::replace(body, RequestBody::Gone).into_forward();
    let response =
        forward::forward(shared, agent, target, client, parts, forward_body, masking).await?;
    Ok((decision, response))
}

/// What the policy judges a request by, under `snapshot`.
fn facts<'a>(
    agent: &'a AgentName,
    profile: palisade_policy::Profile,
    snapshot: &'a Snapshot,
    parts: &'a http::request::Parts,
    target: &'a Target,
    path: &'a palisade_policy::CanonicalPath,
) -> RequestFacts<'a> {
    let method = &parts.method;
    let approvals = snapshot
        .dials
        .get(agent)
        .map(|dial| dial.approvals)
        .unwrap_or_default();
    // Only a dial that asks needs to know (most agents have none).
    let model_call = approvals != palisade_policy::dial::ApprovalFrequency::Never
        && snapshot.model_apis.get(agent).is_some_and(|api| {
            api.covers(
                target.scheme == Scheme::Https,
                &target.host,
                target.port,
                method,
                path,
            )
        });
    RequestFacts {
        agent,
        profile,
        method,
        opens_stream: parts.version == http::Version::HTTP_11
            && crate::respond::is_websocket_upgrade(&parts.headers),
        host: &target.host,
        port: target.port,
        path,
        body: None,
        now_ms: palisade_store::now_ms(),
        approvals,
        model_call,
    }
}

/// Ends the request if the policy blocks it (a rule or the default deny).
fn refuse_if_blocked(
    evaluation: &palisade_policy::Evaluation<'_>,
    target: &Target,
    agent: &AgentName,
    audit: &mut audit::Pending,
) -> Result<(), Refusal> {
    match evaluation.verdict {
        Verdict::Block { rule } => {
            audit.record().rule = Some(rule.name.clone());
            Err(policy::blocked(&target.host, rule))
        }
        Verdict::DefaultDeny => Err(policy::default_denied(&target.host, agent)),
        Verdict::Allow | Verdict::RequireApproval { .. } | Verdict::DialApproval { .. } => Ok(()),
    }
}

/// The agent's request body as the phases see it: still unread (it will be streamed),
/// or read whole because a rule or an approval had to look at it.
pub(crate) enum RequestBody {
    Unread(Incoming),
    Read {
        data: Bytes,
        trailers: Option<http::HeaderMap>,
        /// Its bytes' place in the agent's share of body memory.
        reserved: Reservation,
    },
    /// Taken by a failed read; nothing is forwarded after that.
    Gone,
}

impl RequestBody {
    /// The whole body, read once (at most `limit` bytes, each drawn from `agent`'s
    /// share of body memory) and kept for forwarding.
    async fn read(
        &mut self,
        shared: &Shared,
        agent: &AgentName,
        limit: usize,
    ) -> Result<&Bytes, ReadError> {
        if let RequestBody::Unread(incoming) = self {
            // On failure the body stays `Unread` (partly read): it is never forwarded
            // after a refusal, but what is left can be drained.
            let mut reserved = shared.bodies.reserve(agent);
            let (data, trailers) =
                ForwardBody::read_whole(incoming, limit, BODY_READ_TIMEOUT, &mut reserved).await?;
            *self = RequestBody::Read {
                data,
                trailers,
                reserved,
            };
        }
        match self {
            RequestBody::Read { data, .. } => Ok(data),
            _ => Err(ReadError::Failed("the body was already consumed".into())),
        }
    }

    /// Reads and drops what is left of an unread body, for at most a moment and a few
    /// frames, so a refused client finishes its request cleanly.
    async fn drain_briefly(&mut self) {
        use http_body_util::BodyExt;
        let RequestBody::Unread(incoming) = self else {
            return;
        };
        if http_body::Body::is_end_stream(incoming) {
            return;
        }
        let mut drained = 0usize;
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while drained < DRAIN_LIMIT {
                match incoming.frame().await {
                    Some(Ok(frame)) => {
                        drained += frame.data_ref().map_or(0, |d| d.len());
                    }
                    _ => break,
                }
            }
        })
        .await;
    }

    fn into_forward(self) -> ForwardBody {
        match self {
            RequestBody::Unread(incoming) => ForwardBody::Streaming(incoming),
            RequestBody::Read {
                data,
                trailers,
                reserved,
            } => ForwardBody::Buffered {
                data: Some(data),
                trailers,
                reserved: Some(reserved),
            },
            RequestBody::Gone => ForwardBody::empty(),
        }
    }
}

/// One line: the error and its causes, joined.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ").replace('\n', " ")
}
