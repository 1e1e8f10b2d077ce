//! The one approval engine every kind of approval goes through.
//!
//! An approval is a person's decision on something an agent wants to do: a request
//! held at the vault that would use a credential, a sensitive action the agent asks
//! about (`request_approval`), a message between agents, an unknown sender asking to
//! talk to an agent. Whatever the kind, it is created here ([`Engine::request`]),
//! decided here ([`Engine::decide`]: the approver's identity is checked, the choice
//! must be one the kind offers, the first valid decision wins, a "for 1 h" or "always"
//! choice creates its narrow rule in the same transaction), and closed here when it
//! expires or its requester goes away. Every surface (CLI, web UI, admin API, chat
//! channels) decides through [`Engine::decide`]; the vault and the host wait on
//! [`holds::Holds`].
//!
//! - [`kind`]: what is being approved, and which choices each kind offers.
//! - [`approver`]: who decides, typed (surface or chat channel, platform user id, name).
//! - [`choice`]: approve once, approve for 1 h, always allow, deny (with a comment).
//! - [`engine`]: create, decide, close, expire; the store does the atomic writes.
//! - [`holds`]: requests waiting for a decision in this process, bounded per agent.
//! - [`outcome`]: how a closed approval ended, in the one line every surface shows.
//! - [`events`]: decisions and new approvals announced within the process (cards are
//!   posted and edited from them at once; other processes' changes are found by polling).
//! - [`summary`]: what a person reads, built from the request (one file per service).
//! - [`clock`]: time, injectable for tests.

pub mod approver;
pub mod choice;
pub mod clock;
pub mod engine;
pub mod events;
pub mod holder;
pub mod holds;
pub mod kind;
pub mod outcome;
pub mod suggest;
pub mod summary;

pub use approver::{ApproverIdentity, Platform, Surface};
pub use choice::{Button, Choice};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{ApprovalError, Engine, NewRequest, Outcome, DEFAULT_TIMEOUT};
pub use events::{Event, Events};
pub use holder::Holder;
pub use holds::{Holds, HoldsFull, Slot};
pub use kind::ApprovalKind;
pub use outcome::{clock_time, expiry_time, outcome_line};
pub use palisade_store::{Approval, ApprovalStatus};
pub use summary::{summarize, Summary};
