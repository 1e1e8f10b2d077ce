//! Real clients through `palisade vault serve`: curl (HTTP/1.1 and h2), Python
//! `requests`, `httpx` with HTTP/2, the official `anthropic` SDK, a WebSocket client,
//! an SSE stream, absolute-form plain HTTP, an IPv6 literal upstream, redirects and a
//! large upload. Each client authenticates with `Proxy-Authorization: Basic x:TOKEN`
//! and trusts only the vault CA; the upstream (a recording TLS server on loopback)
//! says what actually arrived.

mod vault_fixture;

use palisade_testkit::{output_text, proxy_url, python, Upstream};
use serde_json::Value;
use vault_fixture::{
    echo_header, header_values, last_json_line, masked, python_ok, split_status, Setup,
    CLIENT_TIMEOUT,
};

/// A request the upstream recorded must carry neither the proxy credential header nor
/// the agent's token anywhere.
#[track_caller]
fn assert_no_proxy_credential(setup: &Setup, token: &str) {
    for request in setup.upstream.requests() {
        for (name, value) in &request.headers {
            assert_ne!(name, "proxy-authorization", "{request:?}");
            assert!(
                !value.contains(token),
                "token forwarded in {name}: {request:?}"
            );
        }
    }
}

#[test]
fn curl_http1_gets_the_credential_injected() {
    let mut setup = Setup::new();
    let token = setup.agent("curler");
    setup.secret(
        "api",
        "localhost",
        None,
        "bearer",
        &["curler"],
        "sk-curl-http1-value",
    );
    setup.start_vault(&[]);

    let url = setup.upstream.url("/echo/one?a=1");
    let output = setup.curl(
        &token,
        &[
            "--http1.1",
            "-w",
            "\n%{http_code} %{http_version}",
            "-H",
            "Authorization: Bearer client-placeholder",
            "--data-binary",
            "hello",
            &url,
        ],
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let (body, trailer) = String::from_utf8_lossy(&output.stdout)
        .rsplit_once('\n')
        .map(|(b, t)| (b.to_string(), t.to_string()))
        .expect("curl's -w trailer");
    assert_eq!(trailer, "200 1.1", "status and client HTTP version");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/one");
    assert_eq!(echo["query"], "a=1");
    assert_eq!(echo["body_len"], 5);
    // The upstream got the credential; the client sees it masked where the echo
    // sent it back.
    assert_eq!(
        setup.sent_header("authorization"),
        vec!["Bearer sk-curl-http1-value"]
    );
    assert_eq!(
        echo_header(&echo, "authorization"),
        vec![format!("Bearer {}", masked("sk-curl-http1-value"))]
    );
    assert_no_proxy_credential(&setup, &token);
}

#[test]
fn curl_http2_negotiates_h2_on_both_sides() {
    let mut setup = Setup::new();
    let token = setup.agent("h2agent");
    setup.secret(
        "api",
        "localhost",
        None,
        "header:X-Api-Key",
        &["h2agent"],
        "sk-curl-h2-value",
    );
    setup.start_vault(&[]);

    let url = setup.upstream.url("/h2/path?x=y");
    let output = setup.curl(
        &token,
        &["--http2", "-w", "\n%{http_code} %{http_version}", &url],
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').expect("curl's -w trailer");
    assert_eq!(trailer, "200 2", "curl must negotiate h2 with the vault");
    let echo: Value = serde_json::from_str(body).expect("echo JSON");
    assert_eq!(setup.sent_header("x-api-key"), vec!["sk-curl-h2-value"]);
    assert_eq!(
        echo_header(&echo, "x-api-key"),
        vec![masked("sk-curl-h2-value")]
    );
    assert_eq!(echo["path"], "/h2/path");
    let recorded = setup.last_upstream();
    assert_eq!(
        recorded.version, "HTTP/2",
        "the vault speaks h2 to an h2 upstream"
    );
    assert!(recorded.tls);
    assert_no_proxy_credential(&setup, &token);
}

#[test]
fn python_requests_through_the_proxy() {
    let mut setup = Setup::new();
    let token = setup.agent("pyreq");
    setup.secret(
        "api",
        "localhost",
        Some("/api/*"),
        "bearer",
        &["pyreq"],
        "sk-requests-value",
    );
    let addr = setup.start_vault(&[]);

    let script = r#"
import json, os, requests
proxies = {"https": os.environ["PROXY"]}
r = requests.post(os.environ["URL"], json={"hello": "world"},
                  headers={"Authorization": "Bearer placeholder"},
                  proxies=proxies, verify=os.environ["VAULT_CA"], timeout=20)
print(json.dumps({"status": r.status_code, "echo": r.json()}))
"#;
    let proxy = proxy_url(addr, &token);
    let url = setup.upstream.url("/api/items?page=2");
    let vault_ca = setup.vault_ca_str();
    let result = last_json_line(&python_ok(
        script,
        &[("PROXY", &proxy), ("URL", &url), ("VAULT_CA", &vault_ca)],
    ));
    assert_eq!(result["status"], 200);
    let echo = &result["echo"];
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "page=2");
    assert_eq!(
        setup.sent_header("authorization"),
        vec!["Bearer sk-requests-value"]
    );
    assert_eq!(
        echo_header(echo, "authorization"),
        vec![format!("Bearer {}", masked("sk-requests-value"))]
    );
    assert_eq!(
        echo["body_len"].as_u64(),
        Some(r#"{"hello": "world"}"#.len() as u64)
    );
    assert_no_proxy_credential(&setup, &token);
}

#[test]
fn httpx_with_http2_through_the_proxy() {
    let mut setup = Setup::new();
    let token = setup.agent("pyhttpx");
    setup.secret(
        "api",
        "localhost",
        None,
        "query:api_key",
        &["pyhttpx"],
        "sk-httpx-value",
    );
    let addr = setup.start_vault(&[]);

    let script = r#"
import json, os, ssl, httpx
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
with httpx.Client(http2=True, proxy=os.environ["PROXY"], verify=context, timeout=20) as client:
    r = client.get(os.environ["URL"])
    print(json.dumps({"status": r.status_code, "version": r.http_version, "echo": r.json()}))
"#;
    let proxy = proxy_url(addr, &token);
    let url = setup.upstream.url("/search?q=cats");
    let vault_ca = setup.vault_ca_str();
    let result = last_json_line(&python_ok(
        script,
        &[("PROXY", &proxy), ("URL", &url), ("VAULT_CA", &vault_ca)],
    ));
    assert_eq!(result["status"], 200);
    assert_eq!(
        result["version"], "HTTP/2",
        "httpx must negotiate h2 with the vault"
    );
    assert_eq!(
        setup.sent_path_and_query().1,
        "q=cats&api_key=sk-httpx-value"
    );
    assert_eq!(
        result["echo"]["query"],
        format!("q=cats&api_key={}", masked("sk-httpx-value"))
    );
    assert_eq!(setup.last_upstream().version, "HTTP/2");
    assert_no_proxy_credential(&setup, &token);
}

/// The official SDK with a placeholder key: the real key arrives as `x-api-key`, and
/// neither the placeholder nor any `Authorization` header ever reaches the API, for
/// `create()` and for streaming, whichever header the SDK put the placeholder in.
#[test]
fn anthropic_sdk_gets_the_real_key_and_never_the_placeholder() {
    let mut setup = Setup::new();
    let token = setup.agent("claude-user");
    setup.secret(
        "claude",
        "localhost",
        None,
        "anthropic",
        &["claude-user"],
        "sk-ant-real-key-0123456789",
    );
    let addr = setup.start_vault(&[]);

    let script = r#"
import json, os, ssl, anthropic
placeholder = os.environ["PLACEHOLDER"]
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
# The SDK's own client class, so this works whichever HTTP package the SDK uses.
http = anthropic.DefaultHttpxClient(proxy=os.environ["PROXY"], verify=context, timeout=20)
messages = [{"role": "user", "content": "hello vault"}]
result = {}
client = anthropic.Anthropic(api_key=placeholder, base_url=os.environ["BASE"],
                             http_client=http, max_retries=0)
message = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=messages)
result["create"] = message.content[0].text
with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=messages) as stream:
    result["stream"] = "".join(stream.text_stream)
# Older SDKs and some frameworks send the key as x-api-key; cover that too.
legacy = anthropic.Anthropic(api_key=placeholder, base_url=os.environ["BASE"], http_client=http,
                             max_retries=0, default_headers={"x-api-key": placeholder})
result["legacy"] = legacy.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                          messages=messages).content[0].text
print(json.dumps(result))
"#;
    let placeholder = "placeholder-key-the-vault-replaces";
    let proxy = proxy_url(addr, &token);
    let base = setup.upstream.base_url();
    let vault_ca = setup.vault_ca_str();
    let result = last_json_line(&python_ok(
        script,
        &[
            ("PROXY", &proxy),
            ("BASE", &base),
            ("VAULT_CA", &vault_ca),
            ("PLACEHOLDER", placeholder),
        ],
    ));
    assert_eq!(result["create"], "echo: hello vault");
    assert_eq!(result["stream"], "echo: hello vault");
    assert_eq!(result["legacy"], "echo: hello vault");

    let requests = setup.upstream.requests();
    let messages: Vec<_> = requests
        .iter()
        .filter(|r| r.path() == "/v1/messages")
        .collect();
    assert_eq!(messages.len(), 3, "create, stream, legacy: {requests:?}");
    for request in messages {
        assert_eq!(
            request.header_all("x-api-key"),
            vec!["sk-ant-real-key-0123456789"],
            "{request:?}"
        );
        assert!(request.header("authorization").is_none(), "{request:?}");
        for (name, value) in &request.headers {
            assert!(
                !value.contains(placeholder),
                "placeholder reached the API in {name}: {request:?}"
            );
        }
    }
    assert_no_proxy_credential(&setup, &token);
}

/// A WebSocket through the vault: the handshake carries the injected credential to
/// the upstream; messages pass both ways, text and binary; and an upstream that sends
/// the credential back in a message (this one sends the handshake's headers first)
/// shows the agent only `*`s, with a `secret.reflected` audit row. Compression is not
/// offered upstream, so messages stay searchable.
#[test]
fn websocket_echo_with_the_credential_on_the_handshake() {
    let mut setup = Setup::new();
    let token = setup.agent("wsagent");
    setup.secret(
        "ws",
        "localhost",
        Some("/ws"),
        "bearer",
        &["wsagent"],
        "sk-websocket-value",
    );
    let addr = setup.start_vault(&[]);

    let script = r#"
import json, os, websocket
ws = websocket.create_connection(
    os.environ["URL"], timeout=20,
    http_proxy_host="127.0.0.1", http_proxy_port=int(os.environ["PROXY_PORT"]),
    http_proxy_auth=("x", os.environ["TOKEN"]), proxy_type="http",
    sslopt={"ca_certs": os.environ["VAULT_CA"]},
    header=["Authorization: Bearer placeholder", "Sec-WebSocket-Extensions: permessage-deflate"])
greeting = json.loads(ws.recv())
ws.send("hello through the vault")
text = ws.recv()
ws.send_binary(bytes([0, 1, 2, 255]))
binary = ws.recv()
ws.close()
print(json.dumps({"greeting": greeting, "text": text, "binary": list(binary)}))
"#;
    let url = format!("wss://localhost:{}/ws", setup.upstream.port());
    let port = addr.port().to_string();
    let vault_ca = setup.vault_ca_str();
    let result = last_json_line(&python_ok(
        script,
        &[
            ("URL", &url),
            ("PROXY_PORT", &port),
            ("TOKEN", &token),
            ("VAULT_CA", &vault_ca),
        ],
    ));
    assert_eq!(result["text"], "hello through the vault");
    assert_eq!(result["binary"], serde_json::json!([0, 1, 2, 255]));
    // The upstream's first message is the handshake's headers, `{name: [values]}`.
    let greeting = &result["greeting"];
    assert_eq!(
        header_values(greeting, "authorization"),
        vec![format!("Bearer {}", "*".repeat("sk-websocket-value".len()))],
        "the credential came back unmasked: {greeting}"
    );
    assert_eq!(
        setup.sent_header("authorization"),
        vec!["Bearer sk-websocket-value"],
        "the handshake carries the injected credential"
    );
    assert_eq!(header_values(greeting, "upgrade"), vec!["websocket"]);
    assert!(header_values(greeting, "sec-websocket-extensions").is_empty());
    let reflected = || {
        let rows = setup.cli(&["--json", "audit", "list", "--event", "secret.reflected"]);
        serde_json::from_str::<serde_json::Value>(&rows).unwrap()
    };
    assert!(
        palisade_testkit::wait_until(std::time::Duration::from_secs(5), || reflected()
            .as_array()
            .is_some_and(|rows| rows.len() == 1)),
        "{}",
        reflected()
    );
    assert_eq!(reflected()[0]["detail"]["in"], "websocket");
    assert!(header_values(greeting, "proxy-authorization").is_empty());
    assert_no_proxy_credential(&setup, &token);
}

/// Events must reach the client as the upstream sends them, not once the stream
/// ends: the client-side spread between the first and the last event must be close
/// to the upstream's (N-1) × interval. A buffering proxy would show a spread near 0.
#[test]
fn sse_events_arrive_spread_in_time() {
    let mut setup = Setup::new();
    let token = setup.agent("streamer");
    let addr = setup.start_vault(&[]);

    let script = r#"
import json, os, ssl, time, httpx, requests

def spread(chunks):
    start = time.monotonic()
    arrivals, pending = [], b""
    for chunk in chunks:
        pending += chunk
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            arrivals.append([time.monotonic() - start, event.decode()])
    return arrivals

url = os.environ["URL"]
result = {}
with requests.get(url, proxies={"https": os.environ["PROXY"]}, verify=os.environ["VAULT_CA"],
                  stream=True, timeout=20) as r:
    result["requests"] = spread(r.iter_content(chunk_size=None))
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
with httpx.Client(http2=True, proxy=os.environ["PROXY"], verify=context, timeout=20) as client:
    with client.stream("GET", url) as r:
        result["httpx_version"] = r.http_version
        result["httpx"] = spread(r.iter_raw())
print(json.dumps(result))
"#;
    let interval_ms = 300.0;
    let events = 6;
    let url = setup
        .upstream
        .url(&format!("/sse?n={events}&interval_ms={interval_ms}"));
    let proxy = proxy_url(addr, &token);
    let vault_ca = setup.vault_ca_str();
    let result = last_json_line(&python_ok(
        script,
        &[("PROXY", &proxy), ("URL", &url), ("VAULT_CA", &vault_ca)],
    ));
    assert_eq!(result["httpx_version"], "HTTP/2");
    let expected_spread = (events as f64 - 1.0) * interval_ms / 1000.0;
    for client in ["requests", "httpx"] {
        let arrivals = result[client].as_array().expect("arrivals");
        let names: Vec<&str> = arrivals.iter().filter_map(|a| a[1].as_str()).collect();
        let wanted: Vec<String> = (0..events).map(|i| format!("data: event-{i}")).collect();
        assert_eq!(names, wanted, "{client}: every event, in order");
        let first = arrivals[0][0].as_f64().expect("time");
        let last = arrivals[events - 1][0].as_f64().expect("time");
        let spread = last - first;
        assert!(
            spread >= expected_spread * 0.6 && spread <= expected_spread + 5.0,
            "{client}: events spread over {spread:.3} s, the upstream spread them over \
             {expected_spread:.3} s (buffered if near 0): {arrivals:?}"
        );
    }
}

#[test]
fn absolute_form_http_to_a_plain_upstream() {
    let mut setup = Setup::with_upstream(Upstream::builder().plain_http());
    let token = setup.agent("plain");
    setup.secret(
        "plain-api",
        "127.0.0.1",
        None,
        "bearer",
        &["plain"],
        "sk-plain-http-value",
    );
    setup.start_vault(&[]);

    let base = setup.upstream.http_base_url().expect("plain listener");
    let url = format!("{base}/plain/path?q=1");
    // curl sends `GET http://… HTTP/1.1` to an HTTP proxy for http:// URLs (no CONNECT).
    let (status, body) = setup.fetch(&token, &["-v", &url]);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["path"], "/plain/path");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(
        setup.sent_header("authorization"),
        vec!["Bearer sk-plain-http-value"]
    );
    assert_eq!(
        echo_header(&echo, "authorization"),
        vec![format!("Bearer {}", masked("sk-plain-http-value"))]
    );
    let recorded = setup.last_upstream();
    assert!(
        !recorded.tls,
        "arrived on the plain HTTP port: {recorded:?}"
    );
    assert_eq!(recorded.path_and_query, "/plain/path?q=1");
    assert_no_proxy_credential(&setup, &token);
}

#[test]
fn ipv6_literal_upstream() {
    let mut setup = Setup::with_upstream(Upstream::builder().ipv6());
    let token = setup.agent("six");
    setup.secret(
        "v6-api",
        "::1",
        None,
        "header:X-Six",
        &["six"],
        "sk-ipv6-value",
    );
    setup.start_vault(&[]);

    let url = setup.upstream.url("/over/v6");
    assert!(url.starts_with("https://[::1]:"), "{url}");
    for version in ["--http1.1", "--http2"] {
        let echo = setup.echo(&token, &url, &[version]);
        assert_eq!(echo["path"], "/over/v6");
        assert_eq!(setup.sent_header("x-six"), vec!["sk-ipv6-value"]);
        assert_eq!(echo_header(&echo, "x-six"), vec![masked("sk-ipv6-value")]);
        let host = echo_header(&echo, "host");
        assert_eq!(
            host,
            vec![format!("[::1]:{}", setup.upstream.port())],
            "{version}"
        );
    }
    assert!(setup.upstream.count() >= 2);
}

#[test]
fn redirects_are_passed_to_the_client_not_followed() {
    let mut setup = Setup::new();
    let token = setup.agent("redirected");
    setup.start_vault(&[]);

    for version in ["--http1.1", "--http2"] {
        setup.upstream.clear();
        let url = setup.upstream.url("/redirect");
        let output = setup.curl(
            &token,
            &[
                version,
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
        );
        assert!(output.status.success(), "{}", output_text(&output));
        let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
        assert!(text.ends_with("302"), "{version}: {text}");
        assert!(text.contains("location: /echo"), "{version}: {text}");
        let paths: Vec<String> = setup
            .upstream
            .requests()
            .iter()
            .map(|r| r.path_and_query.clone())
            .collect();
        assert_eq!(
            paths,
            vec!["/redirect"],
            "{version}: the vault must not fetch the Location itself"
        );
    }
}

/// A 5 MB body goes up intact over HTTP/1.1 and h2, and a 5 MB body comes back.
#[test]
fn large_bodies_stream_intact() {
    let mut setup = Setup::new();
    let token = setup.agent("bulk");
    setup.secret(
        "bulk-api",
        "localhost",
        None,
        "bearer",
        &["bulk"],
        "sk-bulk-value",
    );
    let addr = setup.start_vault(&[]);

    let script = r#"
import hashlib, json, os, ssl, httpx, requests
body = os.urandom(5 * 1024 * 1024)
digest = hashlib.sha256(body).hexdigest()
url = os.environ["URL"]
r = requests.post(url, data=body, proxies={"https": os.environ["PROXY"]},
                  verify=os.environ["VAULT_CA"], timeout=30)
h1 = r.json()
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
with httpx.Client(http2=True, proxy=os.environ["PROXY"], verify=context, timeout=30) as client:
    r2 = client.post(url, content=body)
    h2 = r2.json()
    version = r2.http_version
print(json.dumps({"digest": digest, "h1": h1, "h2": h2, "h2_version": version}))
"#;
    let proxy = proxy_url(addr, &token);
    let url = setup.upstream.url("/upload");
    let vault_ca = setup.vault_ca_str();
    let output = python(
        script,
        &[("PROXY", &proxy), ("URL", &url), ("VAULT_CA", &vault_ca)],
        CLIENT_TIMEOUT * 2,
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let result = last_json_line(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(result["h2_version"], "HTTP/2");
    for key in ["h1", "h2"] {
        let echo = &result[key];
        assert_eq!(echo["body_len"], 5 * 1024 * 1024, "{key}");
        assert_eq!(echo["body_sha256"], result["digest"], "{key}");
        assert_eq!(
            echo_header(echo, "authorization"),
            vec![format!("Bearer {}", masked("sk-bulk-value"))],
            "{key}"
        );
    }
    let uploads: Vec<_> = setup
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(uploads.len(), 2);
    for upload in uploads {
        assert!(
            upload
                .headers
                .contains(&("authorization".into(), "Bearer sk-bulk-value".into())),
            "{:?}",
            upload.headers
        );
    }

    let download = setup.upstream.url("/bytes?n=5242880");
    let (status, size) = split_status(&String::from_utf8_lossy(
        &setup
            .curl(
                &token,
                &[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}\n%{http_code}",
                    &download,
                ],
            )
            .stdout,
    ));
    assert_eq!(status, 200);
    assert_eq!(size, "5242880");
}
