//! The client side of the gateways' control sockets: after a process commits a
//! configuration change, it asks every running gateway of the home to load it, and
//! waits (bounded) for each to answer, so the change is in force when the command that
//! made it returns. The gateway side is `palisade-vault`'s `control` module.
//!
//! A socket nobody listens on (its gateway was killed) is removed. A gateway that does
//! not answer in time is named in a warning; the change still reaches it through its
//! 200 ms poll of the database. A gateway that answers that it cannot load the
//! configuration (a rule in the database that cannot be read) keeps enforcing the
//! previous one: that is recorded for the process ([`take_refused`]), and the CLI
//! ends the command with an error saying so, since what it changed is not in force.

use crate::Home;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// How long one gateway may take to load a change and answer.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// A gateway that did not confirm a change.
#[derive(Clone, Debug)]
pub struct Unconfirmed {
    /// The control socket's file name (`<pid>-<n>.sock`): the pid names the process.
    pub gateway: String,
    pub reason: String,
    /// It answered that it cannot load the configuration: the previous one stays in
    /// force until the cause is fixed (otherwise it did not answer in time, and the
    /// change still reaches it through its poll).
    pub refused: bool,
}

impl Unconfirmed {
    /// The gateway's process id, read from its socket's name.
    pub fn pid(&self) -> Option<u32> {
        self.gateway.split('-').next()?.parse().ok()
    }

    /// What a person reads of it, the same on every surface: "the running gateway (pid
    /// N) cannot load the configuration and still enforces the previous one: REASON",
    /// or "… did not confirm the configuration: REASON".
    pub fn describe(&self) -> String {
        let which = match self.pid() {
            Some(pid) => format!("the running gateway (pid {pid})"),
            None => "a running gateway".to_string(),
        };
        match self.refused {
            true => format!(
                "{which} cannot load the configuration and still enforces the previous one: {}",
                self.reason
            ),
            false => format!("{which} did not confirm the configuration: {}", self.reason),
        }
    }
}

/// Most refusals kept for [`take_refused`] (a long-lived process that never takes
/// them keeps only the latest).
const REFUSED_KEPT: usize = 8;

/// Refusals by home: a process (a test, the host) may hold stores of several homes.
static REFUSED: Mutex<Vec<(PathBuf, Unconfirmed)>> = Mutex::new(Vec::new());

/// The gateways of `home` that refused a change this process made since the last call.
pub fn take_refused(home: &Home) -> Vec<Unconfirmed> {
    let mut refused = REFUSED.lock().unwrap_or_else(|p| p.into_inner());
    let (taken, kept) = std::mem::take(&mut *refused)
        .into_iter()
        .partition::<Vec<_>, _>(|(root, _)| root == home.root());
    *refused = kept;
    taken.into_iter().map(|(_, gateway)| gateway).collect()
}

/// Remembers a refusal for [`take_refused`].
pub(crate) fn record_refused(home: &Home, gateway: &Unconfirmed) {
    let mut refused = REFUSED.lock().unwrap_or_else(|p| p.into_inner());
    if refused.len() >= REFUSED_KEPT {
        refused.remove(0);
    }
    refused.push((home.root().to_path_buf(), gateway.clone()));
}

/// The control sockets in the home's folder (some may be left over from gateways that
/// were killed).
fn control_sockets(home: &Home) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(home.gateway_control_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect()
}

/// What came of asking the running gateways to load a configuration.
#[derive(Debug, Default)]
pub struct Synced {
    /// How many loaded it.
    pub confirmed: usize,
    /// Those that did not.
    pub unconfirmed: Vec<Unconfirmed>,
}

/// Asks every running gateway of `home` to load configuration `version`.
pub fn sync_gateways(home: &Home, version: i64) -> Synced {
    let mut synced = Synced::default();
    for path in control_sockets(home) {
        let gateway = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let unconfirmed = &mut synced.unconfirmed;
        match sync_one(&path, version) {
            Ok(()) => synced.confirmed += 1,
            Err(Failure::Gone) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(Failure::NoAnswer(reason)) => unconfirmed.push(Unconfirmed {
                gateway,
                reason,
                refused: false,
            }),
            Err(Failure::Refused(reason)) => unconfirmed.push(Unconfirmed {
                gateway,
                reason,
                refused: true,
            }),
        }
    }
    synced
}

enum Failure {
    /// Nobody listens: the socket is left over from a gateway that was killed.
    Gone,
    NoAnswer(String),
    /// It answered that it cannot load the configuration, and why.
    Refused(String),
}

fn sync_one(path: &std::path::Path, version: i64) -> Result<(), Failure> {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Err(Failure::Gone)
        }
        Err(e) => return Err(Failure::NoAnswer(e.to_string())),
    };
    let fail = |e: std::io::Error| Failure::NoAnswer(e.to_string());
    stream.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(SYNC_TIMEOUT)).map_err(fail)?;
    (&stream)
        .write_all(format!("sync {version}\n").as_bytes())
        .map_err(fail)?;
    let mut answer = String::new();
    // One line: `ok VERSION`, or `error REASON` (the gateway cuts a reason at 300
    // characters); a longer answer is not a gateway's.
    BufReader::new(std::io::Read::take(&stream, 1024))
        .read_line(&mut answer)
        .map_err(fail)?;
    if let Some(reason) = answer.trim().strip_prefix("error ") {
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        return Err(Failure::Refused(reason));
    }
    let loaded = answer
        .trim()
        .strip_prefix("ok ")
        .and_then(|v| v.parse::<i64>().ok());
    match loaded {
        Some(loaded) if loaded >= version => Ok(()),
        Some(loaded) => Err(Failure::NoAnswer(format!(
            "it loaded version {loaded}, not {version}"
        ))),
        None if answer.is_empty() => Err(Failure::NoAnswer("it closed without answering".into())),
        None => Err(Failure::NoAnswer(format!(
            "it answered {:?}",
            answer.trim()
        ))),
    }
}
