//! The `Store` handle: one SQLite connection (WAL, busy timeout 5 s, foreign keys on).
//! Cheap to clone (shared connection behind a mutex); open a second `Store` for a
//! dedicated writer such as the gateway's audit task. All methods are blocking: async
//! callers use `tokio::task::spawn_blocking`.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front,
//! so concurrent writers queue on the busy timeout instead of failing on a lock upgrade,
//! and each mutation's audit row commits (or rolls back) with the mutation itself.
//! The method bodies live in one file per concept under `store/`.

mod agents;
pub(crate) mod approvals;
mod audit;
pub use audit::MIN_AUDIT_RETENTION;
mod channels;
mod folders;
mod links;
pub mod local;
mod messages;
mod policy;
mod rate;
mod rules;
mod secrets;
mod senders;
pub mod traffic;

pub use folders::validate_folder_name;

use crate::audit::AuditEntry;
use crate::crypto::MasterKey;
use crate::{Home, Result, StoreError};
use palisade_policy::SecretValue;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Actor recorded on audit rows when the caller did not name one.
pub const DEFAULT_ACTOR: &str = "cli";

/// How long rate events are kept regardless of key: the longest rate window a rule can
/// have (31 days) plus a day. Keys nobody asks about again are purged on open.
const RATE_EVENT_RETENTION_MS: i64 = 32 * 24 * 60 * 60 * 1000;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Who the audit rows of this handle's mutations name as actor.
    actor: Arc<str>,
    /// Whether a configuration change made through this handle waits until every
    /// running gateway has loaded it (see [`crate::gateways`]); off for gateways' own
    /// handles.
    sync_gateways: bool,
}

struct Inner {
    conn: Mutex<rusqlite::Connection>,
    key: MasterKey,
    home: Home,
    /// Set inside a write transaction (under the connection lock) when it raised the
    /// configuration version or appended audit rows: what to do once it committed.
    config_changed: AtomicBool,
    audited: AtomicBool,
    /// The schema version (`PRAGMA schema_version`, raised by every change to the
    /// schema) last found sound by [`crate::migrations::check_schema`]; -1 before the
    /// first write.
    schema_checked: AtomicI64,
    /// The newest end this handle committed but could not anchor (another process held
    /// the anchor's lock), checked once it can.
    owed_anchor: Mutex<Option<(i64, String)>>,
    /// For the local-upstreams list signed for a row: that row, and how far this
    /// process has read the log after it without finding a later change.
    local_scanned: Mutex<(i64, i64)>,
    /// The database's files as this connection opened them (see [`OpenFiles`]).
    files: Mutex<OpenFiles>,
}

/// Device and inode of the database file, its write-ahead log and its shared-memory
/// index as this connection has them open. SQLite keeps writing through the
/// descriptors it holds: a log moved aside or deleted while palisade ran took every row
/// written after it into a file no other process reads (the gateway went on sending
/// credentials, their rows visible to nobody, until `audit verify` found the cut).
/// Every write checks, under the write lock, that the names still lead to the files
/// this connection writes. Hand-written: SQLite's own check
/// (`SQLITE_FCNTL_HAS_MOVED`) covers only the main file, and rusqlite does not expose it.
struct OpenFiles {
    /// `None` for a file that did not exist yet (recorded when it first does).
    ids: [Option<(u64, u64)>; 3],
}

const DATABASE_FILES: [&str; 3] = ["palisade.db", "palisade.db-wal", "palisade.db-shm"];

impl OpenFiles {
    fn file_id(home: &Home, name: &str) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(home.root().join(name))
            .ok()
            .map(|meta| (meta.dev(), meta.ino()))
    }

    fn found(home: &Home) -> OpenFiles {
        OpenFiles {
            ids: DATABASE_FILES.map(|name| Self::file_id(home, name)),
        }
    }

    /// Whether every file is still the one this connection has open; a file SQLite
    /// made since is recorded.
    fn check(&mut self, home: &Home) -> Result<()> {
        for (name, id) in DATABASE_FILES.iter().zip(self.ids.iter_mut()) {
            let now = Self::file_id(home, name);
            match (*id, now) {
                (None, found) => *id = found,
                (Some(had), Some(found)) if had == found => {}
                (Some(_), _) => {
                    return Err(StoreError::Tampered(format!(
                        "{name} was moved, deleted or replaced while palisade had it open: \
                         what this process writes would reach no other reader; nothing more \
                         is written until palisade is restarted (`palisade audit verify` \
                         says what was lost)"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Result of a rate-limit check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateOutcome {
    Admitted {
        remaining: u32,
    },
    /// Not admitted; the oldest counted event leaves the window after `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

impl Store {
    /// Ensures the home, loads/creates the master key, opens the database and runs migrations.
    pub fn open(home: &Home) -> Result<Self> {
        home.ensure()?;
        // Made now, or a moment ago by another process opening the same new home (the
        // CLI while `palisade up` starts): its file's time says so (renaming the file
        // keeps it, and setting it takes the file's owner).
        // The file the key is read from: a link's own time said "new" for an old key.
        let home_is_new = match std::fs::metadata(home.master_key()) {
            Err(_) => true,
            Ok(meta) => meta
                .modified()
                .ok()
                .and_then(|made| made.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(60)),
        };
        let key = MasterKey::load_or_create(home)?;
        Self::open_in(home, key, home_is_new)
    }

    /// Like [`Store::open`] with a key the caller already has (tests, key rotation tools).
    pub fn open_with_key(home: &Home, key: MasterKey) -> Result<Self> {
        Self::open_in(home, key, true)
    }

    /// `home_is_new`: the master key was made by this open (or within the last minute).
    /// A database missing from a
    /// home that had its key starts a log whose anchor is marked (row 0): deleting the
    /// database and the anchor, letting a new log be anchored, then putting back an
    /// older copy cut to a head signed earlier, passed `audit verify` (the new anchor fit
    /// any log from its start). A key given from outside the home cannot tell.
    fn open_in(home: &Home, key: MasterKey, home_is_new: bool) -> Result<Self> {
        home.ensure()?;
        let path = home.database();
        // A new log is anchored at once (at row 0): an anchor is never created later
        // by a write, so a deleted one stays reported instead of coming back signed
        // over whatever the log had become.
        let new_log = std::fs::symlink_metadata(&path).is_err();
        create_private_file(&path)?;
        let mut conn = Connection::open(&path)?;
        // Processes opening a fresh home at once (the CLI while `palisade up` starts)
        // race to switch it to WAL and create the schema. SQLite answers some of those
        // races with SQLITE_BUSY at once instead of calling the busy handler (changing
        // the journal mode, a read lock that cannot become a write lock): every step
        // here is idempotent, so they are tried again for a bounded time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = configure(&conn)
                .and_then(|()| crate::migrations::check_schema(&conn))
                .and_then(|()| crate::migrations::migrate(&mut conn))
                .and_then(|from| crate::migrations::check_migrated_schema(&conn).map(|()| from))
                .and_then(|from| {
                    // The head of a log written before heads were signed is signed
                    // once, by the open that migrated it (never later: an unsigned head
                    // then is rows someone added without the key).
                    if from < crate::migrations::SIGNED_HEAD {
                        audit::sign_unsigned_head(&conn, &key, home, new_log)?;
                    }
                    if from < crate::migrations::SEALED_DESTINATIONS {
                        secrets::bind_destinations(&conn, &key)?;
                    }
                    if from < crate::migrations::SIGNED_GRANTS {
                        secrets::sign_grants(&conn, &key)?;
                    }
                    Ok(())
                })
                .and_then(|()| check_master_key(&conn, &key))
                .and_then(|()| purge_stale_rate_events(&conn));
            match attempt {
                Err(StoreError::Sql(rusqlite::Error::SqliteFailure(error, _)))
                    if error.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(
                        10 + u64::from(rand::random::<u8>() % 40),
                    ));
                }
                other => break other?,
            }
        }
        for side in ["palisade.db-wal", "palisade.db-shm"] {
            restrict_permissions(&home.root().join(side))?;
        }
        if new_log {
            if let Some(head) = audit::read_head(&conn)? {
                let restarted = (!home_is_new).then_some(0);
                audit::replace_anchor(home, &key, &head, true, restarted)?;
            }
        }
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                key,
                home: home.clone(),
                config_changed: AtomicBool::new(false),
                audited: AtomicBool::new(false),
                schema_checked: AtomicI64::new(-1),
                owed_anchor: Mutex::default(),
                local_scanned: Mutex::new((-1, 0)),
                files: Mutex::new(OpenFiles::found(home)),
            }),
            actor: Arc::from(DEFAULT_ACTOR),
            sync_gateways: true,
        })
    }

    /// This handle without waiting for gateways after configuration changes (a
    /// gateway's own handle: it loads its changes itself).
    pub fn without_gateway_sync(mut self) -> Store {
        self.sync_gateways = false;
        self
    }

    /// A handle on the same home and key, with the same actor, over a connection of
    /// its own: for long reads (verifying the audit log takes ~1.4 s per million rows)
    /// that must not hold this handle's connection, which every other call of its
    /// process waits for.
    pub fn another_connection(&self) -> Result<Store> {
        let other = Store::open_with_key(&self.inner.home, self.inner.key.duplicate())?;
        Ok(Store {
            actor: Arc::clone(&self.actor),
            sync_gateways: self.sync_gateways,
            ..other
        })
    }

    /// A handle on the same connection whose mutations are audited with `actor`
    /// (e.g. `web:admin`, `vault`).
    pub fn with_actor(&self, actor: &str) -> Store {
        Store {
            inner: Arc::clone(&self.inner),
            actor: Arc::from(actor),
            sync_gateways: self.sync_gateways,
        }
    }

    /// The actor this handle records on audit rows.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// SQLite `PRAGMA data_version` of this connection: changes when another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    /// A counter raised by every change to agents, tokens, secrets, grants, rules,
    /// approvals and settings (not by request audit rows or rate counters), so a
    /// gateway can poll for configuration changes without reloading under load.
    pub fn config_version(&self) -> Result<i64> {
        read_config_version(&self.conn())
    }

    /// Moves everything from the write-ahead log into the main database file and
    /// truncates the log (backups, tests that inspect the file).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    // --- settings ---
    /// The admin API key for the gateway's OneCLI-compatible API (created on first call, sealed).
    pub fn admin_key(&self, rotate: bool) -> Result<SecretValue> {
        const SETTING: &str = "admin_key";
        const ASSOCIATED: &str = "admin-key";
        self.write(|tx| {
            let existing = read_setting(tx, SETTING)?;
            if let (Some(sealed), false) = (&existing, rotate) {
                return self.key().open(ASSOCIATED, sealed);
            }
            let key = crate::crypto::new_token();
            let sealed = self.key().seal(ASSOCIATED, &key)?;
            write_setting(tx, SETTING, &sealed)?;
            let (event, decision) = if existing.is_some() {
                ("admin_key.rotate", "rotated")
            } else {
                ("admin_key.create", "created")
            };
            let mut entry = self.audit_entry(event);
            entry.decision = Some(decision.into());
            self.append_in(tx, &entry)?;
            Ok(key)
        })
    }

    // --- internals shared by the per-concept files ---

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (an open
        // transaction rolls back when dropped), so a poisoned lock is still usable.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committing only if it succeeds.
    /// Once committed (and the connection released): the audit anchor moves to the new
    /// head if rows were appended, and a configuration change is pushed to every
    /// running gateway before this returns.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        // A process that may end right after this write (the CLI, the web UI) holds the
        // anchor locked across it (see `audit::hold_anchor`); a gateway keeps what it
        // could not anchor and checks it later.
        let held = match self.sync_gateways {
            true => audit::hold_anchor(&self.inner.home)?,
            false => None,
        };
        let (out, version) = {
            let mut conn = self.conn();
            self.inner.config_changed.store(false, Ordering::Relaxed);
            self.inner.audited.store(false, Ordering::Relaxed);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            self.inner
                .files
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .check(&self.inner.home)?;
            self.check_schema_unchanged(&tx)?;
            let out = f(&tx)?;
            let version = if self.inner.config_changed.swap(false, Ordering::Relaxed) {
                Some(read_config_version(&tx)?)
            } else {
                None
            };
            let head = if self.inner.audited.swap(false, Ordering::Relaxed) {
                audit::read_head(&tx)?
            } else {
                None
            };
            tx.commit()?;
            if let Some(head) = head {
                audit::write_anchor(
                    &self.inner.home,
                    &self.inner.key,
                    &head,
                    &conn,
                    &self.inner.owed_anchor,
                    held.as_ref(),
                );
            }
            (out, version)
        };
        // Let go before waiting for gateways, which move the anchor themselves.
        drop(held);
        if let (Some(version), true) = (version, self.sync_gateways) {
            for gateway in crate::gateways::sync_gateways(&self.inner.home, version).unconfirmed {
                if gateway.refused {
                    crate::gateways::record_refused(&self.inner.home, &gateway);
                } else {
                    tracing::warn!(
                        gateway = %gateway.gateway,
                        reason = %gateway.reason,
                        "a running gateway did not confirm the change; it applies it within 200 ms"
                    );
                }
            }
        }
        Ok(out)
    }

    /// Checks the schema again if it changed since it was last checked (at open, and
    /// by every write since): a trigger or a constraint added while palisade runs
    /// would make this write differ from what it checked, as one there at open would.
    /// Inside the write transaction, so the schema cannot change before it commits.
    fn check_schema_unchanged(&self, tx: &Transaction<'_>) -> Result<()> {
        let version: i64 = tx.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
        if self.inner.schema_checked.load(Ordering::Relaxed) == version {
            return Ok(());
        }
        crate::migrations::check_migrated_schema(tx)?;
        self.inner.schema_checked.store(version, Ordering::Relaxed);
        Ok(())
    }

    /// Marks the running write transaction as having appended audit rows.
    fn mark_audited(&self) {
        self.inner.audited.store(true, Ordering::Relaxed);
    }

    /// Runs `f` in a read transaction so multi-statement reads see one snapshot.
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.finish()?;
        Ok(out)
    }

    /// An audit entry for a mutation made through this handle.
    fn audit_entry(&self, event: &str) -> AuditEntry {
        AuditEntry {
            event: event.to_string(),
            actor: Some(self.actor.to_string()),
            ..AuditEntry::default()
        }
    }

    /// Every mutation made through a `Store` handle lands here, so this is also where
    /// the configuration version is bumped, in the same transaction.
    fn append_in(&self, tx: &Transaction<'_>, entry: &AuditEntry) -> Result<i64> {
        self.inner.config_changed.store(true, Ordering::Relaxed);
        self.mark_audited();
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ('config_version', '1')
             ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
            [],
        )?;
        audit::append_in(tx, &self.inner.key, crate::now_ms(), entry)
    }
}

fn read_config_version(conn: &Connection) -> Result<i64> {
    let value = read_setting(conn, "config_version")?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The value of one row of `settings`, if it is there.
fn read_setting(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?)
}

/// Sets one row of `settings` (inside the caller's write transaction).
fn write_setting(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )?;
    Ok(())
}

/// Sets the connection PRAGMAs every Store relies on. The busy timeout comes first so
/// switching to WAL waits for, rather than fails on, a concurrent opener.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_millis(5000))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io(format!(
            "the database could not switch to WAL mode (got {mode}); is it on a network file system?"
        )));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Creates the database file 0600 before SQLite does, because SQLite creates files with
/// the process umask (often world-readable) and gives its -wal and -shm files the mode of
/// the database file.
fn create_private_file(path: &Path) -> Result<()> {
    // Closing any descriptor of a file drops every POSIX lock this process holds on
    // it, SQLite's included. A process that opens the store twice (the gateway: its
    // store and its audit writer) would lose the first connection's locks; another
    // process could then checkpoint and delete the WAL under it, and that connection
    // would never see a later change. So an existing database is never opened here.
    if path.exists() {
        return restrict_permissions(path);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            StoreError::Io(format!(
                "cannot open database {}: {e}; check the home directory's owner and permissions",
                path.display()
            ))
        })?;
    restrict_permissions(path)
}

/// Removes group/other access from an existing file (databases made by older tools).
fn restrict_permissions(path: &Path) -> Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io(format!(
                "cannot inspect {}: {e}",
                path.display()
            )))
        }
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
            |e| {
                StoreError::Io(format!(
                    "cannot make {} private: {e}; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ))
            },
        )?;
    }
    Ok(())
}

/// The settings row holding a value sealed with this home's master key.
const KEY_CHECK: &str = "master_key_check";

/// Refuses a master key that is not the one this home's values are sealed with (a
/// `PALISADE_MASTER_KEY` of another home, a replaced `master.key`): used anyway, it
/// sealed new secrets the running gateway could not open, which froze its whole policy
/// (no token rotation, no new block rule took effect) while every command said it was
/// done. A home made before this check is checked against one of its sealed secrets,
/// then given the check value.
fn check_master_key(conn: &Connection, key: &MasterKey) -> Result<()> {
    let mismatch = || {
        StoreError::MasterKey(format!(
            "this is not the key this home's values are sealed with: check {} (unset it to use the home's master.key) or the home's master.key",
            crate::crypto::MASTER_KEY_ENV
        ))
    };
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [KEY_CHECK],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(sealed) = stored {
        return key
            .open(KEY_CHECK, &sealed)
            .map(|_| ())
            .map_err(|_| mismatch());
    }
    // One value of each kind sealed before, with what it was sealed for: a secret for
    // its destination (or, not yet bound, its name).
    if let Some(secret) = secrets::SealedSecret::read(conn, 1)?.first() {
        if key.open(&secret.destination(), &secret.sealed).is_err()
            && key.open(&secret.name, &secret.sealed).is_err()
        {
            return Err(mismatch());
        }
    }
    let samples = [
        "SELECT 'admin-key', value FROM settings WHERE key = 'admin_key'",
        "SELECT 'agent-token:' || a.name, t.sealed FROM agent_tokens t JOIN agents a ON a.id = t.agent_id LIMIT 1",
        "SELECT 'channel:' || name, sealed FROM channels LIMIT 1",
    ];
    for query in samples {
        let sample: Option<(String, String)> = conn
            .query_row(query, [], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((associated, sealed)) = sample {
            key.open(&associated, &sealed).map_err(|_| mismatch())?;
        }
    }
    let sealed = key.seal(KEY_CHECK, &SecretValue::new("palisade".to_string()))?;
    conn.execute(
        "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
        (KEY_CHECK, &sealed),
    )?;
    // Another process may have written its own first: whichever is there decides.
    let stored: String = conn.query_row(
        "SELECT value FROM settings WHERE key = ?1",
        [KEY_CHECK],
        |row| row.get(0),
    )?;
    key.open(KEY_CHECK, &stored)
        .map(|_| ())
        .map_err(|_| mismatch())
}

/// Deletes rate events too old for any window. Checked with a read first so that an
/// ordinary open does not commit a write (which would bump every other connection's
/// `data_version` and make the gateway reload its policy for nothing).
fn purge_stale_rate_events(conn: &Connection) -> Result<()> {
    let cutoff = crate::now_ms() - RATE_EVENT_RETENTION_MS;
    let stale: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM rate_events WHERE at_ms < ?1)",
        [cutoff],
        |row| row.get(0),
    )?;
    if stale {
        conn.execute("DELETE FROM rate_events WHERE at_ms < ?1", [cutoff])?;
    }
    Ok(())
}

/// A stored row that does not decode: the database was edited or damaged.
fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!(
        "stored {what} is malformed ({detail}); the database may have been edited or damaged"
    ))
}

/// Names of secrets and rules: printable, one line, short enough for a table.
fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.trim() != name {
        return Err(StoreError::Invalid(format!(
            "{what} name {name:?} is empty or has surrounding spaces; choose a name like github-token"
        )));
    }
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{what} name {name:?} is too long or contains control characters; use at most 128 printable characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `another_connection` is a handle that does not wait for this one: while this
    /// handle's connection is held (a long read), the other reads and writes, with the
    /// same actor and key. On a shared connection the inner call would wait for ever.
    #[test]
    fn another_connection_does_not_wait_for_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Home::at(dir.path().join("home")))
            .unwrap()
            .with_actor("tester");
        let other = store.another_connection().unwrap();
        assert_eq!(other.actor(), "tester");
        let (done, finished) = std::sync::mpsc::channel();
        store
            .read(|_| {
                let other = other.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let _ = done.send(other.set_audit_retention(Some(Duration::from_secs(86_400))));
                });
                let row = finished
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the other handle waited for this one's connection");
                assert_eq!(row.unwrap(), 1);
                Ok(())
            })
            .unwrap();
        // Signed under the same key: this handle accepts what the other wrote.
        assert_eq!(
            store.audit_retention().unwrap(),
            Some(Duration::from_secs(86_400))
        );
    }
}
