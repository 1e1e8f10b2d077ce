//! `palisade shim`: the first process of every sandbox.
//!
//! It listens on `127.0.0.1:3128` (the sandbox's only network is loopback), relays
//! the bytes of each connection to the agent's vault socket, and only once it is
//! listening starts the user's command, so no client in the sandbox can race it. It
//! applies the rlimits the parent asked for, exits with the command's exit code, and
//! ends the sandbox when the parent's lifeline closes (the parent died).
//!
//! The relay is plain byte copying (`tokio::io::copy_bidirectional`): the vault
//! speaks the HTTP proxy protocol itself, so the shim never parses a request and
//! adds as little latency as a copy can.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Semaphore;

/// Exit code of the shim when it could not run the command at all.
pub const SHIM_FAILURE: i32 = 125;
/// Exit code when the parent went away.
pub const PARENT_GONE: i32 = 137;

/// Options of `palisade shim`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShimOptions {
    pub socket: PathBuf,
    pub listen: SocketAddr,
    pub lifeline: Option<PathBuf>,
    /// Address-space limit for the command (bytes), when no cgroup limits memory.
    pub rlimit_address_space: Option<u64>,
    /// RLIMIT_NPROC for the command, when no cgroup limits processes.
    pub rlimit_processes: Option<u64>,
    pub max_connections: usize,
    pub command: Vec<String>,
}

impl ShimOptions {
    pub fn new(command: Vec<String>) -> Self {
        ShimOptions {
            socket: PathBuf::from(crate::paths::VAULT_SOCKET),
            listen: crate::paths::SHIM_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3128))),
            lifeline: None,
            rlimit_address_space: None,
            rlimit_processes: None,
            max_connections: 256,
            command,
        }
    }

    /// The arguments after `shim` that reproduce these options.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--socket".to_string(),
            self.socket.display().to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--max-connections".into(),
            self.max_connections.to_string(),
        ];
        if let Some(lifeline) = &self.lifeline {
            args.extend(["--lifeline".into(), lifeline.display().to_string()]);
        }
        if let Some(bytes) = self.rlimit_address_space {
            args.extend(["--rlimit-as".into(), bytes.to_string()]);
        }
        if let Some(count) = self.rlimit_processes {
            args.extend(["--rlimit-nproc".into(), count.to_string()]);
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }

    /// Parses what [`ShimOptions::to_args`] produces.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut options = ShimOptions::new(Vec::new());
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = |name: &str| {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--" => {
                    options.command = iter.cloned().collect();
                    break;
                }
                "--socket" => options.socket = PathBuf::from(value("--socket")?),
                "--listen" => {
                    options.listen = value("--listen")?.parse().map_err(|_| {
                        "--listen needs an address such as 127.0.0.1:3128".to_string()
                    })?
                }
                "--lifeline" => options.lifeline = Some(PathBuf::from(value("--lifeline")?)),
                "--rlimit-as" => {
                    options.rlimit_address_space = Some(
                        value("--rlimit-as")?
                            .parse()
                            .map_err(|_| "--rlimit-as needs a byte count".to_string())?,
                    )
                }
                "--rlimit-nproc" => {
                    options.rlimit_processes = Some(
                        value("--rlimit-nproc")?
                            .parse()
                            .map_err(|_| "--rlimit-nproc needs a count".to_string())?,
                    )
                }
                "--max-connections" => {
                    options.max_connections = value("--max-connections")?
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| "--max-connections needs a positive count".to_string())?
                }
                other => return Err(format!("unknown shim option {other:?}")),
            }
        }
        if options.command.is_empty() {
            return Err("no command given after `--`".into());
        }
        Ok(options)
    }
}

/// Runs the shim to completion and returns the exit code for the process.
pub fn run(options: ShimOptions) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("palisade shim: cannot start: {e}");
            return SHIM_FAILURE;
        }
    };
    runtime.block_on(serve(options))
}

async fn serve(options: ShimOptions) -> i32 {
    let listener = match TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("palisade shim: cannot listen on {}: {e}", options.listen);
            return SHIM_FAILURE;
        }
    };
    let lifeline = match &options.lifeline {
        Some(path) => match UnixStream::connect(path).await {
            Ok(stream) => Some(stream),
            Err(_) => {
                eprintln!("palisade shim: the parent palisade process is gone; not starting");
                return PARENT_GONE;
            }
        },
        None => None,
    };
    let socket = Arc::new(options.socket.clone());
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let accept = tokio::spawn(accept_loop(listener, socket, permits));

    // The listener is bound: from here on, every client in the sandbox finds it.
    let mut command = tokio::process::Command::new(&options.command[0]);
    command.args(&options.command[1..]);
    let address_space = options.rlimit_address_space;
    let processes = options.rlimit_processes;
    // SAFETY: only async-signal-safe syscalls (prctl, setrlimit) run after fork.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{setrlimit, Resource};
            nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if let Some(bytes) = address_space {
                setrlimit(Resource::RLIMIT_AS, bytes, bytes).map_err(std::io::Error::from)?;
            }
            if let Some(count) = processes {
                setrlimit(Resource::RLIMIT_NPROC, count, count).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("palisade: cannot run {:?}: {e}", options.command[0]);
            accept.abort();
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let child_pid = child.id();
    let forward = tokio::spawn(forward_signals(child_pid));
    let code = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                eprintln!("palisade shim: lost the command: {e}");
                SHIM_FAILURE
            }
        },
        _ = wait_for_close(lifeline) => {
            let _ = child.start_kill();
            PARENT_GONE
        }
    };
    forward.abort();
    accept.abort();
    code
}

async fn wait_for_close(lifeline: Option<UnixStream>) {
    use tokio::io::AsyncReadExt;
    let Some(mut stream) = lifeline else {
        return std::future::pending().await;
    };
    let mut buffer = [0u8; 16];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn forward_signals(child: Option<u32>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Some(pid), Ok(mut term), Ok(mut int)) = (
        child,
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = term.recv() => nix::sys::signal::Signal::SIGTERM,
            _ = int.recv() => nix::sys::signal::Signal::SIGINT,
        };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

async fn accept_loop(listener: TcpListener, socket: Arc<PathBuf>, permits: Arc<Semaphore>) {
    loop {
        // Take a permit before accepting: beyond the bound, clients wait in the
        // kernel's backlog instead of costing memory here.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            relay(client, &socket).await;
            drop(permit);
        });
    }
}

async fn relay(mut client: TcpStream, socket: &std::path::Path) {
    let _ = client.set_nodelay(true);
    let vault = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(socket)).await;
    let mut vault = match vault {
        Ok(Ok(vault)) => vault,
        _ => {
            let body = r#"{"error":"vault_unreachable","message":"the sandbox's vault gateway is not reachable; the palisade process that started this sandbox may have stopped"}"#;
            let response = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(response.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut vault).await;
}

/// The exit code a shell would report: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(SHIM_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let mut options = ShimOptions::new(vec!["sh".into(), "-c".into(), "echo --x".into()]);
        options.lifeline = Some("/run/palisade/lifeline.sock".into());
        options.rlimit_address_space = Some(1 << 30);
        options.rlimit_processes = Some(64);
        assert_eq!(ShimOptions::from_args(&options.to_args()).unwrap(), options);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            vec![],
            vec![
                "--listen".to_string(),
                "nowhere".into(),
                "--".into(),
                "true".into(),
            ],
            vec!["--bogus".to_string(), "--".into(), "true".into()],
            vec!["--rlimit-as".to_string()],
        ] {
            assert!(ShimOptions::from_args(&args).is_err(), "{args:?}");
        }
    }
}
