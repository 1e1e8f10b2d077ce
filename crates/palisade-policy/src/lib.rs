//! The vault's policy model and its evaluation, kept free of I/O.
//!
//! Everything the gateway decides about a request — which secret to inject, which
//! rule applies, what the agent is told when it is refused, what a person sees when
//! asked to approve — is computed here (the summaries a person reads live in
//! `palisade-approvals`) from plain values, so it can be unit-tested
//! and fuzzed without sockets or a database. The store loads a [`PolicySet`]; the
//! vault evaluates it per request.

pub mod budget;
pub mod canonical;
pub mod dial;
pub mod error_body;
pub mod evaluate;
pub mod injection;
pub mod log_budget;
pub mod models;
pub mod names;
pub mod pattern;
pub mod rule;
pub mod sanitize;
pub mod secret;

pub use canonical::{CanonicalPath, PathRefusal};
pub use error_body::{ErrorBody, GatewayErrorKind};
pub use evaluate::{Evaluation, PolicySet, RequestFacts, Verdict};
pub use injection::{Injection, InjectionError};
pub use names::{AgentName, NameError, Profile};
pub use pattern::{HostPattern, MethodPattern, PathPattern, PatternError};
pub use rule::{RateWindow, RuleAction, RuleError, RulePolicy, Scope};
pub use secret::{SecretPolicy, SecretValue};
