//! What the vault injects, for whom, and what it never lets out: proxy
//! authentication (407), every injection shape, path scoping, grants, precedence,
//! the proxy credential never forwarded, CLI changes applied to a running gateway
//! within about a second, a CA that survives restarts, secret values absent from
//! logs, audit, listings and the database, and `palisade vault env` in a shell.
//!
//! All black-box: the real binary, real curl/Python clients, and a recording TLS
//! upstream on loopback that says exactly what arrived.

mod vault_fixture;

use std::path::Path;
use std::process::Command;

use palisade_testkit::{output_text, run_with_timeout, Upstream};
use serde_json::Value;
use vault_fixture::{
    base64, header_values, last_json_line, masked, ok, python_ok, raw_exchange, Setup,
    CLIENT_TIMEOUT,
};

/// A CLI change is in force when the command returns: the condition must hold on the
/// very next request, with no waiting.
#[track_caller]
fn assert_applies_now(what: &str, mut condition: impl FnMut() -> bool) {
    assert!(condition(), "{what}: not in effect when the CLI returned");
}

/// `CONNECT localhost:PORT` with the given `Proxy-Authorization` (if any).
fn connect_request(port: u16, authorization: Option<&str>) -> String {
    let mut request = format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// An absolute-form `GET https://localhost:PORT/…` with the given credentials.
fn absolute_request(port: u16, authorization: Option<&str>) -> String {
    let mut request = format!(
        "GET https://localhost:{port}/absolute HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n"
    );
    if let Some(value) = authorization {
        request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

fn basic(user_and_password: &str) -> String {
    format!("Basic {}", base64(user_and_password.as_bytes()))
}

#[track_caller]
fn assert_407(setup: &Setup, request: &str, case: &str) {
    let response = raw_exchange(setup.addr(), request);
    assert_eq!(response.status, 407, "{case}: {response:?}");
    let challenge = response
        .header("proxy-authenticate")
        .unwrap_or_else(|| panic!("{case}: no Proxy-Authenticate: {response:?}"));
    assert!(
        challenge.to_ascii_lowercase().starts_with("basic"),
        "{case}: {challenge}"
    );
    assert_eq!(
        response.json()["error"],
        "proxy_authentication_required",
        "{case}"
    );
}

#[test]
fn missing_wrong_or_malformed_proxy_credentials_get_407() {
    let mut setup = Setup::new();
    let token = setup.agent("authed");
    setup.start_vault(&[]);
    let port = setup.upstream.port();

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Proxy-Authorization", None),
        ("unknown token", Some(basic("x:pal_not_a_real_token"))),
        ("token with a typo", Some(basic(&format!("x:{token}x")))),
        ("not base64", Some("Basic !!!not-base64!!!".to_string())),
        ("no user:password pair", Some(basic(&token))),
        ("empty password", Some(basic("x:"))),
        ("bearer scheme", Some(format!("Bearer {token}"))),
        ("scheme only", Some("Basic".to_string())),
    ];
    for (case, authorization) in &cases {
        assert_407(
            &setup,
            &connect_request(port, authorization.as_deref()),
            case,
        );
        assert_407(
            &setup,
            &absolute_request(port, authorization.as_deref()),
            &format!("{case} (absolute-form)"),
        );
    }
    assert_eq!(
        setup.upstream.count(),
        0,
        "nothing may reach the upstream unauthenticated"
    );

    // The same requests with the right token pass, so the refusals above were about
    // the credential and nothing else.
    let good = basic(&format!("x:{token}"));
    let response = raw_exchange(setup.addr(), &connect_request(port, Some(&good)));
    assert_eq!(response.status, 200, "{response:?}");
    let response = raw_exchange(setup.addr(), &absolute_request(port, Some(&good)));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["path"], "/absolute");
}

#[test]
fn a_rotated_token_stops_working_within_a_second() {
    let mut setup = Setup::new();
    let old = setup.agent("rotor");
    setup.start_vault(&[]);
    let port = setup.upstream.port();
    let url = setup.upstream.url("/rotate");
    setup.echo(&old, &url, &[]);

    let new = setup
        .cli(&["agents", "token", "rotor", "--rotate"])
        .trim()
        .to_string();
    assert_ne!(new, old);
    assert_applies_now("the old token refused after --rotate", || {
        raw_exchange(
            setup.addr(),
            &connect_request(port, Some(&basic(&format!("x:{old}")))),
        )
        .status
            == 407
    });
    assert_407(
        &setup,
        &connect_request(port, Some(&basic(&format!("x:{old}")))),
        "rotated-out token",
    );
    setup.echo(&new, &url, &[]);
}

/// bearer, anthropic, header:NAME and header:NAME:FORMAT, each replacing whatever the
/// client sent in that header.
#[test]
fn header_injection_shapes_replace_what_the_client_sent() {
    let mut setup = Setup::new();
    let token = setup.agent("shapes");
    setup.secret(
        "bearer",
        "localhost",
        Some("/bearer/*"),
        "bearer",
        &["shapes"],
        "v-bearer-1",
    );
    setup.secret(
        "anthropic",
        "localhost",
        Some("/anthropic/*"),
        "anthropic",
        &["shapes"],
        "v-anthropic-2",
    );
    setup.secret(
        "plain-header",
        "localhost",
        Some("/header/*"),
        "header:X-Api-Token",
        &["shapes"],
        "v-header-3",
    );
    setup.secret(
        "formatted",
        "localhost",
        Some("/format/*"),
        "header:Authorization:token {value}",
        &["shapes"],
        "v-format-4",
    );
    setup.start_vault(&[]);
    let url = |path: &str| setup.upstream.url(path);

    for version in ["--http1.1", "--http2"] {
        setup.echo(
            &token,
            &url("/bearer/x"),
            &[version, "-H", "Authorization: Bearer client-placeholder"],
        );
        assert_eq!(
            setup.sent_header("authorization"),
            vec!["Bearer v-bearer-1"],
            "{version}"
        );

        let echo = setup.echo(
            &token,
            &url("/anthropic/v1/messages"),
            &[
                version,
                "-H",
                "Authorization: Bearer sdk-placeholder",
                "-H",
                "x-api-key: old-sdk-placeholder",
            ],
        );
        assert_eq!(
            setup.sent_header("x-api-key"),
            vec!["v-anthropic-2"],
            "{version}"
        );
        assert!(
            setup.sent_header("authorization").is_empty(),
            "{version}: anthropic removes Authorization: {echo}"
        );

        setup.echo(&token, &url("/header/a"), &[version]);
        assert_eq!(
            setup.sent_header("x-api-token"),
            vec!["v-header-3"],
            "{version}"
        );
        setup.echo(
            &token,
            &url("/header/b"),
            &[version, "-H", "X-Api-Token: client-value"],
        );
        assert_eq!(
            setup.sent_header("x-api-token"),
            vec!["v-header-3"],
            "{version}"
        );

        setup.echo(
            &token,
            &url("/format/c"),
            &[version, "-H", "Authorization: Bearer client"],
        );
        assert_eq!(
            setup.sent_header("authorization"),
            vec!["token v-format-4"],
            "{version}"
        );
    }
}

#[test]
fn query_injection_replaces_its_parameter_and_keeps_the_others() {
    let mut setup = Setup::new();
    let token = setup.agent("querier");
    // Characters that would end the value or add a parameter if not encoded.
    setup.secret(
        "maps",
        "localhost",
        None,
        "query:key",
        &["querier"],
        "v q/&x=1",
    );
    setup.start_vault(&[]);

    let echo = setup.echo(
        &token,
        &setup
            .upstream
            .url("/maps/search?a=1&key=client-placeholder&b=two%20words&c"),
        &[],
    );
    let (path, query) = setup.sent_path_and_query();
    assert_eq!(path, "/maps/search");
    // The client's echo shows the value masked; the upstream got it.
    let echoed = echo["query"].as_str().expect("query");
    assert!(
        echoed.contains(&format!("key={}", masked("v%20q%2F%26x%3D1"))),
        "{echoed}"
    );
    let query = query.as_str();
    let pairs: Vec<&str> = query.split('&').collect();
    assert!(pairs.contains(&"a=1"), "{query}");
    assert!(pairs.contains(&"b=two%20words"), "{query}");
    assert!(pairs.contains(&"c"), "{query}");
    let keys: Vec<&&str> = pairs.iter().filter(|p| p.starts_with("key=")).collect();
    assert_eq!(keys, vec![&"key=v%20q%2F%26x%3D1"], "{query}");
    assert!(
        !pairs.iter().any(|p| p.starts_with("x=")),
        "the value added a parameter: {query}"
    );

    setup.echo(&token, &setup.upstream.url("/no-query"), &[]);
    assert_eq!(setup.sent_path_and_query().1, "key=v%20q%2F%26x%3D1");
}

/// The `secret.reflected` audit rows so far.
fn reflected_rows(setup: &Setup) -> Vec<Value> {
    let text = setup.cli(&[
        "--json",
        "audit",
        "list",
        "--event",
        "secret.reflected",
        "--limit",
        "1000",
    ]);
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A running gateway with agent `reflector`, granted `secret` as a bearer for
/// localhost; and its token.
fn reflector_with(secret: &str) -> (Setup, String) {
    reflector_with_options(secret, &[])
}

/// [`reflector_with`], the gateway started with `options`.
fn reflector_with_options(secret: &str, options: &[&str]) -> (Setup, String) {
    reflector_on(Setup::new(), secret, options)
}

/// [`reflector_with_options`] on `setup`'s upstream.
fn reflector_on(mut setup: Setup, secret: &str, options: &[&str]) -> (Setup, String) {
    let token = setup.agent("reflector");
    setup.secret(
        "echoed",
        "localhost",
        None,
        "bearer",
        &["reflector"],
        secret,
    );
    setup.start_vault(options);
    (setup, token)
}

/// A credential the upstream sends back (an echo, an error page quoting the header) is
/// masked before the agent sees it, in headers and body, over HTTP/1.1 and HTTP/2, byte
/// for byte; the first time in a response writes a `secret.reflected` audit row. The
/// upstream itself got the credential.
#[test]
fn a_credential_sent_back_is_masked_and_audited() {
    let secret = "sk-reflect-7f3a9c";
    let (setup, token) = reflector_with(secret);
    for version in ["--http1.1", "--http2"] {
        // A page that quotes the credential in the middle of other text.
        let url = setup
            .upstream
            .url(&format!("/page?text=before%20{secret}%20after"));
        let (status, body) = setup.fetch(&token, &[version, &url]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("before {} after", masked(secret)),
            "{version}"
        );
        assert_eq!(
            setup.sent_header("authorization"),
            vec![format!("Bearer {secret}")]
        );
    }
    let reflected = || reflected_rows(&setup);
    // The row is queued as the body passes; the writer commits it a moment later.
    assert!(palisade_testkit::wait_until(
        std::time::Duration::from_secs(5),
        || { reflected().len() == 2 }
    ));
    let rows = reflected();
    for row in &rows {
        assert_eq!(row["agent"], "reflector");
        assert_eq!(row["secret"], "echoed");
        assert_eq!(row["path"], "/page");
        assert_eq!(row["decision"], "masked");
        assert!(!row.to_string().contains(secret), "{row}");
    }
}

/// A response the upstream cuts short of its `Content-Length` reaches the client cut,
/// never as a whole one: an HTTP/2 `RST_STREAM` of reason `NO_ERROR` before the
/// stream's end (which hyper's client reads as the end) fails curl over both client
/// versions, and the start of a credential kept back to see whether it completes never
/// goes out. An HTTP/1.1 upstream that closes the connection early, likewise. (The
/// gateway ends such a body in error itself; before it did, hyper's server refused the
/// short body on its own, so this test guards the outcome, not that one line.)
#[test]
fn a_response_cut_short_of_its_length_is_never_passed_on_whole() {
    let secret = "sk-cut-short-5d2e8b";
    let start = &secret[..secret.len() - 1];
    for upstream in [Upstream::builder(), Upstream::builder().http1_only()] {
        let (setup, token) = reflector_on(Setup::with_upstream(upstream), secret, &[]);
        let url = setup
            .upstream
            .url(&format!("/cut?length=4096&text=before%20{start}"));
        for version in ["--http1.1", "--http2"] {
            let output = setup.curl(&token, &["--fail", version, &url]);
            let body = String::from_utf8_lossy(&output.stdout);
            assert!(
                !output.status.success() && body.starts_with("before "),
                "{version}: a cut response passed as whole, or none was passed: {}",
                output_text(&output)
            );
            assert!(
                !body.contains(start),
                "{version}: the kept-back start of the credential went out: {body}"
            );
        }
    }
}

/// A credential in the reason phrase of the status line (`HTTP/1.1 401 Invalid token
/// <it>`) is masked too, over a TLS tunnel and absolute-form plain HTTP, and audited;
/// the rest of the phrase passes as the upstream sent it.
#[test]
fn a_credential_in_the_status_lines_reason_is_masked() {
    let secret = "sk-reason-5e1d0b";
    let (setup, token) = reflector_on(
        Setup::with_upstream(Upstream::builder().plain_http()),
        secret,
        &[],
    );
    let path = format!("/page?text=x&reason=Bad%20token%20{secret}%20here");
    let https = setup.upstream.url(&path);
    let plain = setup
        .upstream
        .http_base_url()
        .expect("plain listener")
        .replacen("127.0.0.1", "localhost", 1)
        + &path;
    for url in [https, plain] {
        let output = ok(&setup.curl(&token, &["-si", "--http1.1", &url]));
        let head = String::from_utf8_lossy(&output.stdout);
        // The last status line: over a tunnel, the proxy's own `200` to CONNECT is first.
        let status_line = head
            .lines()
            .rfind(|line| line.starts_with("HTTP/"))
            .unwrap_or_default();
        assert_eq!(
            status_line.trim_end(),
            format!("HTTP/1.1 200 Bad token {} here", masked(secret)),
            "{url}: {head}"
        );
    }
    assert_eq!(
        setup.sent_header("authorization"),
        vec![format!("Bearer {secret}")]
    );
    assert!(palisade_testkit::wait_until(
        std::time::Duration::from_secs(5),
        || reflected_rows(&setup).len() == 2
    ));
}

/// An upstream may keep what one request carried and show it to a later request that
/// carried nothing (a request bin, a log viewer). Every response from a host the
/// gateway sends a secret to is searched for it: a request outside the secret's path
/// pattern, and a request of an agent the secret is not granted to, see it masked.
#[test]
fn a_credential_kept_by_the_upstream_is_masked_for_requests_without_it() {
    let mut setup = Setup::new();
    let owner = setup.agent("owner");
    let stranger = setup.agent("stranger");
    let secret = "sk-kept-by-upstream-42";
    setup.secret(
        "scoped",
        "localhost",
        Some("/v1/*"),
        "bearer",
        &["owner"],
        secret,
    );
    let other = "sk-another-for-v2-77";
    setup.secret(
        "other",
        "localhost",
        Some("/v2/*"),
        "header:X-Key",
        &["owner"],
        other,
    );
    setup.start_vault(&[]);
    // What a request bin would show: the credentials, under a path neither secret
    // covers.
    let shown = setup.upstream.url(&format!(
        "/page?text=last%20seen:%20Bearer%20{secret}%20and%20{other}"
    ));
    for token in [&owner, &stranger] {
        let (status, body) = setup.fetch(token, &[&shown]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("last seen: Bearer {} and {}", masked(secret), masked(other))
        );
        assert!(
            setup.sent_header("authorization").is_empty(),
            "no credential was sent for this path"
        );
    }
    assert!(palisade_testkit::wait_until(
        std::time::Duration::from_secs(5),
        || reflected_rows(&setup).len() == 2
    ));
    let rows = Value::from(reflected_rows(&setup));
    let agents: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap_or_default())
        .collect();
    assert!(
        agents.contains(&"owner") && agents.contains(&"stranger"),
        "{rows}"
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["secret"] == "scoped"),
        "{rows}"
    );
}

/// An agent with no credential cannot fill the audit log by reading, over and over, a
/// credential an upstream kept: rows about credentials found in answers to requests
/// that carried none are written within the agent's row budget (the rest counted on
/// the next row), while every answer is still masked.
#[test]
fn reading_a_kept_credential_again_and_again_cannot_fill_the_audit_log() {
    let secret = "sk-kept-and-read-often-9";
    let (setup, _) = reflector_with_options(secret, &[]);
    let stranger = setup.agent("stranger");
    let page = setup.upstream.url(&format!("/page?text={secret}"));
    let reads = 300;
    let mut args = vec!["--http1.1"];
    args.extend(std::iter::repeat_n(page.as_str(), reads));
    let output = setup.curl(&stranger, &args);
    assert!(output.status.success(), "{}", output_text(&output));
    let bodies = String::from_utf8_lossy(&output.stdout);
    assert!(!bodies.contains(secret));
    assert_eq!(bodies.matches(&masked(secret)).count(), reads);
    let rows = || reflected_rows(&setup);
    assert!(palisade_testkit::wait_until(
        std::time::Duration::from_secs(5),
        || !rows().is_empty()
    ));
    let written = rows().len();
    assert!(written < reads / 2, "{written} rows for {reads} reads");
}

/// An upstream that compresses its answer although the gateway asked for `identity`
/// cannot carry a credential it sends back past the search: the answer is decoded (gzip,
/// deflate, br, zstd), masked and passed on uncompressed, over HTTP/1.1 and HTTP/2. An
/// answer in a coding the gateway cannot read is refused (502 `unreadable_response`,
/// with an audit row), never passed on unsearched.
#[test]
fn a_credential_sent_back_compressed_is_masked_too() {
    let secret = "sk-compressed-5e1d";
    let (setup, token) = reflector_with(secret);
    let page = |encoding: &str| {
        setup.upstream.url(&format!(
            "/page?text=before%20{secret}%20after&encoding={encoding}"
        ))
    };
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        for version in ["--http1.1", "--http2"] {
            let (status, answer) =
                setup.fetch(&token, &["-i", version, "--compressed", &page(encoding)]);
            assert_eq!(status, 200, "{encoding} {version}: {answer}");
            let (head, body) = answer.rsplit_once("\r\n\r\n").expect("a head and a body");
            assert_eq!(
                body,
                format!("before {} after", masked(secret)),
                "{encoding} {version}"
            );
            assert!(
                !head.to_ascii_lowercase().contains("content-encoding"),
                "{encoding} {version}: {head}"
            );
            assert_eq!(setup.sent_header("accept-encoding"), vec!["identity"]);
        }
    }

    // Compressed as a transfer coding (`Transfer-Encoding: gzip, chunked`), which the
    // gateway used to pass on compressed and unsearched, without saying so.
    for coding in ["gzip", "deflate"] {
        let url = setup.upstream.url(&format!(
            "/page?text=before%20{secret}%20after&transfer={coding}"
        ));
        let (status, answer) = setup.fetch(&token, &["-i", "--http1.1", &url]);
        assert_eq!(status, 200, "{coding}: {answer}");
        let (_, body) = answer.rsplit_once("\r\n\r\n").expect("a head and a body");
        assert_eq!(body, format!("before {} after", masked(secret)), "{coding}");
    }

    let (status, answer) = setup.fetch(&token, &[&page("compress")]);
    assert_eq!(status, 502, "{answer}");
    assert!(!answer.contains(secret), "{answer}");
    let refusal: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(refusal["error"], "unreadable_response", "{answer}");
    // The row is written by the audit writer, a moment after the answer.
    let rows = || -> Value {
        let listed = setup.cli(&[
            "--json",
            "audit",
            "list",
            "--decision",
            "unreadable_response",
        ]);
        serde_json::from_str(&listed).unwrap()
    };
    assert!(palisade_testkit::wait_until(
        std::time::Duration::from_secs(5),
        || rows().as_array().is_some_and(|rows| !rows.is_empty())
    ));
    let rows = rows();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["path"], "/page", "{rows}");
}

/// Decoding a compressed answer takes memory (a br window is up to 16 MiB), drawn from
/// the agent's share of body memory while the answer streams: past the share the answer
/// is refused (503 `too_many_buffered_bodies`), never passed on unsearched, and a
/// decoder that fits is served.
#[test]
fn decoding_memory_counts_against_the_agents_share() {
    let (setup, token) = reflector_with_options(
        "sk-decoder-budget-1",
        &[
            "--max-judged-body",
            "1MiB",
            "--max-buffered-bodies-per-agent",
            "1MiB",
        ],
    );
    let page = |encoding: &str| {
        setup.upstream.url(&format!(
            "/page?text=sk-decoder-budget-1&encoding={encoding}"
        ))
    };
    let (status, answer) = setup.fetch(&token, &[&page("br")]);
    assert_eq!(status, 503, "{answer}");
    assert!(!answer.contains("sk-decoder-budget-1"), "{answer}");
    let refusal: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(refusal["error"], "too_many_buffered_bodies", "{answer}");
    let (status, answer) = setup.fetch(&token, &[&page("gzip")]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, masked("sk-decoder-budget-1"));
}

/// `path-template:/bot{value}/`: `/bot/…` and `/botPLACEHOLDER/…` both become
/// `/bot{value}/…`, the query untouched.
#[test]
fn path_template_fills_both_shapes_of_path() {
    let mut setup = Setup::new();
    let token = setup.agent("bot");
    setup.secret(
        "telegram",
        "localhost",
        None,
        "path-template:/bot{value}/",
        &["bot"],
        "123456:ABC-def_ghi",
    );
    setup.start_vault(&[]);

    for (sent, expected) in [
        (
            "/bot/sendMessage?chat_id=7",
            "/bot123456:ABC-def_ghi/sendMessage",
        ),
        ("/botPLACEHOLDER/getMe?x=1", "/bot123456:ABC-def_ghi/getMe"),
    ] {
        let echo = setup.echo(&token, &setup.upstream.url(sent), &[]);
        let query = sent.split_once('?').map(|(_, q)| q).unwrap_or_default();
        assert_eq!(
            setup.sent_path_and_query(),
            (expected.to_string(), query.to_string()),
            "{sent}"
        );
        assert_eq!(
            echo["path"],
            expected.replace("123456:ABC-def_ghi", &masked("123456:ABC-def_ghi")),
            "{sent}"
        );
    }
}

/// `/v1/*` covers `/v1` and everything below it, never `/v1beta`; an exact pattern
/// covers only itself; the query is never part of the match.
#[test]
fn path_patterns_scope_injection() {
    let mut setup = Setup::new();
    let token = setup.agent("scoped");
    setup.secret(
        "v1",
        "localhost",
        Some("/v1/*"),
        "header:X-Scoped",
        &["scoped"],
        "v-scoped",
    );
    setup.secret(
        "exact",
        "localhost",
        Some("/exact"),
        "header:X-Exact",
        &["scoped"],
        "v-exact",
    );
    setup.start_vault(&[]);

    let cases = [
        ("/v1", Some("X")),
        ("/v1/", Some("X")),
        ("/v1/items", Some("X")),
        ("/v1/models/deep/path", Some("X")),
        ("/v1?from=/v2/", Some("X")),
        ("/v1beta", None),
        ("/v1beta/models", None),
        ("/v2?next=/v1/messages", None),
        ("/api/v1/messages", None),
        ("/exact", Some("E")),
        ("/exact?q=/other", Some("E")),
        ("/exact/more", None),
        ("/exactly", None),
    ];
    for (path, expected) in cases {
        let echo = setup.echo(&token, &setup.upstream.url(path), &[]);
        let scoped = setup.sent_header("x-scoped");
        let exact = setup.sent_header("x-exact");
        match expected {
            Some("X") => {
                assert_eq!(scoped, vec!["v-scoped"], "{path}");
                assert!(exact.is_empty(), "{path}");
            }
            Some(_) => {
                assert_eq!(exact, vec!["v-exact"], "{path}");
                assert!(scoped.is_empty(), "{path}");
            }
            None => assert!(
                scoped.is_empty() && exact.is_empty(),
                "{path} must get nothing: {echo}"
            ),
        }
    }
}

/// A secret is injected only for an agent it is granted to, and only on its host.
#[test]
fn no_injection_without_a_grant_on_another_host_or_for_another_agent() {
    let mut setup = Setup::new();
    let granted = setup.agent("granted");
    let other = setup.agent("other");
    setup.secret(
        "mine",
        "localhost",
        None,
        "header:X-Mine",
        &["granted"],
        "v-mine-granted",
    );
    // Granted to nobody: more specific, but nobody may have it.
    setup.secret(
        "nobodys",
        "localhost",
        Some("/nobody/*"),
        "header:X-Nobody",
        &[],
        "v-nobody-ungranted",
    );
    setup.start_vault(&[]);
    let on_localhost = setup.upstream.url("/nobody/x");
    let on_ip = setup.upstream.base_url_for("127.0.0.1") + "/nobody/x";

    setup.echo(&granted, &on_localhost, &[]);
    assert_eq!(
        setup.sent_header("x-mine"),
        vec!["v-mine-granted"],
        "control"
    );
    assert!(setup.sent_header("x-nobody").is_empty());

    let echo = setup.echo(&other, &on_localhost, &[]);
    assert!(
        setup.sent_header("x-mine").is_empty(),
        "another agent: {echo}"
    );
    assert!(setup.sent_header("x-nobody").is_empty());

    let echo = setup.echo(&granted, &on_ip, &[]);
    assert!(
        setup.sent_header("x-mine").is_empty(),
        "another host: {echo}"
    );

    for request in setup.upstream.requests().iter().skip(1) {
        for (name, value) in &request.headers {
            assert!(
                !value.contains("v-mine-granted") && !value.contains("v-nobody-ungranted"),
                "{name} leaked a secret: {request:?}"
            );
        }
    }
}

/// The most specific path wins; between equally specific paths, higher priority.
#[test]
fn the_most_specific_secret_wins() {
    let mut setup = Setup::new();
    let token = setup.agent("picky");
    let create = |name: &str, path: Option<&str>, priority: &str, value: &str| {
        let mut args = vec![
            "secrets",
            "create",
            "--name",
            name,
            "--host-pattern",
            "localhost",
            "--inject",
            "header:X-Key",
            "--agent",
            "picky",
            "--priority",
            priority,
        ];
        if let Some(path) = path {
            args.extend(["--path-pattern", path]);
        }
        setup.cli_stdin(&args, value);
    };
    // Priorities point the other way from specificity, so a priority-first order fails.
    create("general", None, "9", "general");
    create("api", Some("/api/*"), "5", "api");
    create("special", Some("/api/special/*"), "1", "special");
    create("exact", Some("/api/special/exact"), "0", "exact");
    create("tie-low", Some("/tie/*"), "0", "tie-low");
    create("tie-high", Some("/tie/*"), "3", "tie-high");
    setup.start_vault(&[]);

    for (path, expected) in [
        ("/elsewhere", "general"),
        ("/api/x", "api"),
        ("/api/special/y", "special"),
        ("/api/special/exact", "exact"),
        ("/tie/x", "tie-high"),
    ] {
        setup.echo(&token, &setup.upstream.url(path), &[]);
        assert_eq!(setup.sent_header("x-key"), vec![expected], "{path}");
    }
}

/// Whatever way the agent talks to the gateway, its proxy token never reaches the
/// upstream: not in `Proxy-Authorization`, not in any other header, not in the path.
#[test]
fn the_proxy_credential_never_reaches_the_upstream() {
    let mut setup = Setup::with_upstream(Upstream::builder().plain_http());
    let token = setup.agent("sneaky");
    setup.secret(
        "api",
        "localhost",
        None,
        "bearer",
        &["sneaky"],
        "v-sneaky-secret",
    );
    let addr = setup.start_vault(&[]);
    let credential = basic(&format!("x:{token}"));
    let url = setup.upstream.url("/leak");

    for version in ["--http1.1", "--http2"] {
        setup.echo(&token, &url, &[version]);
        // A client that also sends the credential inside the tunnel, and one that
        // names it as a hop-by-hop header.
        setup.echo(
            &token,
            &url,
            &[version, "-H", &format!("Proxy-Authorization: {credential}")],
        );
    }
    setup.echo(
        &token,
        &url,
        &[
            "--http1.1",
            "-H",
            "Connection: x-hop",
            "-H",
            &format!("X-Hop: {token}"),
        ],
    );
    let plain = setup.upstream.http_base_url().expect("plain listener") + "/leak";
    setup.echo(&token, &plain, &[]);
    let websocket = r#"
import json, os, websocket
ws = websocket.create_connection(
    os.environ["URL"], timeout=20,
    http_proxy_host="127.0.0.1", http_proxy_port=int(os.environ["PROXY_PORT"]),
    http_proxy_auth=("x", os.environ["TOKEN"]), proxy_type="http",
    sslopt={"ca_certs": os.environ["VAULT_CA"]})
greeting = ws.recv()
ws.close()
print(json.dumps({"greeting": json.loads(greeting)}))
"#;
    let ws_url = format!("wss://localhost:{}/ws", setup.upstream.port());
    let vault_ca = setup.vault_ca_str();
    let port = addr.port().to_string();
    let result = last_json_line(&python_ok(
        websocket,
        &[
            ("URL", &ws_url),
            ("PROXY_PORT", &port),
            ("TOKEN", &token),
            ("VAULT_CA", &vault_ca),
        ],
    ));
    // The upstream got the credential; the agent sees it masked in the greeting.
    assert_eq!(
        setup.sent_header("authorization"),
        vec!["Bearer v-sneaky-secret"]
    );
    assert_eq!(
        header_values(&result["greeting"], "authorization"),
        vec![format!("Bearer {}", "*".repeat("v-sneaky-secret".len()))]
    );

    let requests = setup.upstream.requests();
    assert_eq!(requests.len(), 7, "{requests:?}");
    let encoded = base64(format!("x:{token}").as_bytes());
    for request in &requests {
        assert!(
            !request.path_and_query.contains(&token),
            "token in the path: {request:?}"
        );
        for (name, value) in &request.headers {
            assert_ne!(name, "proxy-authorization", "{request:?}");
            assert!(
                !value.contains(&token) && !value.contains(&encoded),
                "the proxy credential reached the upstream in {name}: {request:?}"
            );
        }
    }
}

/// New secret, revoked grant, new block rule and deleted rule each take effect on a
/// running gateway within about a second of the CLI returning.
#[test]
fn cli_changes_apply_to_a_running_gateway_within_a_second() {
    let mut setup = Setup::new();
    let token = setup.agent("hot");
    setup.start_vault(&[]);
    let url = setup.upstream.url("/hot");
    let hot_header = || {
        setup.echo(&token, &url, &[]);
        setup.sent_header("x-hot")
    };
    assert!(hot_header().is_empty());

    setup.secret(
        "hot",
        "localhost",
        None,
        "header:X-Hot",
        &["hot"],
        "v-hot-value",
    );
    assert_applies_now("a new secret", || hot_header() == vec!["v-hot-value"]);

    setup.cli(&["secrets", "revoke", "hot", "--agent", "hot"]);
    assert_applies_now("a revoked grant", || hot_header().is_empty());

    setup.cli(&["secrets", "grant", "hot", "--agent", "hot"]);
    assert_applies_now("a new grant", || hot_header() == vec!["v-hot-value"]);

    setup.cli(&[
        "rules",
        "create",
        "--name",
        "stop-hot",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/hot",
        "--action",
        "block",
    ]);
    let before = setup.upstream.count();
    assert_applies_now("a new block rule", || {
        let (status, body) = setup.fetch(&token, &[&url]);
        status == 403
            && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"] == "blocked_by_policy")
    });
    let after_block = setup.upstream.count();
    let (status, _) = setup.fetch(&token, &[&url]);
    assert_eq!(status, 403);
    assert_eq!(
        setup.upstream.count(),
        after_block,
        "a blocked request sends nothing upstream"
    );
    assert!(after_block >= before);

    setup.cli(&["rules", "delete", "stop-hot"]);
    assert_applies_now("a deleted rule", || setup.fetch(&token, &[&url]).0 == 200);

    setup.cli(&["secrets", "delete", "hot"]);
    assert_applies_now("a deleted secret", || hot_header().is_empty());
}

/// The CA is created once and kept: after a restart the gateway presents leaves from
/// the same CA, so a client that saved the old CA file keeps working.
#[test]
fn the_ca_is_stable_across_gateway_restarts() {
    let mut setup = Setup::new();
    let token = setup.agent("steady");
    setup.secret("api", "localhost", None, "bearer", &["steady"], "v-steady");
    setup.start_vault(&[]);
    let first_pem = std::fs::read_to_string(setup.vault_ca()).expect("CA after first start");
    assert!(first_pem.contains("BEGIN CERTIFICATE"));
    let key = setup.palisade.home().join("ca").join("ca.key");
    assert_mode_0600(&key);
    let saved = setup.palisade.write_file("saved-vault-ca.pem", &first_pem);
    let cli_pem = setup.cli(&["vault", "ca-cert"]);
    assert_eq!(
        cli_pem.trim(),
        first_pem.trim(),
        "vault ca-cert prints the CA"
    );

    let fetch_with_saved_ca = |setup: &Setup| {
        let url = setup.upstream.url("/steady");
        let output = palisade_testkit::curl(
            &[
                "-sS",
                "--proxy",
                &format!("http://{}", setup.addr()),
                "--proxy-user",
                &format!("x:{token}"),
                "--cacert",
                saved.to_str().expect("UTF-8 path"),
                &url,
            ],
            CLIENT_TIMEOUT,
        );
        assert!(output.status.success(), "{}", output_text(&output));
        let _: Value = serde_json::from_slice(&output.stdout).expect("echo JSON");
        assert_eq!(setup.sent_header("authorization"), vec!["Bearer v-steady"]);
    };
    fetch_with_saved_ca(&setup);

    setup.stop_vault();
    setup.start_vault(&[]);
    let second_pem = std::fs::read_to_string(setup.vault_ca()).expect("CA after restart");
    assert_eq!(first_pem, second_pem, "the CA must survive a restart");
    fetch_with_saved_ca(&setup);
}

fn assert_mode_0600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} has mode {mode:o}", path.display());
}

/// Secret values reach the upstream and nothing else: not the gateway's debug log,
/// not the audit log, not `secrets list`, not any file under the home.
#[test]
fn secret_values_stay_out_of_logs_audit_listings_and_the_database() {
    let mut setup = Setup::new();
    let token = setup.agent("quiet");
    // (name, injection, value, path pattern, a request path it covers)
    let values = [
        (
            "q-bearer",
            "bearer",
            "sv-bearer-7f3a9c2e",
            "/q-bearer/*",
            "/q-bearer/call",
        ),
        (
            "q-anthropic",
            "anthropic",
            "sv-anthropic-41d8e0b6",
            "/q-anthropic/*",
            "/q-anthropic/v1/messages",
        ),
        (
            "q-query",
            "query:key",
            "sv-query-9b2c51aa",
            "/q-query/*",
            "/q-query/call",
        ),
        (
            "q-path",
            "path-template:/bot{value}/",
            "sv-path-c3e7d410",
            "/bot/*",
            "/bot/sendMessage",
        ),
        (
            "q-format",
            "header:X-Auth:Token {value}",
            "sv-format-5a61f2d9",
            "/q-format/*",
            "/q-format/call",
        ),
    ];
    for (name, inject, value, path, _) in values {
        setup.secret(name, "localhost", Some(path), inject, &["quiet"], value);
    }
    setup.cli(&[
        "rules",
        "create",
        "--name",
        "no-blocked",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/q-bearer/blocked",
        "--action",
        "block",
    ]);
    setup.start_vault(&["-vv"]);

    for (_, _, _, _, request_path) in values {
        for version in ["--http1.1", "--http2"] {
            let url = setup
                .upstream
                .url(&format!("{request_path}?key=client-placeholder"));
            setup.echo(
                &token,
                &url,
                &[version, "-H", "Authorization: Bearer client-placeholder"],
            );
        }
    }
    // Error paths log too: a refusal, and an unreachable upstream after the query
    // secret was written into the URL (the host pattern matches any port).
    let (status, _) = setup.fetch(&token, &[&setup.upstream.url("/q-bearer/blocked")]);
    assert_eq!(status, 403);
    let dead = format!(
        "https://localhost:{}/q-query/call?key=x",
        palisade_testkit::free_port()
    );
    let (status, body) = setup.fetch(&token, &[&dead]);
    assert_eq!(status, 502, "{body}");

    // Positive control: every value did reach the upstream.
    let recorded = format!("{:?}", setup.upstream.requests());
    for (_, _, value, _, _) in values {
        assert!(recorded.contains(value), "{value} was never injected");
    }

    let audit = setup.cli(&["--json", "audit", "list"]);
    let listing = setup.cli(&["--json", "secrets", "list"]);
    assert!(
        audit.contains("q-anthropic"),
        "the audit names the secret: {audit}"
    );
    assert!(listing.contains("q-format"), "{listing}");
    let vault_log = setup.vault_output();
    assert!(
        vault_log.to_ascii_lowercase().contains("debug"),
        "the gateway ran with debug logs: {vault_log}"
    );
    setup.stop_vault();
    let everything_printed = setup.palisade.all_output();

    let files = files_under(setup.palisade.home());
    assert!(
        files.iter().any(|f| f.ends_with("palisade.db")),
        "{files:?}"
    );
    for (_, _, value, _, _) in values {
        assert!(!vault_log.contains(value), "{value} in the gateway's log");
        assert!(
            !everything_printed.contains(value),
            "{value} in some command's output"
        );
        assert!(!audit.contains(value), "{value} in audit list --json");
        assert!(!listing.contains(value), "{value} in secrets list --json");
        for file in &files {
            let bytes = std::fs::read(file).expect("read a home file");
            assert!(
                !bytes
                    .windows(value.len())
                    .any(|window| window == value.as_bytes()),
                "{value} in plain text in {}",
                file.display()
            );
        }
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

/// `eval "$(palisade vault env --agent A --gateway ADDR)"` gives a shell everything
/// curl needs: the proxy URL with the token and the vault CA bundle.
#[test]
fn vault_env_evaluated_in_bash_configures_curl() {
    let mut setup = Setup::new();
    setup.agent("shell");
    setup.secret(
        "api",
        "localhost",
        None,
        "bearer",
        &["shell"],
        "v-shell-env",
    );
    let addr = setup.start_vault(&[]);
    let url = setup.upstream.url("/from/shell?x=1");

    // The env exempts loopback via NO_PROXY (inside a container, localhost is the
    // container); the test upstream is on loopback, so only that list is overridden
    // (`--noproxy ''`); proxy and CA come from the evaluated environment alone.
    let script = r#"set -eu
eval "$("$PALISADE_BIN" vault env --agent shell --gateway "$GATEWAY")"
test -n "$HTTPS_PROXY"
curl -sS --max-time 20 --noproxy '' "$URL"
"#;
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .env("PALISADE_BIN", env!("CARGO_BIN_EXE_palisade"))
        .env("PALISADE_HOME", setup.palisade.home())
        .env("GATEWAY", addr.to_string())
        .env("URL", &url);
    for name in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        command.env_remove(name);
    }
    let output = run_with_timeout(&mut command, None, CLIENT_TIMEOUT);
    assert!(output.status.success(), "{}", output_text(&output));
    let echo: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(&output)));
    assert_eq!(echo["path"], "/from/shell");
    assert_eq!(
        setup.sent_header("authorization"),
        vec!["Bearer v-shell-env"]
    );
    assert_eq!(setup.upstream.count(), 1);
}
