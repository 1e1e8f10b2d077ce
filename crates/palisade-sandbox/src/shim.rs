//! `palisade shim`: the first process of every sandbox.
//!
//! It listens on `127.0.0.1:3128` (the sandbox's only network is loopback), relays
//! the bytes of each connection to a connection to the agent's vault that the parent
//! makes for it (over the inherited control channel, see [`crate::broker`]), and only
//! once it is listening starts the user's command, so no client in the sandbox can
//! race it. It applies the rlimits the parent asked for, exits with the command's exit
//! code, and ends the sandbox when the control channel closes (the parent died).
//!
//! The relay is plain byte copying (`tokio::io::copy_bidirectional`): the vault
//! speaks the HTTP proxy protocol itself, so the shim never parses a request and
//! adds as little latency as a copy can.

use crate::broker::ParentDialer;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Exit code of the shim when it could not run the command at all.
pub const SHIM_FAILURE: i32 = 125;
/// Exit code when the parent went away.
pub const PARENT_GONE: i32 = 137;

/// How the shim reaches its parent (see [`crate::broker`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// An inherited descriptor (bubblewrap, podman).
    Inherited(RawFd),
    /// A socket mounted into the sandbox (docker, which cannot pass descriptors).
    Socket(std::path::PathBuf),
}

/// Options of `palisade shim`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShimOptions {
    /// The control channel to the parent: vault connections and lifeline.
    pub control: Control,
    pub listen: SocketAddr,
    /// Address-space limit for the command (bytes), when no cgroup limits memory.
    pub rlimit_address_space: Option<u64>,
    /// RLIMIT_NPROC for the command, when no cgroup limits processes.
    pub rlimit_processes: Option<u64>,
    /// RLIMIT_FSIZE for the command: the workspace quota (no file grows past it).
    pub rlimit_file_size: Option<u64>,
    /// RLIMIT_NOFILE for the command (see [`crate::limits::open_files_per_process`]).
    pub rlimit_open_files: Option<u64>,
    /// The Unix socket (`@name` for an abstract one) on which to offer the host's socket
    /// to a runner, relayed through the parent like the vault.
    pub host_listen: Option<String>,
    pub max_connections: usize,
    /// The user and group (ids inside the sandbox) the shim becomes before anything
    /// else, when it starts as uid 0 of its user namespace: a bubblewrap sandbox started
    /// by root, whose uid 0 is the host's root (see `bwrap.rs`).
    pub user: Option<(u32, u32)>,
    /// Device and inode each extra mount's destination must have: what was checked at
    /// launch ([`crate::mounts::identity`]), for runtimes that mount by path.
    pub expect_mounts: Vec<(PathBuf, (u64, u64))>,
    pub command: Vec<String>,
}

impl ShimOptions {
    pub fn new(control: Control, command: Vec<String>) -> Self {
        ShimOptions {
            control,
            listen: crate::paths::SHIM_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3128))),
            rlimit_address_space: None,
            rlimit_processes: None,
            rlimit_file_size: None,
            rlimit_open_files: None,
            host_listen: None,
            max_connections: 256,
            user: None,
            expect_mounts: Vec::new(),
            command,
        }
    }

    /// The arguments after `shim` that reproduce these options.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = match &self.control {
            Control::Inherited(fd) => vec!["--control-fd".to_string(), fd.to_string()],
            Control::Socket(path) => {
                vec!["--control-socket".to_string(), path.display().to_string()]
            }
        };
        args.extend([
            "--listen".into(),
            self.listen.to_string(),
            "--max-connections".into(),
            self.max_connections.to_string(),
        ]);
        if let Some(bytes) = self.rlimit_address_space {
            args.extend(["--rlimit-as".into(), bytes.to_string()]);
        }
        if let Some(count) = self.rlimit_processes {
            args.extend(["--rlimit-nproc".into(), count.to_string()]);
        }
        if let Some(bytes) = self.rlimit_file_size {
            args.extend(["--rlimit-fsize".into(), bytes.to_string()]);
        }
        if let Some(count) = self.rlimit_open_files {
            args.extend(["--rlimit-nofile".into(), count.to_string()]);
        }
        if let Some(name) = &self.host_listen {
            args.extend(["--host-listen".into(), name.clone()]);
        }
        if let Some((uid, gid)) = self.user {
            args.extend(["--user".into(), format!("{uid}:{gid}")]);
        }
        for (destination, (device, inode)) in &self.expect_mounts {
            args.extend([
                "--expect-mount".into(),
                format!("{device}:{inode}:{}", destination.display()),
            ]);
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }

    /// Parses what [`ShimOptions::to_args`] produces.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut options = ShimOptions::new(Control::Inherited(-1), Vec::new());
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
                "--control-fd" => {
                    options.control = Control::Inherited(
                        value("--control-fd")?
                            .parse()
                            .ok()
                            .filter(|fd| *fd > 2)
                            .ok_or_else(|| {
                                "--control-fd needs a descriptor number above 2".to_string()
                            })?,
                    )
                }
                "--control-socket" => {
                    options.control = Control::Socket(value("--control-socket")?.into())
                }
                "--listen" => {
                    options.listen = value("--listen")?.parse().map_err(|_| {
                        "--listen needs an address such as 127.0.0.1:3128".to_string()
                    })?
                }
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
                "--rlimit-fsize" => {
                    options.rlimit_file_size = Some(
                        value("--rlimit-fsize")?
                            .parse()
                            .map_err(|_| "--rlimit-fsize needs a byte count".to_string())?,
                    )
                }
                "--rlimit-nofile" => {
                    options.rlimit_open_files = Some(
                        value("--rlimit-nofile")?
                            .parse()
                            .map_err(|_| "--rlimit-nofile needs a count".to_string())?,
                    )
                }
                "--host-listen" => options.host_listen = Some(value("--host-listen")?),
                "--expect-mount" => {
                    let text = value("--expect-mount")?;
                    let mut parts = text.splitn(3, ':');
                    let parsed = (|| {
                        let device = parts.next()?.parse().ok()?;
                        let inode = parts.next()?.parse().ok()?;
                        let destination = PathBuf::from(parts.next()?);
                        destination
                            .is_absolute()
                            .then_some((destination, (device, inode)))
                    })();
                    options.expect_mounts.push(parsed.ok_or_else(|| {
                        "--expect-mount needs DEVICE:INODE:/absolute/destination".to_string()
                    })?);
                }
                "--user" => {
                    let text = value("--user")?;
                    options.user = text
                        .split_once(':')
                        .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)))
                        .filter(|(uid, gid)| *uid != 0 && *gid != 0)
                        .map(Some)
                        .ok_or_else(|| "--user needs UID:GID, neither 0".to_string())?;
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
        if options.control == Control::Inherited(-1) {
            return Err(
                "--control-fd or --control-socket is required (the shim runs only in a sandbox started by palisade)"
                    .into(),
            );
        }
        Ok(options)
    }
}

/// Runs the shim's command line (what follows `shim`): the shim's options, or
/// [`crate::oci::POOLS_HOOK_FLAG`] alone when podman runs this binary as the hook that
/// bounds a container's kernel pools. `name` starts an error line.
pub fn run_args(args: &[String], name: &str) -> i32 {
    if let [only] = args {
        if only == crate::oci::POOLS_HOOK_FLAG {
            return crate::oci::pools_hook(name);
        }
    }
    match ShimOptions::from_args(args) {
        Ok(options) => run(options),
        Err(e) => {
            eprintln!("{name}: {e}");
            SHIM_FAILURE
        }
    }
}

/// Whether each extra mount is the directory checked at launch; the first that is
/// not, said as the reason.
fn mounts_as_checked(expected: &[(PathBuf, (u64, u64))]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for (destination, identity) in expected {
        let found = std::fs::symlink_metadata(destination)
            .map(|meta| (meta.dev(), meta.ino()))
            .map_err(|e| format!("cannot read {}: {e}", destination.display()))?;
        if found != *identity {
            return Err(format!(
                "what is mounted at {} is not the folder that was checked (it was replaced while the sandbox started)",
                destination.display()
            ));
        }
    }
    Ok(())
}

/// Runs the shim to completion and returns the exit code for the process.
pub fn run(options: ShimOptions) -> i32 {
    // A runtime that mounts by path resolved each source again: the command starts
    // only if that found what was checked.
    if let Err(why) = mounts_as_checked(&options.expect_mounts) {
        eprintln!("palisade shim: {why}; not starting");
        return SHIM_FAILURE;
    }
    // Before anything else: nothing of the sandbox may run as the uid it started as.
    if let Some((uid, gid)) = options.user {
        if let Err(e) = become_user(uid, gid) {
            eprintln!("palisade shim: cannot become uid {uid}: {e}; not starting");
            return SHIM_FAILURE;
        }
        // Where bwrap would have started the command, had it been allowed in.
        if let Err(e) = std::env::set_current_dir(crate::paths::WORKSPACE) {
            eprintln!(
                "palisade shim: cannot enter {}: {e}",
                crate::paths::WORKSPACE
            );
            return SHIM_FAILURE;
        }
    }
    // What podman's seccomp profile cannot carry (a denial by argument value) is loaded
    // here, on the shim and so on everything it starts; see syscall_filter.rs.
    let loaded = crate::syscall_filter::argument_denials().and_then(|filter| {
        seccompiler::apply_filter_all_threads(&filter)
            .map_err(|e| crate::SandboxError::Start(format!("cannot load the seccomp filter: {e}")))
    });
    if let Err(e) = loaded {
        eprintln!("palisade shim: {e}; not starting");
        return SHIM_FAILURE;
    }
    // Nothing the parent handed over may reach the command: the control channel (and
    // any other inherited descriptor) is closed on exec from here on.
    keep_from_command(match options.control {
        Control::Inherited(fd) => Some(fd),
        Control::Socket(_) => None,
    });
    // The command runs as the same user: without this it could read and write the
    // shim's memory through /proc/PID/mem (ptrace is denied, that file is not) and
    // take over its connections to the parent. The command's own exec makes it
    // dumpable again, for its own processes.
    // SAFETY: prctl with integer arguments.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
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

/// Becomes `uid`:`gid` with no supplementary groups, for good: real, effective and
/// saved ids all change, which makes it undumpable, so the command it starts cannot
/// read or write its memory through `/proc`; then the ambient, effective, permitted
/// and inheritable capabilities are emptied (a change of ids from 0 clears most of
/// them, but the shim starts as the namespace's owner when root's sandbox runs bwrap
/// as that id, and keeps them through a change between two other ids). (The bounding
/// set keeps `CAP_SETUID` and `CAP_SETGID`, which only `CAP_SETPCAP` could drop; with
/// no-new-privileges and `nosuid` mounts nothing can raise them again.) Checked
/// afterwards, not assumed: the ids, and that uid 0 is out of reach.
fn become_user(uid: u32, gid: u32) -> nix::Result<()> {
    use nix::unistd::{getresgid, getresuid, setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)?;
    // Started as the namespace's owner (not 0), the change of ids leaves the capabilities
    // (bwrap hands them over as ambient ones): they go now, before the check.
    // SAFETY: prctl with integer arguments.
    let cleared = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    nix::errno::Errno::result(cleared)?;
    clear_capabilities()?;
    let users = getresuid()?;
    let groups = getresgid()?;
    let same = [users.real, users.effective, users.saved] == [uid; 3]
        && [groups.real, groups.effective, groups.saved] == [gid; 3];
    if !same || setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(nix::Error::EPERM);
    }
    Ok(())
}

/// Empties the effective, permitted and inheritable capability sets (`capset(2)`,
/// which nix does not wrap; lowering needs no privilege).
fn clear_capabilities() -> nix::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: capset with a version 3 header and the two data structs it reads.
    let result = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_capset,
            &mut header as *mut Header,
            data.as_ptr(),
        )
    };
    nix::errno::Errno::result(result).map(drop)
}

async fn serve(options: ShimOptions) -> i32 {
    let listener = match TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("palisade shim: cannot listen on {}: {e}", options.listen);
            return SHIM_FAILURE;
        }
    };
    let dialer = match &options.control {
        // SAFETY: the descriptor was handed to this process for the shim alone.
        Control::Inherited(fd) => unsafe { ParentDialer::from_inherited(*fd) },
        Control::Socket(path) => ParentDialer::connect(path).await,
    };
    let dialer = match dialer {
        Ok(dialer) => dialer,
        Err(_) => {
            eprintln!("palisade shim: the parent palisade process is gone; not starting");
            return PARENT_GONE;
        }
    };
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let host = match &options.host_listen {
        Some(name) => match bind_unix(name) {
            Ok(host) => Some(tokio::spawn(host_loop(host, dialer.clone()))),
            Err(e) => {
                eprintln!("palisade shim: cannot listen on {name}: {e}");
                return SHIM_FAILURE;
            }
        },
        None => None,
    };
    let accept = tokio::spawn(accept_loop(listener, dialer.clone(), permits));

    // The listener is bound: from here on, every client in the sandbox finds it.
    let mut command = tokio::process::Command::new(&options.command[0]);
    command.args(&options.command[1..]);
    let address_space = options.rlimit_address_space;
    let processes = options.rlimit_processes;
    let file_size = options.rlimit_file_size;
    let open_files = options.rlimit_open_files;
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
            if let Some(bytes) = file_size {
                setrlimit(Resource::RLIMIT_FSIZE, bytes, bytes).map_err(std::io::Error::from)?;
            }
            if let Some(count) = open_files {
                setrlimit(Resource::RLIMIT_NOFILE, count, count).map_err(std::io::Error::from)?;
            }
            // Counted per user, so bounded for every sandbox (see limits.rs).
            let signals = crate::limits::SIGNALS_QUEUED;
            setrlimit(Resource::RLIMIT_SIGPENDING, signals, signals)
                .map_err(std::io::Error::from)?;
            let queues = crate::limits::MESSAGE_QUEUE_BYTES;
            setrlimit(Resource::RLIMIT_MSGQUEUE, queues, queues).map_err(std::io::Error::from)?;
            prefer_for_the_oom_killer();
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
        _ = dialer.parent_gone() => {
            let _ = child.start_kill();
            PARENT_GONE
        }
    };
    forward.abort();
    accept.abort();
    if let Some(host) = host {
        host.abort();
    }
    code
}

/// A listening Unix socket at `name` (`@name`: abstract, in this network namespace).
fn bind_unix(name: &str) -> std::io::Result<tokio::net::UnixListener> {
    let listener = match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            std::os::unix::net::UnixListener::bind_addr(&address)?
        }
        None => std::os::unix::net::UnixListener::bind(name)?,
    };
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Relays each connection on the host listener to the host's socket, through the parent.
async fn host_loop(listener: tokio::net::UnixListener, dialer: ParentDialer) {
    // A runner holds one connection; a few more are a misbehaving sandbox's business.
    let permits = Arc::new(Semaphore::new(16));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let dialer = dialer.clone();
        tokio::spawn(async move {
            let host = tokio::time::timeout(
                Duration::from_secs(10),
                dialer.dial_target(crate::broker::Target::Host),
            )
            .await;
            if let Ok(Some(mut host)) = host {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut host).await;
            }
            drop(permit);
        });
    }
}

/// Marks every descriptor above stderr close-on-exec, the control channel included.
fn keep_from_command(control_fd: Option<RawFd>) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        // No /proc: the control channel at least.
        if let Some(fd) = control_fd {
            // SAFETY: setting a flag on the shim's own descriptor.
            unsafe {
                nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
            }
        }
        return;
    };
    let fds: Vec<RawFd> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: setting a flag on a descriptor of this process; one that was the
        // directory listing's own (now closed) fails harmlessly.
        unsafe {
            nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
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

async fn accept_loop(listener: TcpListener, dialer: ParentDialer, permits: Arc<Semaphore>) {
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
        let dialer = dialer.clone();
        tokio::spawn(async move {
            relay(client, &dialer).await;
            drop(permit);
        });
    }
}

async fn relay(mut client: TcpStream, dialer: &ParentDialer) {
    let _ = client.set_nodelay(true);
    let vault = tokio::time::timeout(Duration::from_secs(10), dialer.dial()).await;
    let mut vault = match vault {
        Ok(Some(vault)) => vault,
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

/// Makes the calling process (and what it starts) the first the kernel's OOM killer
/// picks, before the shim: a review saw a sandbox at its memory limit lose the shim,
/// and end with exit code 137 and no word of why. Raising one's own score needs no
/// privilege, but the file is the process's own only while it is dumpable: the child
/// of a shim that is not (so no agent process can read its memory) becomes so here, as
/// the exec that follows would make it anyway. Where `/proc` refuses, nothing changes.
/// Async-signal-safe (prctl, open, write, close), for use between fork and exec.
fn prefer_for_the_oom_killer() {
    const PATH: &[u8] = b"/proc/self/oom_score_adj\0";
    const MOST: &[u8] = b"1000";
    // SAFETY: a NUL-terminated path, a buffer of the given length, and a descriptor
    // closed once; no allocation.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        let fd = nix::libc::open(
            PATH.as_ptr().cast(),
            nix::libc::O_WRONLY | nix::libc::O_CLOEXEC,
        );
        if fd >= 0 {
            nix::libc::write(fd, MOST.as_ptr().cast(), MOST.len());
            nix::libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {

    /// The shim starts the command only if each extra mount is the directory checked
    /// at launch, and the expectations survive the trip through its arguments.
    #[test]
    fn a_mount_that_is_not_the_one_checked_stops_the_shim() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let checked = dir.path().join("checked");
        let other = dir.path().join("other");
        std::fs::create_dir(&checked).unwrap();
        std::fs::create_dir(&other).unwrap();
        let meta = std::fs::metadata(&checked).unwrap();
        let expected = vec![(checked.clone(), (meta.dev(), meta.ino()))];
        assert_eq!(mounts_as_checked(&expected), Ok(()));
        let swapped = vec![(other.clone(), (meta.dev(), meta.ino()))];
        let why = mounts_as_checked(&swapped).unwrap_err();
        assert!(why.contains("not the folder that was checked"), "{why}");

        let mut options = ShimOptions::new(Control::Inherited(3), vec!["true".into()]);
        options.expect_mounts = expected.clone();
        let parsed = ShimOptions::from_args(&options.to_args()).unwrap();
        assert_eq!(parsed.expect_mounts, expected);
    }
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let mut options = ShimOptions::new(
            Control::Inherited(3),
            vec!["sh".into(), "-c".into(), "echo --x".into()],
        );
        options.rlimit_address_space = Some(1 << 30);
        options.rlimit_processes = Some(64);
        options.rlimit_file_size = Some(64 << 20);
        options.rlimit_open_files = Some(600);
        options.host_listen = Some("@palisade-host".into());
        options.user = Some((1000, 1001));
        assert_eq!(ShimOptions::from_args(&options.to_args()).unwrap(), options);
        options.control = Control::Socket("/run/palisade/control.sock".into());
        assert_eq!(ShimOptions::from_args(&options.to_args()).unwrap(), options);
    }

    /// What the vault's hold phase relies on: a client's close, reset or half-close
    /// reaches the vault's side at once (not when the next byte would flow), the relay
    /// then ends and frees its place, and the vault's close reaches the client.
    #[tokio::test]
    async fn closes_pass_through_the_relay_both_ways() {
        use std::os::fd::IntoRawFd;
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vault.sock");
        let vault = tokio::net::UnixListener::bind(&socket).unwrap();
        let (parent, sandbox) = crate::broker::channel().unwrap();
        let targets = crate::broker::Targets {
            vault: socket,
            host: None,
        };
        let _server = crate::broker::serve(parent, targets).unwrap();
        // SAFETY: the test owns the sandbox's end and hands it over.
        let dialer = unsafe { ParentDialer::from_inherited(sandbox.into_raw_fd()) }.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let soon = Duration::from_secs(3);
        for case in ["half-close", "close", "reset", "vault closes"] {
            let mut client = TcpStream::connect(address).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let relayed = tokio::spawn({
                let dialer = dialer.clone();
                async move { relay(accepted, &dialer).await }
            });
            let (mut at_vault, _) = vault.accept().await.unwrap();
            client.write_all(b"POST").await.unwrap();
            let mut head = [0u8; 4];
            at_vault.read_exact(&mut head).await.unwrap();
            match case {
                "half-close" => client.shutdown().await.unwrap(),
                "close" => drop(client),
                "reset" => {
                    client.set_zero_linger().unwrap();
                    drop(client);
                }
                _ => {
                    drop(at_vault);
                    let mut rest = [0u8; 8];
                    let read = tokio::time::timeout(soon, client.read(&mut rest)).await;
                    assert!(matches!(read, Ok(Ok(0))), "{case}: {read:?}");
                    drop(client);
                    tokio::time::timeout(soon, relayed)
                        .await
                        .expect(case)
                        .unwrap();
                    continue;
                }
            }
            let mut rest = [0u8; 8];
            let read = tokio::time::timeout(soon, at_vault.read(&mut rest)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "{case}: the vault did not see it: {read:?}"
            );
            // The vault answers and closes (as it does for a client gone while held).
            let _ = at_vault.write_all(b"HTTP/1.1 503 \r\n\r\n").await;
            drop(at_vault);
            tokio::time::timeout(soon, relayed)
                .await
                .expect(case)
                .unwrap();
        }
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
            vec![
                "--user".to_string(),
                "0:0".into(),
                "--".into(),
                "true".into(),
            ],
            vec![
                "--user".to_string(),
                "1000".into(),
                "--".into(),
                "true".into(),
            ],
            vec!["--".to_string(), "true".into()],
            vec![
                "--control-fd".to_string(),
                "1".into(),
                "--".into(),
                "true".into(),
            ],
        ] {
            assert!(ShimOptions::from_args(&args).is_err(), "{args:?}");
        }
    }
}
