//! Shared set-up for the vault's black-box tests (`vault_*.rs`): a test CA, a
//! recording TLS upstream on loopback, the real `palisade` binary against a temporary
//! home, and a running `palisade vault serve`.
//!
//! Tests drive the gateway only the way users do: through the CLI and through real
//! clients (curl, Python) that use it as their proxy. Every client runs with a hard
//! timeout and every process is stopped when the [`Setup`] is dropped, even when the
//! test fails half-way.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use palisade_testkit::{
    curl, output_text, python, ChildGuard, Palisade, RecordedRequest, TestCa, Upstream,
    UpstreamBuilder,
};
use serde_json::Value;

/// No single client call should take anywhere near this long.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A test CA, an upstream, a temporary home and (once started) a gateway.
///
/// Field order is drop order: the gateway stops before the upstream and the home go.
pub struct Setup {
    vault: Option<ChildGuard>,
    addr: Option<SocketAddr>,
    pub upstream: Upstream,
    pub palisade: Palisade,
    pub ca: TestCa,
}

impl Setup {
    /// An HTTPS upstream on 127.0.0.1 and a fresh home; no gateway yet.
    pub fn new() -> Setup {
        Setup::with_upstream(Upstream::builder())
    }

    /// As [`Setup::new`] with upstream options (plain HTTP port, `[::1]`, names).
    pub fn with_upstream(builder: UpstreamBuilder) -> Setup {
        let ca = TestCa::new().expect("create the test CA");
        let upstream = builder.start(&ca).expect("start the test upstream");
        let palisade = Palisade::new(env!("CARGO_BIN_EXE_palisade"));
        Setup {
            vault: None,
            addr: None,
            upstream,
            palisade,
            ca,
        }
    }

    /// Starts `palisade vault serve` trusting the test CA and allowed to reach the
    /// loopback upstream under the names tests use, plus `extra` arguments.
    pub fn start_vault(&mut self, extra: &[&str]) -> SocketAddr {
        let mut args: Vec<&str> = vec![
            "--allow-local-upstream",
            "localhost",
            "--allow-local-upstream",
            "127.0.0.1",
            "--allow-local-upstream",
            "::1",
        ];
        args.extend_from_slice(extra);
        self.start_vault_exactly(&args)
    }

    /// Starts `palisade vault serve` trusting the test CA and otherwise with exactly
    /// `args`: no local upstream is allowed unless `args` allows it.
    pub fn start_vault_exactly(&mut self, args: &[&str]) -> SocketAddr {
        assert!(self.vault.is_none(), "the gateway is already running");
        let ca_path = self
            .ca
            .pem_path()
            .to_str()
            .expect("UTF-8 CA path")
            .to_string();
        let mut full: Vec<&str> = vec!["--upstream-ca", &ca_path];
        full.extend_from_slice(args);
        let (guard, addr) = self.palisade.spawn_vault(&full);
        self.vault = Some(guard);
        self.addr = Some(addr);
        addr
    }

    /// The running gateway's process, for tests that signal it or wait for its exit.
    pub fn vault_process(&mut self) -> &mut ChildGuard {
        self.vault.as_mut().expect("the gateway is not running")
    }

    /// Stops the gateway (SIGTERM, then SIGKILL after a grace period).
    pub fn stop_vault(&mut self) {
        if let Some(mut guard) = self.vault.take() {
            guard.terminate().expect("stop the gateway");
        }
        self.addr = None;
    }

    /// The gateway's TCP listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the gateway is not running")
    }

    /// What the gateway printed so far (stdout and stderr).
    pub fn vault_output(&self) -> String {
        match &self.vault {
            Some(guard) => format!("{}\n{}", guard.stdout(), guard.stderr()),
            None => String::new(),
        }
    }

    /// The vault CA certificate clients must trust (created by the first `serve`).
    pub fn vault_ca(&self) -> PathBuf {
        self.palisade.home().join("ca").join("ca.pem")
    }

    pub fn vault_ca_str(&self) -> String {
        self.vault_ca().to_str().expect("UTF-8 path").to_string()
    }

    /// `palisade ARGS…`, which must succeed; returns stdout.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.palisade.run(args);
        assert!(
            output.status.success(),
            "palisade {args:?} failed\n{}",
            output_text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `palisade ARGS…` with `stdin`, which must succeed; returns stdout.
    #[track_caller]
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> String {
        let output = self.palisade.run_stdin(args, stdin.as_bytes());
        assert!(
            output.status.success(),
            "palisade {args:?} failed\n{}",
            output_text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates an agent (research profile) and returns its proxy token.
    pub fn agent(&self, name: &str) -> String {
        self.cli(&["agents", "create", name]);
        self.token(name)
    }

    /// The agent's current proxy token.
    pub fn token(&self, name: &str) -> String {
        self.cli(&["agents", "token", name]).trim().to_string()
    }

    /// Creates a secret whose value is read from stdin, granted to `agents`.
    pub fn secret(
        &self,
        name: &str,
        host: &str,
        path: Option<&str>,
        inject: &str,
        agents: &[&str],
        value: &str,
    ) {
        let mut args = vec![
            "secrets",
            "create",
            "--name",
            name,
            "--host-pattern",
            host,
            "--inject",
            inject,
        ];
        if let Some(path) = path {
            args.extend(["--path-pattern", path]);
        }
        for agent in agents {
            args.extend(["--agent", agent]);
        }
        self.cli_stdin(&args, value);
    }

    /// `--proxy http://ADDR --proxy-user x:TOKEN --cacert VAULT_CA`: curl through the
    /// gateway as `token`'s agent, trusting only the vault CA.
    pub fn proxy_args(&self, token: &str) -> Vec<String> {
        vec![
            "--proxy".into(),
            format!("http://{}", self.addr()),
            "--proxy-user".into(),
            format!("x:{token}"),
            "--cacert".into(),
            self.vault_ca_str(),
        ]
    }

    /// curl through the gateway: `-sS`, the proxy arguments, then `args`.
    pub fn curl(&self, token: &str, args: &[&str]) -> Output {
        let mut full: Vec<String> = vec!["-sS".into()];
        full.extend(self.proxy_args(token));
        full.extend(args.iter().map(|a| a.to_string()));
        curl(&full, CLIENT_TIMEOUT)
    }

    /// curl through the gateway; returns the HTTP status and the body.
    pub fn fetch(&self, token: &str, args: &[&str]) -> (u16, String) {
        let mut full: Vec<&str> = vec!["-w", "\n%{http_code}"];
        full.extend_from_slice(args);
        let output = self.curl(token, &full);
        assert!(
            output.status.success(),
            "curl {args:?} failed\n{}",
            output_text(&output)
        );
        split_status(&String::from_utf8_lossy(&output.stdout))
    }

    /// curl through the gateway to the upstream's echo; returns the echo as JSON
    /// after checking the status is 200.
    #[track_caller]
    pub fn echo(&self, token: &str, url: &str, extra: &[&str]) -> Value {
        let mut args: Vec<&str> = extra.to_vec();
        args.push(url);
        let (status, body) = self.fetch(token, &args);
        assert_eq!(status, 200, "GET {url} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("echo is not JSON ({e}): {body}"))
    }

    /// The last request the upstream recorded (after it arrived).
    pub fn last_upstream(&self) -> RecordedRequest {
        self.upstream
            .last_request()
            .expect("the upstream received no request")
    }

    /// The values of header `name` in the last request the upstream received: what the
    /// gateway sent (the echo a client gets back has any injected credential masked).
    pub fn sent_header(&self, name: &str) -> Vec<String> {
        self.last_upstream()
            .headers
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }

    /// The path and the query (empty if none) of the last request the upstream received.
    pub fn sent_path_and_query(&self) -> (String, String) {
        let recorded = self.last_upstream().path_and_query;
        match recorded.split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (recorded, String::new()),
        }
    }
}

/// `secret` as a client sees it in a response that sent it back: masked byte for byte.
pub fn masked(secret: &str) -> String {
    "*".repeat(secret.len())
}

/// Requires a command to have succeeded; returns its output for chaining.
#[track_caller]
pub fn ok(output: &Output) -> Output {
    assert!(output.status.success(), "{}", output_text(output));
    output.clone()
}

/// A response as curl printed it with `-i`: status, lower-case headers, body.
#[derive(Debug)]
pub struct CurlReply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub raw: String,
}

impl CurlReply {
    #[track_caller]
    pub fn parse(output: &Output) -> CurlReply {
        let raw = String::from_utf8_lossy(&output.stdout).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP response from curl: {}", output_text(output)));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {}", output_text(output)));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        CurlReply {
            status,
            headers,
            body: body.to_string(),
            raw: raw.clone(),
        }
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.raw))
    }
}

/// Splits curl's `BODY\nSTATUS` output (from `-w '\n%{http_code}'`).
pub fn split_status(text: &str) -> (u16, String) {
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text));
    let status = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status code at the end of curl's output: {text:?}"));
    (status, body.to_string())
}

/// Runs a Python script that must succeed; returns its stdout.
#[track_caller]
pub fn python_ok(script: &str, env: &[(&str, &str)]) -> String {
    let output = python(script, env, CLIENT_TIMEOUT);
    assert!(
        output.status.success(),
        "python failed\n{}",
        output_text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Parses the last line of a script's stdout as JSON.
#[track_caller]
pub fn last_json_line(stdout: &str) -> Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The values of header `name` in an echo body (`headers` maps names to arrays).
pub fn echo_header(echo: &Value, name: &str) -> Vec<String> {
    header_values(&echo["headers"], name)
}

/// The values of `name` in a `{lower-case name: [values]}` map.
pub fn header_values(headers: &Value, name: &str) -> Vec<String> {
    headers[name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Standard base64 (with padding), for hand-written `Proxy-Authorization` headers.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A response read off a raw socket: status, lower-case headers, body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Writes `request` to a new connection to `addr` and reads one response (head, then
/// a `content-length` body), all within a few seconds.
pub fn raw_exchange(addr: SocketAddr, request: &str) -> RawResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set a read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("write the request");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(response) = parse_response(&buffer) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "no complete response within 10 s; got {:?}",
            String::from_utf8_lossy(&buffer)
        );
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buffer).unwrap_or_else(|| {
                    panic!(
                        "connection closed before a full response: {:?}",
                        String::from_utf8_lossy(&buffer)
                    )
                })
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the response failed: {e}"),
        }
    }
}

fn parse_response(buffer: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(buffer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        decode_chunked(body)?
    } else {
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if body.len() < length {
            return None;
        }
        body.to_string()
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// The payload of a complete chunked body; `None` until the last chunk arrived.
fn decode_chunked(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size_line, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        if after.len() < size + 2 {
            return None;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"x:a"), "eDph");
    assert_eq!(base64(b"x:ab"), "eDphYg==");
    assert_eq!(base64(b"x:abc"), "eDphYmM=");
}

/// Starts `python3 -c SCRIPT PORT ARGS…` as a server on a free loopback port and waits
/// (10 s at most) until it accepts connections; the guard stops it.
pub fn python_server(script: &str, args: &[&std::ffi::OsStr]) -> (ChildGuard, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut server = std::process::Command::new("python3");
    server
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .args(args)
        .stdin(std::process::Stdio::null());
    let guard = ChildGuard::spawn(&mut server).expect("start the Python server");
    assert!(
        palisade_testkit::wait_for_tcp(("127.0.0.1", port), Duration::from_secs(10)),
        "the Python server did not start listening"
    );
    (guard, port)
}
