//! What commands read from the person running them, other than arguments: secret values,
//! confirmations, who they are, and times written as durations or dates.
//!
//! Secret values come from a file or stdin, never from argv, because argv lands in shell
//! history and is visible to every user through `ps`.

use anyhow::{bail, Context as _};
use palisade_policy::SecretValue;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

/// Same as the store's limit; one byte more is read to tell "too large" from "full".
const MAX_SECRET_BYTES: u64 = palisade_store::input::MAX_SECRET_BYTES as u64;

pub const VALUE_ON_ARGV: &str = "secret values are never taken from the command line (they would land in shell history and ps); pipe it on stdin or use --value-file FILE";

/// An address to listen on, as `HOST:PORT` with an IP (`127.0.0.1:8080`, `[::1]:8080`);
/// `localhost:PORT` means `127.0.0.1:PORT`. A clap value parser, so a bare host or a
/// name says what is wanted rather than clap's "invalid socket address syntax".
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    let bare_ip = text.parse::<std::net::IpAddr>().is_ok()
        || text
            .trim_matches(['[', ']'])
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    if bare_ip || text == "localhost" {
        return Err(format!(
            "{text:?} has no port: give HOST:PORT, e.g. 127.0.0.1:8080 (IPv6: [::1]:8080)"
        ));
    }
    Err(format!(
        "{text:?} is not an address to listen on: give an IP and a port, e.g. 127.0.0.1:8080 (IPv6: [::1]:8080)"
    ))
}

/// Reads a secret value from `file` (`-` for stdin) or else stdin, prompting without echo
/// when stdin is a terminal. One trailing newline is removed; an empty value is refused.
pub fn read_secret_value(file: Option<&Path>, secret_name: &str) -> anyhow::Result<SecretValue> {
    read_secret_value_from(file, "--value-file", secret_name)
}

/// As [`read_secret_value`], naming the option `flag` gave the file in its errors.
pub fn read_secret_value_from(
    file: Option<&Path>,
    flag: &str,
    secret_name: &str,
) -> anyhow::Result<SecretValue> {
    let bytes = match file {
        Some(path) if path != Path::new("-") => {
            let source = format!("{flag} {}", path.display());
            let handle = open_value_file(path, flag)?;
            let bytes = read_limited(handle, &source)?;
            if String::from_utf8_lossy(&bytes).trim().is_empty() {
                bail!("{source} is empty: it should hold the value of secret {secret_name}");
            }
            bytes
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
    let value = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the secret value is not UTF-8 text"))?;
    Ok(palisade_store::input::secret_value(value)?)
}

/// A credential (bot token, signing secret) from a file, or from stdin when the file is
/// `-`; never from argv. Trailing white space is dropped.
pub fn read_credential(file: &Path, flag: &str) -> anyhow::Result<SecretValue> {
    let bytes = if file == Path::new("-") {
        read_limited(std::io::stdin().lock(), "stdin")?
    } else {
        let handle = open_value_file(file, flag)?;
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

/// Opens the file a secret's value is read from. A name that is no file is not
/// repeated in the error: it may be the value itself, typed where the file's name goes.
fn open_value_file(path: &Path, flag: &str) -> anyhow::Result<std::fs::File> {
    match std::fs::File::open(path) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot read {flag}: there is no such file (its name is not repeated here, in case it was the value itself; then rotate that value, it is in your shell's history)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {flag} {}", path.display())),
    }
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
/// (`2026-12-01T00:00:00Z`); the store's parser, so the web UI reads times the same way.
pub fn parse_time(text: &str, flag: &str, future: bool, now_ms: i64) -> anyhow::Result<i64> {
    Ok(palisade_store::input::parse_time(
        text, flag, future, now_ms,
    )?)
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses_are_ip_and_port() {
        assert_eq!(
            parse_listen("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse_listen("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert_eq!(
            parse_listen("localhost:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        for bare in ["127.0.0.1", "::1", "[::1]", "localhost"] {
            let error = parse_listen(bare).unwrap_err();
            assert!(error.contains("has no port"), "{bare}: {error}");
        }
        for wrong in ["example.com:80", "127.0.0.1:99999", ""] {
            let error = parse_listen(wrong).unwrap_err();
            assert!(
                error.contains("not an address to listen on"),
                "{wrong}: {error}"
            );
        }
    }
}
