//! One module per command group. Each parses nothing itself (clap did that) but turns
//! argument strings into policy types, refusing bad input before the store is opened so
//! a refused command leaves nothing behind.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod channels;
pub mod chat;
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

/// Secret and rule names appear in tables, logs and audit rows: keep them one short
/// token. Rule names may not be all digits because `rules delete` also takes ids.
pub(crate) fn check_name(name: &str, what: &str) -> anyhow::Result<String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 100 || !name.chars().all(fine) {
        anyhow::bail!(
            "{what} name {:?} is invalid: use 1-100 letters, digits, '-', '_' or '.'",
            crate::output::clean(name)
        );
    }
    if what == "rule" && name.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!("rule name {name:?} is invalid: it must not be all digits, which `rules delete` reads as an id");
    }
    Ok(name.to_string())
}
