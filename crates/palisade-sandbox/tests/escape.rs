//! Real sandboxes, both runtimes, trying to break out. A fake vault on a Unix socket
//! answers every proxied request, so these run without the gateway; the binary-level
//! tests in the `palisade` crate repeat the egress cases through the real vault.
//!
//! Podman cases are skipped (with a message) when podman or its image is missing.

use palisade_sandbox::{Limits, Oci, OciTool, Runtime, RuntimeKind, SandboxSpec, StdioMode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHIM: &str = env!("CARGO_BIN_EXE_palisade-sandbox-shim");
const CANARY: &str = "canary-8f3a1c9e5b7d";

struct Fixture {
    dir: tempfile::TempDir,
    socket: PathBuf,
    _vault: tokio::task::JoinHandle<()>,
}

/// A stand-in vault: answers each proxied request with 200 and the request line.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("home/agents/a/workspace")).unwrap();
    std::fs::create_dir_all(dir.path().join("home/agents/b/workspace")).unwrap();
    std::fs::write(dir.path().join("home/master.key"), CANARY).unwrap();
    std::fs::write(dir.path().join("home/agents/b/workspace/private"), CANARY).unwrap();
    let socket = dir.path().join("vault.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let vault = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(
                        Duration::from_secs(5),
                        stream.read(&mut buffer[read..]),
                    )
                    .await
                    {
                        Ok(Ok(n)) if n > 0 => read += n,
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buffer[..read]).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                let body = format!("fake-vault saw: {line}\n");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Fixture {
        socket,
        dir,
        _vault: vault,
    }
}

impl Fixture {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    fn spec(&self, command: &str, limits: Limits) -> SandboxSpec {
        SandboxSpec {
            agent: "a".into(),
            workspace: self.home().join("agents/a/workspace"),
            palisade_binary: PathBuf::from(SHIM),
            shim_subcommand: vec!["shim".into()],
            vault_socket: self.socket.clone(),
            host_socket: None,
            ca_bundle: palisade_sandbox::env::ca_bundle(
                "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
            ),
            mounts: Vec::new(),
            limits,
            command: vec!["/bin/bash".into(), "-c".into(), command.into()],
            stdio: StdioMode::Piped,
        }
    }
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    timed_out: bool,
    elapsed: Duration,
}

async fn run(runtime: &dyn Runtime, spec: SandboxSpec) -> Ran {
    let started = Instant::now();
    let mut sandbox = runtime
        .start(&spec)
        .unwrap_or_else(|e| panic!("{}: {e}", runtime.kind()));
    drop(sandbox.child_mut().stdin.take());
    let mut stdout = sandbox.child_mut().stdout.take().unwrap();
    let mut stderr = sandbox.child_mut().stderr.take().unwrap();
    let out = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let outcome = tokio::time::timeout(Duration::from_secs(120), sandbox.wait())
        .await
        .expect("sandbox did not finish in 120 s")
        .unwrap();
    let stdout = tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .unwrap()
        .unwrap();
    let stderr = tokio::time::timeout(Duration::from_secs(10), err)
        .await
        .unwrap()
        .unwrap();
    Ran {
        code: outcome.code,
        stdout,
        stderr,
        timed_out: outcome.timed_out,
        elapsed: started.elapsed(),
    }
}

fn runtimes() -> Vec<Box<dyn Runtime>> {
    let mut all: Vec<Box<dyn Runtime>> = vec![Box::new(palisade_sandbox::Bubblewrap::new())];
    let podman = Oci::new(OciTool::Podman);
    match podman.check() {
        Ok(()) => all.push(Box::new(podman)),
        Err(e) if std::env::var_os("PALISADE_REQUIRE_PODMAN").is_some() => {
            panic!("podman required: {e}")
        }
        Err(e) => eprintln!("SKIPPING podman cases: {e}"),
    }
    all
}

fn no_limits() -> Limits {
    Limits::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_goes_through_the_shim_to_the_vault_socket() {
    let fx = fixture().await;
    for runtime in runtimes() {
        let ran = run(&*runtime, fx.spec("curl -sS --max-time 10 http://example.test/hello && curl -sS --max-time 10 -o /dev/null -w '%{http_code}' https://example.test/ ; echo", no_limits())).await;
        assert_eq!(
            ran.code,
            0,
            "{}: {} {}",
            runtime.kind(),
            ran.stdout,
            ran.stderr
        );
        assert!(
            ran.stdout
                .contains("fake-vault saw: GET http://example.test/hello"),
            "{}: {}",
            runtime.kind(),
            ran.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_stdio_stream_through() {
    let fx = fixture().await;
    for runtime in runtimes() {
        let ran = run(
            &*runtime,
            fx.spec("echo out; echo err >&2; exit 42", no_limits()),
        )
        .await;
        assert_eq!(
            (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
            (42, "out\n", "err\n"),
            "{}",
            runtime.kind()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_direct_network_no_dns_only_loopback() {
    let fx = fixture().await;
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    for runtime in runtimes() {
        let script = format!(
            "python3 - <<'EOF'\n\
import socket\n\
try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('TCP-CONNECTED')\n\
except OSError as e: print('tcp refused', e)\n\
try:\n    socket.getaddrinfo('example.com', 443); print('DNS-RESOLVED')\n\
except OSError as e: print('dns failed', e)\n\
try:\n    socket.socket(40, socket.SOCK_STREAM); print('VSOCK-OPENED')\n\
except OSError as e: print('vsock refused', e)\n\
for protocol in (0, 2, 4, 15, 16):\n    try:\n        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol); print('NETLINK-OPENED', protocol)\n    except OSError as e: print('netlink refused', protocol, e.errno)\n\
for family in (socket.AF_INET, socket.AF_INET6):\n    for kind in (socket.SOCK_DGRAM, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC):\n        try:\n            socket.socket(family, kind); print('UDP-OPENED', family)\n        except OSError as e: print('udp refused', int(family), e.errno)\n\
a, b = socket.socketpair(); a.send(b'x'); print('unix', b.recv(1))\n\
print('addresses', len(socket.getaddrinfo('localhost', 80)))\n\
EOF\n\
curl -sS --noproxy '*' --max-time 3 http://127.0.0.1:{port}/ && echo CURL-CONNECTED\n\
echo interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1)\n"
        );
        let ran = run(&*runtime, fx.spec(&script, no_limits())).await;
        let kind = runtime.kind();
        assert!(!ran.stdout.contains("CONNECTED"), "{kind}: {}", ran.stdout);
        assert!(
            ran.stdout.contains("tcp refused"),
            "{kind}: {} {}",
            ran.stdout,
            ran.stderr
        );
        assert!(ran.stdout.contains("dns failed"), "{kind}: {}", ran.stdout);
        // Virtual machine sockets are not confined by the network namespace: refused
        // by a filter (EPERM), in every runtime, not merely missing from this kernel
        // (bubblewrap's filters; the shim's own for podman, whose profile keeps its
        // own socket rules).
        assert!(
            ran.stdout.contains("vsock refused [Errno 1]") && !ran.stdout.contains("VSOCK-OPENED"),
            "{kind}: {}",
            ran.stdout
        );
        // No netlink: what its sockets queue is charged to no cgroup. Address lookup
        // works without it.
        for protocol in [0, 2, 4, 15, 16] {
            assert!(
                ran.stdout
                    .contains(&format!("netlink refused {protocol} 1\n")),
                "{kind}: {}",
                ran.stdout
            );
        }
        // No UDP: what its sockets queue on the sandbox's loopback is charged to no
        // cgroup v1, from one pool for the whole machine. Unix sockets stay.
        assert!(!ran.stdout.contains("UDP-OPENED"), "{kind}: {}", ran.stdout);
        for family in [2, 10] {
            assert_eq!(
                ran.stdout
                    .matches(&format!("udp refused {family} 1\n"))
                    .count(),
                2,
                "{kind}: {}",
                ran.stdout
            );
        }
        assert!(ran.stdout.contains("unix b'x'"), "{kind}: {}", ran.stdout);
        assert!(ran.stdout.contains("addresses "), "{kind}: {}", ran.stdout);
        assert!(
            ran.stdout.contains("interfaces: lo\n"),
            "{kind}: {}",
            ran.stdout
        );
        assert!(
            host.accept().is_err(),
            "{kind}: the host listener was reached"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_secrets_and_processes_are_invisible() {
    let fx = fixture().await;
    // A secret in the parent's environment must not reach the sandbox.
    std::env::set_var("PALISADE_TEST_CANARY", CANARY);
    let home = fx.home();
    for runtime in runtimes() {
        let script = format!(
            "for f in {home}/master.key {home}/agents/b/workspace/private {home}; do ls $f >/dev/null 2>&1 && echo READABLE $f; done\n\
echo shadow: $(sha256sum /etc/shadow 2>/dev/null | cut -c1-64)\n\
echo root: $(ls -A /root 2>/dev/null)\n\
cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n' > /tmp/all\n\
part={first}; grep -r \"${{part}}{second}\" /tmp/all /run/palisade /workspace /etc 2>/dev/null && echo FOUND-CANARY\n\
env | grep -E '^(HOME|SSL_CERT_FILE)=' | sort\n\
echo processes: $(ls -d /proc/[0-9]* | wc -l)\n",
            home = home.display(),
            first = &CANARY[..10],
            second = &CANARY[10..],
        );
        let ran = run(&*runtime, fx.spec(&script, no_limits())).await;
        let kind = runtime.kind();
        assert!(!ran.stdout.contains("READABLE"), "{kind}: {}", ran.stdout);
        // The host's /etc/shadow and /root are absent (bwrap) or the image's own (podman).
        let host_shadow = std::process::Command::new("sha256sum")
            .arg("/etc/shadow")
            .output()
            .unwrap();
        let host_shadow = String::from_utf8_lossy(&host_shadow.stdout)
            .chars()
            .take(64)
            .collect::<String>();
        if host_shadow.len() == 64 {
            assert!(
                !ran.stdout.contains(&host_shadow),
                "{kind}: host /etc/shadow readable"
            );
        }
        let root_line = ran
            .stdout
            .lines()
            .find(|l| l.starts_with("root:"))
            .unwrap_or("");
        for entry in root_line.trim_start_matches("root:").split_whitespace() {
            assert!(
                [".bashrc", ".profile"].contains(&entry),
                "{kind}: /root shows {entry}"
            );
        }
        assert!(
            !ran.stdout.contains("FOUND-CANARY"),
            "{kind}: {}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("HOME=/workspace"),
            "{kind}: {}",
            ran.stdout
        );
        let processes: usize = ran
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("processes: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(usize::MAX);
        // bash, the shim (and bwrap's init): nothing of the host's.
        assert!(
            processes <= 6,
            "{kind}: {processes} processes visible: {}",
            ran.stdout
        );
    }
}

/// Nothing in a sandbox is the host's root, even when root starts it: without
/// capabilities, uid 0 itself is still what the kernel checks for the host-wide
/// settings under /proc/sys (kernel.core_pattern runs a program as root) and is the
/// owner of what the agent writes to a shared folder (a setuid-root program for any
/// local user). And the command cannot reach into the shim's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_the_sandbox_is_the_hosts_root() {
    let fx = fixture().await;
    let shared = fx.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    // Writable by the agent whatever host uid it is.
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // A setting is written back with the value it has, so a failure changes nothing.
    let script = "v=$(cat /proc/sys/kernel/printk_ratelimit)\n\
echo \"$v\" > /proc/sys/kernel/printk_ratelimit 2>/dev/null && echo WROTE-SYSCTL\n\
cp /bin/true /mnt/shared/planted && echo planted\n\
chmod 4755 /mnt/shared/planted 2>/dev/null && echo SETUID-SET\n\
chmod 2755 /mnt/shared/planted 2>/dev/null && echo SETGID-SET\n\
chmod 755 /mnt/shared/planted && echo plain-chmod-ok\n\
python3 -c \"import os; os.open('/mnt/shared/made', os.O_CREAT | os.O_WRONLY, 0o4755)\" 2>/dev/null && echo CREATED-SETUID\n\
for p in /proc/[0-9]*; do\n\
  if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/run/palisade/palisade shim'; then\n\
    echo shim-found; head -c 16 $p/mem > /dev/null 2>&1 && echo READ-SHIM-MEMORY\n\
  fi\n\
done\n\
grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status\n";
    for runtime in runtimes() {
        let _ = std::fs::remove_file(shared.join("planted"));
        let _ = std::fs::remove_file(shared.join("made"));
        let mut spec = fx.spec(script, no_limits());
        spec.mounts = vec![palisade_sandbox::Mount {
            source: shared.clone(),
            destination: PathBuf::from("/mnt/shared"),
            writable: true,
        }];
        let ran = run(&*runtime, spec).await;
        let kind = runtime.kind();
        assert!(
            !ran.stdout.contains("WROTE-SYSCTL"),
            "{kind}: {}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("planted"),
            "{kind}: {} {}",
            ran.stdout,
            ran.stderr
        );
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(shared.join("planted")).unwrap(),
        );
        assert_ne!(
            owner, 0,
            "{kind}: the agent's file belongs to the host's root"
        );
        assert!(
            ran.stdout.contains("plain-chmod-ok"),
            "{kind}: {}",
            ran.stdout
        );
        // The set-id bits are refused (`nosuid` holds only inside the sandbox).
        for set in ["SETUID-SET", "SETGID-SET", "CREATED-SETUID"] {
            assert!(!ran.stdout.contains(set), "{kind}: {set}: {}", ran.stdout);
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(shared.join("planted"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o6000, 0, "{kind}: mode {mode:o}");
        if nix::unistd::geteuid().is_root() {
            // bubblewrap's agent is an id of its own, podman's the one its agents share.
            let agent = match kind {
                RuntimeKind::Bwrap => palisade_sandbox::oci::agent_owner("a").uid,
                _ => palisade_sandbox::oci::rootful_agent_owner().uid,
            };
            assert_eq!(owner, agent, "{kind}");
        }
        assert!(ran.stdout.contains("shim-found"), "{kind}: {}", ran.stdout);
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert!(
                ran.stdout.contains(&format!("{set}:\t0000000000000000")),
                "{kind}: {set}: {}",
                ran.stdout
            );
        }
        assert!(
            !ran.stdout.contains("READ-SHIM-MEMORY"),
            "{kind}: {}",
            ran.stdout
        );
    }
}

/// What bubblewrap mounts is the folder that was checked, not what its path leads to
/// by the time bwrap gets to it: a source whose path no longer leads to itself (here
/// a link, as an agent could swap a directory it can write for one between the check
/// and the mount) is refused, and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_whose_path_now_leads_elsewhere_is_refused() {
    let fx = fixture().await;
    let swapped = fx.dir.path().join("docs");
    std::os::unix::fs::symlink(fx.home(), &swapped).unwrap();
    let mut spec = fx.spec("ls /mnt/docs", no_limits());
    spec.mounts = vec![palisade_sandbox::Mount {
        source: swapped.clone(),
        destination: PathBuf::from("/mnt/docs"),
        writable: false,
    }];
    let error = palisade_sandbox::Bubblewrap::new()
        .start(&spec)
        .err()
        .expect("a sandbox started with the home mounted");
    let message = error.to_string();
    assert!(
        message.contains("changed while the sandbox was starting")
            && message.contains(&fx.home().display().to_string()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_only_in_workspace_and_tmp_and_no_capabilities() {
    let fx = fixture().await;
    let x86_64 = cfg!(target_arch = "x86_64");
    for runtime in runtimes() {
        let mut script = "for d in / /usr /etc /run/palisade /var /bin; do touch $d/palisade-probe 2>/dev/null && echo WROTE $d; done\n\
touch /workspace/ok && touch /tmp/ok && echo workspace-and-tmp-ok\n\
grep CapEff /proc/self/status\n\
unshare -U true 2>/dev/null && echo NESTED-USERNS-unshare\n"
            .to_string();
        if x86_64 {
            // clone(2) = 56 and clone3(2) = 435 with CLONE_NEWUSER | SIGCHLD, then a
            // plain clone that must still work.
            script.push_str("perl -e 'my $p = syscall(56, 0x10000000 | 17, 0, 0, 0, 0); if ($p == 0) { exit 0 } if ($p > 0) { waitpid($p, 0); print \"NESTED-USERNS-clone\\n\" } else { print \"clone refused: $!\\n\" }'\n\
perl -e 'my $args = pack(\"Q11\", 0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0); my $p = syscall(435, $args, 88); if ($p == 0) { exit 0 } if ($p > 0) { waitpid($p, 0); print \"NESTED-USERNS-clone3\\n\" } else { print \"clone3 refused: $!\\n\" }'\n\
perl -e 'my $p = syscall(56, 17, 0, 0, 0, 0); if ($p == 0) { exit 0 } waitpid($p, 0); print \"plain clone ok\\n\" if $p > 0'\n");
        }
        let ran = run(&*runtime, fx.spec(&script, no_limits())).await;
        let kind = runtime.kind();
        assert!(!ran.stdout.contains("WROTE"), "{kind}: {}", ran.stdout);
        assert!(
            ran.stdout.contains("workspace-and-tmp-ok"),
            "{kind}: {} {}",
            ran.stdout,
            ran.stderr
        );
        assert!(
            ran.stdout.contains("CapEff:\t0000000000000000"),
            "{kind}: {}",
            ran.stdout
        );
        // No nested user namespace by unshare, clone or clone3 (palisade's seccomp
        // filter or profile; bubblewrap also --disable-userns unless root starts it),
        // while a plain clone (fork) still works.
        assert!(
            !ran.stdout.contains("NESTED-USERNS"),
            "{kind}: {}",
            ran.stdout
        );
        if x86_64 {
            assert!(
                ran.stdout.contains("clone refused") && ran.stdout.contains("clone3 refused"),
                "{kind}: {} {}",
                ran.stdout,
                ran.stderr
            );
            assert!(
                ran.stdout.contains("plain clone ok"),
                "{kind}: {}",
                ran.stdout
            );
        }
        assert!(fx.home().join("agents/a/workspace/ok").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_hits_the_pids_limit() {
    let fx = fixture().await;
    for runtime in runtimes() {
        let limits = Limits {
            pids: Some(32),
            ..Limits::default()
        };
        let script = "python3 - <<'EOF'\n\
import os, signal, time\n\
kids = []\n\
try:\n    for i in range(500):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(20); os._exit(0)\n        kids.append(pid)\n    print('FORKED-ALL')\n\
except OSError as e:\n    print('fork refused after', len(kids), e)\n\
for k in kids: os.kill(k, signal.SIGKILL)\n\
EOF\n";
        let ran = run(&*runtime, fx.spec(script, limits)).await;
        let kind = runtime.kind();
        assert!(
            ran.stdout.contains("fork refused after"),
            "{kind}: {} {}",
            ran.stdout,
            ran.stderr
        );
        assert!(!ran.stdout.contains("FORKED-ALL"), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced() {
    let fx = fixture().await;
    for runtime in runtimes() {
        let limits = Limits {
            memory: Some(128 << 20),
            ..Limits::default()
        };
        let script =
            "python3 -c \"b = b'x' * (512 << 20); print('ALLOCATED', len(b))\"; echo exit=$?";
        let ran = run(&*runtime, fx.spec(script, limits)).await;
        let kind = runtime.kind();
        assert!(!ran.stdout.contains("ALLOCATED"), "{kind}: {}", ran.stdout);
        assert!(!ran.stdout.contains("exit=0"), "{kind}: {}", ran.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_time_limit_kills_the_sandbox() {
    let fx = fixture().await;
    for runtime in runtimes() {
        let limits = Limits {
            wall_time: Some(Duration::from_secs(2)),
            ..Limits::default()
        };
        let ran = run(
            &*runtime,
            fx.spec("sleep 60 & sleep 60; echo SURVIVED", limits),
        )
        .await;
        let kind = runtime.kind();
        assert!(ran.timed_out, "{kind}");
        assert_eq!(ran.code, 124, "{kind}");
        assert!(
            ran.elapsed < Duration::from_secs(30),
            "{kind}: {:?}",
            ran.elapsed
        );
        assert!(!ran.stdout.contains("SURVIVED"));
    }
    // Nothing of ours is left: no sleeping process, no container.
    std::thread::sleep(Duration::from_millis(500));
    let leftovers = std::process::Command::new("pgrep")
        .args(["-f", "sleep 60"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&leftovers.stdout).to_string();
    assert!(
        pids.trim().is_empty() || !ours(&pids),
        "sleep processes left: {pids}"
    );
    assert!(
        palisade_sandbox::oci::sandbox_containers(OciTool::Podman)
            .iter()
            .all(|(name, _)| !name.contains(&format!("-{}-", std::process::id()))),
        "a container was left"
    );
}

/// Whether any of `pids` descends from a sandbox of this test process.
fn ours(pids: &str) -> bool {
    pids.lines().any(|pid| {
        let mut current = pid.trim().to_string();
        for _ in 0..32 {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{current}/stat")) else {
                return false;
            };
            let Some(parent) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            else {
                return false;
            };
            if parent == std::process::id().to_string() {
                return true;
            }
            if parent == "0" || parent == "1" {
                return false;
            }
            current = parent.to_string();
        }
        false
    })
}

#[test]
fn bad_input_is_refused_before_anything_starts() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let fx = fixture().await;
        let mut spec = fx.spec("true", no_limits());
        spec.vault_socket = fx.dir.path().join("missing.sock");
        let err = palisade_sandbox::Bubblewrap::new()
            .start(&spec)
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("vault socket"), "{err}");
        let err = Oci::with_image(OciTool::Podman, "localhost/palisade-no-such-image:0")
            .start(&fx.spec("true", no_limits()))
            .err()
            .expect("must fail");
        let text = err.to_string();
        assert!(
            text.contains("image build") || text.contains("not installed"),
            "{text}"
        );
        assert!(!Path::new(&text).exists());
    });
}

/// A mount inside another would be made through the outer one's files, which the agent
/// may have written: refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_inside_one_another_are_refused() {
    let fx = fixture().await;
    let folder = fx.dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let mut spec = fx.spec("true", no_limits());
    spec.mounts = ["/mnt/a", "/mnt/a/lib"]
        .into_iter()
        .map(|destination| palisade_sandbox::Mount {
            source: folder.clone(),
            destination: PathBuf::from(destination),
            writable: true,
        })
        .collect();
    for runtime in runtimes() {
        let error = runtime.start(&spec).err().expect("a sandbox started");
        assert!(
            error.to_string().contains("may not lie inside one another"),
            "{}: {error}",
            runtime.kind()
        );
    }
}
