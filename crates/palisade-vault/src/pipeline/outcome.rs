//! How a request ended, as one value: the decision its audit row records and, for a
//! refusal, the answer the agent gets. Every phase returns either the next step or a
//! [`Refusal`]; nothing else can end a request.

use crate::body::ProxyBody;
use crate::respond::refusal;
use http::Response;
use palisade_policy::{ErrorBody, GatewayErrorKind};

/// The decision recorded for a request (`audit.decision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded with no credential and no approval: not written to the audit log, so
    /// plain traffic costs no write.
    Allowed,
    /// Forwarded with a credential injected.
    Injected,
    /// Forwarded after a person approved it.
    Approved,
    /// Forwarded on a person's earlier grant ("always", "1 h", an accepted suggestion)
    /// in place of a hold: written, credential or not, so what a grant lets through is
    /// in the log.
    Granted,
    /// No or unknown proxy token (TCP listener).
    ProxyAuthRequired,
    /// An admin API request without the admin key (TCP listener).
    AdminUnauthorized,
    /// A request the gateway cannot parse (bad CONNECT target, missing host).
    BadRequest,
    /// A path spelled in a form upstreams read differently (see `palisade_policy::canonical`).
    AmbiguousPath,
    /// A header naming another host than the one judged (`X-Forwarded-Host`, `Forwarded: host=`).
    AmbiguousHost,
    /// A method spelt in a form upstreams read differently (lower case, or an override
    /// header naming another method).
    AmbiguousMethod,
    /// The agent was deleted while its connection was open.
    AgentGone,
    /// The gateway is shutting down, or its store failed.
    GatewayRestarting,
    /// The agent already has as many connections as it may, or the gateway has no
    /// room for the upstream connection the request needs.
    TooManyConnections,
    /// The agent already has as many requests in flight as it may.
    TooManyRequestsInFlight,
    /// A loopback, private or own address, or the host's control plane.
    LocalRefused,
    /// A block rule matched.
    Blocked,
    /// An action-profile agent asked for a host nothing names.
    DefaultDenied,
    /// The body a rule or an approval needed could not be read.
    BodyUnreadable,
    /// The body a body rule needed is larger than the gateway reads.
    TooLargeToInspect,
    /// The body of a request held for approval is larger than the gateway reads.
    TooLargeForApproval,
    /// The body is compressed in a way the gateway cannot read to judge it.
    UnsupportedEncoding,
    /// A rate-limit rule's window is full.
    RateLimited,
    /// The agent (or the gateway) already holds as many bytes of bodies read whole as
    /// it may.
    TooManyBufferedBodies,
    /// The agent already has as many requests waiting for approval as it may.
    TooManyPendingApprovals,
    /// A person denied it.
    Denied,
    /// Nobody decided in time.
    TimedOut,
    /// The gateway shut down while it was held.
    Cancelled,
    /// The client went away while it was held or in flight.
    ClientGone,
    /// A credential would have crossed the network in clear text.
    PlaintextRefused,
    /// The credential could not be written into this request.
    InjectionFailed,
    /// The upstream did not send response headers in time.
    UpstreamTimeout,
    /// The upstream could not be reached.
    UpstreamUnreachable,
    /// An answer from a host the gateway sends credentials to came in an encoding the
    /// gateway cannot read to search it for them.
    UnreadableResponse,
    /// The home's disk is below the gateway's reserve, so a request that would leave a
    /// row (a credential, a hold) was not sent.
    StoreDiskLow,
    /// The audit log cannot be written, so a request that would leave a row (a
    /// credential, a hold) was not sent.
    AuditUnavailable,
}

impl Decision {
    /// The spelling stored in the audit log and filtered on by `palisade audit list --decision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Injected => "injected",
            Decision::Approved => "approved",
            Decision::Granted => "granted",
            Decision::ProxyAuthRequired => "proxy_auth_required",
            Decision::AdminUnauthorized => "admin_unauthorized",
            Decision::BadRequest => "bad_request",
            Decision::AmbiguousPath => "ambiguous_path",
            Decision::AmbiguousHost => "ambiguous_host",
            Decision::AmbiguousMethod => "ambiguous_method",
            Decision::AgentGone => "agent_gone",
            Decision::GatewayRestarting => "gateway_restarting",
            Decision::TooManyConnections => "too_many_connections",
            Decision::TooManyRequestsInFlight => "too_many_requests_in_flight",
            Decision::LocalRefused => "local_refused",
            Decision::Blocked => "blocked",
            Decision::DefaultDenied => "default_denied",
            Decision::BodyUnreadable => "body_unreadable",
            Decision::TooLargeToInspect => "too_large_to_inspect",
            Decision::TooLargeForApproval => "too_large_for_approval",
            Decision::UnsupportedEncoding => "unsupported_encoding",
            Decision::RateLimited => "rate_limited",
            Decision::TooManyBufferedBodies => "too_many_buffered_bodies",
            Decision::TooManyPendingApprovals => "too_many_pending_approvals",
            Decision::Denied => "denied",
            Decision::TimedOut => "timed_out",
            Decision::Cancelled => "cancelled",
            Decision::ClientGone => "client_gone",
            Decision::PlaintextRefused => "plaintext_refused",
            Decision::InjectionFailed => "injection_failed",
            Decision::UpstreamTimeout => "upstream_timeout",
            Decision::UpstreamUnreachable => "upstream_unreachable",
            Decision::UnreadableResponse => "unreadable_response",
            Decision::StoreDiskLow => "store_disk_low",
            Decision::AuditUnavailable => "audit_unavailable",
        }
    }

    /// How the traffic charts group this decision.
    pub fn outcome(self) -> palisade_store::Outcome {
        use palisade_store::Outcome;
        match self {
            Decision::Allowed => Outcome::Allowed,
            Decision::Injected | Decision::Granted => Outcome::Injected,
            Decision::Approved
            | Decision::Denied
            | Decision::TimedOut
            | Decision::Cancelled
            | Decision::TooLargeForApproval => Outcome::Held,
            Decision::Blocked
            | Decision::DefaultDenied
            | Decision::LocalRefused
            | Decision::PlaintextRefused
            | Decision::AmbiguousPath
            | Decision::AmbiguousHost
            | Decision::AmbiguousMethod => Outcome::Blocked,
            Decision::RateLimited
            | Decision::TooManyConnections
            | Decision::TooManyRequestsInFlight
            | Decision::TooManyBufferedBodies
            | Decision::TooManyPendingApprovals => Outcome::RateLimited,
            Decision::ProxyAuthRequired
            | Decision::AdminUnauthorized
            | Decision::BadRequest
            | Decision::AgentGone
            | Decision::GatewayRestarting
            | Decision::BodyUnreadable
            | Decision::TooLargeToInspect
            | Decision::UnsupportedEncoding
            | Decision::ClientGone
            | Decision::InjectionFailed
            | Decision::UpstreamTimeout
            | Decision::UpstreamUnreachable
            | Decision::UnreadableResponse
            | Decision::StoreDiskLow
            | Decision::AuditUnavailable => Outcome::Failed,
        }
    }

    /// Whether the request gets an audit row: everything but plain allowed traffic.
    pub fn is_audited(self) -> bool {
        self != Decision::Allowed
    }
}

/// A request the gateway answers itself: the decision to record and the JSON body
/// (boxed: refusals are the rare path, and every phase's result carries one).
#[derive(Debug)]
pub struct Refusal {
    pub decision: Decision,
    pub body: Box<ErrorBody>,
}

impl Refusal {
    pub fn new(decision: Decision, body: ErrorBody) -> Self {
        Refusal {
            decision,
            body: Box::new(body),
        }
    }

    /// The refusal of `kind` with its default message about `host`.
    pub fn of(decision: Decision, kind: GatewayErrorKind, host: &str) -> Self {
        Refusal::new(decision, ErrorBody::new(kind, host))
    }

    pub fn response(&self) -> Response<ProxyBody> {
        refusal(&self.body)
    }
}
