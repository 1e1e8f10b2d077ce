//! Appending to, reading and verifying the hash-chained audit log.
//!
//! Appends read the head (`audit_head`), write the row with the next id and the head's
//! hash as `prev_hash`, and move the head, all inside the caller's `BEGIN IMMEDIATE`
//! transaction: the chain stays linear however many processes write.

use super::Store;
use crate::audit::{
    AuditEntry, AuditFilter, AuditRecord, CanonicalRow, PruneReport, VerifyReport, GENESIS_HASH,
};
use crate::crypto::MasterKey;
use crate::Home;
use crate::{Result, StoreError};
use rusqlite::types::Value;
use rusqlite::Transaction;

const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 10_000;

const AUDIT_COLUMNS: &str = "id, at_ms, event, agent, method, host, path, decision, rule, \
     secret, status, latency_ms, actor, approval_id, detail, prev_hash, hash";

/// One stored row, as text and numbers, before any interpretation.
struct RawAudit {
    id: i64,
    at_ms: i64,
    event: String,
    agent: Option<String>,
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    decision: Option<String>,
    rule: Option<String>,
    secret: Option<String>,
    status: Option<i64>,
    latency_ms: Option<f64>,
    actor: Option<String>,
    approval_id: Option<String>,
    detail: Option<String>,
    prev_hash: String,
    hash: String,
}

fn raw_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawAudit> {
    Ok(RawAudit {
        id: row.get(0)?,
        at_ms: row.get(1)?,
        event: row.get(2)?,
        agent: row.get(3)?,
        method: row.get(4)?,
        host: row.get(5)?,
        path: row.get(6)?,
        decision: row.get(7)?,
        rule: row.get(8)?,
        secret: row.get(9)?,
        status: row.get(10)?,
        latency_ms: row.get(11)?,
        actor: row.get(12)?,
        approval_id: row.get(13)?,
        detail: row.get(14)?,
        prev_hash: row.get(15)?,
        hash: row.get(16)?,
    })
}

impl RawAudit {
    fn canonical(&self) -> CanonicalRow<'_> {
        CanonicalRow {
            id: self.id,
            at_ms: self.at_ms,
            event: &self.event,
            agent: self.agent.as_deref(),
            method: self.method.as_deref(),
            host: self.host.as_deref(),
            path: self.path.as_deref(),
            decision: self.decision.as_deref(),
            rule: self.rule.as_deref(),
            secret: self.secret.as_deref(),
            status: self.status,
            latency_ms: self.latency_ms,
            actor: self.actor.as_deref(),
            approval_id: self.approval_id.as_deref(),
            detail: self.detail.as_deref(),
        }
    }

    fn decode(self) -> Result<AuditRecord> {
        let bad = |what: &str, detail: String| {
            super::corrupt(&format!("{what} of audit row {}", self.id), detail)
        };
        let status = match self.status {
            Some(s) => Some(u16::try_from(s).map_err(|e| bad("status", e.to_string()))?),
            None => None,
        };
        let detail = match &self.detail {
            Some(text) => {
                Some(serde_json::from_str(text).map_err(|e| bad("detail", e.to_string()))?)
            }
            None => None,
        };
        Ok(AuditRecord {
            id: self.id,
            at_ms: self.at_ms,
            entry: AuditEntry {
                event: self.event,
                agent: self.agent,
                method: self.method,
                host: self.host,
                path: self.path,
                decision: self.decision,
                rule: self.rule,
                secret: self.secret,
                status,
                latency_ms: self.latency_ms,
                actor: self.actor,
                approval_id: self.approval_id,
                detail,
            },
            hash: self.hash,
        })
    }
}

/// The last row's id and hash, as the head record has them.
pub(super) fn read_head(tx: &rusqlite::Connection) -> Result<Option<(i64, String)>> {
    use rusqlite::OptionalExtension;
    Ok(tx
        .prepare_cached("SELECT last_id, last_hash FROM audit_head WHERE id = 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

fn require_head(tx: &Transaction<'_>) -> Result<(i64, String)> {
    read_head(tx)?.ok_or_else(|| {
        StoreError::Invalid(
            "the audit head record is missing; the audit log was tampered with — run `palisade audit verify`"
                .into(),
        )
    })
}

/// Moves the head from `before` to `head`, signing it ([`head_mac`]) only if `before`
/// was signed: rows appended after an end someone without the key made would otherwise
/// sign that end over (the next write "confirming" forged rows), so then the signature
/// is left as it was and `audit verify` keeps reporting it.
fn write_head(
    tx: &Transaction<'_>,
    key: &MasterKey,
    before: &(i64, String),
    head: &(i64, String),
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE audit_head SET last_id = ?1, last_hash = ?2,
             head_mac = CASE WHEN head_mac = ?4 THEN ?3 ELSE head_mac END
         WHERE id = 1",
    )?
    .execute((head.0, &head.1, head_mac(key, head), head_mac(key, before)))?;
    Ok(())
}

const HEAD_PURPOSE: &str = "palisade audit head v1";

/// The signature of the log's end: the row hashes are a plain SHA-256 chain, which
/// anyone who can write the database could extend with rows of their own and move the
/// head over; they cannot sign the new head without the master key.
fn head_mac(key: &MasterKey, head: &(i64, String)) -> String {
    hex::encode(key.mac(HEAD_PURPOSE, format!("{}:{}", head.0, head.1).as_bytes()))
}

/// Signs the head if it carries no signature, for the one open that migrates a
/// database to signed heads: a new log's (`new_log`), or one whose signed anchor names
/// exactly its head. The schema version is the database's own, so anyone who can write
/// it can ask for this "migration" again (dropping the column, setting the version
/// back); signing only an end the anchor outside the database already vouches for
/// keeps that from signing rows they appended. Otherwise the head stays unsigned and
/// `audit verify` says so, until a person runs `palisade audit anchor`.
pub(super) fn sign_unsigned_head(
    conn: &rusqlite::Connection,
    key: &MasterKey,
    home: &Home,
    new_log: bool,
) -> Result<()> {
    if let Some(head) = read_head(conn)? {
        let vouched = new_log
            || read_anchor(&home.audit_anchor()).is_some_and(|anchor| {
                anchor.is_genuine(key)
                    && anchor.changed_at.is_none()
                    && anchor.last_id == head.0
                    && anchor.last_hash == head.1
            });
        if !vouched {
            tracing::warn!(
                "the audit log's end is not signed and its anchor does not name it; `palisade audit verify` says more"
            );
            return Ok(());
        }
        conn.execute(
            "UPDATE audit_head SET head_mac = ?1
             WHERE id = 1 AND head_mac IS NULL AND last_id = ?2 AND last_hash = ?3",
            (head_mac(key, &head), head.0, &head.1),
        )?;
    }
    Ok(())
}

/// Where the chain starts: the first row it keeps, the hash of the row before it
/// (the genesis hash while nothing was pruned) and the signature of that start.
struct Start {
    first_id: i64,
    prev_hash: String,
    mac: Option<String>,
}

impl Start {
    /// Whether the log starts after row 1 (older rows were pruned).
    fn moved(&self) -> bool {
        self.first_id != 1 || self.prev_hash != GENESIS_HASH
    }

    /// Row 1 with the genesis hash, or a start signed under `key`.
    fn is_genuine(&self, key: &MasterKey) -> bool {
        !self.moved()
            || self.mac.as_deref() == Some(start_mac(key, self.first_id, &self.prev_hash).as_str())
    }
}

const START_PURPOSE: &str = "palisade audit start v1";

fn start_mac(key: &MasterKey, first_id: i64, prev_hash: &str) -> String {
    hex::encode(key.mac(START_PURPOSE, format!("{first_id}:{prev_hash}").as_bytes()))
}

fn read_start(tx: &rusqlite::Connection) -> Result<Option<Start>> {
    use rusqlite::OptionalExtension;
    Ok(tx
        .query_row(
            "SELECT first_id, first_prev_hash, start_mac FROM audit_head WHERE id = 1",
            [],
            |row| {
                Ok(Start {
                    first_id: row.get(0)?,
                    prev_hash: row.get(1)?,
                    mac: row.get(2)?,
                })
            },
        )
        .optional()?)
}

fn require_start(tx: &Transaction<'_>) -> Result<Start> {
    read_start(tx)?.ok_or_else(|| StoreError::Invalid("the audit head record is missing".into()))
}

/// Most rows one pruning transaction deletes.
const PRUNE_CHUNK: i64 = 20_000;

/// The shortest retention [`Store::set_audit_retention`] accepts: a log kept for less
/// than a day is no record to look back on.
pub const MIN_AUDIT_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The `settings` key of the retention: `KEEP_MS:ROW:MAC`, where ROW is the
/// `audit.retention` row that set it and MAC signs both under the master key.
const RETENTION_SETTING: &str = "audit_retention";
const RETENTION_PURPOSE: &str = "palisade audit retention v1";

fn retention_mac(key: &MasterKey, keep_ms: i64, row: i64) -> String {
    hex::encode(key.mac(RETENTION_PURPOSE, format!("{keep_ms}:{row}").as_bytes()))
}

/// The retention in force (milliseconds), or `None` to keep every row.
///
/// The setting decides what gets deleted, so it is trusted only when palisade wrote it:
/// its signature must match, and the row that set it must be the log's latest
/// `audit.retention` row, so writing back an earlier, shorter setting (with its valid
/// signature) after a later change is refused too while that later change's row is in
/// the log.
/// The row the retention setting names, if one is set and readable.
fn retention_row(tx: &Transaction<'_>) -> Result<Option<i64>> {
    Ok(super::read_setting(tx, RETENTION_SETTING)?
        .and_then(|value| value.split(':').nth(1).and_then(|row| row.parse().ok())))
}

/// The audit table is read `NOT INDEXED` wherever what is read decides something (the
/// chain verified, the rows pruned, the latest retention row): an index whose contents
/// someone rewrote (its text kept, so the schema check passes) is read instead of the
/// table by a scan it covers, and showed verify edited rows as they were.
fn read_retention(tx: &Transaction<'_>, key: &MasterKey) -> Result<Option<i64>> {
    let Some(value) = super::read_setting(tx, RETENTION_SETTING)? else {
        return Ok(None);
    };
    let latest = latest_retention_row(tx)?;
    let refused = || {
        StoreError::Invalid(
            "the audit retention setting was not written by palisade (its signature does not match, or a later change was undone); nothing is pruned until it is set again with `palisade audit retention`"
                .into(),
        )
    };
    let mut parts = value.splitn(3, ':');
    let (Some(keep_ms), Some(row), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refused());
    };
    let (Ok(keep_ms), Ok(row)) = (keep_ms.parse::<i64>(), row.parse::<i64>()) else {
        return Err(refused());
    };
    if mac != retention_mac(key, keep_ms, row) || latest.is_some_and(|latest| latest != row) {
        return Err(refused());
    }
    Ok(Some(keep_ms))
}

/// The log's latest `audit.retention` row, read from the table itself.
fn latest_retention_row(tx: &Transaction<'_>) -> Result<Option<i64>> {
    Ok(tx.query_row(
        "SELECT max(id) FROM audit NOT INDEXED WHERE event = 'audit.retention'",
        [],
        |row| row.get(0),
    )?)
}

/// Deletes up to [`PRUNE_CHUNK`] rows from the start of the log, stopping before
/// `keep_from`, and moves the signed start after them; `None` once the start is there.
/// The rows it deletes are checked again inside its own transaction (their ids, links
/// and hashes from the signed start), so a row edited after the pruning's verification
/// and before its deletion stops the pruning instead of going unnoticed; and each must
/// be older than `before_ms`, the time the pruning was asked for: `keep_from` was
/// worked out from the rows' times in another transaction, and times set back there and
/// put back before the deletion (review round nine) made a pruning of rows older than
/// 30 days delete the whole log, each row checked and found whole.
fn prune_chunk(
    tx: &Transaction<'_>,
    key: &MasterKey,
    keep_from: i64,
    before_ms: i64,
) -> Result<Option<u64>> {
    let start = require_start(tx)?;
    if start.first_id >= keep_from {
        return Ok(None);
    }
    let changed = |id: i64| {
        StoreError::Invalid(format!(
            "audit row {id} changed while it was being pruned; pruning stopped there — run `palisade audit verify`"
        ))
    };
    if !start.is_genuine(key) {
        return Err(changed(start.first_id));
    }
    let upto = keep_from.min(start.first_id.saturating_add(PRUNE_CHUNK));
    let mut select = tx.prepare(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit NOT INDEXED WHERE id >= ?1 AND id < ?2 ORDER BY id"
    ))?;
    let mut rows = select.query([start.first_id, upto])?;
    let (mut expected_id, mut before_start) = (start.first_id, start.prev_hash);
    while let Some(row) = rows.next()? {
        let raw = raw_from_row(row).map_err(|_| changed(expected_id))?;
        if raw.id != expected_id
            || raw.prev_hash != before_start
            || raw.canonical().chain_hash(&before_start)? != raw.hash
        {
            return Err(changed(expected_id));
        }
        if raw.at_ms >= before_ms {
            return Err(StoreError::Invalid(format!(
                "audit row {} is not older than the pruning's time, though the pruning was planned to remove it: the log's times changed while it was being pruned; pruning stopped there — run `palisade audit verify`",
                raw.id
            )));
        }
        before_start = raw.hash;
        expected_id += 1;
    }
    if expected_id != upto {
        return Err(changed(expected_id));
    }
    drop(rows);
    drop(select);
    let removed = tx.execute("DELETE FROM audit WHERE id < ?1", [upto])? as u64;
    tx.execute(
        "UPDATE audit_head SET first_id = ?1, first_prev_hash = ?2, start_mac = ?3 WHERE id = 1",
        (upto, &before_start, start_mac(key, upto, &before_start)),
    )?;
    Ok(Some(removed))
}

/// The statement that inserts one row, with the columns in [`AUDIT_COLUMNS`] order.
const INSERT_ROW: &str = "INSERT INTO audit (id, at_ms, event, agent, method, host, path, \
     decision, rule, secret, status, latency_ms, actor, approval_id, detail, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// Appends one row inside `tx` (which must be a write transaction) and returns its id.
pub(super) fn append_in(
    tx: &Transaction<'_>,
    key: &MasterKey,
    at_ms: i64,
    entry: &AuditEntry,
) -> Result<i64> {
    let before = require_head(tx)?;
    let mut head = before.clone();
    insert_row(
        &mut *tx.prepare_cached(INSERT_ROW)?,
        &mut head,
        at_ms,
        entry,
    )?;
    write_head(tx, key, &before, &head)?;
    Ok(head.0)
}

/// Inserts the row after `head` (last id and hash) with `insert` (a prepared
/// [`INSERT_ROW`]) and advances `head` to it. The head record itself is written by the
/// caller: once per transaction is enough, since nothing else appends inside it.
fn insert_row(
    insert: &mut rusqlite::Statement<'_>,
    head: &mut (i64, String),
    at_ms: i64,
    entry: &AuditEntry,
) -> Result<()> {
    let (last_id, prev_hash) = (head.0, head.1.as_str());
    let id = last_id + 1;
    let detail = match &entry.detail {
        Some(value) => Some(
            serde_json::to_string(value)
                .map_err(|e| StoreError::Invalid(format!("audit detail cannot be encoded: {e}")))?,
        ),
        None => None,
    };
    // SQLite stores NaN as NULL; normalising first keeps the hashed value and the stored
    // value identical.
    let latency_ms = entry.latency_ms.filter(|l| l.is_finite());
    let canonical = CanonicalRow {
        id,
        at_ms,
        event: &entry.event,
        agent: entry.agent.as_deref(),
        method: entry.method.as_deref(),
        host: entry.host.as_deref(),
        path: entry.path.as_deref(),
        decision: entry.decision.as_deref(),
        rule: entry.rule.as_deref(),
        secret: entry.secret.as_deref(),
        status: entry.status.map(i64::from),
        latency_ms,
        actor: entry.actor.as_deref(),
        approval_id: entry.approval_id.as_deref(),
        detail: detail.as_deref(),
    };
    let hash = canonical.chain_hash(prev_hash)?;
    let inserted = insert.execute(rusqlite::params![
        id,
        at_ms,
        canonical.event,
        canonical.agent,
        canonical.method,
        canonical.host,
        canonical.path,
        canonical.decision,
        canonical.rule,
        canonical.secret,
        canonical.status,
        canonical.latency_ms,
        canonical.actor,
        canonical.approval_id,
        canonical.detail,
        prev_hash,
        &hash,
    ]);
    match inserted {
        Ok(_) => {
            *head = (id, hash);
            Ok(())
        }
        // Every column is given and the id is the head's next: only a row put in the
        // way (or a constraint the schema check has not seen) fails it.
        Err(rusqlite::Error::SqliteFailure(failure, detail))
            if failure.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Tampered(format!(
                "the audit log's next row ({id}) cannot be written ({}): a row was put in its way outside palisade",
                detail.unwrap_or_else(|| failure.to_string())
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// A report with no verified end, for [`Store::verify_chain`].
fn no_end(report: VerifyReport) -> (VerifyReport, Option<(i64, String)>) {
    (report, None)
}

fn bad_row(rows: u64, id: i64, problem: impl Into<String>) -> VerifyReport {
    VerifyReport {
        rows,
        ok: false,
        first_bad_id: Some(id),
        problem: Some(problem.into()),
        starts_at: None,
    }
}

/// What `audit.anchor` holds: the newest row any process committed, signed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Anchor {
    last_id: i64,
    last_hash: String,
    /// Set once a writer found the row the anchor named changed or gone: that row, kept
    /// on every later anchor until a person signs the log anew (`audit anchor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_at: Option<i64>,
    /// HMAC-SHA256 (hex) of `last_id:last_hash` (and `:changed:N` when marked) under a
    /// key derived from the master key.
    mac: String,
}

impl Anchor {
    fn signed(key: &MasterKey, head: &(i64, String), changed_at: Option<i64>) -> Anchor {
        Anchor {
            last_id: head.0,
            last_hash: head.1.clone(),
            changed_at,
            mac: anchor_mac(key, head.0, &head.1, changed_at),
        }
    }

    fn is_genuine(&self, key: &MasterKey) -> bool {
        self.mac == anchor_mac(key, self.last_id, &self.last_hash, self.changed_at)
    }
}

const ANCHOR_PURPOSE: &str = "palisade audit anchor v1";

fn anchor_mac(key: &MasterKey, id: i64, hash: &str, changed_at: Option<i64>) -> String {
    let signed = match changed_at {
        None => format!("{id}:{hash}"),
        Some(row) => format!("{id}:{hash}:changed:{row}"),
    };
    hex::encode(key.mac(ANCHOR_PURPOSE, signed.as_bytes()))
}

/// Moves the anchor to `head` unless it already records a later row (processes commit
/// and anchor in either order), and only from an anchor that still holds: signed, and
/// naming a row the log still has with the hash it signed (`conn` reads the log as
/// committed). An anchor that is missing, unsigned or no longer matches stays as it
/// is, so `audit verify` keeps reporting it: moving it on would sign whatever the log
/// had become (rows deleted from the end, or re-chained, by someone without the key).
/// Only [`Store::reanchor_audit`], a person's decision, replaces such an anchor.
/// Failures are logged: the rows are committed either way.
pub(super) fn write_anchor(
    home: &Home,
    key: &MasterKey,
    head: &(i64, String),
    conn: &rusqlite::Connection,
    owed: &std::sync::Mutex<Option<(i64, String)>>,
    held: Option<&std::fs::File>,
) {
    let mut owed = owed.lock().unwrap_or_else(|p| p.into_inner());
    match try_write_anchor(home, key, head, conn, &mut owed, held) {
        Ok(None) => {}
        Ok(Some(kept)) => palisade_policy::budgeted!(
            warn,
            anchor = %home.audit_anchor().display(),
            "the audit anchor was not moved: {kept}; `palisade audit verify` says more"
        ),
        Err(e) => palisade_policy::budgeted!(warn, error = %e, "could not move the audit anchor"),
    }
}

/// Every anchor is written as this many bytes (JSON padded with spaces), so a new one
/// always covers the whole of the old one.
const ANCHOR_RECORD: usize = 512;

/// The anchor is rewritten in place under an exclusive lock on the file itself, and
/// read under a shared one, so a reader never sees half an anchor. In place rather than
/// a new file renamed over the old: the gateway moves the anchor with every batch of
/// rows, and creating, renaming and freeing a file each time (ext4 also flushes the
/// data of a file renamed over another) was a quarter of the audit writer's work.
/// The file is never created here, and never opened through a link. `Ok(Some(why))`:
/// the anchor was left as it was, for that reason.
///
/// The lock is waited for a bounded time ([`ANCHOR_LOCK_WAIT`]): another process holding
/// it (a shared lock needs only read access) froze the anchor while rows were written,
/// cut and mended unseen, and hung every write. The end this process could not anchor
/// is `owed`; once the anchor can be moved again, an owed end the log no longer has
/// (with its hash) is marked on the anchor, as a changed anchored row is. While one is
/// owed the lock is only tried, not waited for.
fn try_write_anchor(
    home: &Home,
    key: &MasterKey,
    head: &(i64, String),
    conn: &rusqlite::Connection,
    owed: &mut Option<(i64, String)>,
    held: Option<&std::fs::File>,
) -> std::io::Result<Option<&'static str>> {
    let moved = move_anchor(home, key, conn, head, owed.as_ref(), held);
    match moved {
        // The anchor now vouches for every row this process committed, or records
        // that one of them was lost: nothing is owed any more.
        Ok(Moved::Yes(said)) => {
            *owed = None;
            Ok(said)
        }
        // Whatever kept it (missing for a while, locked, unreadable, unsigned, a full
        // disk), this process's end is owed, and checked once the anchor can move
        // again: an anchor put aside, rows written and cut meanwhile and the anchor
        // put back passed verify.
        Ok(Moved::No(why)) => {
            owe(owed, head);
            Ok(Some(why))
        }
        Err(e) => {
            owe(owed, head);
            Err(e)
        }
    }
}

/// Keeps the newest end this process committed and could not anchor.
fn owe(owed: &mut Option<(i64, String)>, head: &(i64, String)) {
    if owed.as_ref().is_none_or(|(id, _)| *id < head.0) {
        *owed = Some(head.clone());
    }
}

/// What [`move_anchor`] did.
enum Moved {
    /// The anchor is at the log's end or past it (marked, if it found rows lost),
    /// with what to warn about.
    Yes(Option<&'static str>),
    /// It was left as it was, for this reason.
    No(&'static str),
}

/// Moves the anchor to the log's end (see [`try_write_anchor`]), checking `head` (the
/// end this process just committed) and `owed` (an end it committed earlier and could
/// not anchor) once the anchor is read and found genuine: one the log no longer has is
/// marked on the anchor. Checked under the anchor's lock, since the end read below is
/// the log's as it is now: a process holding the lock for a moment (a shared lock needs
/// only read access) let rows just committed be cut and the head put back before this
/// read it, and the anchor, finding the end no further than itself, stayed unmarked
/// (review round eight: five credentialed requests went out with no row and verify said
/// intact).
fn move_anchor(
    home: &Home,
    key: &MasterKey,
    conn: &rusqlite::Connection,
    head: &(i64, String),
    owed: Option<&(i64, String)>,
    held: Option<&std::fs::File>,
) -> std::io::Result<Moved> {
    let failed = |e: crate::StoreError| std::io::Error::other(e.to_string());
    // The anchor this write already holds locked (see [`hold_anchor`]), or opened and
    // locked now.
    let opened;
    let file = match held {
        Some(file) => file,
        None => {
            opened = match open_anchor(home)? {
                Ok(file) => file,
                Err(why) => return Ok(Moved::No(why)),
            };
            let wait = match owed {
                Some(_) => std::time::Duration::ZERO,
                None => ANCHOR_LOCK_WAIT,
            };
            if !lock_within(&opened, true, wait)? {
                return Ok(Moved::No("another process holds it locked"));
            }
            &opened
        }
    };
    let mut text = String::new();
    {
        use std::io::{Read, Seek};
        let mut reading = file;
        reading.seek(std::io::SeekFrom::Start(0))?;
        reading.read_to_string(&mut text)?;
    }
    let Ok(current) = serde_json::from_str::<Anchor>(&text) else {
        return Ok(Moved::No("it cannot be read"));
    };
    if !current.is_genuine(key) {
        return Ok(Moved::No("it does not carry a valid signature"));
    }
    let mut owed_lost = None;
    for (id, hash) in owed.into_iter().chain([head]) {
        if !anchored_row_holds(conn, *id, hash).map_err(failed)? {
            owed_lost = Some(*id);
            break;
        }
    }
    // The end as it is now (another process may have written past this one's head
    // since), and whether it is signed. The anchor names the end whose signature was
    // checked here, not the head the writer read before its commit: two reads of the
    // head that differ (an outside review made them differ through the schema) must
    // not sign one while checking the other.
    let (end, signed): ((i64, String), Option<String>) = conn
        .query_row(
            "SELECT last_id, last_hash, head_mac FROM audit_head WHERE id = 1",
            [],
            |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)),
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let behind = current.last_id < end.0;
    let lost_unmarked = owed_lost.is_some() && current.changed_at.is_none();
    if !behind && !lost_unmarked {
        return Ok(Moved::Yes(None));
    }
    // A row the anchor named that is changed or gone is marked on the anchor, which
    // moves on all the same: left behind, it was "frozen" there by anyone who broke
    // that row for a while, and the rows written meanwhile could be cut and the row
    // mended unseen. The mark stays on every later anchor.
    // So is an end that is not signed (rows appended without the key, which the writer
    // then extended without signing): moved on unmarked, the anchor would come to name
    // that end, and vouch for it. And so is an end this process owed that is gone.
    let end_signed = signed.as_deref() == Some(head_mac(key, &end).as_str());
    let (changed_at, said) = match current.changed_at {
        Some(row) => (Some(row), None),
        None if owed_lost.is_some() => (
            owed_lost,
            Some("rows this process wrote were changed or cut before the anchor could record them; the anchor records that"),
        ),
        None if !end_signed => (
            Some(current.last_id + 1),
            Some("the log's end is not signed; the anchor records that and moves on"),
        ),
        None => match anchored_row_holds(conn, current.last_id, &current.last_hash) {
            Ok(true) => (None, None),
            Ok(false) => (
                Some(current.last_id),
                Some("the log no longer had the row it named with that hash; the anchor records that and moves on"),
            ),
            Err(e) => return Err(failed(e)),
        },
    };
    // Marked without moving (the end is not past the anchor): the anchor keeps its row.
    let at = match behind && (end_signed || changed_at.is_some()) {
        true => end,
        false => (current.last_id, current.last_hash.clone()),
    };
    overwrite_anchor(file, &Anchor::signed(key, &at, changed_at), text.len())?;
    Ok(Moved::Yes(said))
}

/// The anchor opened to be rewritten in place: never through a link, never created,
/// and only a regular file (a FIFO there made every write wait for ever on its read).
/// `Ok(Err(why))`: there is none to rewrite.
fn open_anchor(home: &Home) -> std::io::Result<Result<std::fs::File, &'static str>> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(home.audit_anchor());
    let file = match opened {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err("it is missing")),
        other => other?,
    };
    if !file.metadata()?.is_file() {
        return Ok(Err("it is not a regular file"));
    }
    Ok(Ok(file))
}

/// Writes `anchor` over the locked anchor file, whose text was `old_len` bytes long.
fn overwrite_anchor(file: &std::fs::File, anchor: &Anchor, old_len: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut record = serde_json::to_vec(anchor).map_err(std::io::Error::other)?;
    if record.len() < ANCHOR_RECORD {
        record.resize(ANCHOR_RECORD - 1, b' ');
        record.push(b'\n');
    }
    file.write_all_at(&record, 0)?;
    if old_len > record.len() {
        file.set_len(record.len() as u64)?;
    }
    Ok(())
}

/// Marks the anchor (if it holds and is not marked yet) as having found the log
/// changed just after the row it names: the next row could not be written, because
/// the database was changed outside palisade (see [`crate::StoreError::Tampered`]).
/// `audit verify` then reports it until a person signs the log anew.
pub(super) fn mark_anchor(home: &Home, key: &MasterKey) -> Result<()> {
    let fail = |e: std::io::Error| StoreError::Io(format!("cannot mark the audit anchor: {e}"));
    let mut file = match open_anchor(home).map_err(fail)? {
        Ok(file) => file,
        Err(_) => return Ok(()),
    };
    if !lock_within(&file, true, ANCHOR_LOCK_WAIT).map_err(fail)? {
        return Err(fail(std::io::Error::other(
            "another process holds it locked",
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(fail)?;
    let Ok(current) = serde_json::from_str::<Anchor>(&text) else {
        return Ok(());
    };
    if !current.is_genuine(key) || current.changed_at.is_some() {
        return Ok(());
    }
    let head = (current.last_id, current.last_hash.clone());
    let marked = Anchor::signed(key, &head, Some(current.last_id + 1));
    overwrite_anchor(&file, &marked, text.len()).map_err(fail)
}

/// The signed anchor of `head`, unmarked, as JSON.
fn anchor_record(
    key: &MasterKey,
    head: &(i64, String),
    changed_at: Option<i64>,
) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(&Anchor::signed(key, head, changed_at)).map_err(std::io::Error::other)
}

/// Whether the row `id` is still in the log with the hash `hash` (as an anchor signed
/// it), or is the row just before the log's start (pruned) with that hash, or before
/// that (pruned: the start's own hash vouches for it).
fn anchored_row_holds(conn: &rusqlite::Connection, id: i64, hash: &str) -> Result<bool> {
    use rusqlite::OptionalExtension;
    let found: Option<String> = conn
        .prepare_cached("SELECT hash FROM audit NOT INDEXED WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    Ok(match found {
        Some(found) => found == hash,
        None => read_start(conn)?
            .is_some_and(|start| start.first_id - 1 == id && start.prev_hash == hash),
    })
}

/// The anchor locked for a whole write by a process that may end right after it (the
/// CLI; the web UI too): such a writer keeps no owed end for long, so a row it
/// committed while another process held the anchor's lock (a shared lock needs only
/// read access), then cut with the head put back, went unseen for good (review, audit
/// round ten). It takes the lock first, waiting [`ANCHOR_LOCK_WAIT`], and writes nothing
/// if it cannot. `Ok(None)`: there is no anchor to lock (missing, or not a file), which
/// the anchor's own checks report.
pub(super) fn hold_anchor(home: &Home) -> Result<Option<std::fs::File>> {
    // An anchor that cannot be opened (a link, a directory, gone) is reported by the
    // anchor's own checks after the write, as before.
    let Ok(Ok(file)) = open_anchor(home) else {
        return Ok(None);
    };
    if !lock_within(&file, true, ANCHOR_LOCK_WAIT).unwrap_or(true) {
        return Err(StoreError::Invalid(format!(
            "another process holds the audit anchor ({}) locked, so nothing was changed: a change made now could be recorded and its row cut unseen. Try again; if it stays locked, find the process (`fuser {}`) and run `palisade audit verify`",
            home.audit_anchor().display(),
            home.audit_anchor().display()
        )));
    }
    Ok(Some(file))
}

/// How long a writer or reader of the anchor waits for its lock.
const ANCHOR_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the anchor's lock (exclusive or shared) within `wait`; whether it did.
fn lock_within(
    file: &std::fs::File,
    exclusive: bool,
    wait: std::time::Duration,
) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let tried = match exclusive {
            true => file.try_lock(),
            false => file.try_lock_shared(),
        };
        match tried {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Writes the anchor of `head` whatever was there (a link included: the new file is
/// renamed over it), for a new log and for [`Store::reanchor_audit`]. `new_only`: only
/// if there is no anchor yet. `changed_at`: the anchor is marked (see [`Anchor`]).
pub(super) fn replace_anchor(
    home: &Home,
    key: &MasterKey,
    head: &(i64, String),
    new_only: bool,
    changed_at: Option<i64>,
) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.audit_anchor();
    let fail = |e: std::io::Error| {
        StoreError::Io(format!(
            "cannot write the audit anchor {}: {e}",
            path.display()
        ))
    };
    let record = anchor_record(key, head, changed_at).map_err(fail)?;
    if new_only {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        return match created {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(fail(e)),
            Ok(mut file) => file.write_all(&record).map_err(fail),
        };
    }
    let fresh = path.with_extension(format!("new-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .map_err(fail)?;
    let written = file
        .write_all(&record)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&fresh, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&fresh);
        return Err(fail(e));
    }
    Ok(())
}

fn read_anchor(path: &std::path::Path) -> Option<Anchor> {
    use std::os::unix::fs::OpenOptionsExt;
    // Not through a link, and not a FIFO (opening one waited for a writer, and reading
    // it for data: `audit verify` hung).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    if !lock_within(&file, false, ANCHOR_LOCK_WAIT).ok()? {
        return None;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Compares a verified chain (its rows by id → hash, through `hash_of`) with the anchor
/// as it was read before the chain's snapshot was taken (`anchor`): the anchor moves
/// only after a commit, so one read first never names a row the snapshot cannot see,
/// however many rows other processes append meanwhile.
fn check_anchor(
    path: &std::path::Path,
    anchor: Option<Anchor>,
    key: &MasterKey,
    rows: u64,
    (first_id, first_prev): (i64, &str),
    last_id: i64,
    hash_of: impl Fn(i64) -> Result<Option<String>>,
) -> Result<Option<VerifyReport>> {
    let Some(anchor) = anchor else {
        if rows == 0 {
            return Ok(None);
        }
        return Ok(Some(bad_row(
            rows,
            last_id.max(1),
            format!(
                "the anchor {} is missing, unreadable or held locked by another process, so deleted rows at the end cannot be ruled out; once you are sure nothing was removed (a home last written by a palisade without anchors, or one restored from a copy), `palisade audit anchor` signs the log's end as it is now",
                path.display()
            ),
        )));
    };
    if !anchor.is_genuine(key) {
        return Ok(Some(bad_row(
            rows,
            anchor.last_id.max(1),
            format!(
                "the anchor {} does not carry a valid signature; it was edited or written with another master key",
                path.display()
            ),
        )));
    }
    if anchor.changed_at == Some(0) {
        return Ok(Some(bad_row(
            rows,
            1,
            "the log was started again in a home that had one (its database was missing while its master key was there), so what it held before is not vouched for: if you removed the database yourself, run `palisade audit anchor`; if not, a copy of an older database may have been put back".to_string(),
        )));
    }
    if let Some(row) = anchor.changed_at {
        return Ok(Some(bad_row(
            rows,
            row.max(1),
            format!(
                "the log was found altered at row {row} (a row changed or gone, or rows added without the key) by a palisade writing after it, and the anchor records it; whatever the log looks like now"
            ),
        )));
    }
    if anchor.last_id > last_id {
        return Ok(Some(bad_row(
            rows,
            last_id + 1,
            format!(
                "the log ends at row {last_id} but its anchor records row {}; rows were deleted from the end (or the database was restored from an older copy)",
                anchor.last_id
            ),
        )));
    }
    if anchor.last_id < first_id - 1 {
        // A pruning writes its own row first, which moves the anchor past every row it
        // removes: an anchor before the start was put back from an older copy (or fell
        // behind when it could not be written), and says nothing about the log's end.
        return Ok(Some(bad_row(
            rows,
            first_id,
            format!(
                "the anchor {} records row {}, before the log's start at row {first_id}: an older anchor was put back, so deleted rows at the end cannot be ruled out",
                path.display(),
                anchor.last_id
            ),
        )));
    }
    if anchor.last_id == first_id - 1 {
        // Of the rows before the start, only that one is still known (by its hash).
        if anchor.last_hash != first_prev {
            return Ok(Some(bad_row(
                rows,
                first_id,
                "the hash the log's start records is not the one its anchor records; the log was rewritten",
            )));
        }
        return Ok(None);
    }
    if anchor.last_id > 0 && hash_of(anchor.last_id)?.as_deref() != Some(anchor.last_hash.as_str())
    {
        return Ok(Some(bad_row(
            rows,
            anchor.last_id,
            format!(
                "row {} does not have the hash its anchor records; the log was rewritten from there",
                anchor.last_id
            ),
        )));
    }
    Ok(None)
}

impl Store {
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<i64> {
        self.write(|tx| {
            self.mark_audited();
            append_in(tx, self.key(), crate::now_ms(), entry)
        })
    }

    /// One transaction for many rows (the gateway's writer batches).
    pub fn append_audit_batch(&self, entries: &[(i64, AuditEntry)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // The head is read and written once per batch, not per row: the gateway appends
        // at request rate, and those two statements per row were about a fifth of the
        // writer's instructions per row (callgrind, 40-row batches, hashing excluded).
        self.write(|tx| {
            self.mark_audited();
            let before = require_head(tx)?;
            let mut head = before.clone();
            // One prepared statement for the batch (a cached statement per row cost a
            // formatted SQL string and a cache lookup each; re-parsing it per row was
            // half of the audit writer's CPU in bench/vault.sh).
            let mut insert = tx.prepare_cached(INSERT_ROW)?;
            for (at_ms, entry) in entries {
                insert_row(&mut insert, &mut head, *at_ms, entry)?;
            }
            drop(insert);
            write_head(tx, self.key(), &before, &head)
        })
    }

    /// Marks the audit anchor as having found the log changed outside palisade (the
    /// gateway's writer, when its rows cannot be written: see
    /// [`crate::StoreError::Tampered`]).
    pub fn mark_audit_altered(&self) -> Result<()> {
        mark_anchor(self.home(), self.key())
    }

    pub fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut conditions: Vec<&str> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        let text_filters = [
            ("agent = ?", &filter.agent),
            ("event = ?", &filter.event),
            ("decision = ?", &filter.decision),
            ("host = ?", &filter.host),
            ("approval_id = ?", &filter.approval_id),
        ];
        for (condition, value) in text_filters {
            if let Some(value) = value {
                conditions.push(condition);
                params.push(Value::Text(value.clone()));
            }
        }
        if filter.approval_decisions {
            conditions.push("event IN ('approval.decide', 'approval.close', 'approval.refused')");
        }
        if let Some(since) = filter.since_ms {
            conditions.push("at_ms >= ?");
            params.push(Value::Integer(since));
        }
        if let Some(until) = filter.until_ms {
            conditions.push("at_ms < ?");
            params.push(Value::Integer(until));
        }
        if let Some(text) = filter.text.as_deref().filter(|t| !t.is_empty()) {
            // LIKE with the wildcards of the search text escaped, so `%` and `_` match
            // themselves; instr would be case-sensitive.
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            conditions.push(
                "(event || ' ' || coalesce(agent, '') || ' ' || coalesce(method, '') || ' ' \
                 || coalesce(host, '') || ' ' || coalesce(path, '') || ' ' \
                 || coalesce(decision, '') || ' ' || coalesce(rule, '') || ' ' \
                 || coalesce(secret, '') || ' ' || coalesce(actor, '') || ' ' \
                 || coalesce(approval_id, '') || ' ' || coalesce(detail, '')) LIKE ? ESCAPE '\\'",
            );
            params.push(Value::Text(format!("%{escaped}%")));
        }
        if let Some(before) = filter.before_id {
            conditions.push("id < ?");
            params.push(Value::Integer(before));
        }
        if let Some(after) = filter.after_id {
            conditions.push("id > ?");
            params.push(Value::Integer(after));
        }
        let limit = filter
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .min(MAX_LIST_LIMIT);
        params.push(Value::Integer(limit as i64));
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql =
            // Not through an index, as verify reads: an index rebuilt outside palisade
            // under its own text hid an agent's rows from `audit list --agent`.
            format!("SELECT {AUDIT_COLUMNS} FROM audit NOT INDEXED {where_clause} ORDER BY id DESC LIMIT ?");
        self.read(|tx| {
            let mut stmt = tx.prepare(&sql)?;
            let raw = stmt
                .query_map(rusqlite::params_from_iter(params), raw_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.into_iter().map(RawAudit::decode).collect()
        })
    }

    /// Recomputes the chain from the first row and compares the end with the head record.
    /// Reads one snapshot, so appends running meanwhile neither break nor extend it.
    pub fn verify_audit(&self) -> Result<VerifyReport> {
        Ok(self.verify_chain(true)?.0)
    }

    /// Signs the log's end as its anchor, whatever the anchor said: after a restore,
    /// for a home written by a palisade without anchors, or once a person has looked
    /// into a reported mismatch. Refused (the report says why) unless the rows in the
    /// database form an intact chain; rows deleted from the end before this can no
    /// longer be detected.
    /// The signing is recorded as an `audit.anchor` row naming the row signed and what
    /// `audit verify` said before.
    pub fn reanchor_audit(&self) -> Result<VerifyReport> {
        let before = self.verify_audit()?;
        let (report, end) = self.verify_chain(false)?;
        if let (true, Some(end)) = (report.ok, end) {
            // The head signed as it is (if it still is the end just verified), then the
            // anchor; the row recording it moves both on.
            self.write(|tx| {
                tx.execute(
                    "UPDATE audit_head SET head_mac = ?1 WHERE id = 1 AND last_id = ?2 AND last_hash = ?3",
                    (head_mac(self.key(), &end), end.0, &end.1),
                )?;
                Ok(())
            })?;
            replace_anchor(self.home(), self.key(), &end, false, None)?;
            self.append_audit(&AuditEntry {
                event: "audit.anchor".into(),
                detail: Some(serde_json::json!({
                    "signed_row": end.0,
                    "verify_said": before.problem,
                })),
                ..AuditEntry::default()
            })?;
        }
        Ok(report)
    }

    /// [`Store::verify_audit`], comparing with the anchor when `anchored`; with an
    /// intact chain, the id and hash it ends at.
    fn verify_chain(&self, anchored: bool) -> Result<(VerifyReport, Option<(i64, String)>)> {
        // Before the read transaction's first statement, which takes its snapshot.
        let anchor_path = self.home().audit_anchor();
        let anchor = read_anchor(&anchor_path);
        self.read(|tx| {
            let Some((head_id, head_hash)) = read_head(tx)? else {
                return Ok(no_end(bad_row(
                    0,
                    1,
                    "the audit head record is missing, so truncation cannot be ruled out",
                )));
            };
            // The same record as the head just read, so it is there.
            let start = require_start(tx)?;
            if !start.is_genuine(self.key()) {
                return Ok(no_end(bad_row(
                    0,
                    start.first_id,
                    format!(
                        "the log's start was moved to row {} without a valid signature; rows were deleted from the beginning",
                        start.first_id
                    ),
                )));
            }
            let mut stmt = tx.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit NOT INDEXED ORDER BY id"))?;
            let mut rows = stmt.query([])?;
            let mut count: u64 = 0;
            let mut expected_id: i64 = start.first_id;
            let mut expected_prev = start.prev_hash.clone();
            while let Some(row) = rows.next()? {
                count += 1;
                let id: i64 = row.get(0)?;
                if id != expected_id {
                    return Ok(no_end(bad_row(
                        count,
                        id,
                        format!(
                            "rows {expected_id} to {} are missing (deleted) before row {id}",
                            id - 1
                        ),
                    )));
                }
                let raw = match raw_from_row(row) {
                    Ok(raw) => raw,
                    Err(_) => {
                        return Ok(no_end(bad_row(
                            count,
                            id,
                            "the row's fields have been altered (unexpected value types)",
                        )))
                    }
                };
                if raw.prev_hash != expected_prev {
                    return Ok(no_end(bad_row(
                        count,
                        id,
                        "the link to the previous row is broken (its hash does not match); a row was changed or removed",
                    )));
                }
                let computed = raw.canonical().chain_hash(&expected_prev)?;
                if computed != raw.hash {
                    return Ok(no_end(bad_row(
                        count,
                        id,
                        "the row's content does not match its hash; the row was edited",
                    )));
                }
                expected_prev = raw.hash;
                expected_id = id + 1;
            }
            let last_id = expected_id - 1;
            if head_id > last_id {
                return Ok(no_end(bad_row(
                    count,
                    last_id + 1,
                    format!(
                        "the log ends at row {last_id} but the head records row {head_id}; rows were removed from the end"
                    ),
                )));
            }
            if head_id < last_id {
                return Ok(no_end(bad_row(
                    count,
                    head_id + 1,
                    format!(
                        "rows after {head_id} were added without moving the head; they were not written by palisade"
                    ),
                )));
            }
            if head_hash != expected_prev {
                return Ok(no_end(bad_row(
                    count,
                    last_id.max(1),
                    "the head's hash does not match the last row; the end of the log was rewritten",
                )));
            }
            let hash_of = |id: i64| -> Result<Option<String>> {
                use rusqlite::OptionalExtension;
                Ok(tx
                    .query_row("SELECT hash FROM audit NOT INDEXED WHERE id = ?1", [id], |row| row.get(0))
                    .optional()?)
            };
            let first = (start.first_id, start.prev_hash.as_str());
            if anchored {
                let signed: Option<String> =
                    tx.query_row("SELECT head_mac FROM audit_head WHERE id = 1", [], |row| {
                        row.get(0)
                    })?;
                let head = (head_id, head_hash.clone());
                let unsigned = signed.as_deref() != Some(head_mac(self.key(), &head).as_str());
                let anchor_report = if unsigned {
                    Some(bad_row(
                        count,
                        last_id.max(1),
                        format!(
                            "the log's end (row {last_id}) does not carry this home's signature: rows were added at the end, or the end rewritten, by someone without the master key"
                        ),
                    ))
                } else {
                    check_anchor(&anchor_path, anchor, self.key(), count, first, last_id, hash_of)?
                };
                if let Some(mut report) = anchor_report {
                    if let Some(problem) = &mut report.problem {
                        if !problem.contains("palisade audit anchor") {
                            problem.push_str(
                                "; once you know why, `palisade audit anchor` signs the log's end as it is now",
                            );
                        }
                    }
                    return Ok((report, None));
                }
            }
            let report = VerifyReport {
                rows: count,
                ok: true,
                first_bad_id: None,
                problem: None,
                starts_at: start.moved().then_some(start.first_id),
            };
            Ok((report, Some((last_id, expected_prev))))
        })
    }

    /// Removes the rows older than `before_ms` from the beginning of the log (all of
    /// them up to the first row at or after that time), moves the chain's signed start
    /// past them, and records the pruning as an `audit.prune` row. A log that fails
    /// verification is left as it is: pruning would remove the evidence.
    ///
    /// The `audit.prune` row is written first; the rows then go [`PRUNE_CHUNK`] at a
    /// time, one transaction each with the start moved, so other writers (a gateway's
    /// audit writer) never wait long for the lock, and a pruning cut short leaves a
    /// chain that verifies from wherever it stopped.
    pub fn prune_audit(&self, before_ms: i64) -> Result<PruneReport> {
        self.prune_audit_before(before_ms, None)
    }

    /// How long audit rows are kept (`None`: for ever). An error when the setting was
    /// not written by palisade (see `read_retention`).
    pub fn audit_retention(&self) -> Result<Option<std::time::Duration>> {
        let keep_ms = self.read(|tx| read_retention(tx, self.key()))?;
        Ok(keep_ms.map(|ms| std::time::Duration::from_millis(ms.max(0).unsigned_abs())))
    }

    /// Sets how long audit rows are kept (`None`: for ever, the default), recorded as an
    /// `audit.retention` row; returns that row's id. Rows older than the retention are
    /// pruned by [`Store::prune_expired_audit`] (the gateway calls it hourly).
    pub fn set_audit_retention(&self, keep: Option<std::time::Duration>) -> Result<i64> {
        let keep_ms = match keep {
            Some(keep) if keep < MIN_AUDIT_RETENTION => {
                return Err(StoreError::Invalid(format!(
                    "audit rows must be kept for at least {} hours",
                    MIN_AUDIT_RETENTION.as_secs() / 3600
                )))
            }
            Some(keep) => Some(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)),
            None => None,
        };
        self.write(|tx| {
            let mut entry = self.audit_entry("audit.retention");
            entry.detail = Some(serde_json::json!({ "keep_ms": keep_ms }));
            let row = self.append_in(tx, &entry)?;
            match keep_ms {
                Some(keep_ms) => super::write_setting(
                    tx,
                    RETENTION_SETTING,
                    &format!(
                        "{keep_ms}:{row}:{}",
                        retention_mac(self.key(), keep_ms, row)
                    ),
                )?,
                None => {
                    tx.execute("DELETE FROM settings WHERE key = ?1", [RETENTION_SETTING])?;
                }
            }
            Ok(row)
        })
    }

    /// Prunes the rows older than the retention as of `now_ms`, as
    /// [`Store::prune_audit`] does (after verifying the whole log, which takes ~1.4 s
    /// per million rows); `None` when every row is kept. The `audit.prune` row records
    /// the retention it applied.
    pub fn prune_expired_audit(&self, now_ms: i64) -> Result<Option<PruneReport>> {
        let Some(keep_ms) = self.read(|tx| read_retention(tx, self.key()))? else {
            return Ok(None);
        };
        self.prune_audit_before(now_ms.saturating_sub(keep_ms), Some(keep_ms))
            .map(Some)
    }

    /// [`Store::prune_audit`], with the retention that asked for it (if one did) in the
    /// `audit.prune` row.
    fn prune_audit_before(&self, before_ms: i64, keep_ms: Option<i64>) -> Result<PruneReport> {
        let report = self.verify_audit()?;
        if !report.ok {
            return Err(StoreError::Invalid(format!(
                "the audit log fails verification at row {}: {}; nothing was pruned, so the evidence stays",
                report.first_bad_id.unwrap_or(0),
                report.problem.unwrap_or_default()
            )));
        }
        let planned = self.write(|tx| {
            let head = require_head(tx)?;
            let start = require_start(tx)?;
            let keep_from = tx
                .query_row(
                    "SELECT min(id) FROM audit NOT INDEXED WHERE at_ms >= ?1",
                    [before_ms],
                    |row| row.get::<_, Option<i64>>(0),
                )?
                .unwrap_or(head.0 + 1);
            if keep_from <= start.first_id {
                return Ok(Err(start.first_id));
            }
            self.mark_audited();
            let mut detail = serde_json::json!({
                "removes": keep_from - start.first_id,
                "first_kept": keep_from,
                "before_ms": before_ms,
            });
            if let Some(keep_ms) = keep_ms {
                detail["keep_ms"] = keep_ms.into();
            }
            let entry = AuditEntry {
                event: "audit.prune".into(),
                actor: Some(self.actor().to_string()),
                detail: Some(detail),
                ..AuditEntry::default()
            };
            let recorded_as = append_in(tx, self.key(), crate::now_ms(), &entry)?;
            // The row of the retention in force would go with this pruning: it is
            // written again, and the setting signed for the new row, so the latest
            // `audit.retention` row is always in the log (an older signed setting put
            // back was accepted once the row of the one after it had been pruned). So
            // is the row of a retention turned off (no setting to sign): otherwise an
            // older signed setting put back after the pruning found no later row to
            // contradict it.
            if let Ok(keep) = read_retention(tx, self.key()) {
                let row = latest_retention_row(tx)?.or(retention_row(tx)?);
                if let Some(row) = row.filter(|row| *row < keep_from) {
                    let mut carried = self.audit_entry("audit.retention");
                    carried.detail =
                        Some(serde_json::json!({ "keep_ms": keep, "carried_from": row }));
                    let new_row = append_in(tx, self.key(), crate::now_ms(), &carried)?;
                    if let Some(keep) = keep {
                        super::write_setting(
                            tx,
                            RETENTION_SETTING,
                            &format!(
                                "{keep}:{new_row}:{}",
                                retention_mac(self.key(), keep, new_row)
                            ),
                        )?;
                    }
                }
            }
            super::local::carry_over_pruning(tx, self.key(), keep_from, |entry| {
                let mut entry = entry.clone();
                entry.actor = Some(self.actor().to_string());
                self.append_in(tx, &entry)
            })?;
            Ok(Ok((keep_from, recorded_as)))
        })?;
        let (keep_from, recorded_as) = match planned {
            Ok(planned) => planned,
            Err(first_id) => {
                return Ok(PruneReport {
                    removed: 0,
                    first_id,
                    recorded_as: None,
                })
            }
        };
        let mut removed = 0;
        while let Some(chunk) =
            self.write(|tx| prune_chunk(tx, self.key(), keep_from, before_ms))?
        {
            removed += chunk;
        }
        Ok(PruneReport {
            removed,
            first_id: keep_from,
            recorded_as: Some(recorded_as),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a new home (kept by the returned directory) with ten `request` rows
    /// at 1000, 2000, … 10000 ms.
    fn with_ten_rows() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Home::at(dir.path().join("home"))).unwrap();
        let rows: Vec<(i64, AuditEntry)> = (1..=10)
            .map(|i| {
                let entry = AuditEntry {
                    event: "request".into(),
                    decision: Some("allowed".into()),
                    ..AuditEntry::default()
                };
                (i * 1000, entry)
            })
            .collect();
        store.append_audit_batch(&rows).unwrap();
        (dir, store)
    }

    /// A row edited after the pruning's verification and before its chunk is deleted
    /// stops the pruning there, and the row stays.
    #[test]
    fn a_row_changed_before_its_chunk_is_deleted_stops_the_pruning() {
        let (_dir, store) = with_ten_rows();
        let edited = store.write(|tx| {
            tx.execute("UPDATE audit SET decision = 'blocked' WHERE id = 3", [])?;
            prune_chunk(tx, store.key(), 6, i64::MAX)
        });
        let error = edited.unwrap_err().to_string();
        assert!(error.contains("audit row 3 changed"), "{error}");
        // Nothing of that transaction stayed (the edit was rolled back with it): all
        // ten rows are there.
        let report = store.verify_audit().unwrap();
        assert_eq!(report.first_bad_id, None, "{:?}", report.problem);
        assert_eq!(report.rows, 10);

        // Unchanged, the same chunk goes and the chain verifies from its new start.
        assert_eq!(
            store
                .write(|tx| prune_chunk(tx, store.key(), 6, i64::MAX))
                .unwrap(),
            Some(5)
        );
        let report = store.verify_audit().unwrap();
        assert!(report.ok, "{:?}", report.problem);
        assert_eq!(report.starts_at, Some(6));
    }

    /// A pruning planned from times set back (every row made to look old while the
    /// plan was made, the times put back before the deletion, review round nine) stops
    /// at the first row that is not older than the time it was asked for: each row it
    /// deletes is whole, so only its time tells.
    #[test]
    fn a_pruning_deletes_no_row_younger_than_its_time() {
        let (_dir, store) = with_ten_rows();
        // Planned to keep from row 9, though only rows 1 to 3 are older than 4000.
        let error = store
            .write(|tx| prune_chunk(tx, store.key(), 9, 4000))
            .unwrap_err()
            .to_string();
        assert!(error.contains("audit row 4 is not older"), "{error}");
        let report = store.verify_audit().unwrap();
        assert!(report.ok, "{:?}", report.problem);
        assert_eq!(report.rows, 10, "rows were deleted");
        assert_eq!(report.starts_at, None);
    }
}
