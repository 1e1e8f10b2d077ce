//! Durable state for Palisade, in SQLite.
//!
//! Owns the home directory layout ([`Home`]), the master key and the encryption of
//! secret values ([`crypto`]), versioned schema migrations, and typed access to agents,
//! secrets, rules, approvals, chat channels and approvers, rate-limit counters and the
//! hash-chained audit log.
//! Every process (the gateway, each CLI command) opens its own [`Store`]; SQLite in
//! WAL mode with a busy timeout arbitrates between them, and `BEGIN IMMEDIATE`
//! transactions make counters and the audit chain exact across processes.
//! Nothing here ever writes a secret value in plain text: values are AES-256-GCM
//! sealed under the master key before they reach SQL, agent tokens are stored as
//! SHA-256 hashes.

pub mod approvals;
pub mod audit;
pub mod channels;
pub mod crypto;
pub mod gateways;
pub mod home;
pub mod input;
pub mod messages;
mod migrations;
pub mod records;
mod store;

pub use approvals::{Approval, ApprovalDecision, ApprovalStatus, NewApproval};
pub use audit::{AuditEntry, AuditFilter, AuditRecord, PruneReport, VerifyReport};
pub use channels::{
    ApprovalCard, ApproverRecord, ChannelLink, ChannelRecord, NewChannel, SenderRecord,
};
pub use home::Home;
pub use messages::{
    Accepted, InboundMessage, MessageOrigin, MessageStatus, OutboundMessage, ReplyOutcome,
    ReplyRecord, SessionRecord,
};
pub use records::{
    AgentLink, AgentRecord, FolderMount, FolderRecord, NewRule, NewSecret, RuleRecord, SecretRecord,
};
pub use store::approvals::ApprovedUse;
pub use store::local::LocalUpstreams;
pub use store::traffic;
pub use store::traffic::{Outcome, RequestCount};
pub use store::validate_folder_name;
pub use store::{RateOutcome, Store, MIN_AUDIT_RETENTION};

/// Errors from the store. Messages say what happened and what to do next; none contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(String),
    #[error("{what} {name:?} already exists; choose another name or delete it first")]
    Duplicate { what: &'static str, name: String },
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("master key problem: {0}")]
    MasterKey(String),
    #[error("could not decrypt a stored secret: the master key does not match the one it was sealed with")]
    Decrypt,
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Input a person typed (a name, pattern, injection, time) that cannot be used;
    /// the message names the field and how to write it.
    #[error("{0}")]
    Input(String),
    #[error("approval {0} was already decided")]
    AlreadyDecided(String),
    #[error("approval {0} expired before it was decided; the request was not sent")]
    Expired(String),
    #[error("the database schema version {found} is newer than this palisade understands ({known}); upgrade palisade")]
    SchemaTooNew { found: i64, known: i64 },
    /// The database was changed outside palisade in a way that could make its writes
    /// differ from what it checked (a trigger, a foreign index, a constraint, a row in
    /// the way of the audit log's next row): nothing is written.
    #[error("{0}")]
    Tampered(String),
}

impl StoreError {
    /// Whether this is SQLite's "database is busy" or "locked" (another connection held
    /// the lock past the busy timeout): a failure that passes, unlike a full disk or a
    /// damaged file.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sql(rusqlite::Error::SqliteFailure(failure, _))
                if matches!(
                    failure.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                )
        )
    }
}

impl StoreError {
    /// Whether the database was found changed outside palisade (see
    /// [`StoreError::Tampered`]).
    pub fn is_tampering(&self) -> bool {
        matches!(self, StoreError::Tampered(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
