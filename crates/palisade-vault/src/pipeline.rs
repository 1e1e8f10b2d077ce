//! The phases one agent request goes through, in order:
//! resolve agent → refuse local upstream → match policy (reading a body prefix when a
//! rule or a summary needs it) → count rate limits → hold for approval → inject the
//! credential → forward → audit.
//!
//! Every refusal happens before a byte is sent upstream.

use crate::body::{ForwardBody, ProxyBody};
use crate::holds::HoldOutcome;
use crate::net_guard::find_local_refused;
use crate::respond::{is_websocket_upgrade, refusal, refuse, strip_hop_by_hop};
use crate::state::Shared;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind, RequestFacts, Verdict};
use palisade_store::{AuditEntry, NewApproval, RateOutcome};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Body bytes read for `body_contains` rules and approval summaries.
const BODY_PREFIX_LIMIT: usize = 64 * 1024;
const BODY_PREFIX_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where a request goes: for tunnels the CONNECT target, never the inner `Host` header,
/// so the host that policy judged is the host that is reached.
#[derive(Clone, Debug)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower case; IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `host:port` (CONNECT) with `default_port` when the port is absent.
    pub fn parse_authority(authority: &str, scheme: Scheme) -> Option<Target> {
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let authority: http::uri::Authority = authority.parse().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() || host.len() > 253 {
            return None;
        }
        let valid = host.parse::<IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !valid {
            return None;
        }
        // `Authority` accepts an out-of-range port and then reports none; refuse it
        // rather than silently connecting to the default port.
        let after_host = &authority.as_str()[authority.host().len()..];
        let port = match after_host.strip_prefix(':') {
            None if after_host.is_empty() => default_port,
            Some(digits) => digits.parse::<u16>().ok().filter(|p| *p != 0)?,
            None => return None,
        };
        Some(Target { scheme, host, port })
    }

    pub fn from_uri(uri: &Uri) -> Option<Target> {
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return None,
        };
        Target::parse_authority(uri.authority()?.as_str(), scheme)
    }

    fn authority(&self) -> String {
        let default = match self.scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn uri(&self, path_and_query: &str) -> Option<Uri> {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        format!("{scheme}://{}{path_and_query}", self.authority())
            .parse()
            .ok()
    }
}

/// Runs one request through the phases; never fails at the HTTP level (refusals are responses).
pub async fn handle(
    shared: Arc<Shared>,
    agent: AgentName,
    target: Arc<Target>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let path = path_and_query.split('?').next().unwrap_or("/").to_string();
    let mut audit = AuditEntry {
        event: "request".into(),
        agent: Some(agent.to_string()),
        method: Some(parts.method.to_string()),
        host: Some(target.host.clone()),
        path: Some(path.clone()),
        ..AuditEntry::default()
    };
    let host = target.host.as_str();

    if shared.is_shutting_down() {
        return Ok(refuse(GatewayErrorKind::GatewayRestarting, host));
    }

    let snapshot = shared.snapshot.load_full();
    let Some(profile) = snapshot.agents.get(&agent).copied() else {
        return Ok(refusal(
            &ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_message(format!(
                "agent {agent} no longer exists; nothing is forwarded"
            )),
        ));
    };

    // An IP literal never passes the resolver, so it is checked here.
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !shared.guard.permits(host, ip) {
            audit.decision = Some("local_refused".into());
            audit.status = Some(403);
            finish_audit(&shared, audit, started).await;
            return Ok(refuse(GatewayErrorKind::LocalUpstreamRefused, host));
        }
    }

    // The gateway's own listener and the host's web UI are never an upstream, whatever
    // --allow-local-upstream says: an agent must not reach a control plane through the proxy.
    if shared.is_own_listener(host, target.port) {
        audit.decision = Some("local_refused".into());
        audit.status = Some(403);
        finish_audit(&shared, audit, started).await;
        return Ok(refusal(
            &ErrorBody::new(GatewayErrorKind::LocalUpstreamRefused, host).with_message(
                "This is the vault gateway's or the Palisade host's own address; agents can never reach it through the proxy.",
            ),
        ));
    }

    let mut facts = RequestFacts {
        agent: &agent,
        profile,
        method: &parts.method,
        host,
        path: &path,
        body: None,
        now_ms: palisade_store::now_ms(),
    };
    let policy = &snapshot.policy;
    let mut forward_body = None;
    let mut prefix = None;
    let mut body = Some(body);
    if policy.needs_body(&facts) {
        match read_prefix(body.take(), &target).await {
            Ok((fb, bytes)) => {
                forward_body = Some(fb);
                prefix = Some(bytes);
            }
            Err(response) => return Ok(*response),
        }
    }
    facts.body = prefix.as_deref();
    let evaluation = policy.evaluate(&facts);

    match &evaluation.verdict {
        Verdict::Block { rule } => {
            audit.decision = Some("blocked".into());
            audit.rule = Some(rule.name.clone());
            audit.status = Some(403);
            finish_audit(&shared, audit, started).await;
            return Ok(refusal(
                &ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_rule(&rule.name),
            ));
        }
        Verdict::DefaultDeny => {
            audit.decision = Some("default_denied".into());
            audit.status = Some(403);
            finish_audit(&shared, audit, started).await;
            return Ok(refusal(&ErrorBody::for_agent(
                GatewayErrorKind::BlockedByDefaultPolicy,
                host,
                Some(agent.as_str()),
            )));
        }
        Verdict::Allow | Verdict::RequireApproval { .. } => {}
    }

    for rule in &evaluation.rate_limits {
        let palisade_policy::RuleAction::RateLimit { limit, window } = rule.action else {
            continue;
        };
        let key = format!("rule:{}:agent:{}", rule.id, agent);
        let store = shared.store.clone();
        let now = palisade_store::now_ms();
        let outcome = tokio::task::spawn_blocking(move || {
            store.rate_acquire(&key, limit, window.duration(), now)
        })
        .await;
        match outcome {
            Ok(Ok(RateOutcome::Admitted { .. })) => {}
            Ok(Ok(RateOutcome::Limited { retry_after })) => {
                let seconds = retry_after.as_millis().div_ceil(1000).max(1) as u64;
                audit.decision = Some("rate_limited".into());
                audit.rule = Some(rule.name.clone());
                audit.status = Some(429);
                finish_audit(&shared, audit, started).await;
                let mut body =
                    ErrorBody::new(GatewayErrorKind::RateLimited, host).with_rule(&rule.name);
                body.retry_after_seconds = Some(seconds);
                body.message = format!(
                    "Rate limit of rule {:?} reached: at most {limit} requests per {window} to {host}. Retry after {seconds} seconds, or do something else meanwhile.",
                    rule.name
                );
                return Ok(refusal(&body));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "rate limit check failed");
                return Ok(refuse(GatewayErrorKind::GatewayRestarting, host));
            }
            Err(_) => return Ok(refuse(GatewayErrorKind::GatewayRestarting, host)),
        }
    }

    let mut decision = "allowed";
    if let Verdict::RequireApproval { rule } = &evaluation.verdict {
        if prefix.is_none() {
            match read_prefix(body.take(), &target).await {
                Ok((fb, bytes)) => {
                    forward_body = Some(fb);
                    prefix = Some(bytes);
                }
                Err(response) => return Ok(*response),
            }
        }
        // The summary shows the scheme and any non-default port of the real target.
        let shown_target = match target.scheme {
            Scheme::Http => format!("http://{}{path_and_query}", target.authority()),
            Scheme::Https => path_and_query.clone(),
        };
        let summary = palisade_policy::summary::summarize(
            &parts.method,
            &target.authority(),
            &shown_target,
            &parts.headers,
            prefix.as_deref().unwrap_or_default(),
        );
        let context = serde_json::json!({
            "method": parts.method.as_str(),
            "url": format!("{}{}", target.uri("/").map(|u| u.to_string().trim_end_matches('/').to_string()).unwrap_or_default(), redact_query(&path_and_query)),
            "host": host,
            "path": path,
            "headers": redacted_headers(&parts.headers),
            "bodyPreview": prefix.as_deref().map(|b| String::from_utf8_lossy(&b[..b.len().min(2000)]).into_owned()),
            "rule": rule.name,
            "secret": evaluation.secret.map(|s| s.name.clone()),
        });
        let new = NewApproval {
            kind: "credential_use".into(),
            agent: agent.clone(),
            title: summary.title,
            lines: summary.lines,
            detail: summary.detail,
            context,
            expires_at_ms: palisade_store::now_ms()
                + shared.config.approval_timeout.as_millis() as i64,
        };
        audit.rule = Some(rule.name.clone());
        match hold(&shared, new).await {
            (HoldOutcome::Approved { approver }, id) => {
                decision = "approved";
                audit.actor = approver;
                audit.approval_id = Some(id);
            }
            (HoldOutcome::Denied { approver, comment }, id) => {
                audit.decision = Some("denied".into());
                audit.status = Some(403);
                audit.actor = approver.clone();
                audit.approval_id = Some(id.clone());
                finish_audit(&shared, audit, started).await;
                let mut body =
                    ErrorBody::new(GatewayErrorKind::ApprovalDenied, host).with_rule(&rule.name);
                body.approval_id = Some(id);
                body.approver = approver;
                body.comment = comment;
                return Ok(refusal(&body));
            }
            (HoldOutcome::TimedOut, id) => {
                audit.decision = Some("timed_out".into());
                audit.status = Some(504);
                audit.approval_id = Some(id.clone());
                finish_audit(&shared, audit, started).await;
                let mut body =
                    ErrorBody::new(GatewayErrorKind::ApprovalTimedOut, host).with_rule(&rule.name);
                body.approval_id = Some(id);
                return Ok(refusal(&body));
            }
            (HoldOutcome::Cancelled, id) => {
                audit.decision = Some("cancelled".into());
                audit.status = Some(503);
                audit.approval_id = Some(id);
                finish_audit(&shared, audit, started).await;
                return Ok(refuse(GatewayErrorKind::GatewayRestarting, host));
            }
        }
    }

    if let Some(secret) = evaluation.secret {
        // A credential never crosses a network in clear text; plain HTTP is only
        // acceptable to hosts explicitly allowed as local (loopback test servers).
        if target.scheme == Scheme::Http && !shared.guard.host_allowed_local(host) {
            audit.decision = Some("plaintext_refused".into());
            audit.secret = Some(secret.name.clone());
            audit.status = Some(403);
            finish_audit(&shared, audit, started).await;
            return Ok(refusal(
                &ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_message(format!(
                    "A credential is configured for {host}, and credentials are only sent over HTTPS. Use https://{host}/... instead of http://."
                )),
            ));
        }
        if let Err(e) = secret.injection.apply(&secret.value, &mut parts) {
            audit.decision = Some("injection_failed".into());
            audit.secret = Some(secret.name.clone());
            audit.status = Some(400);
            finish_audit(&shared, audit, started).await;
            return Ok(refusal(
                &ErrorBody::new(GatewayErrorKind::BadRequest, host).with_message(format!(
                    "The credential {:?} could not be applied to this request: {e}",
                    secret.name
                )),
            ));
        }
        audit.secret = Some(secret.name.clone());
        if decision == "allowed" {
            decision = "injected";
        }
    }
    let audited = decision != "allowed";
    audit.decision = Some(decision.to_string());

    let body = match (forward_body, body) {
        (Some(fb), _) => fb,
        (None, Some(b)) => ForwardBody::streaming(b),
        (None, None) => ForwardBody::empty(),
    };
    let (response, refused) = forward(&shared, &target, parts, body).await;
    if let Some(refused) = refused {
        audit.decision = Some(refused.into());
    }
    if audited || refused.is_some() {
        audit.status = Some(response.status().as_u16());
        finish_audit(&shared, audit, started).await;
    }
    Ok(response)
}

async fn read_prefix(
    body: Option<Incoming>,
    target: &Target,
) -> Result<(ForwardBody, bytes::Bytes), Box<Response<ProxyBody>>> {
    let Some(body) = body else {
        return Ok((ForwardBody::empty(), bytes::Bytes::new()));
    };
    ForwardBody::read_prefix(body, BODY_PREFIX_LIMIT, BODY_PREFIX_TIMEOUT)
        .await
        .map_err(|e| {
            Box::new(refusal(
                &ErrorBody::new(GatewayErrorKind::BadRequest, &target.host)
                    .with_message(format!("could not read the request body: {e}")),
            ))
        })
}

/// Holds the request until a decision, a timeout or shutdown. Returns the outcome and the approval id.
async fn hold(shared: &Arc<Shared>, new: NewApproval) -> (HoldOutcome, String) {
    let store = shared.store.clone();
    let created = tokio::task::spawn_blocking(move || store.create_approval(new)).await;
    let approval = match created {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not record an approval");
            return (HoldOutcome::Cancelled, String::new());
        }
        Err(_) => return (HoldOutcome::Cancelled, String::new()),
    };
    let id = approval.id.clone();
    let Some(rx) = shared.holds.register(&id) else {
        let _ = close(shared, &id, palisade_store::ApprovalStatus::TimedOut).await;
        return (HoldOutcome::TimedOut, id);
    };
    tracing::info!(approval = %id, title = %approval.title, "request held for approval");
    let mut shutdown = shared.shutdown.clone();
    let timeout = shared.config.approval_timeout;
    let outcome = tokio::select! {
        decided = rx => decided.unwrap_or(HoldOutcome::Cancelled),
        _ = tokio::time::sleep(timeout) => {
            close(shared, &id, palisade_store::ApprovalStatus::TimedOut).await
        }
        _ = crate::stopped(&mut shutdown) => {
            close(shared, &id, palisade_store::ApprovalStatus::Cancelled).await
        }
    };
    shared.holds.forget(&id);
    (outcome, id)
}

/// Closes a pending approval; if a decision raced in first, that decision stands.
async fn close(
    shared: &Arc<Shared>,
    id: &str,
    status: palisade_store::ApprovalStatus,
) -> HoldOutcome {
    let store = shared.store.clone();
    let owned = id.to_string();
    let closed = tokio::task::spawn_blocking(move || store.close_approval(&owned, status)).await;
    match closed {
        Ok(Ok(approval)) => HoldOutcome::from_approval(&approval).unwrap_or(HoldOutcome::TimedOut),
        _ => match status {
            palisade_store::ApprovalStatus::Cancelled => HoldOutcome::Cancelled,
            _ => HoldOutcome::TimedOut,
        },
    }
}

async fn forward(
    shared: &Arc<Shared>,
    target: &Target,
    mut parts: http::request::Parts,
    body: ForwardBody,
) -> (Response<ProxyBody>, Option<&'static str>) {
    let host = target.host.as_str();
    let agent_version = parts.version;
    let websocket = parts.version == http::Version::HTTP_11 && is_websocket_upgrade(&parts.headers);
    let client_upgrade = if websocket {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    strip_hop_by_hop(&mut parts.headers, websocket);
    parts.headers.remove(http::header::HOST);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let Some(uri) = target.uri(path_and_query) else {
        return (
            refuse(GatewayErrorKind::BadRequest, host),
            Some("bad_request"),
        );
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let request = Request::from_parts(parts, body);
    let client = if websocket {
        &shared.upstream.upgrades
    } else if agent_version == http::Version::HTTP_2 {
        &shared.upstream.pooled
    } else {
        &shared.upstream.http1
    };
    let sent = tokio::time::timeout(shared.upstream.header_timeout, client.request(request)).await;
    let mut response = match sent {
        Err(_) => {
            return (
                refuse(GatewayErrorKind::UpstreamTimeout, host),
                Some("upstream_timeout"),
            )
        }
        Ok(Err(e)) => {
            if find_local_refused(&e).is_some() {
                return (
                    refuse(GatewayErrorKind::LocalUpstreamRefused, host),
                    Some("local_refused"),
                );
            }
            let cause = error_chain(&e);
            tracing::debug!(host, error = %cause, "upstream request failed");
            let body = ErrorBody::new(GatewayErrorKind::UpstreamUnreachable, host).with_message(
                format!("Could not reach {host}: {cause}. Check the host name, or retry later."),
            );
            return (refusal(&body), Some("upstream_unreachable"));
        }
        Ok(Ok(response)) => response,
    };
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                    let mut client = hyper_util::rt::TokioIo::new(client);
                    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    }
    let (mut head, incoming) = response.into_parts();
    strip_hop_by_hop(&mut head.headers, switching);
    let body = if switching {
        ProxyBody::empty()
    } else {
        ProxyBody::upstream(incoming, shared.upstream.idle_timeout)
    };
    (Response::from_parts(head, body), None)
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

async fn finish_audit(shared: &Arc<Shared>, mut audit: AuditEntry, started: Instant) {
    audit.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    shared.audit.record(audit).await;
}

/// Header names and values for a person's eyes, with anything credential-like hidden
/// (the same naming test the approval summaries use).
pub fn redacted_headers(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let shown = if palisade_policy::summary::is_secret_name(name.as_str()) {
            "[redacted]".to_string()
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
            format!("{path}?{}", palisade_policy::summary::redacted_query(query))
        }
        None => path_and_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_parse_and_reject_garbage() {
        let t = Target::parse_authority("API.Example.com:8443", Scheme::Https).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 8443));
        let t = Target::parse_authority("[::1]:443", Scheme::Https).unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority(), "[::1]");
        assert_eq!(
            Target::parse_authority("example.com", Scheme::Https)
                .unwrap()
                .port,
            443
        );
        for bad in [
            "",
            ":443",
            "user@host:443",
            "ho st:443",
            "host:99999",
            "a/b:1",
        ] {
            assert!(
                Target::parse_authority(bad, Scheme::Https).is_none(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn credential_like_query_values_are_hidden() {
        assert_eq!(
            redact_query("/x?api_key=abc&q=cats&token=zz"),
            "/x?api_key=[redacted]&q=cats&token=[redacted]"
        );
        assert_eq!(redact_query("/plain"), "/plain");
    }
}
