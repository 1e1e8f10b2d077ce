//! Real clients with hard timeouts, and the small waits tests need between steps.
//!
//! Tests drive curl and Python's HTTP libraries because those are what agents run;
//! a client that hangs (a held approval never answered, a proxy that swallows a
//! response) must fail the test, not the CI run, so each one is killed with its
//! process group once its timeout passes.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::ChildGuard;

/// Proxy variables of the machine that must not leak into a client under test.
const PROXY_VARIABLES: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// Runs `python3 -c script` with the given extra environment, killed after `timeout`.
///
/// The machine's proxy and CA variables are removed first, so the script sees only
/// what the test sets.
pub fn python(script: &str, env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut command = Command::new("python3");
    command.arg("-c").arg(script);
    clean_env(&mut command);
    for (name, value) in env {
        command.env(name, value);
    }
    run_with_timeout(&mut command, None, timeout)
}

/// Runs `curl ARGS…`, killed after `timeout`. Proxy variables are removed; pass
/// `--proxy` explicitly.
pub fn curl<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Output {
    let mut command = Command::new("curl");
    command.args(args);
    clean_env(&mut command);
    run_with_timeout(&mut command, None, timeout)
}

fn clean_env(command: &mut Command) {
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
}

/// Runs `command` to completion with piped output, feeding `stdin` if given.
///
/// On timeout the process group is killed and the returned output's stderr ends
/// with a line saying so (the status is then the signal's, never success).
/// Panics only when the program cannot be started at all.
pub fn run_with_timeout(command: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = command.get_program().to_string_lossy().into_owned();
    let mut guard = ChildGuard::spawn(command)
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
    let child = guard.child_mut();
    let stdin_writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || {
                // A child that exits without reading its stdin is not an error here.
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let stdout_reader = child.stdout.take().map(spawn_reader);
    let stderr_reader = child.stderr.take().map(spawn_reader);

    let finished = guard.wait_timeout(timeout).ok().flatten();
    let status = match finished {
        Some(status) => status,
        None => guard
            .kill()
            .unwrap_or_else(|error| panic!("cannot kill {program}: {error}")),
    };
    // The group is dead (or exited), so the pipes close and the readers finish;
    // a grandchild holding a pipe open was killed with the group.
    guard.signal_group(nix::sys::signal::Signal::SIGKILL).ok();
    if let Some(writer) = stdin_writer {
        let _ = writer.join();
    }
    let stdout = stdout_reader
        .and_then(|r| r.join().ok())
        .unwrap_or_default();
    let mut stderr = stderr_reader
        .and_then(|r| r.join().ok())
        .unwrap_or_default();
    if finished.is_none() {
        stderr.extend_from_slice(
            format!("\n[palisade-testkit] {program} timed out after {timeout:?} and was killed\n")
                .as_bytes(),
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}

/// Stdout and stderr of an output as one readable string, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server the test starts
/// later.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), at random: a port
/// the kernel handed out for `bind(0)` is in that range, and any outgoing connection
/// made before the server binds it may take it as its own source port (a test that did
/// so failed with "address already in use" under parallel tests).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        let span = u64::from(ephemeral_low - LOWEST);
        for _ in 0..64 {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            let port = LOWEST + (hasher.finish() % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Waits until a TCP connection to `addr` succeeds; false after `timeout`.
pub fn wait_for_tcp(addr: impl ToSocketAddrs, timeout: Duration) -> bool {
    let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(_) => return false,
    };
    wait_until(timeout, || {
        addrs
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
    })
}

/// Polls `condition` every 20 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
