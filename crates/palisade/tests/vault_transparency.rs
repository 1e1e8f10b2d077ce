//! Whatever a client receives direct, it receives through the vault: the same requests
//! are sent to an upstream directly and through `palisade vault serve` (HTTP/1.1 and
//! HTTP/2 between client and vault), and what curl saw is compared: status, the
//! headers that matter, trailers and every byte of the body.
//!
//! The upstream is a small Python TLS server that writes its responses by hand, so it
//! can send what frameworks rarely do: a body ended by closing the connection (no
//! length, no chunking, and no TLS `close_notify`), chunked bodies with trailers, a
//! `100 Continue` before the answer, a slow stream, a large body, 204 and 304.

mod vault_fixture;

use palisade_testkit::{curl, output_text, TestCa};
use std::path::Path;
use vault_fixture::{Setup, CLIENT_TIMEOUT};

const UPSTREAM: &str = r#"
import os, socket, ssl, sys, threading, time
port = int(sys.argv[1])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
context.set_alpn_protocols(["http/1.1"])
listener = socket.create_server(("127.0.0.1", port))

def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest

def read_body(conn, head, rest):
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        rest += conn.recv(65536)
    return rest

def drop(conn):
    # Close the socket without a TLS close_notify, as some servers do.
    raw = socket.socket(fileno=os.dup(conn.fileno()))
    raw.shutdown(socket.SHUT_RDWR)
    raw.close()
    conn.close()

def serve(conn):
    try:
        conn = context.wrap_socket(conn, server_side=True)
        head, rest = read_head(conn)
        if head is None:
            return
        method, path = head.split(" ")[:2]
        expects = "expect: 100-continue" in head.lower()
        if path == "/close-delimited":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Kind: close\r\nConnection: close\r\n\r\n")
            for i in range(64):
                conn.sendall(("line %05d of a body that ends when the connection does\n" % i).encode() * 32)
            drop(conn)
            return
        if path == "/trailers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in [b"first part\n", b"second part\n"]:
                conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            conn.sendall(b"0\r\nX-Checksum: 0123abcd\r\n\r\n")
            conn.close()
            return
        if path == "/continue":
            if expects:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = read_body(conn, head, rest)
            answer = b"got %d bytes ending %s" % (len(body), body[-8:])
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))
            conn.close()
            return
        if path == "/stream":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(40):
                event = b"data: event %d\n\n" % i
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                time.sleep(0.02)
            conn.sendall(b"0\r\n\r\n")
            conn.close()
            return
        if path == "/big":
            body = bytes(range(256)) * (8 * 1024 * 4)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            conn.sendall(body)
            conn.close()
            return
        if path == "/cut-chunked":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(b"10\r\nonly part of it\n\r\n")
            drop(conn)
            return
        if path == "/cut-length":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nonly part of it")
            drop(conn)
            return
        if path == "/no-content":
            conn.sendall(b"HTTP/1.1 204 No Content\r\nX-Kind: empty\r\nConnection: close\r\n\r\n")
            conn.close()
            return
        if path == "/not-modified":
            conn.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n")
            conn.close()
            return
        if path == "/head":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\nConnection: close\r\n\r\n")
            if method != "HEAD":
                conn.sendall(b"x" * 1234)
            conn.close()
            return
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()
    except Exception as e:
        print("upstream error:", e, file=sys.stderr, flush=True)

while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// What a client saw of one response.
#[derive(Debug, PartialEq)]
struct Seen {
    status: String,
    headers: Vec<(String, String)>,
    body_len: usize,
    body_digest: String,
    exit: Option<i32>,
}

/// Headers worth comparing (framing and dates differ legitimately between hops).
const COMPARED: &[&str] = &[
    "content-type",
    "x-kind",
    "etag",
    "x-checksum",
    "cache-control",
];

fn seen(output: &std::process::Output, headers_file: &Path, body_file: &Path) -> Seen {
    use sha2::Digest;
    let head = std::fs::read_to_string(headers_file).unwrap_or_default();
    let mut status = String::new();
    let mut headers = Vec::new();
    for line in head.lines() {
        if line.starts_with("HTTP/") {
            // The final status line wins (an interim 100 is not compared: the vault's
            // own hop answers `Expect: 100-continue` itself).
            status = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            headers.clear();
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if COMPARED.contains(&name.as_str()) {
                headers.push((name, value.trim().to_string()));
            }
        }
    }
    headers.sort();
    let body = std::fs::read(body_file).unwrap_or_default();
    Seen {
        status,
        headers,
        body_len: body.len(),
        body_digest: hex::encode(sha2::Sha256::digest(&body)),
        exit: output.status.code(),
    }
}

/// Runs curl with `args`, writing headers (trailers included) and body to files.
fn fetch(dir: &Path, name: &str, args: &[String]) -> Seen {
    let headers = dir.join(format!("{name}.headers"));
    let body = dir.join(format!("{name}.body"));
    let mut full: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "30".into(),
        "-D".into(),
        headers.display().to_string(),
        "-o".into(),
        body.display().to_string(),
    ];
    full.extend(args.iter().cloned());
    let output = curl(&full, CLIENT_TIMEOUT);
    let mut result = seen(&output, &headers, &body);
    if args.iter().any(|a| a == "-I") {
        // HEAD: curl writes the headers where the body would go; what must match is
        // the length announced for the body that was not sent.
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        result.headers.push(("content-length".into(), length));
        result.body_len = 0;
        result.body_digest.clear();
    }
    assert_eq!(result.exit, Some(0), "{name}: {}", output_text(&output));
    result
}

#[test]
fn what_a_client_sees_direct_it_sees_through_the_vault() {
    let ca = TestCa::new().unwrap();
    let identity = ca.issue_default(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, &identity.cert_pem).unwrap();
    std::fs::write(&key, &identity.key_pem).unwrap();
    let (_upstream, port) =
        vault_fixture::python_server(UPSTREAM, &[cert.as_os_str(), key.as_os_str()]);

    let mut setup = Setup::new();
    let addr = setup.start_vault(&["--upstream-ca", ca.pem_path().to_str().unwrap()]);
    let token = setup.agent("client");
    let vault_ca = setup.vault_ca_str();

    let posted = dir.path().join("posted.bin");
    std::fs::write(&posted, vec![b'p'; 300_000]).unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("close-delimited", vec![]),
        ("trailers", vec!["-H".into(), "TE: trailers".into()]),
        (
            "continue",
            vec![
                "-H".into(),
                "Expect: 100-continue".into(),
                "--data-binary".into(),
                format!("@{}", posted.display()),
            ],
        ),
        ("stream", vec!["-N".into()]),
        ("big", vec![]),
        ("no-content", vec![]),
        ("not-modified", vec![]),
        ("head", vec!["-I".into()]),
    ];
    for (path, extra) in cases {
        let url = format!("https://localhost:{port}/{path}");
        let mut direct_args = vec!["--cacert".to_string(), ca.pem_path().display().to_string()];
        direct_args.extend(extra.clone());
        direct_args.push(url.clone());
        let direct = fetch(dir.path(), &format!("{path}-direct"), &direct_args);
        assert_ne!(
            direct.status, "",
            "{path}: the upstream answered nothing direct"
        );
        for version in ["--http1.1", "--http2"] {
            let mut vault_args = vec![
                "--proxy".to_string(),
                format!("http://{addr}"),
                "--proxy-user".into(),
                format!("x:{token}"),
                "--cacert".into(),
                vault_ca.clone(),
                version.into(),
            ];
            vault_args.extend(extra.clone());
            vault_args.push(url.clone());
            let through = fetch(dir.path(), &format!("{path}-vault{version}"), &vault_args);
            assert_eq!(
                through, direct,
                "{path} over {version}: through the vault differs from direct"
            );
        }
    }

    // A body cut short is an error direct, and must stay one through the vault: a
    // client must never take part of a body for all of it.
    for path in ["cut-chunked", "cut-length"] {
        let url = format!("https://localhost:{port}/{path}");
        let direct = curl(
            &[
                "-sS",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "--cacert",
                ca.pem_path().to_str().unwrap(),
                &url,
            ],
            CLIENT_TIMEOUT,
        );
        assert!(
            !direct.status.success(),
            "{path} direct: {}",
            output_text(&direct)
        );
        for version in ["--http1.1", "--http2"] {
            let through = curl(
                &[
                    "-sS",
                    "--max-time",
                    "20",
                    "-o",
                    "/dev/null",
                    "--proxy",
                    &format!("http://{addr}"),
                    "--proxy-user",
                    &format!("x:{token}"),
                    "--cacert",
                    &vault_ca,
                    version,
                    &url,
                ],
                CLIENT_TIMEOUT,
            );
            assert!(
                !through.status.success(),
                "{path} over {version}: a cut body was passed on as whole: {}",
                output_text(&through)
            );
        }
    }

    // The unclean close is logged as a warning, but an agent repeating the request
    // cannot write the log at its own speed (it goes to the home's disk): one line a
    // second, the rest counted on the next. (Before: one line per request.)
    let url = format!("https://localhost:{port}/close-delimited");
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "60".into(),
        "--proxy".into(),
        format!("http://{addr}"),
        "--proxy-user".into(),
        format!("x:{token}"),
        "--cacert".into(),
        vault_ca.clone(),
    ];
    for _ in 0..100 {
        args.extend(["-o".into(), "/dev/null".into(), url.clone()]);
    }
    let started = std::time::Instant::now();
    let output = curl(&args, CLIENT_TIMEOUT);
    assert!(output.status.success(), "{}", output_text(&output));
    let seconds = started.elapsed().as_secs() as usize;
    let lines = setup
        .vault_output()
        .lines()
        .filter(|line| line.contains("without a TLS close_notify"))
        .count();
    assert!(
        (1..=seconds + 3).contains(&lines),
        "{lines} warning lines for 100 unclean closes in {seconds} s"
    );
}
