//! `palisade sandbox run` end to end: the real binary, a temporary home, the real
//! vault (in-process), bubblewrap and podman, as root and as the unprivileged user
//! `palisade-test` (created when missing, when the tests run as root).
//!
//! The upstream is a Python HTTPS server on 127.0.0.2 with a throwaway CA (made with
//! `openssl`): `/echo` answers "ok" and logs the request headers to a file only the
//! test reads, `/repo.git` is a bare git repository served over dumb HTTP, and
//! `/simple/` a PEP 503 index of a wheel built here. 127.0.0.2 is used because
//! `localhost`/127.0.0.1 are in the sandbox's NO_PROXY.
//!
//! Podman cases are skipped with a message when podman or its image is missing
//! (`palisade sandbox image build`); set PALISADE_REQUIRE_PODMAN=1 to fail instead.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_palisade");
const SECRET: &str = "tok-5e1f0c3a9b8d7e6f";
const TEST_USER: &str = "palisade-test";

fn run_timeout(command: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    use std::io::Write;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.process_group(0);
    let mut child = command.spawn().expect("spawn");
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin.unwrap_or_default());
    }
    let pid = child.id() as i32;
    let killer = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                return;
            }
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let output = child.wait_with_output().expect("wait");
    let _ = killer.join();
    output
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Who runs palisade: root, or the unprivileged test user.
#[derive(Clone, Copy, Debug, PartialEq)]
enum As {
    Root,
    User,
}

/// Tests that run sandboxes as the unprivileged user share this; the one that delegates
/// a cgroup to that user holds it alone, since sandboxes the user starts meanwhile
/// would land in the delegated cgroup and its clean-up kills what is in there.
static USER_SANDBOXES: std::sync::RwLock<()> = std::sync::RwLock::new(());

struct World {
    /// Held while the world lives (user worlds only): see [`USER_SANDBOXES`].
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    home: PathBuf,
    port: u16,
    server: Option<std::process::Child>,
    who: As,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        palisade_testkit::unmount_under(self.dir.path());
    }
}

fn sh(script: &str, dir: &Path) {
    let output = run_timeout(
        Command::new("bash").arg("-ec").arg(script).current_dir(dir),
        None,
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "{script}\n{}", text(&output));
}

const SERVER: &str = r#"
import http.server, ssl, sys, os, json
root, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a):
        pass
    def do_GET(self):
        with open(log, 'a') as f:
            f.write(json.dumps({'path': self.path, 'headers': dict(self.headers)}) + '\n')
        if self.path.startswith('/echo') or self.path.startswith('/limited') or self.path.startswith('/blocked'):
            body = b'ok\n'
            self.send_response(200)
            self.send_header('content-length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(root, '..', 'server.pem'), os.path.join(root, '..', 'server.key'))
server = http.server.ThreadingHTTPServer(('127.0.0.2', port), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

fn world(who: As) -> Option<World> {
    let shared =
        (who == As::User).then(|| USER_SANDBOXES.read().unwrap_or_else(|p| p.into_inner()));
    world_with(who, shared)
}

fn world_with(who: As, shared: Option<std::sync::RwLockReadGuard<'static, ()>>) -> Option<World> {
    if who == As::User && !prepared().user {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("palisade-sbx-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("www/simple/demo-pkg")).unwrap();
    sh(
        r#"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=palisade-test-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.2 2>/dev/null
printf 'subjectAltName=IP:127.0.0.2\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null
mkdir -p src && cd src && git init -q && echo hello-from-repo > README && git add README && git -c user.email=t@t -c user.name=t commit -qm init && cd ..
git clone -q --bare src www/repo.git && git -C www/repo.git update-server-info
mkdir -p pkg/demo_pkg && echo 'VALUE = 1' > pkg/demo_pkg/__init__.py
python3 - <<'PY'
import zipfile, hashlib, base64
name = 'www/simple/demo-pkg/demo_pkg-1.0-py3-none-any.whl'
files = {'demo_pkg/__init__.py': b'VALUE = 1\n',
         'demo_pkg-1.0.dist-info/METADATA': b'Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n',
         'demo_pkg-1.0.dist-info/WHEEL': b'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
record = ''
for p, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
    record += f'{p},sha256={digest},{len(data)}\n'
record += 'demo_pkg-1.0.dist-info/RECORD,,\n'
with zipfile.ZipFile(name, 'w') as z:
    for p, data in files.items(): z.writestr(p, data)
    z.writestr('demo_pkg-1.0.dist-info/RECORD', record)
open('www/simple/index.html', 'w').write('<html><body><a href=\"demo-pkg/\">demo-pkg</a></body></html>')
open('www/simple/demo-pkg/index.html', 'w').write('<html><body><a href=\"demo_pkg-1.0-py3-none-any.whl\">demo_pkg-1.0-py3-none-any.whl</a></body></html>')
PY
chmod -R a+rX ."#,
        d,
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(d.join("server.py"), SERVER).unwrap();
    let server = Command::new("python3")
        .arg(d.join("server.py"))
        .arg(d.join("www"))
        .arg(port.to_string())
        .arg(d.join("requests.log"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.2", port)).is_err() {
        assert!(Instant::now() < deadline, "test upstream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let home = d.join("home");
    let binary = if who == As::User {
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BINARY, bin.join("palisade")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        sh(
            &format!("chmod 755 bin bin/palisade && chown {TEST_USER} home && chmod 755 ."),
            d,
        );
        bin.join("palisade")
    } else {
        PathBuf::from(BINARY)
    };
    let world = World {
        _shared: shared,
        dir,
        binary,
        home,
        port,
        server: Some(server),
        who,
    };
    for args in [
        &["agents", "create", "a", "--profile", "research"][..],
        &["agents", "create", "b", "--profile", "research"],
    ] {
        let out = world.palisade(args, None, Duration::from_secs(30));
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = world.palisade(
        &[
            "secrets",
            "create",
            "--name",
            "tok",
            "--host-pattern",
            "127.0.0.2",
            "--inject",
            "bearer",
            "--agent",
            "a",
        ],
        Some(SECRET.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    Some(world)
}

/// What the machine offers the tests, found once before any test builds a world.
struct Prepared {
    /// Whether the unprivileged test user can be used.
    user: bool,
    root_runtimes: Vec<&'static str>,
    user_runtimes: Vec<&'static str>,
}

/// The one-time setup every test waits on: the unprivileged user, its rootless podman
/// storage and its copy of the image (`scripts/test-user.sh`, idempotent, the same step
/// `scripts/test.sh` runs before the tests), then which runtimes each user can use.
/// Done once, behind one lock, so nothing resets or loads a store while a test uses it.
fn prepared() -> &'static Prepared {
    static PREPARED: std::sync::OnceLock<Prepared> = std::sync::OnceLock::new();
    PREPARED.get_or_init(|| {
        let user = nix::unistd::geteuid().is_root();
        if user {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test-user.sh");
            let out = run_timeout(
                Command::new("bash").arg(script).current_dir("/"),
                None,
                Duration::from_secs(600),
            );
            assert!(out.status.success(), "{script}: {}", text(&out));
        } else {
            eprintln!("SKIPPING unprivileged cases: tests are not running as root");
        }
        Prepared {
            user,
            root_runtimes: probe_runtimes(As::Root),
            user_runtimes: if user {
                probe_runtimes(As::User)
            } else {
                Vec::new()
            },
        }
    })
}

impl World {
    fn palisade(&self, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
        let mut command = self.command(args);
        run_timeout(&mut command, stdin, limit)
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_under(&[], args)
    }

    /// `palisade ARGS` run as `PREFIX… palisade ARGS` (a wrapper that execs its arguments).
    fn command_under(&self, prefix: &[&str], args: &[&str]) -> Command {
        let mut command = match self.who {
            As::Root if !prefix.is_empty() => {
                let mut c = Command::new(prefix[0]);
                c.args(&prefix[1..]).arg(&self.binary);
                c.current_dir(self.dir.path());
                c
            }
            As::Root => {
                let mut c = Command::new(&self.binary);
                // podman's conmon drops an `oom` marker file in its working directory when
                // a container is OOM-killed; keep that in the test's temp dir, not the repo.
                c.current_dir(self.dir.path());
                c
            }
            As::User => {
                let mut c = Command::new("runuser");
                c.args([
                    "-u",
                    TEST_USER,
                    "--",
                    "env",
                    "-i",
                    "PATH=/usr/local/bin:/usr/bin:/bin",
                    &format!("HOME=/home/{TEST_USER}"),
                ]);
                c.args(prefix).arg(&self.binary);
                // The test's own directory is not the user's to enter.
                c.current_dir("/");
                c
            }
        };
        command.arg("--home").arg(&self.home).args(args);
        command.env("PALISADE_TEST_CANARY", SECRET);
        command
    }

    fn sandbox(&self, runtime: &str, extra: &[&str], script: &str) -> Output {
        self.sandbox_under(&[], runtime, extra, script)
    }

    fn sandbox_under(
        &self,
        prefix: &[&str],
        runtime: &str,
        extra: &[&str],
        script: &str,
    ) -> Output {
        let ca = self.dir.path().join("ca.pem");
        let ca = ca.to_str().unwrap();
        let mut args = vec![
            "sandbox",
            "run",
            "--agent",
            "a",
            "--runtime",
            runtime,
            "--upstream-ca",
            ca,
            "--allow-local-upstream",
            "127.0.0.2",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "bash", "-c", script]);
        run_timeout(
            &mut self.command_under(prefix, &args),
            None,
            Duration::from_secs(180),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.2:{}{path}", self.port)
    }

    fn upstream_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default()
    }
}

fn runtimes(who: As) -> Vec<&'static str> {
    let prepared = prepared();
    match who {
        As::Root => prepared.root_runtimes.clone(),
        As::User => prepared.user_runtimes.clone(),
    }
}

fn probe_runtimes(who: As) -> Vec<&'static str> {
    let mut all = vec!["bwrap"];
    let mut image = Command::new("podman");
    if who == As::User {
        image = Command::new("runuser");
        image.args(["-u", TEST_USER, "--", "podman"]);
    }
    let present = image
        .args(["image", "exists", "localhost/palisade-sandbox:latest"])
        .current_dir("/")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        all.push("podman");
    } else if std::env::var_os("PALISADE_REQUIRE_PODMAN").is_some() {
        panic!("podman image missing for {who:?}; run `palisade sandbox image build`");
    } else {
        eprintln!(
            "SKIPPING podman for {who:?}: no podman or no image (palisade sandbox image build)"
        );
    }
    all
}

fn each(check: impl Fn(&World, &str)) {
    for who in [As::Root, As::User] {
        let Some(world) = world(who) else { continue };
        for runtime in runtimes(who) {
            check(&world, runtime);
        }
    }
}

#[test]
fn clients_reach_upstream_through_shim_and_vault_with_injection() {
    each(|w, rt| {
        let script = format!(
            "set -e\ncurl -sS --max-time 20 {echo}\n\
python3 -c \"import requests; print('requests', requests.get('{echo}?py', timeout=20).status_code)\"\n\
git clone -q {repo} /tmp/clone && cat /tmp/clone/README\n\
python3 -m pip download -q --no-deps --index-url {simple} -d /tmp/wheels demo-pkg && ls /tmp/wheels\n",
            echo = w.url("/echo"),
            repo = w.url("/repo.git"),
            simple = w.url("/simple/"),
        );
        let out = w.sandbox(rt, &[], &script);
        let all = text(&out);
        assert!(out.status.success(), "{rt} {:?}: {all}", w.who);
        assert!(
            all.contains("ok\n") && all.contains("requests 200"),
            "{rt}: {all}"
        );
        assert!(all.contains("hello-from-repo"), "{rt}: {all}");
        assert!(all.contains("demo_pkg-1.0-py3-none-any.whl"), "{rt}: {all}");
        assert!(!all.contains(SECRET), "{rt}: the sandbox saw the secret");
        let log = w.upstream_log();
        assert!(
            log.contains(&format!("Bearer {SECRET}")),
            "{rt}: no injection upstream: {log}"
        );
    });
}

#[test]
fn block_and_rate_limit_rules_apply_to_sandboxed_traffic() {
    each(|w, rt| {
        for args in [
            &[
                "rules",
                "create",
                "--name",
                &format!("block-{rt}"),
                "--host-pattern",
                "127.0.0.2",
                "--path-pattern",
                "/blocked",
                "--action",
                "block",
            ][..],
            &[
                "rules",
                "create",
                "--name",
                &format!("limit-{rt}"),
                "--host-pattern",
                "127.0.0.2",
                "--path-pattern",
                &format!("/limited-{rt}"),
                "--action",
                "rate_limit",
                "--rate-limit",
                "2",
                "--rate-window",
                "1m",
            ],
        ] {
            let out = w.palisade(args, None, Duration::from_secs(30));
            assert!(out.status.success(), "{}", text(&out));
        }
        let script = format!(
            "curl -s -o /dev/null -w 'blocked=%{{http_code}}\\n' {blocked}\nfor i in 1 2 3 4 5; do curl -s -o /dev/null -w 'limited=%{{http_code}}\\n' {limited}; done\n",
            blocked = w.url("/blocked"),
            limited = w.url(&format!("/limited-{rt}")),
        );
        let out = w.sandbox(rt, &[], &script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("blocked=403"), "{rt}: {}", text(&out));
        assert_eq!(
            stdout.matches("limited=200").count(),
            2,
            "{rt}: {}",
            text(&out)
        );
        assert_eq!(
            stdout.matches("limited=429").count(),
            3,
            "{rt}: {}",
            text(&out)
        );
        assert!(
            !w.upstream_log().contains("/blocked"),
            "{rt}: a blocked request reached upstream"
        );
    });
}

#[test]
fn escapes_fail() {
    each(|w, rt| {
        let home = w.home.display().to_string();
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        host.set_nonblocking(true).unwrap();
        let port = host.local_addr().unwrap().port();
        let script = format!(
            "curl -sS --noproxy '*' --max-time 3 http://127.0.0.1:{port}/ && echo ESCAPE-tcp\n\
curl -sS --noproxy '*' --max-time 3 https://127.0.0.2:{up}/echo && echo ESCAPE-upstream-direct\n\
getent hosts example.com && echo ESCAPE-dns\n\
test \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo || echo ESCAPE-interfaces\n\
for f in {home} {home}/master.key {home}/palisade.db {home}/agents/b/workspace; do ls $f >/dev/null 2>&1 && echo ESCAPE-read $f; done\n\
cat /proc/*/environ /proc/*/cmdline > /tmp/procdump 2>/dev/null\n\
part=tok-5e1f; tr '\\0' '\\n' < /tmp/procdump | grep -q \"${{part}}0c3a9b8d7e6f\" && echo ESCAPE-secret-proc\n\
grep -rqs --exclude=procdump \"${{part}}0c3a9b8d7e6f\" /workspace /run/palisade /etc /tmp && echo ESCAPE-secret-file\n\
test $(ls -d /proc/[0-9]* | wc -l) -le 6 || echo ESCAPE-processes\n\
for d in / /usr /etc /run/palisade /var; do touch $d/x 2>/dev/null && echo ESCAPE-write $d; done\n\
grep -q 'CapEff:.0000000000000000' /proc/self/status || echo ESCAPE-capability\n\
unshare -U true 2>/dev/null && echo ESCAPE-nested-userns\n\
for f in /proc/partitions /proc/diskstats /proc/key-users; do [ -n \"$(cat $f 2>/dev/null)\" ] && echo ESCAPE-host-wide $f; done\n\
test \"$(cat /proc/self/oom_score_adj)\" = 1000 || echo ESCAPE-oom-killer-prefers-the-shim\n\
touch /workspace/mine /tmp/mine && echo writable-ok\n",
            up = w.port,
        );
        let out = w.sandbox(rt, &[], &script);
        let all = text(&out);
        assert!(!all.contains("ESCAPE"), "{rt} {:?}: {all}", w.who);
        assert!(all.contains("writable-ok"), "{rt}: {all}");
        assert!(host.accept().is_err(), "{rt}: the host port was reached");
    });
}

#[test]
fn limits_hold() {
    each(|w, rt| {
        let fork = "python3 -c \"\nimport os, time\nn = 0\ntry:\n    for i in range(400):\n        if os.fork() == 0:\n            time.sleep(15); os._exit(0)\n        n += 1\n    print('FORKED-ALL')\nexcept OSError:\n    print('refused after', n)\n\"";
        let out = w.sandbox(rt, &["--pids", "48", "--timeout", "60s"], fork);
        assert!(
            text(&out).contains("refused after"),
            "{rt} {:?}: {}",
            w.who,
            text(&out)
        );
        let memory = "python3 -c \"b = b'x' * (600 << 20); print('ALLOCATED')\"";
        let out = w.sandbox(rt, &["--memory", "128M"], memory);
        assert!(
            !text(&out).contains("ALLOCATED") && !out.status.success(),
            "{rt}: {}",
            text(&out)
        );
        let started = Instant::now();
        let out = w.sandbox(rt, &["--timeout", "2s"], "sleep 100; echo SURVIVED");
        assert_eq!(out.status.code(), Some(124), "{rt}: {}", text(&out));
        // Generous: rootless podman can take long to create a container.
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{rt}: {:?}",
            started.elapsed()
        );
        assert!(!text(&out).contains("SURVIVED"));
    });
}

#[test]
fn exit_codes_and_bad_input() {
    each(|w, rt| {
        let out = w.sandbox(rt, &[], "exit 7");
        assert_eq!(out.status.code(), Some(7), "{rt}: {}", text(&out));
        let out = w.palisade(
            &[
                "sandbox",
                "run",
                "--agent",
                "nobody",
                "--runtime",
                rt,
                "--",
                "true",
            ],
            None,
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("unknown agent")
                && err.trim().lines().count() == 1,
            "{err}"
        );
        let mount = format!("{}:/mnt/home", w.home.display());
        let out = w.sandbox(rt, &["--mount", &mount], "true");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("refusing to mount"),
            "{err}"
        );
        let out = w.sandbox(rt, &["--mount", "nonsense"], "true");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("bad mount"),
            "{}",
            text(&out)
        );
        // The in-process vault starts only when the sandbox first connects, but its
        // options are checked before the sandbox starts.
        let bad_ca = w.dir.path().join("not-a-ca.pem");
        std::fs::write(&bad_ca, "not a certificate\n").unwrap();
        let out = w.sandbox(
            rt,
            &["--upstream-ca", bad_ca.to_str().unwrap()],
            "echo the-command-ran",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("no PEM certificate")
                && err.trim().lines().count() == 1,
            "{rt}: {}",
            text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("the-command-ran"),
            "{rt}: the sandbox started: {}",
            text(&out)
        );
    });
}

#[test]
fn nothing_survives_kill_9_of_the_parent() {
    each(|w, rt| {
        let marker = format!("{}", 300 + (w.port % 500));
        let mut command = w.command(&[
            "sandbox",
            "run",
            "--agent",
            "a",
            "--runtime",
            rt,
            "--",
            "sleep",
            &marker,
        ]);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let running = |pattern: &str| {
            let out = Command::new("pgrep")
                .args(["-f", pattern])
                .output()
                .unwrap();
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        };
        let sleep_pattern = format!("^sleep {marker}$");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !running(&sleep_pattern) {
            assert!(Instant::now() < deadline, "{rt}: sandbox did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The palisade process itself (runuser's child when unprivileged).
        let out = Command::new("pgrep")
            .args([
                "-f",
                &format!("sandbox run --agent a --runtime {rt} -- sleep {marker}"),
            ])
            .output()
            .unwrap();
        let killed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for pid in &killed {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while running(&sleep_pattern) {
            assert!(
                Instant::now() < deadline,
                "{rt} {:?}: the sandbox outlived its parent",
                w.who
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The next start removes what the killed run left (cgroups, containers, run dirs).
        let out = w.sandbox(rt, &[], "true");
        assert!(out.status.success(), "{}", text(&out));
        let names = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut left: Vec<String> = names(&std::env::temp_dir())
            .into_iter()
            .filter(|name| {
                killed
                    .iter()
                    .any(|pid| name.starts_with(&format!("palisade-sandbox-{pid}-")))
            })
            .collect();
        // The in-process vault's socket folder, in the home.
        left.extend(
            names(&w.home.join("run/vaults"))
                .into_iter()
                .filter(|name| {
                    killed
                        .iter()
                        .any(|pid| name.starts_with(&format!("{pid}-")))
                }),
        );
        assert!(
            left.is_empty(),
            "{rt} {:?}: left by the killed run: {left:?}",
            w.who
        );
        if rt == "podman" && w.who == As::Root {
            let out = Command::new("podman")
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    "label=palisade.sandbox",
                    "--format",
                    "{{.Names}}",
                ])
                .output()
                .unwrap();
            let names = String::from_utf8_lossy(&out.stdout).to_string();
            for pid in &killed {
                assert!(
                    !names.contains(&format!("-{pid}-")),
                    "container of the killed run left: {names}"
                );
            }
        }
    });
}

/// Removes a delegated cgroup directory and whatever sandbox leaves are left in it.
struct Delegated(PathBuf);

impl Drop for Delegated {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for leaf in entries.flatten().filter(|e| e.path().is_dir()) {
                let procs =
                    std::fs::read_to_string(leaf.path().join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = std::fs::remove_dir(leaf.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The unprivileged user gets no CPU limit (and is told how to get one) until root
/// delegates a cgroup v1 `cpu` directory to them; then the sandbox runs in a leaf of it
/// with the quota written, and the leaf is gone when the sandbox ends.
#[test]
fn cpu_limit_applies_to_a_user_once_root_delegates_a_cgroup() {
    let _alone = USER_SANDBOXES.write().unwrap_or_else(|p| p.into_inner());
    let Some(w) = world_with(As::User, None) else {
        return;
    };
    let host = palisade_sandbox::cgroup::HostCgroups::detect();
    let Some(cpu) = host.v1.iter().find(|h| h.controller == "cpu") else {
        eprintln!("SKIPPING: no cgroup v1 `cpu` hierarchy on this host");
        return;
    };
    let uid = nix::unistd::User::from_name(TEST_USER)
        .unwrap()
        .expect("test user")
        .uid;
    let dir = cpu.mount.join(format!("palisade-user-{uid}"));
    let _ = std::fs::remove_dir(&dir);
    let limits = ["--cpus", "0.5", "--memory", "none", "--pids", "none"];

    let out = w.sandbox("bwrap", &limits, "true");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        err.contains("cpus limit 0.5 not applied")
            && err.contains(&format!("chown {uid} {}", dir.display())),
        "{err}"
    );

    std::fs::create_dir(&dir).unwrap();
    let _delegated = Delegated(dir.clone());
    nix::unistd::chown(&dir, Some(uid), None).unwrap();
    let marker = format!("{}", 900 + (w.port % 90));
    let ca = w.dir.path().join("ca.pem");
    let mut args = vec![
        "sandbox",
        "run",
        "--agent",
        "a",
        "--upstream-ca",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(&limits);
    args.extend_from_slice(&["--", "sleep", &marker]);
    let mut child = w.command(&args);
    child
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = child.spawn().unwrap();
    let sleeping = || {
        let out = Command::new("pgrep")
            .args(["-f", &format!("^sleep {marker}$")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Some(pid) = sleeping() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the sandbox did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let leaf = membership
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).zip(l.split(':').nth(1)))
        .find(|(_, controllers)| controllers.split(',').any(|c| c == "cpu"))
        .map(|(path, _)| path.to_string())
        .unwrap_or_default();
    let prefix = format!("/palisade-user-{uid}/palisade-");
    let quota = std::fs::read_to_string(
        cpu.mount
            .join(leaf.trim_start_matches('/'))
            .join("cpu.cfs_quota_us"),
    );
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(leaf.starts_with(&prefix), "{membership}");
    assert_eq!(quota.unwrap_or_default().trim(), "50000", "{leaf}");
    assert!(!stderr.contains("not applied"), "{stderr}");
    // The sandbox's leaf went with it.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "leaves left: {left:?}");
}

/// Python that makes raw system calls by number (the image has no strace or keyctl):
/// `call(NAME, ARGS…)` prints `NAME ALLOWED` or `NAME ERRNO-NAME`.
const SYSCALL_PROBE: &str = r#"
import ctypes, errno, os, platform, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {
    'x86_64': dict(io_uring_setup=425, io_setup=206, keyctl=250, add_key=248, ptrace=101, bpf=321, userfaultfd=323, perf_event_open=298, memfd_secret=447),
    'aarch64': dict(io_uring_setup=425, io_setup=0, keyctl=219, add_key=217, ptrace=117, bpf=280, userfaultfd=282, perf_event_open=241, memfd_secret=447),
}[platform.machine()]
def call(name, *args):
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result = libc.syscall(ctypes.c_long(NR[name]), *args)
    code = ctypes.get_errno()
    print(name, 'ALLOWED' if result >= 0 else errno.errorcode.get(code, str(code)), flush=True)
    return result
"#;

/// bubblewrap sandboxes load palisade's seccomp filter: io_uring and Linux AIO (one
/// machine-wide pool of events a sandbox could fill for every process) are unavailable,
/// and the keyrings, ptrace (even of the sandbox's own processes), bpf, userfaultfd and
/// perf_event_open are refused; memfd_secret is unavailable.
#[test]
fn bubblewrap_sandboxes_deny_io_uring_keyrings_ptrace_and_bpf() {
    each(|w, rt| {
        if rt != "bwrap" {
            return;
        }
        let script = format!(
            "python3 - <<'PY'\n{SYSCALL_PROBE}\n{}\nPY\ngrep -E '^Seccomp(_filters)?:' /proc/self/status",
            r#"
call('io_uring_setup', 4, ctypes.create_string_buffer(120))
call('io_setup', 4096, ctypes.byref(ctypes.c_ulong(0)))
call('keyctl', 0, -3, 0)
call('add_key', b'user', b'planted', b'x', 1, -3)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
call('ptrace', 16, child, 0, 0)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
call('bpf', 0, ctypes.create_string_buffer(128), 128)
call('userfaultfd', 0)
call('perf_event_open', ctypes.create_string_buffer(128), 0, -1, -1, 0)
call('memfd_secret', 0)
print('probe-done')
"#
        );
        let out = w.sandbox(rt, &[], &script);
        let all = text(&out);
        assert!(all.contains("probe-done"), "{:?}: {all}", w.who);
        for expected in [
            "io_uring_setup ENOSYS",
            "io_setup ENOSYS",
            "keyctl EPERM",
            "add_key EPERM",
            "ptrace EPERM",
            "bpf EPERM",
            "userfaultfd EPERM",
            "perf_event_open EPERM",
            // Its pages leave the kernel's direct map, splitting the host's huge pages.
            "memfd_secret ENOSYS",
        ] {
            assert!(all.contains(expected), "{:?}: {expected}: {all}", w.who);
        }
        assert!(!all.contains("ALLOWED"), "{:?}: {all}", w.who);
        assert!(all.contains("Seccomp:\t2"), "{:?}: no filter: {all}", w.who);
    });
}

/// A key the caller holds in its session keyring (or its user keyring) can neither be
/// read from inside a sandbox nor be joined by one planted there.
#[test]
fn a_host_session_key_is_out_of_reach() {
    const KEY_CANARY: &str = "keyring-canary-3b7d91";
    // A fresh session keyring for the caller, holding the canary; after the sandbox, the
    // caller's keyrings are searched for anything the sandbox planted (and it is removed).
    let wrapper = format!(
        "printf %s {KEY_CANARY} | keyctl padd user palisade-canary @s >/dev/null || exit 90
\"$@\"; code=$?
for ring in @s @u; do
  if id=$(keyctl search $ring user palisade-planted 2>/dev/null); then
    echo HOST-KEYRING-WRITTEN $ring; keyctl unlink $id $ring >/dev/null 2>&1
  fi
done
exit $code"
    );
    let prefix = ["keyctl", "session", "-", "bash", "-c", &wrapper, "wrapper"];
    each(|w, rt| {
        let script = format!(
            "python3 - <<'PY'\n{SYSCALL_PROBE}\n{}\nPY",
            r#"
buffer = ctypes.create_string_buffer(256)
key = libc.syscall(ctypes.c_long(NR['keyctl']), ctypes.c_long(10), ctypes.c_long(-3), b'user', b'palisade-canary', ctypes.c_long(0))
if key >= 0:
    length = libc.syscall(ctypes.c_long(NR['keyctl']), ctypes.c_long(11), ctypes.c_long(key), buffer, ctypes.c_long(256))
    print('HOST-KEY-VISIBLE', buffer.raw[:max(length, 0)])
for ring in (-3, -4, -5):
    if libc.syscall(ctypes.c_long(NR['add_key']), b'user', b'palisade-planted', b'x', ctypes.c_long(1), ctypes.c_long(ring)) >= 0:
        print('KEY-ADDED', ring)
print('probe-done')
"#
        );
        let out = w.sandbox_under(&prefix, rt, &[], &script);
        let all = text(&out);
        assert!(
            out.status.success() && all.contains("probe-done"),
            "{rt} {:?}: {all}",
            w.who
        );
        for leak in [
            "HOST-KEY-VISIBLE",
            KEY_CANARY,
            "KEY-ADDED",
            "HOST-KEYRING-WRITTEN",
        ] {
            assert!(!all.contains(leak), "{rt} {:?}: {leak}: {all}", w.who);
        }
    });
}

/// A command started in the background in its own process group, ended when dropped
/// (TERM to the command, which cleans up after itself; KILL to the whole group after
/// 10 s), so nothing outlives a failed assertion.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Every `NAME` socket file under `dir` (not following links), depth-first.
fn sockets_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            sockets_named(&entry.path(), name, found);
        } else if kind.is_socket() && entry.file_name() == name {
            found.push(entry.path());
        }
    }
}

/// While agent b's sandbox runs (with its in-process vault), agent a cannot reach b's
/// vault socket: `/tmp`, the home's parent and the socket's own folder are refused as
/// mounts with a one-line reason, and a process other than b's own palisade process is
/// dropped by the socket itself. b's credential never goes upstream.
#[test]
fn another_agents_vault_socket_is_out_of_reach() {
    const SECRET_B: &str = "tok-b-9c1e5a7f22";
    each(|w, rt| {
        // A sleep no other test runs, to see when b's command is up.
        let offset = if rt == "podman" { 500 } else { 0 };
        let marker = format!("{}", 1200 + offset + (w.port % 500));
        let out = w.palisade(
            &[
                "secrets",
                "create",
                "--name",
                &format!("tok-b-{rt}"),
                "--host-pattern",
                "127.0.0.2",
                "--inject",
                "bearer",
                "--agent",
                "b",
            ],
            Some(SECRET_B.as_bytes()),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", text(&out));
        let ca = w.dir.path().join("ca.pem");
        let mut b = w.command(&[
            "sandbox",
            "run",
            "--agent",
            "b",
            "--runtime",
            rt,
            "--upstream-ca",
            ca.to_str().unwrap(),
            "--allow-local-upstream",
            "127.0.0.2",
            "--",
            "sleep",
            &marker,
        ]);
        b.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let _b = Background(b.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = loop {
            let mut found = Vec::new();
            sockets_named(&w.home.join("run"), "b.sock", &mut found);
            for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("palisade-vault-")
                {
                    sockets_named(&entry.path(), "b.sock", &mut found);
                }
            }
            if let Some(socket) = found.pop() {
                break socket;
            }
            assert!(
                Instant::now() < deadline,
                "{rt}: b's vault socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // b's sandbox is up (ending it while the engine still creates the container
        // would leave the engine's half-made container behind).
        let sleeping = || {
            let out = Command::new("pgrep")
                .args(["-f", &format!("^sleep {marker}$")])
                .output()
                .unwrap();
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        };
        while !sleeping() {
            assert!(Instant::now() < deadline, "{rt}: b's sandbox did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let probe = |pattern: &str| {
            format!(
                "python3 - <<'PY'\nimport glob, socket\nfor path in glob.glob('{pattern}', recursive=True):\n    try:\n        s = socket.socket(socket.AF_UNIX)\n        s.settimeout(10)\n        s.connect(path)\n        s.sendall(b'CONNECT 127.0.0.2:{port} HTTP/1.1\\r\\nHost: 127.0.0.2:{port}\\r\\n\\r\\n')\n        if b' 200' in s.recv(100):\n            print('B-SOCKET-REACHED', path)\n    except OSError as e:\n        print('unreachable', path, e)\nprint('probe-done')\nPY",
                port = w.port
            )
        };
        let home_parent = w.home.parent().unwrap().to_path_buf();
        let socket_dir = socket.parent().unwrap().to_path_buf();
        for (source, pattern) in [
            (PathBuf::from("/tmp"), "/mnt/x/**/b.sock"),
            (home_parent, "/mnt/x/**/b.sock"),
            (socket_dir, "/mnt/x/b.sock"),
        ] {
            let mount = format!("{}:/mnt/x", source.display());
            let out = w.sandbox(rt, &["--mount", &mount], &probe(pattern));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !text(&out).contains("B-SOCKET-REACHED"),
                "{rt} {:?}: {mount}: {}",
                w.who,
                text(&out)
            );
            assert!(
                !out.status.success()
                    && err.contains(&format!("refusing to mount {}", source.display()))
                    && err.trim().lines().count() == 1,
                "{rt} {:?}: {mount}: {}",
                w.who,
                text(&out)
            );
        }
        // The socket itself, from a process that is not b's palisade process.
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(
            format!(
                "CONNECT 127.0.0.2:{port} HTTP/1.1\r\nHost: 127.0.0.2:{port}\r\n\r\n",
                port = w.port
            )
            .as_bytes(),
        );
        let mut reply = [0u8; 64];
        let read = stream.read(&mut reply).unwrap_or(0);
        assert_eq!(
            read,
            0,
            "{rt} {:?}: b's socket answered a stranger: {}",
            w.who,
            String::from_utf8_lossy(&reply[..read])
        );
        assert!(
            !w.upstream_log().contains(SECRET_B),
            "{rt} {:?}: b's credential went upstream",
            w.who
        );
    });
}

/// podman runs the agent as a non-root user in a user namespace: `id -u` is not 0, a
/// root-only host file mounted in stays unreadable, and the workspace is writable. As
/// root, a bubblewrap sandbox runs the agent as a subordinate host uid of the agent's
/// own, not podman's shared one, and the workspace is handed over each way, so the
/// agent goes on with its files from one kind of sandbox to the other.
#[test]
fn podman_runs_the_agent_as_a_user_that_is_not_root() {
    each(|w, rt| {
        if rt != "podman" {
            return;
        }
        let host_files = w.dir.path().join("host-files");
        std::fs::create_dir_all(&host_files).unwrap();
        let secret = host_files.join("root-only");
        std::fs::write(&secret, "root-only-content-5d2a\n").unwrap();
        sh(
            "chmod 755 host-files && chmod 600 host-files/root-only",
            w.dir.path(),
        );
        let mount = format!("{}:/mnt/host", host_files.display());
        let out = w.sandbox(
            rt,
            &["--mount", &mount],
            "echo uid=$(id -u) gid=$(id -g)\ncat /mnt/host/root-only 2>/dev/null && echo HOST-FILE-READ\ntouch /workspace/made-in-podman && echo workspace-writable",
        );
        let all = text(&out);
        assert!(out.status.success(), "{:?}: {all}", w.who);
        assert!(
            all.contains("uid=") && !all.contains("uid=0 ") && !all.contains("gid=0\n"),
            "{:?}: {all}",
            w.who
        );
        assert!(!all.contains("HOST-FILE-READ"), "{:?}: {all}", w.who);
        assert!(!all.contains("root-only-content"), "{:?}: {all}", w.who);
        assert!(all.contains("workspace-writable"), "{:?}: {all}", w.who);
        if w.who == As::Root {
            use std::os::unix::fs::MetadataExt;
            let made = w.home.join("agents/a/workspace/made-in-podman");
            let agent = std::fs::metadata(&made).unwrap().uid();
            assert_ne!(agent, 0);
            let out = w.sandbox(
                "bwrap",
                &[],
                "rm /workspace/made-in-podman && touch /workspace/made-in-bwrap && echo bwrap-writes",
            );
            assert!(text(&out).contains("bwrap-writes"), "{}", text(&out));
            let made = w.home.join("agents/a/workspace/made-in-bwrap");
            let own = palisade_sandbox::oci::agent_owner("a").uid;
            assert_eq!(std::fs::metadata(&made).unwrap().uid(), own);
            assert_ne!(own, agent);
            // And back to podman, which gets the workspace again.
            let out = w.sandbox(
                rt,
                &[],
                "rm /workspace/made-in-bwrap && echo podman-writes-again",
            );
            assert!(text(&out).contains("podman-writes-again"), "{}", text(&out));
        }
    });
}

/// Nothing in a bubblewrap sandbox's `/proc` tells where things live on the host: the
/// command lines and environments of its processes (pid 1 included) name no host path,
/// and its mount table names no socket and, as root, nothing of the home: root's
/// workspaces are filesystems of their own (a loop-mounted image), shown as `/` of an
/// ext4 on a loop device. An unprivileged user's workspace is a folder, and a bind
/// mount shows its source's path within its filesystem, so there the home shows as the
/// workspace's source and nowhere else. As root, podman's mount table names nothing of
/// the home either, nor does its /sys (whose loop devices would name their images).
#[test]
fn no_host_path_shows_through_proc_in_bubblewrap() {
    each(|w, rt| {
        let home = w.home.display().to_string();
        if rt != "bwrap" {
            if w.who == As::Root {
                // The mount table, and sysfs's names of loop devices' backing files
                // (the workspace images, in the home).
                let out = w.sandbox(
                    rt,
                    &[],
                    "cat /proc/self/mountinfo
for f in /sys/block/*/loop/backing_file /sys/dev/block/*/loop/backing_file /sys/devices/virtual/block/*/loop/backing_file; do cat $f; done 2>/dev/null; true",
                );
                let all = text(&out);
                assert!(out.status.success(), "{rt}: {all}");
                assert!(all.contains(" /workspace "), "{rt}: {all}");
                assert!(!all.contains(&home), "{rt}: the home shows: {all}");
            }
            return;
        }
        let script = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; tr '\\0' ' ' < $p/environ; echo; done > /tmp/procs 2>/dev/null\necho PID1: $(tr '\\0' ' ' < /proc/1/cmdline)\necho ---procs; cat /tmp/procs\necho ---mountinfo; cat /proc/self/mountinfo";
        let out = w.sandbox(rt, &[], script);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{:?}: {}", w.who, text(&out));
        let (procs, mountinfo) = stdout
            .split_once("---mountinfo")
            .expect("both parts printed");
        assert!(procs.contains("PID1: bwrap"), "{:?}: {stdout}", w.who);
        let world = w.dir.path().display().to_string();
        let binary = w.binary.display().to_string();
        for host_path in [&home, &world, &binary, &"/tmp/palisade-".to_string()] {
            assert!(
                !procs.contains(host_path.as_str()),
                "{:?}: {host_path} in a command line or environment: {procs}",
                w.who
            );
        }
        let workspace = mountinfo
            .lines()
            .find(|line| line.split(' ').nth(4) == Some("/workspace"))
            .expect("the workspace is mounted");
        if w.who == As::Root {
            let fields: Vec<&str> = workspace.split(' ').collect();
            assert_eq!(fields[3], "/", "{workspace}");
            assert!(
                workspace.contains(" - ext4 /dev/loop"),
                "not an image of its own: {workspace}"
            );
        }
        for line in mountinfo.lines() {
            if line.contains(&home) {
                assert_eq!(w.who, As::User, "the home shows: {line}");
                assert_eq!(line, workspace, "{:?}", w.who);
            }
            assert!(
                !line.contains(".sock"),
                "{:?}: a socket is mounted: {line}",
                w.who
            );
        }
    });
}

/// The workspace quota holds in every kind of sandbox: one file cannot grow past it
/// (the write fails inside with EFBIG), and many files get the sandbox stopped with a
/// message (exit code 122); the host's side of the workspace is cleaned up by the test.
#[test]
fn the_workspace_quota_holds_in_every_sandbox() {
    each(|w, rt| {
        let out = w.palisade(
            &["agents", "edit", "a", "--workspace-quota", "16M"],
            None,
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", text(&out));
        let workspace = w.home.join("agents/a/workspace");
        let clean = || {
            for entry in std::fs::read_dir(&workspace)
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.file_name().to_string_lossy().starts_with("quota-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        };
        clean();
        let one_file = "python3 -c \"\nf = open('/workspace/quota-big', 'wb')\ntry:\n    for _ in range(32):\n        f.write(b'x' * (1 << 20))\n        f.flush()\nexcept OSError as e:\n    print('WRITE-REFUSED', e.errno)\n\"";
        let out = w.sandbox(rt, &[], one_file);
        assert!(
            text(&out).contains("WRITE-REFUSED 27"),
            "{rt} {:?}: {}",
            w.who,
            text(&out)
        );
        clean();
        let many = "for i in $(seq 1 12); do head -c 2M /dev/zero > /workspace/quota-$i; done; sleep 30; echo SURVIVED";
        let out = w.sandbox(rt, &[], many);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(122), "{rt} {:?}: {all}", w.who);
        assert!(
            !all.contains("SURVIVED") && all.contains("the workspace reached its quota"),
            "{rt} {:?}: {all}",
            w.who
        );
        clean();
    });
}

/// Ctrl-C (SIGTERM to the whole process group) while podman is still creating the
/// container leaves nothing behind: no conmon, no container half-made in runc's state.
#[test]
fn interrupting_podman_while_it_creates_the_container_leaves_nothing() {
    let Some(w) = world(As::Root) else { return };
    if !runtimes(As::Root).contains(&"podman") {
        return;
    }
    for delay in [150, 200, 250, 300, 400] {
        let mut command = w.command(&[
            "sandbox",
            "run",
            "--agent",
            "a",
            "--runtime",
            "podman",
            "--",
            "sleep",
            "600",
        ]);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = command.spawn().unwrap();
        let pid = child.id();
        let mut background = Background(child);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(background.0.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "sandbox run did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(background);
        // The engine's side ends within a few seconds of palisade.
        let name = format!("palisade-a-{pid}-");
        let left = || {
            let conmon = Command::new("pgrep")
                .args(["-f", &format!("conmon .* -n {name}")])
                .output()
                .unwrap();
            let runc = Command::new("runc").arg("list").output().unwrap();
            let containers = Command::new("podman")
                .args(["ps", "-a", "--format", "{{.Names}}"])
                .output()
                .unwrap();
            !String::from_utf8_lossy(&conmon.stdout).trim().is_empty()
                || String::from_utf8_lossy(&containers.stdout).contains(&name)
                || String::from_utf8_lossy(&runc.stdout)
                    .lines()
                    .any(|l| l.contains("created"))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while left() {
            assert!(
                Instant::now() < deadline,
                "after {delay} ms: the engine left conmon or a container behind"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Pools the kernel counts per user, not per cgroup, are shared by every sandbox of
/// that user (and by the user's own programs). One sandbox that takes all the inotify
/// instances and queued signals it can get leaves the next sandbox some, and no
/// sandbox may keep more open files than its share of the host's table, nor fill
/// RAM through `/dev`.
#[test]
fn one_sandbox_cannot_take_a_users_kernel_pools_from_the_next() {
    each(|w, rt| {
        let workspace = w.home.join("agents/a/workspace");
        for name in ["pool-held", "pool-done"] {
            let _ = std::fs::remove_file(workspace.join(name));
        }
        // Takes inotify instances and queues real-time signals until refused, says so
        // in the workspace, and holds both until the test is done with the second
        // sandbox (30 s at most).
        let greedy = "python3 - <<'PY'\nimport ctypes, os, signal, time\nlibc = ctypes.CDLL(None, use_errno=True)\nheld = []\nwhile len(held) < 1000:\n    fd = libc.inotify_init1(0)\n    if fd < 0:\n        break\n    held.append(fd)\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])\nqueued = 0\nwhile queued < 200000 and libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), ctypes.c_void_p(0)) == 0:\n    queued += 1\nptys = []\nwhile len(ptys) < 5000:\n    try:\n        ptys.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))\n    except OSError:\n        break\ntaken = len(ptys)\nfor fd in ptys[-8:]:\n    os.close(fd)\nopen('/workspace/pool-held', 'w').write(f'{len(held)} {queued} {taken}')\nfor _ in range(300):\n    if os.path.exists('/workspace/pool-done'):\n        break\n    time.sleep(0.1)\nPY";
        std::thread::scope(|scope| {
            let first = scope.spawn(|| w.sandbox(rt, &[], greedy));
            let held = workspace.join("pool-held");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !held.exists() && Instant::now() < deadline && !first.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let first_counts = std::fs::read_to_string(&held).unwrap_or_default();
            let probe = "python3 - <<'PY'\nimport ctypes, os, resource, signal\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('inotify', 'ok' if libc.inotify_init1(0) >= 0 else 'refused')\nleader, follower = os.openpty()\nos.write(leader, b'x\\n')\nprint('pty', 'ok' if os.read(follower, 2) == b'x\\n' else 'broken')\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])\nprint('signal', 'ok' if libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), ctypes.c_void_p(0)) == 0 else 'refused')\nprint('nofile', resource.getrlimit(resource.RLIMIT_NOFILE)[1])\nprint('msgqueue', resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1])\ntry:\n    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))\n    print('NOFILE-RAISED')\nexcept (ValueError, OSError):\n    pass\nPY\nhead -c 100M /dev/zero > /dev/shm/big 2>/dev/null || echo shm-bounded $(du -m /dev/shm/big | cut -f1)\nrm -f /dev/shm/big\necho x > /dev/planted 2>/dev/null && echo DEV-WRITABLE\necho ok > /dev/null && echo devices-work";
            let second = w.sandbox(rt, &[], probe);
            let _ = std::fs::write(workspace.join("pool-done"), "");
            let first = first.join().unwrap();
            let all = format!("first: {}\nsecond: {}", text(&first), text(&second));
            let counts: Vec<u32> = first_counts
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            let [instances, signals, ptys] = counts[..] else {
                panic!("{:?}: the first sandbox said nothing: {all}", w.who)
            };
            assert!(
                (1..=16).contains(&instances),
                "{:?}: one sandbox took {instances} inotify instances: {all}",
                w.who
            );
            assert!(
                (1..=1024).contains(&signals),
                "{:?}: one sandbox queued {signals} signals: {all}",
                w.who
            );
            assert!(
                (1..=64).contains(&ptys),
                "{:?}: one sandbox took {ptys} pseudo-terminals: {all}",
                w.who
            );
            let second = text(&second);
            for expected in [
                "pty ok",
                "inotify ok",
                "signal ok",
                "msgqueue 102400",
                "devices-work",
            ] {
                assert!(second.contains(expected), "{:?}: {expected}: {all}", w.who);
            }
            let nofile: u64 = second
                .lines()
                .find_map(|line| line.strip_prefix("nofile "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{:?}: {all}", w.who));
            assert!((64..=1024).contains(&nofile), "{:?}: {all}", w.who);
            let shm: u64 = second
                .lines()
                .find_map(|line| line.strip_prefix("shm-bounded "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{:?}: /dev/shm not bounded at 64M: {all}", w.who));
            assert!(shm <= 64, "{:?}: {all}", w.who);
            for refused in ["NOFILE-RAISED", "DEV-WRITABLE"] {
                assert!(!all.contains(refused), "{:?}: {refused}: {all}", w.who);
            }
        });
        for name in ["pool-held", "pool-done"] {
            let _ = std::fs::remove_file(workspace.join(name));
        }
    });
}

/// The owner of a user namespace, by `NS_GET_OWNER_UID` on `/proc/PID/ns/user`.
fn namespace_owner_of(pid: u32) -> Option<u32> {
    use std::os::fd::AsRawFd;
    const NS_GET_OWNER_UID: u64 = 0xb704;
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/user")).ok()?;
    let mut uid: u32 = u32::MAX;
    // SAFETY: the ioctl writes one uid_t to the pointer given.
    let result = unsafe {
        nix::libc::ioctl(
            namespace.as_raw_fd(),
            NS_GET_OWNER_UID as _,
            &mut uid as *mut u32,
        )
    };
    (result == 0).then_some(uid)
}

/// Root's bubblewrap sandboxes do not draw on root's own per-user kernel pools, nor on
/// one pool every agent shares: their user namespace belongs to an id of the agent's
/// (so what its processes hold is counted there), and the agent itself runs as another
/// id of its own.
/// Before, every one was root's, and root's 128 inotify instances were shared with
/// systemd and every other root program.
#[test]
fn roots_sandboxes_are_not_counted_against_root() {
    let Some(world) = world(As::Root) else { return };
    let marker = "31.4159";
    let script = format!("touch /workspace/owner-ready; sleep {marker}");
    let ready = world.home.join("agents/a/workspace/owner-ready");
    let _ = std::fs::remove_file(&ready);
    std::thread::scope(|scope| {
        let sandbox = scope.spawn(|| world.sandbox("bwrap", &["--timeout", "60s"], &script));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() && Instant::now() < deadline && !sandbox.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The sleeping command, found by its argument among this machine's processes.
        let sleeper = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| line == format!("sleep\0{marker}\0").as_bytes())
            });
        let found = sleeper.map(|pid| {
            let owner = namespace_owner_of(pid);
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|line| line.strip_prefix("Uid:").map(str::to_string));
            (owner, uid)
        });
        if let Some(pid) = sleeper {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let out = sandbox.join().unwrap();
        let (owner, uid) = found.unwrap_or_else(|| panic!("no sandbox process: {}", text(&out)));
        let owner = owner.expect("the sandbox's user namespace");
        assert_ne!(owner, 0, "root owns the sandbox's user namespace");
        assert_eq!(owner, palisade_sandbox::oci::namespace_owner("a").uid);
        assert_ne!(owner, palisade_sandbox::oci::namespace_owner("b").uid);
        // The agent runs as an id of its own, not one every agent shares: the kernel
        // counts epoll watches and pipe pages by the user a process runs as.
        let agent = palisade_sandbox::oci::agent_owner("a").uid;
        assert_ne!(agent, palisade_sandbox::oci::agent_owner("b").uid);
        assert_ne!(agent, palisade_sandbox::oci::rootful_agent_owner().uid);
        assert_ne!(agent, owner);
        let uid = uid.unwrap_or_default();
        assert!(
            uid.split_whitespace().all(|id| id == agent.to_string()),
            "the command runs as {uid}, not the agent's {agent}"
        );
    });
    let _ = std::fs::remove_file(&ready);
}
