//! One module per command group. Each parses nothing itself (clap did that) but turns
//! argument strings into policy types, refusing bad input before the store is opened so
//! a refused command leaves nothing behind.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod channels;
pub mod chat;
pub mod doctor;
pub mod folders;
pub mod rules;
pub mod runner;
pub mod sandbox;
pub mod sanitize;
pub mod secrets;
pub mod send;
pub mod sessions;
pub mod up;
pub mod vault;
