//! Secrets and rules scoped to one port of a host. On 127.0.0.1 each port is another
//! service (a model server, a database's console, a debugging tool), so a secret
//! granted for `127.0.0.1:PORT` must reach that port only, over every way an agent
//! talks to the gateway: a CONNECT tunnel with TLS inside, and an absolute-form
//! `http://` request on the TCP listener. A secret without a port keeps reaching every
//! port, as it always has.
//!
//! Black-box: the real binary, curl as the agent, and two recording upstreams on two
//! ports of loopback (each with a TLS and a plain HTTP listener) that say exactly what
//! arrived.

mod vault_fixture;

use palisade_testkit::{RecordedRequest, Upstream};
use vault_fixture::Setup;

const SCOPED_TLS: &str = "v-scoped-to-one-tls-port-5e1d";
const SCOPED_PLAIN: &str = "v-scoped-to-one-plain-port-77a0";
const EVERY_PORT: &str = "v-every-port-of-localhost-c4f2";

/// Whether `value` arrived anywhere in `request`: a header or the path and query.
fn carries(request: &RecordedRequest, value: &str) -> bool {
    request.path_and_query.contains(value) || request.headers.iter().any(|(_, v)| v.contains(value))
}

/// The request `upstream` received last, which must be for `path`.
#[track_caller]
fn received(upstream: &Upstream, path: &str) -> RecordedRequest {
    let last = upstream
        .last_request()
        .unwrap_or_else(|| panic!("nothing reached the upstream for {path}"));
    assert_eq!(last.path(), path);
    last
}

#[test]
fn a_secret_for_one_port_of_a_host_reaches_that_port_only() {
    let mut setup = Setup::with_upstream(Upstream::builder().plain_http());
    let other = Upstream::builder()
        .plain_http()
        .start(&setup.ca)
        .expect("start the second upstream");
    let token = setup.agent("porter");
    let (tls, plain) = (
        setup.upstream.port(),
        setup.upstream.http_addr().expect("plain listener").port(),
    );
    let (other_tls, other_plain) = (
        other.port(),
        other.http_addr().expect("plain listener").port(),
    );
    let tls_pattern = format!("127.0.0.1:{tls}");
    let plain_pattern = format!("127.0.0.1:{plain}");
    setup.secret(
        "tls-one",
        &tls_pattern,
        None,
        "header:x-key",
        &["porter"],
        SCOPED_TLS,
    );
    setup.secret(
        "plain-one",
        &plain_pattern,
        None,
        "header:x-key",
        &["porter"],
        SCOPED_PLAIN,
    );
    // The same host by another name, without a port: every port, as before.
    setup.secret(
        "every",
        "localhost",
        None,
        "header:x-key",
        &["porter"],
        EVERY_PORT,
    );
    setup.start_vault(&[]);

    // CONNECT and TLS (curl tunnels https:// through the proxy).
    let url = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    setup.echo(&token, &url(tls, "/tls-scoped"), &[]);
    let arrived = received(&setup.upstream, "/tls-scoped");
    assert_eq!(
        arrived.header("x-key"),
        Some(SCOPED_TLS),
        "the secret for {tls_pattern} is injected on its port: {arrived:?}"
    );
    setup.echo(&token, &url(other_tls, "/tls-other"), &[]);
    let arrived = received(&other, "/tls-other");
    assert!(arrived.tls);
    for value in [SCOPED_TLS, SCOPED_PLAIN, EVERY_PORT] {
        assert!(
            !carries(&arrived, value),
            "another port of 127.0.0.1 got a credential over CONNECT+TLS: {arrived:?}"
        );
    }

    // Absolute-form http:// on the TCP listener (curl sends http:// URLs that way).
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    setup.echo(&token, &url(plain, "/plain-scoped"), &[]);
    let arrived = received(&setup.upstream, "/plain-scoped");
    assert!(!arrived.tls);
    assert_eq!(arrived.header("x-key"), Some(SCOPED_PLAIN), "{arrived:?}");
    setup.echo(&token, &url(other_plain, "/plain-other"), &[]);
    let arrived = received(&other, "/plain-other");
    for value in [SCOPED_TLS, SCOPED_PLAIN, EVERY_PORT] {
        assert!(
            !carries(&arrived, value),
            "another port of 127.0.0.1 got a credential over absolute-form http: {arrived:?}"
        );
    }
    // The TLS port's secret is not the plain port's either: each names its own port.
    setup.echo(&token, &url(plain, "/plain-again"), &[]);
    assert!(!carries(
        &received(&setup.upstream, "/plain-again"),
        SCOPED_TLS
    ));

    // A secret without a port is injected on every port of its host, both ways.
    for (upstream, address, path) in [
        (
            &setup.upstream,
            format!("https://localhost:{tls}"),
            "/any-1",
        ),
        (&other, format!("https://localhost:{other_tls}"), "/any-2"),
        (
            &setup.upstream,
            format!("http://localhost:{plain}"),
            "/any-3",
        ),
        (&other, format!("http://localhost:{other_plain}"), "/any-4"),
    ] {
        setup.echo(&token, &format!("{address}{path}"), &[]);
        let arrived = received(upstream, path);
        assert_eq!(
            arrived.header("x-key"),
            Some(EVERY_PORT),
            "{address}: {arrived:?}"
        );
    }

    // People see the port: in the listing and in the agent's plain words.
    let listed = setup.cli(&["secrets", "list"]);
    assert!(listed.contains(&tls_pattern), "{listed}");
    let shown = setup.cli(&["agents", "show", "porter"]);
    assert!(
        shown.contains(&format!("tls-one for 127.0.0.1 on port {tls} only")),
        "{shown}"
    );
    assert!(
        shown.contains("every for localhost on every port"),
        "{shown}"
    );
}

#[test]
fn a_rule_for_one_port_of_a_host_decides_for_that_port_only() {
    let mut setup = Setup::with_upstream(Upstream::builder().plain_http());
    let other = Upstream::builder()
        .start(&setup.ca)
        .expect("start the second upstream");
    let token = setup.agent("ruled");
    let blocked = format!("127.0.0.1:{}", other.port());
    setup.cli(&[
        "rules",
        "create",
        "--name",
        "no-other",
        "--host-pattern",
        &blocked,
        "--action",
        "block",
    ]);
    setup.start_vault(&[]);

    let (status, body) = setup.fetch(&token, &[&format!("https://127.0.0.1:{}/x", other.port())]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("blocked_by_policy"), "{body}");
    assert_eq!(other.count(), 0, "a blocked request reaches nothing");
    let (status, body) = setup.fetch(
        &token,
        &[&format!("https://127.0.0.1:{}/x", setup.upstream.port())],
    );
    assert_eq!(status, 200, "the rule's port only: {body}");
    let listed = setup.cli(&["rules", "list"]);
    assert!(listed.contains(&blocked), "{listed}");
}

#[test]
fn bad_ports_in_host_patterns_are_refused_with_one_line_naming_the_input() {
    let setup = Setup::new();
    setup.agent("typo");
    for (pattern, why) in [
        ("127.0.0.1:0", "port 0"),
        ("127.0.0.1:65536", "above 65535"),
        ("127.0.0.1:http", "digits only"),
        ("*:8080", "takes no port"),
        ("::1:8080:x", "brackets"),
    ] {
        for args in [
            vec![
                "secrets",
                "create",
                "--name",
                "s",
                "--host-pattern",
                pattern,
                "--inject",
                "bearer",
            ],
            vec![
                "rules",
                "create",
                "--name",
                "r",
                "--host-pattern",
                pattern,
                "--action",
                "block",
            ],
        ] {
            let output = setup.palisade.run_stdin(&args, b"v-never-stored-1234");
            assert!(!output.status.success(), "{args:?} was accepted");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr = stderr.trim_end();
            assert!(stderr.contains(why), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{pattern:?}")),
                "{args:?}: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        }
    }
    assert!(setup.cli(&["secrets", "list", "--json"]).trim() == "[]");
}
