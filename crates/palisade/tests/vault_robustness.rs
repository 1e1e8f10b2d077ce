//! Black-box robustness tests of the vault's front door: raw sockets sending what no
//! well-behaved client sends (garbage, huge heads, bad CONNECT targets, plain text in
//! a TLS tunnel, half-closed and silent connections), each of which must get a clean
//! answer or a closed connection while the gateway keeps serving everyone else; and
//! the per-agent Unix sockets, where the socket itself is the agent's identity.

mod vault_fixture;

use palisade_testkit::{curl, output_text, proxy_url, python, wait_until};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Deref;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vault_fixture::{base64, ok, Setup};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a raw socket waits for the gateway's answer before calling it a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A gateway allowed to reach `localhost` upstreams, and agent `robot`'s token.
struct Fixture {
    setup: Setup,
    addr: SocketAddr,
    vault_ca: PathBuf,
    token: String,
}

impl Deref for Fixture {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl Fixture {
    fn start() -> Fixture {
        let mut setup = Setup::new();
        let token = setup.agent("robot");
        let addr = setup.start_vault_exactly(&["--allow-local-upstream", "localhost"]);
        let vault_ca = setup.vault_ca();
        Fixture {
            setup,
            addr,
            vault_ca,
            token,
        }
    }

    fn basic(&self) -> String {
        format!("Basic {}", base64(format!("x:{}", self.token).as_bytes()))
    }

    /// A normal request through the gateway; panics unless it answers 200.
    #[track_caller]
    fn assert_serving(&self) {
        let proxy = proxy_url(self.addr, &self.token);
        let ca = self.vault_ca.display().to_string();
        let url = self.upstream.url("/still-serving");
        let output = curl(
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "--proxy",
                &proxy,
                "--cacert",
                &ca,
                &url,
            ],
            CLIENT_TIMEOUT,
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "200",
            "the gateway keeps serving others: {}",
            output_text(&output)
        );
    }

    fn connect(&self) -> TcpStream {
        let stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        stream
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
enum Answer {
    /// Bytes, then the peer closed (or went quiet after a complete response).
    Response(String),
    /// The peer closed or reset without a byte.
    Closed,
}

/// Reads until EOF, a reset, or (once a full response head arrived) a pause.
/// Panics if nothing at all arrives within [`READ_TIMEOUT`]: that is a hang.
fn read_answer(stream: &mut impl Read) -> Answer {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                if response_complete(&buffer) {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    !buffer.is_empty(),
                    "no answer and no close within {READ_TIMEOUT:?}: the gateway hangs"
                );
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                break
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    if buffer.is_empty() {
        Answer::Closed
    } else {
        Answer::Response(String::from_utf8_lossy(&buffer).into_owned())
    }
}

/// True once `buffer` holds a head and a body of its `content-length`.
fn response_complete(buffer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buffer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(length) => body.len() >= length,
        None => false,
    }
}

fn status_of(response: &str) -> u16 {
    response
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn json_body(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {response}"))
}

#[test]
fn garbage_bytes_get_400_or_close_and_others_are_still_served() {
    let fx = Fixture::start();
    let garbages: [&[u8]; 4] = [
        b"\x00\xff\xfe garbage \x01\x02\r\n\r\n",
        b"HELLO THERE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: \x7f\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    ];
    for garbage in garbages {
        let mut stream = fx.connect();
        let _ = stream.write_all(garbage);
        match read_answer(&mut stream) {
            Answer::Closed => {}
            Answer::Response(text) => assert_eq!(status_of(&text), 400, "{text}"),
        }
    }
    fx.assert_serving();
}

#[test]
fn oversized_headers_are_refused_cleanly() {
    let fx = Fixture::start();
    let mut stream = fx.connect();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nX-Huge: {}\r\n\r\n",
        fx.upstream.url("/huge"),
        "a".repeat(100 * 1024)
    );
    // The gateway may answer (and close) before the whole head is written, so write
    // on another thread and read here.
    let mut writer = stream.try_clone().expect("clone");
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
    });
    let answer = read_answer(&mut stream);
    let _ = writing.join();
    match answer {
        Answer::Response(text) => {
            let status = status_of(&text);
            assert!(status == 431 || status == 400, "{text}");
        }
        Answer::Closed => panic!("a 100 KB header must get 431, not a bare close"),
    }
    assert_eq!(fx.upstream.count(), 0);
    fx.assert_serving();
}

/// A client the gateway refuses while it is still sending (a head past the bound, sent
/// in pieces as a slow client or a loaded machine sends it) keeps being read for a
/// little while after the answer, so its next writes do not meet a reset, which would
/// make its system throw the answer away unread; it reads its 431. (Before, the socket
/// closed with whatever arrived after the answer unread, and the client's writes failed
/// with a reset.)
#[test]
fn a_client_still_sending_when_refused_reads_its_refusal() {
    let fx = Fixture::start();
    let mut stream = fx.connect();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nX-Huge: {}",
        fx.upstream.url("/huge"),
        "a".repeat(100 * 1024)
    );
    stream
        .write_all(head.as_bytes())
        .expect("write the first part");
    // The gateway answers and closes meanwhile; the client goes on sending.
    std::thread::sleep(Duration::from_millis(400));
    for piece in 0..5 {
        stream
            .write_all(&[b'a'; 32 * 1024])
            .unwrap_or_else(|e| panic!("piece {piece} of the head after the answer: {e}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    match read_answer(&mut stream) {
        Answer::Response(text) => assert_eq!(status_of(&text), 431, "{text}"),
        Answer::Closed => panic!("the 431 was lost"),
    }
    assert_eq!(fx.upstream.count(), 0);
    fx.assert_serving();
}

#[test]
fn bad_connect_targets_get_400() {
    let fx = Fixture::start();
    let auth = fx.basic();
    let upstream = format!("localhost:{}", fx.upstream.port());
    for target in [
        ":443",
        "localhost:99999",
        "a b c",
        "user@localhost:443",
        "localhost:0",
        "localhost:+443",
        "localhost:0443",
        // A target has one spelling: not a URL (it was taken as its authority).
        &format!("http://{upstream}"),
        &format!("https://{upstream}/"),
    ] {
        let mut stream = fx.connect();
        let request = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {auth}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("write");
        let text = match read_answer(&mut stream) {
            Answer::Response(text) => text,
            Answer::Closed => panic!("CONNECT {target}: closed without an answer"),
        };
        assert_eq!(status_of(&text), 400, "CONNECT {target}: {text}");
        // A request line hyper can parse reaches the gateway, which explains in JSON.
        if target != "a b c" {
            let body = json_body(&text);
            assert_eq!(body["error"], "bad_request", "CONNECT {target}: {text}");
            assert!(body["message"]
                .as_str()
                .is_some_and(|m| m.contains("host:port")));
        }
    }
    assert_eq!(fx.upstream.count(), 0);
    fx.assert_serving();
}

#[test]
fn plain_http_inside_a_connect_tunnel_gets_a_readable_400() {
    let fx = Fixture::start();
    let mut stream = fx.connect();
    let target = format!("localhost:{}", fx.upstream.port());
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        fx.basic()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("CONNECT answer");
        assert_eq!(n, 1, "closed during the CONNECT answer: {head:?}");
        head.push(byte[0]);
    }
    assert_eq!(status_of(&String::from_utf8_lossy(&head)), 200);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write plain request");
    let text = match read_answer(&mut stream) {
        Answer::Response(text) => text,
        Answer::Closed => panic!("plain HTTP in a tunnel must be answered, not dropped"),
    };
    assert_eq!(status_of(&text), 400, "{text}");
    let body = json_body(&text);
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("TLS")),
        "the message says TLS was expected: {text}"
    );
    assert_eq!(fx.upstream.count(), 0);
    fx.assert_serving();
}

#[test]
fn half_closed_and_silent_connections_do_not_block_anyone() {
    let fx = Fixture::start();
    // Silent clients: connected, never send a byte.
    let silent: Vec<TcpStream> = (0..50).map(|_| fx.connect()).collect();

    // Half-closed: a partial head, then end of input.
    let mut half = fx.connect();
    half.write_all(format!("GET {} HTTP/1.1\r\nHost: loc", fx.upstream.url("/x")).as_bytes())
        .expect("write");
    half.shutdown(Shutdown::Write).expect("shutdown write");
    let started = Instant::now();
    match read_answer(&mut half) {
        Answer::Closed => {}
        Answer::Response(text) => assert_eq!(status_of(&text), 400, "{text}"),
    }
    assert!(started.elapsed() < READ_TIMEOUT, "answered without waiting");

    // Half-closed after a complete request: the answer still comes.
    let mut complete = fx.connect();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nProxy-Authorization: {}\r\n\r\n",
        fx.upstream.url("/after-half-close"),
        fx.basic()
    );
    complete.write_all(request.as_bytes()).expect("write");
    complete.shutdown(Shutdown::Write).expect("shutdown write");
    match read_answer(&mut complete) {
        Answer::Response(text) => assert_eq!(status_of(&text), 200, "{text}"),
        Answer::Closed => panic!("a complete request before a half-close gets its answer"),
    }

    let started = Instant::now();
    fx.assert_serving();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "silent connections do not slow others down"
    );
    drop(silent);
    assert_eq!(fx.upstream.count(), 2);
}

/// A CONNECT over an agent's Unix socket, then TLS trusting the vault CA, then one
/// GET; prints the status and the body. Python because curl cannot proxy over a UDS.
const UDS_CLIENT: &str = r#"
import os, socket, ssl, sys
path, host, port, ca, target = (os.environ[k] for k in ("SOCK", "HOST", "PORT", "CA", "TARGET"))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(15)
s.connect(path)
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        sys.exit("closed during CONNECT: " + repr(head))
    head += chunk
status = head.split(b" ")[1]
if status != b"200":
    sys.exit("CONNECT refused: " + repr(head))
context = ssl.create_default_context(cafile=ca)
tls = context.wrap_socket(s, server_hostname=host)
tls.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
data = b""
while True:
    chunk = tls.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode("utf-8", "replace"))
"#;

fn uds_get(fx: &Fixture, socket: &Path, target: &str) -> String {
    let port = fx.upstream.port().to_string();
    let ca = fx.vault_ca.display().to_string();
    let socket = socket.display().to_string();
    let output = python(
        UDS_CLIENT,
        &[
            ("SOCK", &socket),
            ("HOST", "localhost"),
            ("PORT", &port),
            ("CA", &ca),
            ("TARGET", target),
        ],
        CLIENT_TIMEOUT,
    );
    String::from_utf8_lossy(&ok(&output).stdout).into_owned()
}

#[test]
fn agent_socket_is_the_identity_and_follows_the_agent() {
    let fx = Fixture::start();
    let sockets = fx.palisade.home().join("run").join("agents");
    let robot_socket = sockets.join("robot.sock");
    assert!(
        wait_until(Duration::from_secs(2), || robot_socket.exists()),
        "the existing agent has a socket"
    );

    // A secret granted to robot is injected on its socket, with no token sent.
    let value = "sk-uds-secret-value-123";
    ok(&fx.palisade.run_stdin(
        &[
            "secrets",
            "create",
            "--name",
            "local-api",
            "--host-pattern",
            "localhost",
            "--inject",
            "bearer",
            "--agent",
            "robot",
        ],
        value.as_bytes(),
    ));
    let response = uds_get(&fx, &robot_socket, "/via-socket");
    assert_eq!(status_of(&response), 200, "{response}");
    let echo = json_body(&response);
    assert_eq!(echo["path"], "/via-socket");
    let received = fx
        .upstream
        .last_request()
        .expect("upstream saw the request");
    assert_eq!(
        received.header("authorization"),
        Some(format!("Bearer {value}").as_str()),
        "robot's credential injected"
    );
    assert_eq!(received.header("proxy-authorization"), None);

    // A new agent gets a socket within a second; requests on it are that agent's.
    ok(&fx
        .palisade
        .run(&["agents", "create", "newcomer", "--profile", "research"]));
    let created = Instant::now();
    let newcomer_socket = sockets.join("newcomer.sock");
    assert!(
        wait_until(Duration::from_secs(2), || newcomer_socket.exists()),
        "a socket appears for a new agent"
    );
    assert!(created.elapsed() < Duration::from_millis(1500));
    let response = uds_get(&fx, &newcomer_socket, "/newcomer");
    assert_eq!(status_of(&response), 200, "{response}");
    let received = fx.upstream.last_request().expect("recorded");
    assert_eq!(received.path(), "/newcomer");
    assert_eq!(
        received.header("authorization"),
        None,
        "no grant, nothing injected"
    );

    // Origin-form requests on an agent socket never reach the admin API.
    let key = String::from_utf8_lossy(&ok(&fx.palisade.run(&["vault", "admin-key"])).stdout)
        .trim()
        .to_string();
    for path in [
        "/healthz",
        "/v1/container-config?agent=robot",
        "/v1/approvals/pending",
    ] {
        let mut stream = UnixStream::connect(&robot_socket).expect("connect to the agent socket");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("write");
        let text = match read_answer(&mut stream) {
            Answer::Response(text) => text,
            Answer::Closed => panic!("{path}: closed without an answer"),
        };
        assert_eq!(status_of(&text), 400, "{path}: {text}");
        assert_eq!(json_body(&text)["error"], "bad_request", "{path}: {text}");
        assert!(
            !text.contains("caCertificate") && !text.contains(&fx.token),
            "{text}"
        );
    }

    // Deleting the agent removes its socket within a second.
    ok(&fx.palisade.run(&["agents", "delete", "robot", "--yes"]));
    let deleted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || !robot_socket.exists()),
        "the socket of a deleted agent disappears"
    );
    assert!(deleted.elapsed() < Duration::from_millis(1500));
    assert!(newcomer_socket.exists(), "other agents keep their sockets");
    assert!(
        UnixStream::connect(&robot_socket).is_err(),
        "nobody can speak as the deleted agent"
    );
}
