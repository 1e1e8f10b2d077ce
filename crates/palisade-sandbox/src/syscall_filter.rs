//! The system calls no sandbox may make, in one list, and that list compiled into the
//! seccomp filters bubblewrap sandboxes load (`bwrap --add-seccomp-fd`).
//!
//! Every sandbox already runs without capabilities, so most of the kernel's privileged
//! interfaces answer `EPERM` anyway. What is left reachable without a capability is
//! kernel attack surface an agent has no use for, or a way to reach state that is not
//! namespaced:
//!
//! - the kernel keyrings (`keyctl`, `add_key`, `request_key`): not namespaced by
//!   mount, pid or network namespaces, so a sandbox could read or change keys of the
//!   user who started it (the session keyring, and keys whose permissions grant the
//!   same uid access);
//! - `io_uring_*`: a second system call interface with a long record of kernel bugs
//!   (answered `ENOSYS`, so libraries fall back to plain system calls);
//! - `io_setup` (Linux AIO, answered `ENOSYS`): its events come from one pool for the
//!   whole machine (`fs.aio-max-nr`), which one sandbox filled in 16 calls, and then
//!   no process of the host could set up AIO;
//! - `ptrace`, `process_vm_readv`/`writev`, `pidfd_getfd`: reading or steering other
//!   processes of the sandbox, the shim among them;
//! - `bpf`, `perf_event_open`, `userfaultfd`: attack surface, no use in a sandbox;
//! - `memfd_secret` (answered `ENOSYS`): its pages are taken out of the kernel's direct
//!   map, which splits the host's huge pages for good (one review's 20 processes split
//!   seven 1 GB pages, a lasting slowdown for the whole machine until reboot);
//! - nested user namespaces (`clone`/`unshare` with `CLONE_NEWUSER`; `clone3`, whose
//!   flags seccomp cannot read, answers `ENOSYS` so the C library falls back to
//!   `clone`), exactly as podman sandboxes (see [`crate::seccomp`]);
//! - `socket(AF_VSOCK)`: virtual machine sockets are not confined by the network
//!   namespace, so on a virtual machine with a vsock service (the hypervisor's, a
//!   guest agent's) a sandbox could reach it past the vault (podman's own profile
//!   already has conditional `socket` rules this cannot be merged with, so the shim
//!   loads it itself in every runtime: [`argument_denials`]);
//! - `socket(AF_NETLINK)`: what a netlink socket has queued to read is charged to no
//!   cgroup. `NETLINK_USERSOCK` lets one unprivileged socket queue messages on another
//!   (one review held 1 GB of the host's kernel memory from a sandbox limited to
//!   256 MiB, and could have held all of it), and `NETLINK_ROUTE` queues an answer for
//!   every request left unread (50 sockets held 290 MB). The C library's address
//!   lookup falls back without it (it then assumes both IPv4 and IPv6); listing
//!   interfaces (`getifaddrs`, Node's `os.networkInterfaces()`) fails, and in a
//!   sandbox whose one interface is loopback there is nothing to list (loaded by the
//!   shim too, as above);
//! - `socket(AF_INET | AF_INET6, SOCK_DGRAM)`, UDP: what a UDP socket has queued to read
//!   on the sandbox's own loopback is charged to no cgroup v1 (measured here: 140
//!   sockets held 64 MB of the host's UDP pool while the sandbox's cgroup counted 1 MB),
//!   and the host's pool (`net.ipv4.udp_mem`) is one for the machine: filled, UDP fails
//!   everywhere, the gateway's own name lookups among them. A sandbox has no network to
//!   send UDP to (name lookups go through the vault), so nothing it needs is lost;
//!   TCP and Unix sockets, whose buffers cgroups count, stay (loaded by the shim too);
//! - setting the setuid or setgid bit (`chmod`, `fchmod`, `fchmodat`, and the create
//!   mode of `open`, `openat`, `creat`, `mknod`, `mknodat`; `fchmodat2` and `openat2`,
//!   whose modes seccomp cannot always read, answer `ENOSYS` so the C library falls
//!   back): `nosuid` holds only inside the sandbox, and a setuid file the agent left in
//!   a folder shared with it would run as the agent's host uid for whoever starts it
//!   on the host;
//! - mounting, module loading, kexec, swap, reboot and the like, refused already for
//!   lack of capabilities, denied here too so a kernel bug in a capability check does
//!   not open them.
//!
//! The filters are generated with `seccompiler` (the Firecracker project's compiler
//! from rules to BPF); only this list is written here. Two filters are loaded because a
//! seccompiler filter has one answer for all its rules: one answers `ENOSYS`, the other
//! `EPERM`. On x86_64 each rule is also added for the x32 ABI's numbers of the same
//! calls, because seccompiler's architecture check does not tell x32 calls apart (most
//! kernels have x32 disabled; the rule costs nothing where it is).

use crate::SandboxError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// `CLONE_NEWUSER` from `<linux/sched.h>`.
pub(crate) const CLONE_NEWUSER: u64 = 0x1000_0000;
pub(crate) const EPERM: u32 = 1;
pub(crate) const ENOSYS: u32 = 38;

/// How a denied call is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ENOSYS`: "this kernel has no such call", so callers fall back.
    Unavailable,
    /// `EPERM`.
    Refused,
}

impl Answer {
    pub fn errno(self) -> u32 {
        match self {
            Answer::Unavailable => ENOSYS,
            Answer::Refused => EPERM,
        }
    }
}

/// When a call is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// Only when argument `arg` has all bits of `flag` set.
    FlagSet {
        arg: u8,
        flag: u64,
    },
    /// Only when (32-bit) argument `arg` is `value`.
    Equals {
        arg: u8,
        value: u64,
    },
    /// Only when mode argument `arg` has the setuid or the setgid bit.
    SetIdMode {
        arg: u8,
    },
    /// `socket(family, type)` whose type (without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`) is
    /// `SOCK_DGRAM`.
    Datagram {
        family: u64,
    },
}

/// `AF_INET` and `AF_INET6` from `<linux/socket.h>`.
pub(crate) const AF_INET: u64 = 2;
pub(crate) const AF_INET6: u64 = 10;
/// `SOCK_DGRAM`, and the bits of a socket type that name it (the rest are flags).
const SOCK_DGRAM: u64 = 2;
const SOCK_TYPE_MASK: u64 = 0xf;

/// `S_ISUID` and `S_ISGID`.
const SET_ID_BITS: [u64; 2] = [0o4000, 0o2000];

const fn set_id_mode(syscall: &'static str, arg: u8) -> Denial {
    Denial {
        syscall,
        answer: Answer::Refused,
        when: When::SetIdMode { arg },
    }
}

/// `AF_VSOCK` from `<linux/socket.h>`.
pub(crate) const AF_VSOCK: u64 = 40;
/// `AF_NETLINK` from `<linux/socket.h>`.
pub(crate) const AF_NETLINK: u64 = 16;

/// One denied system call.
#[derive(Clone, Copy, Debug)]
pub struct Denial {
    pub syscall: &'static str,
    pub answer: Answer,
    pub when: When,
}

const fn always(syscall: &'static str, answer: Answer) -> Denial {
    Denial {
        syscall,
        answer,
        when: When::Always,
    }
}

/// Every denial, the same for bubblewrap and podman sandboxes.
pub const DENIED: &[Denial] = &[
    always("keyctl", Answer::Refused),
    always("add_key", Answer::Refused),
    always("request_key", Answer::Refused),
    always("io_uring_setup", Answer::Unavailable),
    always("io_uring_enter", Answer::Unavailable),
    always("io_uring_register", Answer::Unavailable),
    always("io_setup", Answer::Unavailable),
    always("ptrace", Answer::Refused),
    always("process_vm_readv", Answer::Refused),
    always("process_vm_writev", Answer::Refused),
    always("pidfd_getfd", Answer::Refused),
    always("bpf", Answer::Refused),
    always("perf_event_open", Answer::Refused),
    always("userfaultfd", Answer::Refused),
    always("memfd_secret", Answer::Unavailable),
    always("clone3", Answer::Unavailable),
    Denial {
        syscall: "clone",
        answer: Answer::Refused,
        when: When::FlagSet {
            arg: 0,
            flag: CLONE_NEWUSER,
        },
    },
    Denial {
        syscall: "unshare",
        answer: Answer::Refused,
        when: When::FlagSet {
            arg: 0,
            flag: CLONE_NEWUSER,
        },
    },
    Denial {
        syscall: "socket",
        answer: Answer::Refused,
        when: When::Equals {
            arg: 0,
            value: AF_VSOCK,
        },
    },
    Denial {
        syscall: "socket",
        answer: Answer::Refused,
        when: When::Equals {
            arg: 0,
            value: AF_NETLINK,
        },
    },
    Denial {
        syscall: "socket",
        answer: Answer::Refused,
        when: When::Datagram { family: AF_INET },
    },
    Denial {
        syscall: "socket",
        answer: Answer::Refused,
        when: When::Datagram { family: AF_INET6 },
    },
    set_id_mode("chmod", 1),
    set_id_mode("fchmod", 1),
    set_id_mode("fchmodat", 2),
    set_id_mode("creat", 1),
    set_id_mode("open", 2),
    set_id_mode("openat", 3),
    set_id_mode("mknod", 1),
    set_id_mode("mknodat", 2),
    always("fchmodat2", Answer::Unavailable),
    always("openat2", Answer::Unavailable),
    always("setns", Answer::Refused),
    always("mount", Answer::Refused),
    always("umount2", Answer::Refused),
    always("pivot_root", Answer::Refused),
    always("open_tree", Answer::Refused),
    always("move_mount", Answer::Refused),
    always("fsopen", Answer::Refused),
    always("fsconfig", Answer::Refused),
    always("fsmount", Answer::Refused),
    always("fspick", Answer::Refused),
    always("mount_setattr", Answer::Refused),
    always("open_by_handle_at", Answer::Refused),
    always("init_module", Answer::Refused),
    always("finit_module", Answer::Refused),
    always("delete_module", Answer::Refused),
    always("kexec_load", Answer::Refused),
    always("kexec_file_load", Answer::Refused),
    always("swapon", Answer::Refused),
    always("swapoff", Answer::Refused),
    always("reboot", Answer::Refused),
    always("syslog", Answer::Refused),
    always("acct", Answer::Refused),
    always("quotactl", Answer::Refused),
];

/// The names of every call denied outright (not only with some flags).
pub fn always_denied() -> impl Iterator<Item = &'static Denial> {
    DENIED.iter().filter(|d| d.when == When::Always)
}

/// The system call number of `name` on this architecture, if it has one.
fn number(name: &str) -> Option<i64> {
    use nix::libc;
    let number = match name {
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_setup" => libc::SYS_io_setup,
        "ptrace" => libc::SYS_ptrace,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "memfd_secret" => libc::SYS_memfd_secret,
        "clone3" => libc::SYS_clone3,
        "clone" => libc::SYS_clone,
        "unshare" => libc::SYS_unshare,
        "setns" => libc::SYS_setns,
        "socket" => libc::SYS_socket,
        #[cfg(target_arch = "x86_64")]
        "chmod" => libc::SYS_chmod,
        "fchmod" => libc::SYS_fchmod,
        "fchmodat" => libc::SYS_fchmodat,
        "fchmodat2" => libc::SYS_fchmodat2,
        #[cfg(target_arch = "x86_64")]
        "creat" => libc::SYS_creat,
        #[cfg(target_arch = "x86_64")]
        "open" => libc::SYS_open,
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        #[cfg(target_arch = "x86_64")]
        "mknod" => libc::SYS_mknod,
        "mknodat" => libc::SYS_mknodat,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "open_tree" => libc::SYS_open_tree,
        "move_mount" => libc::SYS_move_mount,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "mount_setattr" => libc::SYS_mount_setattr,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "reboot" => libc::SYS_reboot,
        "syslog" => libc::SYS_syslog,
        "acct" => libc::SYS_acct,
        "quotactl" => libc::SYS_quotactl,
        _ => return None,
    };
    Some(number)
}

/// The x32 ABI's numbers for `name` (x86_64 only): the native number with the x32 bit
/// for calls both ABIs share, or the x32-only number where the ABIs differ.
#[cfg(target_arch = "x86_64")]
fn x32_numbers(name: &str, native: i64) -> Vec<i64> {
    const X32_BIT: i64 = 0x4000_0000;
    // From the kernel's syscall_64.tbl: calls with an x32-only entry (the "64" entry is
    // not callable from x32).
    let x32_only = match name {
        "ptrace" => Some(521),
        "kexec_load" => Some(528),
        "process_vm_readv" => Some(539),
        "process_vm_writev" => Some(540),
        _ => None,
    };
    match x32_only {
        Some(number) => vec![X32_BIT | number],
        None => vec![X32_BIT | native],
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_numbers(_name: &str, _native: i64) -> Vec<i64> {
    Vec::new()
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SandboxError::RuntimeUnusable {
        runtime: "bwrap".into(),
        reason: format!(
            "palisade has no seccomp filter for the {} architecture; use --runtime podman",
            std::env::consts::ARCH
        ),
    })
}

/// The compiled filters for a bubblewrap sandbox, as the bytes `bwrap --add-seccomp-fd`
/// reads (an array of `struct sock_filter`, native byte order).
pub fn bwrap_filters() -> Result<Vec<Vec<u8>>, SandboxError> {
    [Answer::Unavailable, Answer::Refused]
        .into_iter()
        .map(|answer| compile(DENIED.iter(), answer).map(|program| to_bytes(&program)))
        .collect()
}

/// The denials by argument value (`socket(AF_VSOCK)`), compiled for the shim to load
/// on itself before the command starts, in every runtime: podman's own profile cannot
/// carry them (see [`crate::seccomp`]), and seccomp filters stack, a call being refused
/// if any filter refuses it. (In a bubblewrap sandbox they repeat what its filters
/// already deny.)
pub fn argument_denials() -> Result<BpfProgram, SandboxError> {
    compile(
        DENIED
            .iter()
            .filter(|d| matches!(d.when, When::Equals { .. } | When::Datagram { .. })),
        Answer::Refused,
    )
}

/// One filter answering `answer` for those of `denials` answered so.
fn compile<'a>(
    denials: impl Iterator<Item = &'a Denial>,
    answer: Answer,
) -> Result<BpfProgram, SandboxError> {
    let arch = target_arch()?;
    let failed = |e: &dyn std::fmt::Display| {
        SandboxError::Start(format!("cannot build the sandbox's seccomp filter: {e}"))
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for denial in denials.filter(|d| d.answer == answer) {
        // A call this architecture lacks cannot be made.
        let Some(native) = number(denial.syscall) else {
            continue;
        };
        let conditions = match denial.when {
            When::Always => Vec::new(),
            When::FlagSet { arg, flag } => vec![SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(|e| failed(&e))?])
            .map_err(|e| failed(&e))?],
            When::Equals { arg, value } => vec![SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                value,
            )
            .map_err(|e| failed(&e))?])
            .map_err(|e| failed(&e))?],
            When::Datagram { family } => {
                let condition = |arg, op, value| {
                    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
                        .map_err(|e| failed(&e))
                };
                vec![SeccompRule::new(vec![
                    condition(0, SeccompCmpOp::Eq, family)?,
                    condition(1, SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK), SOCK_DGRAM)?,
                ])
                .map_err(|e| failed(&e))?]
            }
            // Either bit: one rule each (a call matching any rule is denied).
            When::SetIdMode { arg } => SET_ID_BITS
                .iter()
                .map(|&bit| {
                    SeccompRule::new(vec![SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(bit),
                        bit,
                    )
                    .map_err(|e| failed(&e))?])
                    .map_err(|e| failed(&e))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        // Several denials of one call (`socket` of two families) are several rules,
        // any of which denies it; an unconditional one (no rules) stays unconditional.
        for number in std::iter::once(native).chain(x32_numbers(denial.syscall, native)) {
            let rules = rules.entry(number).or_default();
            if conditions.is_empty() {
                rules.clear();
            } else {
                rules.extend(conditions.iter().cloned());
            }
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(answer.errno()),
        arch,
    )
    .map_err(|e| failed(&e))?;
    filter.try_into().map_err(|e| failed(&e))
}

fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

/// One line for `sandbox doctor`: what the filter denies.
pub fn summary() -> String {
    let names: Vec<&str> = DENIED
        .iter()
        .map(|d| match d.when {
            When::Always => d.syscall,
            When::FlagSet { .. } | When::Equals { .. } => match d.syscall {
                "clone" => "clone(CLONE_NEWUSER)",
                "unshare" => "unshare(CLONE_NEWUSER)",
                "socket"
                    if d.when
                        == (When::Equals {
                            arg: 0,
                            value: AF_NETLINK,
                        }) =>
                {
                    "socket(AF_NETLINK)"
                }
                "socket" => "socket(AF_VSOCK)",
                other => other,
            },
            When::Datagram { family: AF_INET } => "socket(AF_INET, SOCK_DGRAM)",
            When::Datagram { .. } => "socket(AF_INET6, SOCK_DGRAM)",
            When::SetIdMode { .. } => match d.syscall {
                "chmod" => "chmod(setuid/setgid)",
                "fchmod" => "fchmod(setuid/setgid)",
                "fchmodat" => "fchmodat(setuid/setgid)",
                "creat" => "creat(setuid/setgid)",
                "open" => "open(setuid/setgid)",
                "openat" => "openat(setuid/setgid)",
                "mknod" => "mknod(setuid/setgid)",
                _ => "mknodat(setuid/setgid)",
            },
        })
        .collect();
    format!("{} calls denied: {}", names.len(), names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_call_is_known_here() {
        // Calls only older architectures have (newer ones have just the *at forms).
        let legacy = ["chmod", "creat", "open", "mknod"];
        for denial in DENIED {
            if !cfg!(target_arch = "x86_64") && legacy.contains(&denial.syscall) {
                continue;
            }
            assert!(
                number(denial.syscall).is_some(),
                "{} has no number on {}",
                denial.syscall,
                std::env::consts::ARCH
            );
        }
    }

    #[test]
    fn the_filters_compile_to_whole_instructions() {
        let filters = bwrap_filters().unwrap();
        assert_eq!(filters.len(), 2);
        for filter in filters {
            assert!(!filter.is_empty() && filter.len() % 8 == 0);
            // The kernel's limit on one filter.
            assert!(filter.len() / 8 <= 4096);
        }
    }

    /// Loads the filters into a child process and checks the answers it gets.
    #[test]
    fn a_filtered_process_is_answered_as_listed() {
        use std::os::unix::process::CommandExt;
        let filters = bwrap_filters().unwrap();
        let programs: Vec<Vec<nix::libc::sock_filter>> = filters
            .iter()
            .map(|bytes| {
                bytes
                    .chunks_exact(8)
                    .map(|c| nix::libc::sock_filter {
                        code: u16::from_ne_bytes([c[0], c[1]]),
                        jt: c[2],
                        jf: c[3],
                        k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                    })
                    .collect()
            })
            .collect();
        // The probes run in the child between fork and exec; the shell then proves the
        // filter leaves ordinary calls alone.
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", "exit 0"]);
        // SAFETY: prctl and seccomp set-up plus raw system calls, all async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                use nix::libc;
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for program in &programs {
                    let prog = libc::sock_fprog {
                        len: program.len() as u16,
                        filter: program.as_ptr() as *mut libc::sock_filter,
                    };
                    if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // No allocation after fork: failures are told apart by made-up codes.
                let failed = |code| Err(std::io::Error::from_raw_os_error(code));
                let errno = || *libc::__errno_location();
                if libc::syscall(libc::SYS_keyctl, 0, -3, 0) != -1 || errno() != libc::EPERM {
                    return failed(9001);
                }
                if libc::syscall(libc::SYS_io_uring_setup, 1, 0) != -1 || errno() != libc::ENOSYS {
                    return failed(9002);
                }
                if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                    return failed(9003);
                }
                // A flag other than CLONE_NEWUSER still reaches the kernel.
                if libc::unshare(libc::CLONE_NEWUTS) == -1
                    && errno() == libc::EPERM
                    && libc::geteuid() == 0
                {
                    return failed(9004);
                }
                Ok(())
            });
        }
        let status = command.status().unwrap();
        assert!(status.success(), "{status}");
    }
}
