//! The client side of the gateways' control sockets: after a process commits a
//! configuration change, it asks every running gateway of the home to load it, and
//! waits (bounded) for each to answer, so the change is in force when the command that
//! made it returns. The gateway side is `palisade-vault`'s `control` module.
//!
//! A socket nobody listens on (its gateway was killed) is removed. A gateway that does
//! not answer in time is named in a warning; the change still reaches it through its
//! 200 ms poll of the database.

use crate::Home;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long one gateway may take to load a change and answer.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// A gateway that did not confirm a change in time.
#[derive(Debug)]
pub struct Unconfirmed {
    /// The control socket's file name (`<pid>-<n>.sock`): the pid names the process.
    pub gateway: String,
    pub reason: String,
}

/// Asks every running gateway of `home` to load configuration `version`; returns those
/// that did not confirm it.
pub fn sync_gateways(home: &Home, version: i64) -> Vec<Unconfirmed> {
    let Ok(entries) = std::fs::read_dir(home.gateway_control_dir()) else {
        return Vec::new();
    };
    let sockets: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    let mut unconfirmed = Vec::new();
    for path in sockets {
        let gateway = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match sync_one(&path, version) {
            Ok(()) => {}
            Err(Failure::Gone) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(Failure::NoAnswer(reason)) => unconfirmed.push(Unconfirmed { gateway, reason }),
        }
    }
    unconfirmed
}

enum Failure {
    /// Nobody listens: the socket is left over from a gateway that was killed.
    Gone,
    NoAnswer(String),
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
    // One short line (`ok VERSION`); a longer answer is not a gateway's.
    BufReader::new(std::io::Read::take(&stream, 128))
        .read_line(&mut answer)
        .map_err(fail)?;
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
