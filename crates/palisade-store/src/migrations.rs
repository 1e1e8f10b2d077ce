//! Versioned schema migrations (PRAGMA user_version).
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `index` to `index + 1`;
//! entries are never edited once released, only appended. Migrations run inside one
//! `BEGIN IMMEDIATE` transaction together with the version bump, so two processes
//! opening a fresh home at the same time cannot both apply them, and a crash leaves the
//! schema at the old version. A database written by a newer palisade (higher version
//! than we know) is refused rather than guessed at.

use crate::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};

/// Secret values, agent tokens and the admin key are stored only in sealed form (`sealed`
/// columns); tokens also as SHA-256 for lookup. Foreign keys cascade so deleting an agent
/// removes its token, grants and agent-bound rules in the same statement.
const V1: &str = r#"
CREATE TABLE agents (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    profile       TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    settings      TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE agent_tokens (
    agent_id      INTEGER PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    sealed        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE secrets (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    host_pattern  TEXT NOT NULL,
    path_pattern  TEXT,
    injection     TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE secret_grants (
    secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    agent_id  INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    PRIMARY KEY (secret_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX secret_grants_agent ON secret_grants(agent_id);

CREATE TABLE rules (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    host_pattern  TEXT NOT NULL,
    path_pattern  TEXT,
    method        TEXT NOT NULL,
    action        TEXT NOT NULL,
    rate_limit    INTEGER,
    rate_window   TEXT,
    agent_id      INTEGER REFERENCES agents(id) ON DELETE CASCADE,
    priority      INTEGER NOT NULL DEFAULT 0,
    expires_at_ms INTEGER,
    body_contains TEXT,
    scope         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX rules_agent ON rules(agent_id);

CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    agent         TEXT NOT NULL,
    status        TEXT NOT NULL,
    title         TEXT NOT NULL,
    lines         TEXT NOT NULL,
    detail        TEXT NOT NULL,
    context       TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    decided_at_ms INTEGER,
    approver      TEXT,
    comment       TEXT
);
CREATE INDEX approvals_status_created ON approvals(status, created_at_ms);
CREATE INDEX approvals_created ON approvals(created_at_ms);

CREATE TABLE rate_events (
    key   TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX rate_events_key_at ON rate_events(key, at_ms);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    event       TEXT NOT NULL,
    agent       TEXT,
    method      TEXT,
    host        TEXT,
    path        TEXT,
    decision    TEXT,
    rule        TEXT,
    secret      TEXT,
    status      INTEGER,
    latency_ms  REAL,
    actor       TEXT,
    approval_id TEXT,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_agent ON audit(agent, id);
CREATE INDEX audit_event ON audit(event, id);
CREATE INDEX audit_at ON audit(at_ms);

CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_id   INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, last_id, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Durable messaging for the host: one session per (agent, conversation) with its
/// history, inbound messages that stay queued until answered, and at most one reply per
/// inbound message (the UNIQUE constraint is what makes a retried delivery idempotent).
/// Deleting an agent removes its sessions, messages and replies.
const V2: &str = r#"
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    agent_id      INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    conversation  TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    history       TEXT NOT NULL DEFAULT '[]',
    UNIQUE (agent_id, conversation)
);

CREATE TABLE inbound_messages (
    id            INTEGER PRIMARY KEY,
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    channel       TEXT NOT NULL,
    text          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'answered')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX inbound_messages_status ON inbound_messages(status, id);
CREATE INDEX inbound_messages_session ON inbound_messages(session_id, id);

CREATE TABLE outbound_replies (
    id            INTEGER PRIMARY KEY,
    inbound_id    INTEGER NOT NULL UNIQUE REFERENCES inbound_messages(id) ON DELETE CASCADE,
    text          TEXT NOT NULL,
    is_error      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    delivered     INTEGER NOT NULL DEFAULT 0
);
"#;

/// Messages an agent sends to the conversation during a turn (its `send_message`
/// tool), stored before any channel is shown them, so they survive a crash of the host.
const V3: &str = r#"
CREATE TABLE outbound_messages (
    id            INTEGER PRIMARY KEY,
    inbound_id    INTEGER NOT NULL REFERENCES inbound_messages(id) ON DELETE CASCADE,
    text          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    delivered     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbound_messages_inbound ON outbound_messages(inbound_id, id);
"#;

/// Approvals as the approval engine decides them: the choice made, who made it (the
/// surface or chat channel, the platform user id and display name), the rule a "for
/// 1 h" or "always" choice created, which gateway holds a held request (so one that
/// died can be told from one still waiting), and an idempotency key for approvals an
/// agent asks for (a retried turn finds its approval again). Chat channels with their
/// sealed credentials, the chats linked to agents, each agent's approvers, and the
/// approval cards posted (so every card can be edited once its approval is decided,
/// also after a restart).
const V4: &str = r#"
ALTER TABLE approvals ADD COLUMN choice TEXT;
ALTER TABLE approvals ADD COLUMN approver_channel TEXT;
ALTER TABLE approvals ADD COLUMN approver_user TEXT;
ALTER TABLE approvals ADD COLUMN approver_name TEXT;
ALTER TABLE approvals ADD COLUMN granted_rule TEXT;
ALTER TABLE approvals ADD COLUMN holder TEXT;
ALTER TABLE approvals ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX approvals_request_key ON approvals(request_key) WHERE request_key IS NOT NULL;

ALTER TABLE rules ADD COLUMN approval_timeout_ms INTEGER;

CREATE TABLE channels (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    platform      TEXT NOT NULL,
    settings      TEXT NOT NULL DEFAULT '{}',
    sealed        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE channel_links (
    channel_id    INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    chat          TEXT NOT NULL,
    agent_id      INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (channel_id, chat)
) WITHOUT ROWID;

CREATE TABLE approvers (
    id            INTEGER PRIMARY KEY,
    agent_id      INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    channel_id    INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (agent_id, channel_id, user_id)
);

CREATE TABLE approval_cards (
    id            INTEGER PRIMARY KEY,
    approval_id   TEXT NOT NULL REFERENCES approvals(id) ON DELETE CASCADE,
    channel_id    INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    chat          TEXT NOT NULL,
    message       TEXT,
    token         TEXT NOT NULL UNIQUE,
    posted_at_ms  INTEGER NOT NULL,
    finished      TEXT,
    UNIQUE (approval_id, channel_id, chat)
);
CREATE INDEX approval_cards_open ON approval_cards(finished, approval_id);
"#;

/// Compartments and agent-to-agent messages: secrets marked sensitive (never granted to,
/// nor injected for, a research agent), the allow-list of which agent may message which
/// (and whether each direction needs a person's approval), and where an inbound message
/// came from when another agent sent it (the sender and the chain of agents before it,
/// for the hop limit and cycle check), with a key so a retried turn does not send twice.
const V5: &str = r#"
ALTER TABLE secrets ADD COLUMN sensitive INTEGER NOT NULL DEFAULT 0;

CREATE TABLE agent_links (
    from_agent_id    INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    to_agent_id      INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    approve_outbound INTEGER NOT NULL DEFAULT 0,
    approve_inbound  INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (from_agent_id, to_agent_id)
) WITHOUT ROWID;
CREATE INDEX agent_links_to ON agent_links(to_agent_id);

ALTER TABLE inbound_messages ADD COLUMN origin TEXT;
ALTER TABLE inbound_messages ADD COLUMN origin_key TEXT;
CREATE UNIQUE INDEX inbound_messages_origin_key ON inbound_messages(origin_key)
    WHERE origin_key IS NOT NULL;
"#;

/// Host folders agents may mount (see `store/folders.rs`).
const V6: &str = r#"
CREATE TABLE folders (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    path          TEXT NOT NULL UNIQUE,
    sensitive     INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE agent_folders (
    agent_id  INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    writable  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, folder_id)
) WITHOUT ROWID;
CREATE INDEX agent_folders_folder ON agent_folders(folder_id);
"#;

/// People allowed to talk to an agent on a channel without deciding its approvals
/// (an approved access request, or `palisade channels allow`).
const V7: &str = r#"
CREATE TABLE channel_senders (
    id            INTEGER PRIMARY KEY,
    agent_id      INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    channel_id    INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (agent_id, channel_id, user_id)
);
"#;

/// Managing the vault from the web UI: a rule can be switched off without losing it
/// (`enabled`), and the gateway keeps per-agent, per-hour counts of request outcomes
/// (plain allowed traffic has no audit row, so charts of an agent's traffic need
/// these), purged after eight days.
const V8: &str = r#"
ALTER TABLE rules ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;

CREATE TABLE request_counts (
    agent         TEXT NOT NULL,
    hour_ms       INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (agent, hour_ms, outcome)
) WITHOUT ROWID;
CREATE INDEX request_counts_hour ON request_counts(hour_ms);
"#;

/// Audit retention: the chain may start after row 1 once old rows are pruned. The head
/// record keeps where it starts now (`first_id`, and the hash of the row before it) and
/// a signature of that start under the master key, so deleting rows from the beginning
/// without `palisade audit prune` is still detected.
const V9: &str = r#"
ALTER TABLE audit_head ADD COLUMN first_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_head ADD COLUMN first_prev_hash TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
ALTER TABLE audit_head ADD COLUMN start_mac TEXT;
"#;

/// The audit log's end signed: `head_mac` is an HMAC of the head (last id and hash)
/// under a key derived from the master key, written with every head, so rows appended
/// (and the head moved over them) by someone who can write the database but has no key
/// are told apart from the gateway's. A database migrated to this version has its head
/// signed once, at that open ([`crate::Store::open`]).
const V10: &str = r#"
ALTER TABLE audit_head ADD COLUMN head_mac TEXT;
"#;

/// Where a session was last reset: the newest message id when it was. A turn of a
/// message that came in before (an id at most that) does not write its history back
/// over the reset.
const V11: &str = r#"
ALTER TABLE sessions ADD COLUMN reset_after_message INTEGER;
"#;

/// Secrets' sealed values bound to where they are sent (their host, path, injection
/// and sensitivity, not only their name): no schema change; the open that migrates to
/// it seals every secret again (see `store::secrets::bind_destinations`).
const V12: &str = "-- secrets sealed for their destination";

/// Grants signed: an HMAC of the secret's and the agent's names under a key derived from
/// the master key, written with each grant (the open that migrates signs those there).
const V13: &str = r#"
ALTER TABLE secret_grants ADD COLUMN mac TEXT;
"#;

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13];

/// The version that added `audit_head.head_mac`.
pub(crate) const SIGNED_HEAD: i64 = 10;

/// The version from which secrets are sealed for their destination.
pub(crate) const SEALED_DESTINATIONS: i64 = 12;

/// The version from which grants are signed.
pub(crate) const SIGNED_GRANTS: i64 = 13;

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to [`LATEST`], or refuses a newer one; the version it found
/// (what this call migrated from; [`LATEST`] when there was nothing to do).
/// Refuses a database with objects palisade never creates: a trigger or a view, an
/// index of another name than the migrations', or an audit table without its primary
/// key. Someone who can write the database but not read the master key could use one
/// to make palisade's own reads and writes differ from what it checked (a trigger that
/// drops its inserts, two head rows that two queries read differently), and so have
/// palisade sign a log it never wrote.
pub(crate) fn check_schema(conn: &Connection) -> Result<()> {
    check_objects(conn)?;
    check_audit_tables(conn, false)
}

/// [`check_schema`] for a database already migrated (after the migrations at open,
/// and by every write after the schema changed): its version must be the latest, as
/// the migrations left it. (Set back by someone, it switched the comparison of the
/// audit tables off while a `CHECK` went in.)
pub(crate) fn check_migrated_schema(conn: &Connection) -> Result<()> {
    check_objects(conn)?;
    check_audit_tables(conn, true)
}

fn check_objects(conn: &Connection) -> Result<()> {
    // The migrations' indexes, by name, as they create them (SQLite keeps the statement's
    // text): one of their names over other columns is foreign too.
    let own: std::collections::HashMap<&str, &str> = MIGRATIONS
        .iter()
        .flat_map(|sql| sql.split(';'))
        .map(str::trim)
        .filter(|statement| {
            statement.starts_with("CREATE INDEX ") || statement.starts_with("CREATE UNIQUE INDEX ")
        })
        .filter_map(|statement| {
            let name = statement
                .split("INDEX ")
                .nth(1)?
                .split_whitespace()
                .next()?;
            Some((name, statement))
        })
        .collect();
    let mut objects = conn.prepare("SELECT type, name, sql FROM sqlite_master")?;
    let objects = objects
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (kind, name, sql) in objects {
        let foreign = match kind.as_str() {
            "trigger" | "view" => true,
            // SQLite's own indexes (of a primary key or UNIQUE column) have no text.
            "index" if name.starts_with("sqlite_autoindex_") => sql.is_some(),
            "index" => own.get(name.as_str()).copied() != sql.as_deref().map(str::trim),
            _ => false,
        };
        if foreign {
            return Err(StoreError::Tampered(format!(
                "the database has a {kind} palisade never creates ({name:?}): someone changed it outside palisade, which refuses to use it; inspect it, and remove the {kind} (`DROP {} \"{name}\"` in sqlite3) if you made it",
                kind.to_ascii_uppercase()
            )));
        }
    }
    for table in ["audit", "audit_head"] {
        // (A new database has no tables yet.)
        let keyed: bool = conn.query_row(
            &format!(
                "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}')
                     OR EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'id' AND pk = 1)"
            ),
            [],
            |row| row.get(0),
        )?;
        if !keyed {
            return Err(StoreError::Tampered(format!(
                "the database's {table} table lost its primary key: someone changed it outside palisade, which refuses to use it"
            )));
        }
    }
    Ok(())
}

/// Refuses audit tables whose definition is not the migrations': a `CHECK` or a
/// collation put in through `writable_schema` makes palisade's own inserts fail or
/// compare otherwise than it checked. Compared with the tables a fresh database gets
/// from the same migrations, once the database is at the latest version (before its
/// migration, an older one is compared after); `migrated`: it must be at the latest.
fn check_audit_tables(conn: &Connection, migrated: bool) -> Result<()> {
    static FRESH: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version != LATEST {
        return match migrated {
            true => Err(StoreError::Tampered(format!(
                "the database's schema version was set to {version} outside palisade (it is {LATEST}), which refuses to use it"
            ))),
            false => Ok(()),
        };
    }
    let fresh = FRESH.get_or_init(|| {
        let mut fresh = Connection::open_in_memory().expect("an in-memory database");
        migrate(&mut fresh).expect("the migrations apply to an empty database");
        audit_table_texts(&fresh).expect("the fresh tables are readable")
    });
    if audit_table_texts(conn)? != *fresh {
        return Err(StoreError::Tampered(
            "the database's audit tables are not defined as palisade defines them (a constraint or a column was changed): someone changed them outside palisade, which refuses to use the database".into(),
        ));
    }
    Ok(())
}

fn audit_table_texts(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut statement = conn.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN ('audit', 'audit_head') ORDER BY name",
    )?;
    let texts = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(texts)
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<i64> {
    // Cheap check outside a write transaction so a read-only look at a newer database
    // fails with the clear error instead of waiting for a write lock.
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > LATEST {
        return Err(StoreError::SchemaTooNew {
            found,
            known: LATEST,
        });
    }
    if found == LATEST {
        return Ok(found);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > LATEST {
        return Err(StoreError::SchemaTooNew {
            found,
            known: LATEST,
        });
    }
    let start = usize::try_from(found).map_err(|_| {
        StoreError::Invalid(format!(
            "the database reports schema version {found}; the file is damaged or not a palisade database"
        ))
    })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)?;
        tracing::debug!(version = index + 1, "applied schema migration");
    }
    // PRAGMA does not take bound parameters; LATEST is a compile-time integer.
    tx.execute_batch(&format!("PRAGMA user_version = {LATEST}"))?;
    tx.commit()?;
    Ok(found)
}
