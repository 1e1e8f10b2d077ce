//! What commands read from the person running them, other than arguments: secret values,
//! confirmations, who they are, and times written as durations or dates.
//!
//! Secret values come from a file or stdin, never from argv, because argv lands in shell
//! history and is visible to every user through `ps`.

use anyhow::{bail, Context as _};
use palisade_policy::SecretValue;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// Larger than any credential we know of (service-account JSON keys are ~2 KiB), small
/// enough that a wrong file (a disk image, /dev/zero) is refused instead of read forever.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

pub const VALUE_ON_ARGV: &str = "secret values are never taken from the command line (they would land in shell history and ps); pipe it on stdin or use --value-file FILE";

/// Reads a secret value from `file` (`-` for stdin) or else stdin, prompting without echo
/// when stdin is a terminal. One trailing newline is removed; an empty value is refused.
pub fn read_secret_value(file: Option<&Path>, secret_name: &str) -> anyhow::Result<SecretValue> {
    let bytes = match file {
        Some(path) if path != Path::new("-") => {
            let handle = std::fs::File::open(path)
                .with_context(|| format!("cannot read --value-file {}", path.display()))?;
            read_limited(handle, &format!("--value-file {}", path.display()))?
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                let prompt = format!("value for secret {secret_name} (input hidden): ");
                let typed = rpassword::prompt_password(prompt)
                    .context("cannot read the secret value from the terminal")?;
                typed.into_bytes()
            } else {
                read_limited(stdin.lock(), "stdin")?
            }
        }
    };
    let mut value = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the secret value is not UTF-8 text"))?;
    if value.ends_with("\r\n") {
        value.truncate(value.len() - 2);
    } else if value.ends_with('\n') {
        value.truncate(value.len() - 1);
    }
    let value = SecretValue::new(value);
    if value.expose().is_empty() {
        bail!("the secret value is empty; pipe it on stdin or use --value-file FILE");
    }
    Ok(value)
}

/// A credential (bot token, signing secret) from a file, or from stdin when the file is
/// `-`; never from argv. Trailing white space is dropped.
pub fn read_credential(file: &Path, flag: &str) -> anyhow::Result<SecretValue> {
    let bytes = if file == Path::new("-") {
        read_limited(std::io::stdin().lock(), "stdin")?
    } else {
        let handle = std::fs::File::open(file)
            .with_context(|| format!("cannot read {flag} {}", file.display()))?;
        read_limited(handle, &format!("{flag} {}", file.display()))?
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{flag}: the file is not UTF-8 text"))?;
    let value = SecretValue::new(text.trim().to_string());
    if value.expose().is_empty() {
        bail!("{flag}: the file is empty");
    }
    Ok(value)
}

fn read_limited(reader: impl Read, source: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the secret value from {source}"))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        bail!(
            "the secret value from {source} is larger than {} KiB; is this the right file?",
            MAX_SECRET_BYTES / 1024
        );
    }
    Ok(bytes)
}

/// Asks `question [y/N]` on a terminal. Without a terminal there is nobody to ask, so
/// this refuses: "refusing to ACTION without confirmation … pass `confirm_flag`".
pub fn confirm(question: &str, action: &str, confirm_flag: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to {action} without confirmation: stdin is not a terminal; pass {confirm_flag} to go ahead");
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    stdin.read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Who is deciding from this CLI: the login name of the real user id, or `uid-N` when
/// the id has no name (recorded as `cli:NAME`).
pub fn local_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) if !user.name.is_empty() => user.name,
        _ => format!("uid-{uid}"),
    }
}

/// A point in time written as a duration from now (`2h`, `7d`) or an RFC 3339 UTC time
/// (`2026-12-01T00:00:00Z`). `future` says which side of now a duration counts toward.
pub fn parse_time(text: &str, flag: &str, future: bool, now_ms: i64) -> anyhow::Result<i64> {
    let text = text.trim();
    if let Ok(span) = humantime::parse_duration(text) {
        if span.is_zero() {
            bail!("{flag} {text:?} is zero; give a positive duration such as 30m or 2h");
        }
        let span = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        return Ok(if future {
            now_ms.saturating_add(span)
        } else {
            now_ms.saturating_sub(span)
        });
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        if future && ms <= now_ms {
            bail!("{flag} {text:?} is in the past; give a future time or a duration such as 2h");
        }
        return Ok(ms);
    }
    bail!("{flag} {text:?} is neither a duration (e.g. 30m, 2h, 7d) nor an RFC 3339 UTC time (e.g. 2026-12-01T00:00:00Z)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_count_from_now() {
        assert_eq!(
            parse_time("2h", "--expires", true, 1_000).ok(),
            Some(1_000 + 7_200_000)
        );
        assert_eq!(
            parse_time("1m", "--since", false, 100_000).ok(),
            Some(40_000)
        );
    }

    #[test]
    fn dates_are_absolute_and_past_expiry_is_refused() {
        assert_eq!(
            parse_time("1970-01-02T00:00:00Z", "--since", false, 0).ok(),
            Some(86_400_000)
        );
        assert!(parse_time("1970-01-02T00:00:00Z", "--expires", true, i64::MAX / 2).is_err());
    }

    #[test]
    fn nonsense_and_zero_are_refused() {
        assert!(parse_time("soon", "--expires", true, 0).is_err());
        assert!(parse_time("0s", "--expires", true, 0).is_err());
    }
}
