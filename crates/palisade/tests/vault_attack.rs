//! The vault under attack: each test is a way around the boundary that an adversarial
//! review found (issue 9), tried the way an agent would, with real clients against the
//! real `palisade vault serve`. Each failed on the gateway as it was and passes now.
//!
//! - path spellings that upstreams read as the same path (block, approval, rate limit,
//!   path-scoped secret; HTTP/1.1 and HTTP/2, curl `--path-as-is`);
//! - method spellings (`post`, an override header, HEAD for GET), headers named in
//!   `Connection`, and a policy changed while a request waited for approval;
//! - a body extended after the approval was shown;
//! - abandoned held requests, and one agent's flood of holds;
//! - one agent's flood of idle connections while another agent works, its WebSockets
//!   past its share or left idle, and its HTTP/2 streams past its share of requests;
//! - upstream connections kept after the tunnel that used them has gone, shared with
//!   another agent whose streams fill them, or opened past the gateway's connection cap;
//! - one agent's unfinished bodies that a rule must read whole, and over HTTP/2 its
//!   unread answers and bodies no upstream takes, which flow control lets in; request
//!   and response heads of hundreds of kilobytes;
//! - one agent's loop of refusals flooding the audit log, and of credentialed
//!   requests filling the home's disk, for everyone or past its share; audit rows
//!   written while the database is locked;
//! - the gateway's own listener spelled as IPv4-mapped IPv6;
//! - the audit log's tail deleted;
//! - a change used on the very next request;
//! - every refusal leaving exactly one audit row.

mod vault_fixture;

use palisade_testkit::{curl, output_text, python, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use vault_fixture::{split_status, CurlReply, Setup, CLIENT_TIMEOUT};

/// Agents, a gateway with the given extra arguments, and helpers to talk through it.
struct Attack {
    setup: Setup,
}

impl Attack {
    fn start(extra: &[&str]) -> Attack {
        let mut setup = Setup::new();
        setup.start_vault(extra);
        Attack { setup }
    }

    fn cli(&self, args: &[&str]) -> String {
        self.setup.cli(args)
    }

    /// Creates the rule `name` for host `localhost` with the rest of its options.
    fn rule(&self, name: &str, options: &[&str]) {
        let mut args = vec![
            "rules",
            "create",
            "--name",
            name,
            "--host-pattern",
            "localhost",
        ];
        args.extend_from_slice(options);
        self.cli(&args);
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let text = self.cli(&full);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }

    /// curl through the gateway as `token`: `-i`, the proxy, `--path-as-is`, then `args`.
    fn curl(&self, token: &str, args: &[&str]) -> CurlReply {
        let mut full: Vec<String> = vec![
            "-sS".into(),
            "-i".into(),
            "--suppress-connect-headers".into(),
            "--path-as-is".into(),
            "--max-time".into(),
            "20".into(),
        ];
        full.extend(self.setup.proxy_args(token));
        full.extend(args.iter().map(|a| a.to_string()));
        let output = curl(&full, CLIENT_TIMEOUT);
        assert!(
            output.status.success(),
            "curl {args:?}: {}",
            output_text(&output)
        );
        CurlReply::parse(&output)
    }

    /// Creates the agent `probe` with a bearer secret `value` for `localhost` paths
    /// under `/v1/`; returns its token.
    fn probe_with_v1_key(&self, value: &str) -> String {
        let token = self.setup.agent("probe");
        self.setup.secret(
            "v1-key",
            "localhost",
            Some("/v1/*"),
            "bearer",
            &["probe"],
            value,
        );
        token
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.setup.upstream.port())
    }

    /// The audit rows with `decision`, once at least `expected` are there (rows are
    /// written by the gateway's audit writer a moment after the answer), or after 10 s.
    fn rows(&self, decision: &str, expected: usize) -> Value {
        let mut rows = Value::Null;
        wait_until(Duration::from_secs(10), || {
            rows = self.json(&["audit", "list", "--decision", decision, "--limit", "10000"]);
            rows.as_array().is_some_and(|rows| rows.len() >= expected)
        });
        rows
    }

    fn pending(&self) -> Vec<Value> {
        self.json(&["approvals", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A Python client talking to the gateway as an agent, driven line by line: it gets
/// `PROXY`, `UPSTREAM_PORT`, `TOKEN` and `VAULT_CA` besides its own variables, and is
/// killed when dropped.
struct Interactive {
    _child: Killed,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl Interactive {
    fn start(attack: &Attack, script: &str, token: &str, env: &[(&str, &str)]) -> Interactive {
        let mut command = Command::new("python3");
        command
            .arg("-c")
            .arg(script)
            .env("PROXY", attack.setup.addr().to_string())
            .env("UPSTREAM_PORT", attack.setup.upstream.port().to_string())
            .env("TOKEN", token)
            .env("VAULT_CA", attack.setup.vault_ca())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = Killed(command.spawn().expect("python3"));
        Interactive {
            input: child.0.stdin.take().unwrap(),
            output: BufReader::new(child.0.stdout.take().unwrap()),
            _child: child,
        }
    }

    /// The client's next line (each client bounds its own waits).
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn send(&mut self, line: &str) {
        writeln!(self.input, "{line}").unwrap();
    }
}

#[track_caller]
fn refused(reply: &CurlReply, status: u16, error: &str) {
    assert_eq!(reply.status, status, "{}", reply.raw);
    assert_eq!(reply.json()["error"], error, "{}", reply.raw);
}

/// Every spelling of a path that a server reads as the same path is judged as that
/// path: block, approval and rate-limit rules and a path-scoped secret all see through
/// dot segments, doubled slashes, escaped letters, parameters and a trailing slash;
/// forms servers disagree on are refused; and the upstream receives the canonical path.
#[test]
fn path_spellings_cannot_sidestep_rules_or_secrets() {
    let attack = Attack::start(&["--approval-timeout", "1s"]);
    let token = attack.probe_with_v1_key("tok-v1-only");
    attack.rule(
        "no-admin",
        &["--path-pattern", "/admin/*", "--action", "block"],
    );
    attack.rule(
        "ask-send",
        &[
            "--path-pattern",
            "/v1/send",
            "--method",
            "POST",
            "--action",
            "require_approval",
        ],
    );
    attack.rule(
        "one-rl",
        &[
            "--path-pattern",
            "/rl/*",
            "--action",
            "rate_limit",
            "--rate-limit",
            "1",
            "--rate-window",
            "1h",
        ],
    );
    let upstream = &attack.setup.upstream;

    for version in ["--http1.1", "--http2"] {
        for spelling in [
            "/admin/x",
            "/v1/../admin/x",
            "//admin/x",
            "/./admin/x",
            "/%61dmin/x",
            "/%2e/admin/x",
            "/admin/x/",
            "/admin;jsessionid=1/x",
            "/v1/%2e%2e/admin/x",
            // Servers that route loosely (Express, ASP.NET, IIS) read these as /admin.
            "/ADMIN/x",
            "/Admin./x",
            "/admin%20/x",
            "/adm%C4%B1n/x",
            "/ADM%C4%B0N/x",
        ] {
            let before = upstream.count();
            let reply = attack.curl(&token, &[version, &attack.url(spelling)]);
            refused(&reply, 403, "blocked_by_policy");
            assert_eq!(
                upstream.count(),
                before,
                "{version} {spelling} reached the upstream"
            );
        }
        for spelling in [
            "/v1/%73end",
            "/v1//send",
            "/v1/send/",
            "/v2/../v1/send",
            "/v1/./send",
            "/v1/Send",
            "/V1/SEND/",
            "/v1/send.",
            "/v1/send%20",
            "/v1/send.json",
            "/v1/send.x.json",
            "/v1/%C5%BFend",
        ] {
            let before = upstream.count();
            let reply = attack.curl(
                &token,
                &[version, "-X", "POST", "--data", "x", &attack.url(spelling)],
            );
            refused(&reply, 504, "approval_timed_out");
            assert_eq!(
                upstream.count(),
                before,
                "{version} POST {spelling} was sent unapproved"
            );
        }
        for spelling in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/../x",
            "/v1/../../x",
            "/a%00b",
            "/a/..;/b",
            "/a%zz",
            "/v1/%252e%252e/admin/x",
            "/v1/%25%32%65%25%32%65/admin/x",
            "/%c0%ae%c0%ae/admin/x",
            "/admin%C0%AF/x",
        ] {
            let before = upstream.count();
            let reply = attack.curl(&token, &[version, &attack.url(spelling)]);
            refused(&reply, 400, "ambiguous_path");
            assert_eq!(
                upstream.count(),
                before,
                "{version} {spelling} reached the upstream"
            );
        }
    }

    // The secret scoped to /v1/* goes with the path the upstream will serve, whatever
    // the spelling, and the upstream is sent that canonical path.
    let reply = attack.curl(&token, &[&attack.url("/v2/../v1/x//y/./z")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.path(), "/v1/x/y/z");
    assert_eq!(seen.header("authorization"), Some("Bearer tok-v1-only"));
    let reply = attack.curl(&token, &[&attack.url("/v1/../v2/x")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.path(), "/v2/x");
    assert_eq!(
        seen.header("authorization"),
        None,
        "the /v1 secret left its scope"
    );
    let reply = attack.curl(&token, &[&attack.url("/v1/%7euser?q=%2F")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(
        upstream.last_request().unwrap().path_and_query,
        "/v1/~user?q=%2F",
        "unreserved escapes decoded, the query left as sent"
    );

    // One request per window, however the path is spelled.
    for (index, (version, spelling)) in [
        ("--http1.1", "/rl/a"),
        ("--http1.1", "//rl/a"),
        ("--http2", "/rl/./a"),
        ("--http2", "/%72l/a"),
        ("--http1.1", "/rl/a/"),
        ("--http2", "/RL/a"),
        ("--http1.1", "/rl./a"),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = attack.curl(&token, &[version, &attack.url(spelling)]);
        if index == 0 {
            assert_eq!(reply.status, 200, "{}", reply.raw);
        } else {
            refused(&reply, 429, "rate_limited");
        }
    }
}

/// A method is judged as the upstream will read it: a lower-case `post` or `delete`
/// (which Flask and Django upper-case and run) and a method-override header naming
/// another method are refused, and a rule about GET covers HEAD, which servers answer
/// with the GET handler. HTTP/1.1 and HTTP/2.
#[test]
fn method_spellings_cannot_sidestep_rules() {
    let attack = Attack::start(&["--approval-timeout", "1s"]);
    let token = attack.setup.agent("probe");
    for (name, method, path, action) in [
        ("ask-pay", "POST", "/pay/*", "require_approval"),
        ("no-delete", "DELETE", "/*", "block"),
        ("no-item", "GET", "/item/*", "block"),
    ] {
        attack.rule(
            name,
            &[
                "--path-pattern",
                path,
                "--method",
                method,
                "--action",
                action,
            ],
        );
    }
    let upstream = &attack.setup.upstream;
    for version in ["--http1.1", "--http2"] {
        for (method, path) in [
            ("post", "/pay/1000"),
            ("Post", "/pay/1000"),
            ("delete", "/item/7"),
            ("get", "/item/9"),
        ] {
            let before = upstream.count();
            let reply = attack.curl(
                &token,
                &[
                    version,
                    "-X",
                    method,
                    "--data",
                    "amount=1000",
                    &attack.url(path),
                ],
            );
            refused(&reply, 400, "ambiguous_method");
            assert_eq!(
                upstream.count(),
                before,
                "{version} {method} {path} was sent"
            );
        }
        for (method, claimed, header) in [
            ("POST", "DELETE", "X-HTTP-Method-Override"),
            ("POST", "get", "X-HTTP-Method-Override"),
            ("GET", "DELETE", "X-HTTP-Method-Override"),
            // PHP reads `_` in a header name as `-`.
            ("POST", "DELETE", "X_HTTP_Method_Override"),
        ] {
            let before = upstream.count();
            let reply = attack.curl(
                &token,
                &[
                    version,
                    "-X",
                    method,
                    "-H",
                    &format!("{header}: {claimed}"),
                    &attack.url("/other"),
                ],
            );
            refused(&reply, 400, "ambiguous_method");
            assert_eq!(
                upstream.count(),
                before,
                "{version} {method} as {claimed} was sent"
            );
        }
        // The `_method` parameter Symfony and Laravel read from a POST's query, in the
        // spellings PHP decodes to that name.
        for query in [
            "_method=DELETE",
            "_method=delete",
            "%5Fmethod=DELETE",
            ".method=DELETE",
            "+method=DELETE",
            "a=1&_method=PUT",
            // PHP drops leading spaces before it turns the rest into `_`.
            "+_method=DELETE",
            "%20.method=DELETE",
            // ASP.NET MVC reads the override header's name from the query too.
            "X-HTTP-Method-Override=DELETE",
        ] {
            let before = upstream.count();
            let reply = attack.curl(
                &token,
                &[
                    version,
                    "-X",
                    "POST",
                    "--data",
                    "x",
                    &attack.url(&format!("/item/7?{query}")),
                ],
            );
            refused(&reply, 400, "ambiguous_method");
            assert_eq!(upstream.count(), before, "{version} POST ?{query} was sent");
        }
        // The same field in a form's body, which Rails reads (and Symfony and Laravel
        // before the query). (Before, a POST with `_method=DELETE` in its body passed
        // the block on DELETE, with the credential.)
        // Also without a `Content-Type` (Rack parses such a POST as a form), with the
        // type cut where PHP cuts it, and named as Slim reads it.
        for (form, content_type) in [
            ("_method=DELETE", None),
            ("a=1&%5Fmethod=delete", None),
            (".method=PUT", None),
            ("_METHOD=DELETE", None),
            ("_method=DELETE", Some("Content-Type:")),
            // An empty type is none to Rack; Rack drops brackets around the name.
            ("_method=DELETE", Some("Content-Type;")),
            ("]_method=DELETE", None),
            ("_method]=DELETE", None),
            ("%5B_method=DELETE", None),
            // A multipart type over a form body: Rack reads it as a form.
            ("_method=DELETE", Some("Content-Type: multipart/related")),
            ("x_http_method_override=DELETE", None),
            // The field in UTF-16, which Tomcat and ASP.NET decode as declared.
            (
                "%00_%00m%00e%00t%00h%00o%00d=%00D%00E%00L%00E%00T%00E",
                Some("Content-Type: application/x-www-form-urlencoded; charset=UTF-16BE"),
            ),
            (
                "_method=DELETE",
                Some("Content-Type: application/x-www-form-urlencoded, text/plain"),
            ),
        ] {
            let before = upstream.count();
            let url = attack.url("/item/7");
            let mut args = vec![version, "-X", "POST", "--data", form];
            if let Some(header) = content_type {
                args.extend(["-H", header]);
            }
            args.push(&url);
            let reply = attack.curl(&token, &args);
            refused(&reply, 400, "ambiguous_method");
            assert_eq!(
                upstream.count(),
                before,
                "{version} POST {form} ({content_type:?}) was sent"
            );
        }
        // A POST to /item/7 with `extra` curl options; refused as an override, and
        // never sent.
        let post = |extra: &[&str]| {
            let url = attack.url("/item/7");
            let mut args = vec![version, "-X", "POST"];
            args.extend(extra);
            args.push(&url);
            attack.curl(&token, &args)
        };
        let refused_post = |extra: &[&str]| {
            let before = upstream.count();
            let reply = post(extra);
            refused(&reply, 400, "ambiguous_method");
            assert_eq!(
                upstream.count(),
                before,
                "{version} POST {extra:?} was sent"
            );
        };
        // The field in a JSON object (Laravel reads it) and in a multipart form (Rails,
        // Symfony and Laravel do). (Before, each passed the block on DELETE.)
        let multipart = "--b\r\nContent-Disposition: form-data; name*=utf-8''%5Fmethod\r\n\r\nDELETE\r\n--b--\r\n";
        // A header folded onto a second line, which Rack joins; a line without a colon,
        // which PHP joins to the one before; the name without `form-data`, or in
        // single quotes (PHP); in `Content-ID` (Rack).
        let folded = "--b\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n";
        let odd_heads = [
            "--b\r\nContent-Disposition: form-data; x=1;\r\nname=_method\r\n\r\nDELETE\r\n--b--\r\n",
            "--b\r\nContent-Disposition: name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
            "--b\r\nContent-Disposition: form-data; name='_method'\r\n\r\nDELETE\r\n--b--\r\n",
            "--b\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--\r\n",
        ];
        for extra in [
            vec![
                "-H",
                "Content-Type: application/json",
                "--data",
                r#"{"_method":"DELETE"}"#,
            ],
            vec![
                "-H",
                "Content-Type: application/vnd.api+json",
                "--data",
                r#"{"a":1,"_method":["PUT"]}"#,
            ],
            vec![
                "-H",
                "Content-Type: application/json; charset=utf-8",
                "--data",
                r#"{"_method":"POST","_method":"DELETE"}"#,
            ],
            vec!["-F", "_method=DELETE"],
            vec!["-F", "a=1", "-F", "_METHOD=delete"],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                multipart,
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                folded,
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                odd_heads[0],
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                odd_heads[1],
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                odd_heads[2],
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                odd_heads[3],
            ],
        ] {
            refused_post(&extra);
        }
        // Round four: a head a bare LF ends (Rack reads on to CRLF CRLF); an RFC 2231
        // continuation (Werkzeug joins it); a boundary servers cut otherwise; the
        // field in a gzip header's comment, which servers that do not decode parse.
        let gzipped = attack.setup.palisade.write_file("commented.gz", "");
        let made = python(
            "import os, struct, zlib\n\
             comment = b'&_method=DELETE&'\n\
             payload = b'a=1'\n\
             deflate = zlib.compressobj(9, zlib.DEFLATED, -15)\n\
             body = deflate.compress(payload) + deflate.flush()\n\
             header = b'\\x1f\\x8b\\x08\\x10' + b'\\x00' * 4 + b'\\x00\\xff' + comment + b'\\x00'\n\
             tail = struct.pack('<II', zlib.crc32(payload), len(payload))\n\
             open(os.environ['OUT'], 'wb').write(header + body + tail)\n",
            &[("OUT", gzipped.to_str().unwrap())],
            CLIENT_TIMEOUT,
        );
        assert!(made.status.success(), "{}", output_text(&made));
        let gzipped_body = format!("@{}", gzipped.display());
        let round_four = [
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                "--b\r\nContent-Disposition: form-data\n\n; name=_method\r\n\r\nDELETE\r\n--b--\r\n",
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b",
                "--data-binary",
                "--b\r\nContent-Disposition: form-data; name*0=\"_me\"; name*1=\"thod\"\r\n\r\nDELETE\r\n--b--\r\n",
            ],
            vec![
                "-H",
                "Content-Type: multipart/form-data; boundary=b,x",
                "--data-binary",
                "--b\r\nContent-Disposition: form-data\r\n; name=_method\r\n\r\nDELETE\r\n--b--\r\n",
            ],
            vec![
                "-H",
                "Content-Type: application/x-www-form-urlencoded",
                "-H",
                "Content-Encoding: gzip",
                "--data-binary",
                &gzipped_body,
            ],
        ];
        for extra in &round_four {
            refused_post(extra);
        }
        // Fields of another name, and the method itself, pass.
        for extra in [
            vec![
                "-H",
                "Content-Type: application/json",
                "--data",
                r#"{"method":"DELETE","_method":"post"}"#,
            ],
            vec!["-F", "note=DELETE", "-F", "method=DELETE"],
            // A file named like the field, and a form in a charset built on ASCII.
            vec!["-F", "f=@-;filename=_method.rb"],
            vec![
                "-H",
                "Content-Type: application/x-www-form-urlencoded; charset=windows-1252",
                "--data",
                "note=caf%E9",
            ],
        ] {
            let reply = post(&extra);
            assert_eq!(reply.status, 200, "{extra:?}: {}", reply.raw);
            assert_eq!(upstream.last_request().unwrap().method, "POST");
        }
        // HEAD is covered by the GET rule (no body to read on a HEAD answer).
        let before = upstream.count();
        let reply = attack.curl(&token, &[version, "--head", &attack.url("/item/9")]);
        assert_eq!(reply.status, 403, "{}", reply.raw);
        assert_eq!(upstream.count(), before, "{version} HEAD /item/9 was sent");
        // The plain spellings still work: an override that names the method itself,
        // and a HEAD elsewhere.
        let reply = attack.curl(
            &token,
            &[
                version,
                "-X",
                "POST",
                "-H",
                "X-HTTP-Method-Override: post",
                "--data",
                "_method=POST&method=DELETE",
                &attack.url("/other?_method=POST&method=DELETE"),
            ],
        );
        assert_eq!(reply.status, 200, "{}", reply.raw);
        assert_eq!(upstream.last_request().unwrap().method, "POST");
        let reply = attack.curl(&token, &[version, "--head", &attack.url("/other")]);
        assert_eq!(reply.status, 200, "{}", reply.raw);
        assert_eq!(upstream.last_request().unwrap().method, "HEAD");
    }
    let refusals = attack.rows("ambiguous_method", 90);
    assert_eq!(
        refusals.as_array().map(Vec::len),
        Some(90),
        "one row per refused spelling: {refusals}"
    );
}

/// Headers the agent names in `Connection` are removed before the request is judged,
/// so naming the injected header there cannot take the credential off (the audit row
/// said `injected` for a request that carried none), nor a header the approver saw.
#[test]
fn headers_named_in_connection_go_before_injection() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("probe");
    attack.setup.secret(
        "key",
        "localhost",
        None,
        "bearer",
        &["probe"],
        "tok-injected",
    );
    for version in ["--http1.1", "--http2"] {
        let reply = attack.curl(
            &token,
            &[
                version,
                "-H",
                "Connection: authorization, x-extra",
                "-H",
                "X-Extra: 1",
                &attack.url("/conn"),
            ],
        );
        assert_eq!(reply.status, 200, "{}", reply.raw);
        let seen = attack.setup.upstream.last_request().unwrap();
        assert_eq!(
            seen.header("authorization"),
            Some("Bearer tok-injected"),
            "{version}: the credential was stripped after injection"
        );
        if version == "--http1.1" {
            // (HTTP/2 has no `Connection` header: curl leaves it out.)
            assert_eq!(seen.header("x-extra"), None, "a named header survived");
        }
    }
}

/// The host the upstream is told is the tunnel's target, whatever `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2, which curl fills from `-H Host:`) the agent wrote inside it:
/// name-based virtual hosts and routing proxies upstream would otherwise act on a host
/// the policy never judged.
#[test]
fn the_upstream_is_told_the_judged_host_not_the_agents() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("spoofer");
    let judged = format!("localhost:{}", attack.setup.upstream.port());
    for version in ["--http1.1", "--http2"] {
        for spoof in ["evil.example", "EVIL.example:443", "127.0.0.2"] {
            let reply = attack.curl(
                &token,
                &[
                    version,
                    "-H",
                    &format!("Host: {spoof}"),
                    &attack.url("/where"),
                ],
            );
            assert_eq!(reply.status, 200, "{version} {spoof}: {}", reply.raw);
            let seen = attack.setup.upstream.last_request().unwrap();
            let hosts: Vec<&str> = seen
                .headers
                .iter()
                .filter(|(name, _)| name == "host")
                .map(|(_, value)| value.as_str())
                .collect();
            if seen.version == "HTTP/1.1" {
                assert_eq!(hosts, [judged.as_str()], "{version} {spoof}: {seen:?}");
            } else {
                assert!(
                    hosts.iter().all(|host| *host == judged),
                    "{version} {spoof}: {seen:?}"
                );
            }
            assert!(
                !seen.headers.iter().any(|(_, value)| value
                    .to_ascii_lowercase()
                    .contains(&spoof.to_ascii_lowercase())),
                "{version}: the agent's host {spoof} reached the upstream: {seen:?}"
            );
        }
    }
}

/// A request held for approval is sent under the policy in force when the person
/// answers: a grant revoked while it waited is not injected, and a block rule added
/// while it waited stops it (both used to go out as they were judged at first).
#[test]
fn a_held_request_is_judged_again_when_approved() {
    let attack = Attack::start(&["--approval-timeout", "30s"]);
    let token = attack.setup.agent("payer");
    attack.setup.secret(
        "pay-key",
        "localhost",
        None,
        "bearer",
        &["payer"],
        "tok-pay",
    );
    attack.rule(
        "ask-pay",
        &[
            "--path-pattern",
            "/pay/*",
            "--method",
            "POST",
            "--action",
            "require_approval",
        ],
    );
    let upstream = &attack.setup.upstream;
    // Holds one POST, runs `meanwhile` once it is pending, approves it, and returns
    // what the agent got.
    let held_then_approved = |path: &str, secret_line: &str, meanwhile: &dyn Fn()| -> CurlReply {
        std::thread::scope(|scope| {
            let url = attack.url(path);
            let (attack, token) = (&attack, &token);
            let waiting =
                scope.spawn(move || attack.curl(token, &["-X", "POST", "--data", "1", &url]));
            let mut pending = Vec::new();
            assert!(
                wait_until(Duration::from_secs(10), || {
                    pending = attack.pending();
                    !pending.is_empty()
                }),
                "the request was never held"
            );
            // The card says which secret approving lets out with the request, first
            // among its lines, where no number or length of the agent's lines can push
            // it off a card.
            let first = pending[0]["lines"][0].as_str().unwrap_or_default();
            assert!(first.starts_with(secret_line), "{}", pending[0]["lines"]);
            meanwhile();
            attack.cli(&["approvals", "approve", pending[0]["id"].as_str().unwrap()]);
            waiting.join().expect("the client thread")
        })
    };

    let reply = held_then_approved("/pay/1", "With the secret pay-key", &|| {
        attack.cli(&["secrets", "revoke", "pay-key", "--agent", "payer"]);
    });
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path(), "/pay/1");
    assert_eq!(
        sent.header("authorization"),
        None,
        "a credential revoked while the request waited was injected"
    );

    let before = upstream.count();
    let reply = held_then_approved("/pay/2", "No secret is added", &|| {
        attack.rule(
            "stop-pay",
            &[
                "--path-pattern",
                "/pay/*",
                "--action",
                "block",
                "--scope",
                "org",
            ],
        );
    });
    refused(&reply, 403, "blocked_by_policy");
    assert_eq!(reply.json()["rule"], "stop-pay", "{}", reply.raw);
    assert_eq!(
        upstream.count(),
        before,
        "a request blocked while it waited was sent"
    );
}

/// A child process killed (and reaped) when the test ends, even on failure.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python client that opens a TLS tunnel through the gateway, sends a request head
/// and the first part of its body, says `prefix-sent`, waits for a line on stdin, then
/// sends the rest and prints the response status and body.
const SLOW_BODY_CLIENT: &str = r#"
import base64, json, os, socket, ssl, sys
proxy_host, proxy_port = os.environ["PROXY"].rsplit(":", 1)
host, port = "localhost", int(os.environ["UPSTREAM_PORT"])
prefix, rest = os.environ["PREFIX"].encode(), os.environ["REST"].encode()
sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
answer = b""
while b"\r\n\r\n" not in answer:
    answer += sock.recv(4096)
assert answer.startswith(b"HTTP/1.1 200"), answer
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
tls = context.wrap_socket(sock, server_hostname=host)
head = f"POST /gmail/send HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(prefix) + len(rest)}\r\n\r\n"
tls.sendall(head.encode() + prefix)
print("prefix-sent", flush=True)
sys.stdin.readline()
tls.sendall(rest)
response = b""
while True:
    chunk = tls.recv(65536)
    if not chunk:
        break
    response += chunk
    if b"\r\n\r\n" in response:
        head_part, _, body = response.partition(b"\r\n\r\n")
        length = [l for l in head_part.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        if length and len(body) >= int(length[0].split(b":")[1]):
            break
print(response.split(b"\r\n")[0].decode(), flush=True)
"#;

/// What is approved is what is sent: the approval appears only once the whole body has
/// arrived, it shows what the end of the body says and the digest of all of it, and the
/// upstream receives exactly those bytes. (The gateway used to show a card after the
/// first 64 KiB and stream whatever came after the click.)
#[test]
fn a_body_extended_after_approval_is_not_what_gets_approved() {
    let attack = Attack::start(&["--approval-timeout", "30s"]);
    let token = attack.setup.agent("mailer");
    attack.rule("ask", &["--method", "POST", "--action", "require_approval"]);
    // A harmless-looking prefix longer than the 64 KiB the gateway used to read.
    let prefix = format!("{{\"note\":\"{}\"", " ".repeat(70 * 1024));
    let rest = ",\"to\":\"attacker@evil.example\"}".to_string();
    let mut client = Interactive::start(
        &attack,
        SLOW_BODY_CLIENT,
        &token,
        &[("PREFIX", &prefix), ("REST", &rest)],
    );
    assert_eq!(client.line(), "prefix-sent");
    // Nothing is put before a person while the body is incomplete.
    let shown_early = wait_until(Duration::from_secs(2), || !attack.pending().is_empty());
    assert!(
        !shown_early,
        "an approval was shown before the whole body arrived"
    );
    client.send("continue");
    let mut pending = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            pending = attack.pending();
            !pending.is_empty()
        }),
        "the complete request was never held"
    );
    let approval = &pending[0];
    let full = format!("{prefix}{rest}");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(full.as_bytes()))
    };
    let shown = attack.cli(&["approvals", "show", approval["id"].as_str().unwrap()]);
    assert!(
        shown.contains(&digest),
        "the card names the digest of the whole body: {shown}"
    );
    assert!(
        shown.contains("attacker@evil.example"),
        "the card shows what the end of the body says: {shown}"
    );
    attack.cli(&["approvals", "approve", approval["id"].as_str().unwrap()]);
    let line = client.line();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let sent = attack.setup.upstream.last_request().unwrap();
    assert_eq!(
        sent.body.as_ref(),
        full.as_bytes(),
        "exactly the approved bytes went upstream"
    );
}

/// Opens `COUNT` TLS tunnels through the gateway one after another; on each it sends a
/// request that will be held for approval, then closes the connection once an answer
/// comes (a refusal) or after 50 ms (held by then).
const ABANDONING_CLIENT: &str = r#"
import base64, os, socket, ssl
proxy_host, proxy_port = os.environ["PROXY"].rsplit(":", 1)
host, port = "localhost", int(os.environ["UPSTREAM_PORT"])
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
for i in range(int(os.environ["COUNT"])):
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    tls = context.wrap_socket(sock, server_hostname=host)
    tls.sendall(f"POST /held/{i} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 2\r\n\r\nhi".encode())
    tls.settimeout(0.05)
    try:
        tls.recv(4096)
    except (socket.timeout, ssl.SSLError):
        pass
    tls.close()
print("done", flush=True)
"#;

/// Sends one request that an `/ask/*` rule holds, then waits to be killed.
const HOLD_THEN_WAIT_CLIENT: &str = r#"
import base64, os, socket, ssl, time
proxy_host, proxy_port = os.environ["PROXY"].rsplit(":", 1)
host, port = "localhost", int(os.environ["UPSTREAM_PORT"])
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
answer = b""
while b"\r\n\r\n" not in answer:
    answer += sock.recv(4096)
tls = ssl.create_default_context(cafile=os.environ["VAULT_CA"]).wrap_socket(sock, server_hostname=host)
tls.sendall(f"GET /ask/leaving HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
time.sleep(60)
"#;

/// A client that leaves while its request is held cancels the approval and frees its
/// place: after 1,100 abandoned holds (more than the gateway's whole hold table) no
/// approval is left pending, and the next held request of another agent, and then of
/// the same agent, is shown, approved and sent. Each abandoned hold asked a person (a
/// card in their chat), so an agent may abandon its share of holds, then one every
/// 10 s: the flood made at most that many approvals (it made one per connection
/// before), and the flooding agent is told when it may ask again (429, Retry-After).
/// One agent's flood of holds is refused beyond its own share (429) and never fills
/// the table for others.
#[test]
fn abandoned_holds_are_cancelled_and_free_their_place() {
    let attack = Attack::start(&["--approval-timeout", "10m", "--max-holds-per-agent", "8"]);
    let token = attack.setup.agent("flood");
    let other = attack.setup.agent("other");
    attack.rule("ask", &["--method", "POST", "--action", "require_approval"]);
    let flood = |count: &str| {
        python(
            ABANDONING_CLIENT,
            &[
                ("PROXY", &attack.setup.addr().to_string()),
                ("UPSTREAM_PORT", &attack.setup.upstream.port().to_string()),
                ("TOKEN", &token),
                ("VAULT_CA", attack.setup.vault_ca_str().as_str()),
                ("COUNT", count),
            ],
            Duration::from_secs(240),
        )
    };
    let flood_started = std::time::Instant::now();
    let output = flood("1100");
    assert!(output.status.success(), "{}", output_text(&output));
    let mut pending = Vec::new();
    let drained = wait_until(Duration::from_secs(60), || {
        pending = attack.pending();
        pending.is_empty()
    });
    assert!(
        drained,
        "abandoned approvals stay pending: {}",
        pending.len()
    );
    let cancelled = attack
        .json(&[
            "approvals",
            "list",
            "--status",
            "cancelled",
            "--limit",
            "2000",
        ])
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(cancelled > 0, "no abandoned approval was cancelled");
    // Its share, one per 10 s of flood, and a few that the gateway saw leave only after
    // the next one had been held.
    let allowed = 8 + flood_started.elapsed().as_secs() as usize / 10 + 3;
    assert!(
        cancelled <= allowed,
        "the flood asked a person {cancelled} times, more than the {allowed} abandoned holds allowed"
    );
    assert_eq!(
        attack.setup.upstream.count(),
        0,
        "an abandoned request was sent"
    );

    // The flooding agent is told when it may be held again (after a few more abandoned
    // holds, so its allowance is surely spent now).
    let output = flood("9");
    assert!(output.status.success(), "{}", output_text(&output));
    let reply = attack.curl(
        &token,
        &["-X", "POST", "--data", "x", &attack.url("/too-soon")],
    );
    refused(&reply, 429, "too_many_pending_approvals");
    let wait: u64 = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", reply.raw));
    assert!((1..=10).contains(&wait), "{}", reply.raw);

    // Another agent, then (once its wait is over) the same agent, each get a request
    // held, approved and sent.
    for (agent_token, path) in [(&other, "/other-agent"), (&token, "/after-flood")] {
        if path == "/after-flood" {
            std::thread::sleep(Duration::from_secs(wait));
        }
        let url = attack.url(path);
        let proxy = attack.setup.proxy_args(agent_token);
        let mut args: Vec<String> = vec!["-sS".into(), "-w".into(), "\n%{http_code}".into()];
        args.extend(proxy);
        args.extend(["-X".into(), "POST".into(), "--data".into(), "x".into(), url]);
        let client = std::thread::spawn(move || curl(&args, CLIENT_TIMEOUT));
        let mut held = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                held = attack.pending();
                held.len() == 1
            }),
            "{path} was not held: {held:?}"
        );
        attack.cli(&["approvals", "approve", held[0]["id"].as_str().unwrap()]);
        let output = client.join().unwrap();
        let (status, body) = split_status(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(status, 200, "{path}: {body}");
    }

    // A flood that waits instead of leaving: beyond its share, 429 at once.
    let mut waiting = Vec::new();
    for i in 0..8 {
        let url = attack.url(&format!("/wait/{i}"));
        let mut args: Vec<String> = vec!["-sS".into(), "-o".into(), "/dev/null".into()];
        args.extend(attack.setup.proxy_args(&token));
        args.extend([
            "--max-time".into(),
            "20".into(),
            "-X".into(),
            "POST".into(),
            "--data".into(),
            "x".into(),
            url,
        ]);
        waiting.push(std::thread::spawn(move || curl(&args, CLIENT_TIMEOUT)));
    }
    assert!(wait_until(Duration::from_secs(10), || attack
        .pending()
        .len()
        == 8));
    let reply = attack.curl(
        &token,
        &["-X", "POST", "--data", "x", &attack.url("/ninth")],
    );
    refused(&reply, 429, "too_many_pending_approvals");
    // ...while another agent is still held, not refused.
    let url = attack.url("/other-during-flood");
    let mut args: Vec<String> = vec!["-sS".into(), "-o".into(), "/dev/null".into()];
    args.extend(attack.setup.proxy_args(&other));
    args.extend([
        "--max-time".into(),
        "20".into(),
        "-X".into(),
        "POST".into(),
        "--data".into(),
        "x".into(),
        url,
    ]);
    waiting.push(std::thread::spawn(move || curl(&args, CLIENT_TIMEOUT)));
    assert!(wait_until(Duration::from_secs(10), || attack
        .pending()
        .len()
        == 9));
    for approval in attack.pending() {
        attack.cli(&["approvals", "deny", approval["id"].as_str().unwrap()]);
    }
    for client in waiting {
        let _ = client.join();
    }
}

/// Raises this test process's descriptor limit so it can hold many connections.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Reads what the gateway sends on `stream` within `wait` (empty if nothing, or closed).
/// A stream whose reads can time out, over either kind of socket.
trait TimedRead: Read {
    fn time_out_after(&self, wait: Duration);
}

impl TimedRead for UnixStream {
    fn time_out_after(&self, wait: Duration) {
        self.set_read_timeout(Some(wait)).unwrap();
    }
}

impl TimedRead for std::net::TcpStream {
    fn time_out_after(&self, wait: Duration) {
        self.set_read_timeout(Some(wait)).unwrap();
    }
}

/// What `stream` says within `wait`, and whether it was closed.
fn read_some(stream: &mut impl TimedRead, wait: Duration) -> (String, bool) {
    stream.time_out_after(wait);
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&buffer).into_owned(), true),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buffer).into_owned(), false),
        }
    }
}

/// Opens `COUNT` tunnels; on each sends a POST head announcing `LENGTH` bytes and the
/// first `PART` of them, keeping every one open; prints the status of any that is
/// answered at once (`i status`), then `sent`. On a line from stdin sends the rest on
/// those still open and prints their statuses. A tunnel reset before its status is
/// read prints `i reset`.
const UNFINISHED_BODIES_CLIENT: &str = r#"
import base64, os, select, socket, ssl, sys
proxy_host, proxy_port = os.environ["PROXY"].rsplit(":", 1)
host, port = "localhost", int(os.environ["UPSTREAM_PORT"])
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
length, part = int(os.environ["LENGTH"]), int(os.environ["PART"])

def status_of(tls, wait):
    tls.settimeout(wait)
    answer = b""
    try:
        while b"\r\n" not in answer:
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (socket.timeout, ssl.SSLError):
        return None
    return answer.split(b"\r\n")[0].decode() or None

open_ones = []
for i in range(int(os.environ["COUNT"])):
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    tls = context.wrap_socket(sock, server_hostname=host)
    try:
        tls.sendall(f"POST /scan/{i} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {length}\r\n\r\n".encode() + b"a" * part)
        status = status_of(tls, 2.0)
    except (ConnectionError, ssl.SSLError):
        status = "reset"
    if status:
        print(i, status, flush=True)
    else:
        open_ones.append((i, tls))
print("sent", flush=True)
sys.stdin.readline()
for i, tls in open_ones:
    tls.sendall(b"a" * (length - part))
    print(i, status_of(tls, 20.0), flush=True)
print("done", flush=True)
"#;

/// One agent cannot make the gateway keep unbounded request bodies in memory: bodies a
/// rule must read whole draw on the agent's share (`--max-buffered-bodies-per-agent`),
/// and a body beyond it is refused with 503 `too_many_buffered_bodies` while another
/// agent's bodies are still read and judged; once the first agent's requests end, its
/// share is free again. (One agent's 200 unfinished 4 MiB bodies held 870 MB.)
#[test]
fn one_agent_cannot_fill_the_gateways_memory_with_bodies() {
    let attack = Attack::start(&[
        "--max-judged-body",
        "1MiB",
        "--max-buffered-bodies-per-agent",
        "2MiB",
        "--max-buffered-bodies",
        "8MiB",
    ]);
    let greedy = attack.setup.agent("greedy");
    let other = attack.setup.agent("other");
    attack.rule(
        "scan",
        &[
            "--path-pattern",
            "/scan/*",
            "--body-contains",
            "FORBIDDEN",
            "--action",
            "block",
        ],
    );
    let mut client = Interactive::start(
        &attack,
        UNFINISHED_BODIES_CLIENT,
        &greedy,
        &[("COUNT", "3"), ("LENGTH", "1000000"), ("PART", "900000")],
    );
    // Two bodies of 0.9 MB fit the 2 MiB share; the third does not. The gateway closes
    // that tunnel while the client is still sending its body, and reads on for a while
    // after (a lingering close), so the client reads its 503 rather than a reset.
    assert_eq!(client.line(), "2 HTTP/1.1 503 Service Unavailable");
    assert_eq!(client.line(), "sent");
    let refusals = attack.rows("too_many_buffered_bodies", 1);
    assert_eq!(refusals.as_array().map(Vec::len), Some(1), "{refusals}");
    assert_eq!(refusals[0]["agent"], "greedy");

    // Another agent's body is read and judged meanwhile.
    let mut body_file = tempfile::NamedTempFile::new().unwrap();
    body_file.write_all(&[b'b'; 900_000]).unwrap();
    let body = format!("@{}", body_file.path().display());
    let reply = attack.curl(
        &other,
        &["--data-binary", &body, &attack.url("/scan/other")],
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let reply = attack.curl(
        &other,
        &["--data-binary", "FORBIDDEN", &attack.url("/scan/other")],
    );
    refused(&reply, 403, "blocked_by_policy");

    // The held bodies finish and go upstream; then the share is free again.
    client.send("finish");
    assert_eq!(client.line(), "0 HTTP/1.1 200 OK");
    assert_eq!(client.line(), "1 HTTP/1.1 200 OK");
    assert_eq!(client.line(), "done");
    let reply = attack.curl(
        &greedy,
        &["--data-binary", &body, &attack.url("/scan/again")],
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

/// A setup whose home is a 64 MiB tmpfs (unmounted with the setup); and the home.
fn setup_on_a_small_disk() -> (Setup, std::path::PathBuf) {
    let setup = Setup::new();
    let home = setup.palisade.home().to_path_buf();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
        .arg(&home)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mount a tmpfs over the home");
    (setup, home)
}

/// What one agent can use up for all: the disk. Every credentialed request leaves an
/// audit row, so an agent in a loop fills the home's disk until the store can record
/// nothing for anyone. The gateway keeps a reserve: with the home on a 64 MiB
/// filesystem and `--min-free-disk 24M`, filling the disk to under 24 MiB free makes a
/// credentialed request and a request that would be held `503 store_disk_low`, sent
/// to nobody and held for nobody, while a request without a credential is served;
/// freeing the space serves them again. (Before: the credential was sent.)
#[test]
fn a_nearly_full_disk_stops_credentials_not_the_gateway() {
    let (mut setup, home) = setup_on_a_small_disk();
    setup.start_vault(&["--min-free-disk", "24M", "--approval-timeout", "1s"]);
    let attack = Attack { setup };
    let token = attack.probe_with_v1_key("tok-disk-room");
    attack.rule(
        "ask-send",
        &["--path-pattern", "/send", "--action", "require_approval"],
    );
    let upstream = &attack.setup.upstream;
    let credentialed = |expected: u16| {
        let reply = attack.curl(&token, &[&attack.url("/v1/x")]);
        reply.status == expected
    };
    assert!(credentialed(200));
    assert_eq!(
        upstream.last_request().unwrap().header("authorization"),
        Some("Bearer tok-disk-room")
    );

    // Fill the home's filesystem to about 14 MiB free.
    let filler = home.join("filler");
    std::fs::write(&filler, vec![7u8; 48 << 20]).expect("fill the home's disk");
    assert!(
        wait_until(Duration::from_secs(10), || credentialed(503)),
        "a credentialed request was still served with the disk nearly full"
    );
    let before = upstream.count();
    let reply = attack.curl(&token, &[&attack.url("/v1/x")]);
    refused(&reply, 503, "store_disk_low");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("MiB free"),
        "{}",
        reply.raw
    );
    let reply = attack.curl(&token, &["-X", "POST", "--data", "x", &attack.url("/send")]);
    refused(&reply, 503, "store_disk_low");
    assert_eq!(
        upstream.count(),
        before,
        "a refused request reached the upstream"
    );
    assert!(
        attack.pending().is_empty(),
        "a request was held with no room to record it"
    );
    // Without a credential nothing is recorded, so it is served.
    let reply = attack.curl(&token, &[&attack.url("/open")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(
        upstream.last_request().unwrap().header("authorization"),
        None
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || credentialed(200)),
        "credentialed requests were not served again once space was freed"
    );
    let rows = attack.rows("store_disk_low", 1);
    assert!(
        !rows.as_array().unwrap().is_empty(),
        "no audit row for the refusals: {rows}"
    );
}

/// The same reserve stops every agent alike, so one agent's loop of credentialed
/// requests would stop them all. Below `--disk-share-below` each agent may send only
/// its share (a burst of 100, then 10 a second) of requests that leave such rows:
/// with the home on a 64 MiB filesystem, `--min-free-disk 8M --disk-share-below 40M`
/// and the disk filled to about 30 MiB free, an agent sending 250 credentialed requests
/// as fast as it can gets `503 store_disk_low` past its share, none of those reaches
/// the upstream, and another agent's credentialed request at that moment is served
/// with its credential. With more than 40 MiB free all 250 were served. (Before: every
/// request was served until the reserve stopped every agent.)
#[test]
fn one_agent_cannot_spend_the_disk_every_agent_needs() {
    let (mut setup, home) = setup_on_a_small_disk();
    setup.start_vault(&["--min-free-disk", "8M", "--disk-share-below", "40M"]);
    let attack = Attack { setup };
    let looper = attack.setup.agent("looper");
    let calm = attack.setup.agent("calm");
    attack.setup.secret(
        "looper-key",
        "localhost",
        Some("/loop/*"),
        "bearer",
        &["looper"],
        "tok-looper",
    );
    attack.setup.secret(
        "calm-key",
        "localhost",
        Some("/calm/*"),
        "bearer",
        &["calm"],
        "tok-calm",
    );
    let upstream = &attack.setup.upstream;
    // 250 credentialed requests on one connection; the status and body of each.
    let burst = || -> Vec<(u16, String)> {
        let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "60".into()];
        args.extend(attack.setup.proxy_args(&looper));
        for n in 0..250 {
            args.extend([
                "-w".into(),
                "\nSTATUS:%{http_code}\n".into(),
                attack.url(&format!("/loop/{n}")),
            ]);
        }
        let output = curl(&args, CLIENT_TIMEOUT);
        assert!(output.status.success(), "{}", output_text(&output));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut replies = Vec::new();
        let mut rest = text.as_str();
        while let Some((body, after)) = rest.split_once("\nSTATUS:") {
            let (code, next) = after.split_once('\n').unwrap_or((after, ""));
            replies.push((code.parse().expect("a status code"), body.to_string()));
            rest = next;
        }
        replies
    };
    let statuses = |replies: &[(u16, String)]| replies.iter().map(|r| r.0).collect::<Vec<_>>();

    let replies = burst();
    assert_eq!(replies.len(), 250);
    assert!(
        replies.iter().all(|r| r.0 == 200),
        "with room on disk every request is served: {:?}",
        statuses(&replies)
    );

    // Fill the home's filesystem to about 30 MiB free: under the share line, above the
    // reserve.
    std::fs::write(home.join("filler"), vec![7u8; 32 << 20]).expect("fill the home's disk");
    let mut replies = Vec::new();
    let mut before = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            before = upstream.count();
            replies = burst();
            replies.iter().any(|r| r.0 == 503)
        }),
        "one agent's loop was never limited to its share: {:?}",
        statuses(&replies)
    );
    let served = replies.iter().filter(|r| r.0 == 200).count();
    assert_eq!(
        upstream.count() - before,
        served,
        "a request refused past the agent's share reached the upstream"
    );
    for (status, body) in &replies {
        if *status != 200 {
            let body: Value = serde_json::from_str(body).expect("a JSON refusal");
            assert_eq!(
                (*status, &body["error"]),
                (503, &Value::from("store_disk_low"))
            );
            assert!(
                body["message"].as_str().unwrap().contains("its share"),
                "{body}"
            );
        }
    }

    // The other agent is served, with its credential, right after.
    let reply = attack.curl(&calm, &[&attack.url("/calm/x")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(
        upstream.last_request().unwrap().header("authorization"),
        Some("Bearer tok-calm")
    );
    let rows = attack.rows("store_disk_low", 1);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|row| row["agent"] == "looper"),
        "only the looper was refused: {rows}"
    );
}

/// One agent's loop of refused requests cannot write the audit log at its own speed:
/// refusals without a credential or a person are written within the agent's budget
/// (a burst of 100, then 10 a second), the rest are counted on the next row written,
/// and rows about a credential are always written. (1,000 blocked requests with 2 KB
/// paths used to write 1,000 rows of 4.5 KB in 0.16 s.)
#[test]
fn one_agent_cannot_flood_the_audit_log() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("looper");
    attack.setup.secret(
        "key",
        "localhost",
        Some("/api/*"),
        "bearer",
        &["looper"],
        "tok-api",
    );
    attack.rule(
        "no-admin",
        &["--path-pattern", "/admin/*", "--action", "block"],
    );
    let blocked_rows = || {
        attack
            .json(&["audit", "list", "--decision", "blocked", "--limit", "10000"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // 300 blocked requests on one connection (curl's URL range), as fast as it goes.
    let long = "A".repeat(1500);
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}\\n".into(),
    ];
    args.extend(attack.setup.proxy_args(&token));
    args.push(attack.url(&format!("/admin/{long}/[1-300]")));
    let output = curl(&args, CLIENT_TIMEOUT);
    let codes = output_text(&output);
    assert_eq!(codes.matches("403").count(), 300, "{codes}");
    // A credential's use is written whatever the budget.
    let reply = attack.curl(&token, &[&attack.url("/api/x")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);

    // Rows are written in order by one writer: once the credential's row is there,
    // every refusal's row before it is too.
    let injected = attack.rows("injected", 1);
    assert_eq!(injected.as_array().map(Vec::len), Some(1), "{injected}");
    let written = blocked_rows().len();
    assert!(
        (100..300).contains(&written),
        "{written} rows for 300 refusals in a burst"
    );

    // Once the budget refills, the next refusal is written with the count of those
    // left out, so the log still says how many there were: every row written after a
    // gap carries the size of its gap (a slow machine refills the budget during the
    // burst too), and the rows plus the gaps are every refusal.
    std::thread::sleep(Duration::from_millis(300));
    let reply = attack.curl(&token, &[&attack.url("/admin/after")]);
    refused(&reply, 403, "blocked_by_policy");
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(10), || {
        rows = blocked_rows();
        rows.len() > written
    });
    assert_eq!(rows.len(), written + 1);
    let newest = &rows[0];
    assert_eq!(newest["path"], "/admin/after", "{newest}");
    // The count rides on the first row after a gap: this one, unless the budget
    // refilled just in time for the burst's last refusal (a slow machine), which then
    // carried it.
    assert!(
        rows.iter()
            .any(|row| row["detail"]["similar_rows_suppressed"].as_u64().is_some()),
        "no count of the rows left out: {newest}"
    );
    let suppressed: u64 = rows
        .iter()
        .filter_map(|row| row["detail"]["similar_rows_suppressed"].as_u64())
        .sum();
    assert_eq!(
        rows.len() as u64 + suppressed,
        301,
        "{written} rows written during the burst"
    );
    ok_verify(&attack);
}

/// `palisade audit verify` passes (the rows left out are not holes in the chain).
fn ok_verify(attack: &Attack) {
    let report = attack.json(&["audit", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
}

/// One agent opening 1,100 idle connections on its socket gets its share (256) and a
/// 503 `too_many_connections` beyond it, while another agent's requests and the
/// health check keep working; idle connections are closed after the idle timeout,
/// which gives the agent its share back.
#[test]
fn one_agent_cannot_exhaust_the_gateways_connections() {
    raise_descriptor_limit();
    let attack = Attack::start(&["--client-idle-timeout", "3s"]);
    let _ = attack.setup.agent("greedy");
    let other = attack.setup.agent("other");
    let socket = attack.setup.palisade.home().join("run/agents/greedy.sock");
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));

    let mut open = Vec::new();
    for _ in 0..1100 {
        open.push(UnixStream::connect(&socket).expect("connect to the agent socket"));
    }
    // Those beyond the share were closed, with a 503 when the gateway had the time to
    // write one (it answers at most 64 refusals at once; the rest are just closed).
    let mut answered = 0;
    let mut closed = 0;
    for stream in open.iter_mut().skip(256) {
        let (text, was_closed) = read_some(stream, Duration::from_millis(200));
        if was_closed {
            closed += 1;
        }
        if text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections") {
            answered += 1;
        }
    }
    assert!(
        closed >= 1100 - 256 - 16,
        "only {closed} connections beyond the share were closed"
    );
    assert!(answered > 0, "no refused connection was told why");
    // Meanwhile everyone else is served.
    for round in 0..5 {
        let reply = attack.curl(&other, &[&attack.url(&format!("/echo/{round}"))]);
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    let health = curl(
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{}/healthz", attack.setup.addr()),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&health.stdout).contains("ok"),
        "{}",
        output_text(&health)
    );

    // The idle ones that were admitted are closed after the idle timeout...
    let first = &mut open[0];
    let (_, closed) = read_some(first, Duration::from_secs(10));
    assert!(closed, "an idle connection outlived the idle timeout");
    drop(open);
    // ...and the agent's share is whole again.
    let mut again = UnixStream::connect(&socket).unwrap();
    again
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                attack.url("/echo").replace("https", "http")
            )
            .as_bytes(),
        )
        .unwrap();
    let (text, _) = read_some(&mut again, Duration::from_secs(5));
    assert!(!text.contains("too_many_connections"), "{text}");
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
}

/// Connections that never authenticate have places of their own (a quarter of the
/// gateway's cap), so a flood of them, which any local process may open on the TCP
/// listener, leaves the agents' sockets served; when those places are full a new one
/// pushes out the oldest, so a client with a token on the same listener is served too;
/// and a 407 ends its connection, so none stays open unauthenticated by sending a
/// request now and then. (Before, 60 idle TCP connections took all 40 places and every
/// agent got 503; later they took the 10 anonymous places and every token-holding TCP
/// client got 503; and a connection answered 407 every 25 s stayed open for good.)
#[test]
fn connections_that_never_authenticate_cannot_crowd_out_the_agents() {
    let attack = Attack::start(&["--max-connections", "40"]);
    let token = attack.setup.agent("worker");
    let socket = attack.setup.palisade.home().join("run/agents/worker.sock");
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));
    // A client of the admin API, on a kept-alive connection.
    let admin_key = attack.setup.cli(&["vault", "admin-key"]).trim().to_string();
    let admin_request = format!(
        "GET /v1/gateway-url HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin_key}\r\n\r\n"
    );
    let mut admin = std::net::TcpStream::connect(attack.setup.addr()).unwrap();
    admin.write_all(admin_request.as_bytes()).unwrap();
    let (text, _) = read_some(&mut admin, Duration::from_secs(2));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut idle: Vec<std::net::TcpStream> = (0..60)
        .filter_map(|_| std::net::TcpStream::connect(attack.setup.addr()).ok())
        .collect();
    assert_eq!(idle.len(), 60);
    // The oldest were pushed out as newer ones came.
    let (_, closed) = read_some(&mut idle[0], Duration::from_secs(10));
    assert!(closed, "the oldest idle connection was never pushed out");
    // The admin's connection, older still, had authenticated: it was not.
    admin.write_all(admin_request.as_bytes()).unwrap();
    let (text, _) = read_some(&mut admin, Duration::from_secs(2));
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the admin's connection was cut: {text}"
    );
    for _ in 0..3 {
        let (status, body) = attack
            .setup
            .fetch(&token, &["--http1.1", &attack.url("/echo")]);
        assert_eq!(status, 200, "a client with a token was refused: {body}");
        // More idle ones keep coming between its requests.
        idle.extend((0..20).filter_map(|_| std::net::TcpStream::connect(attack.setup.addr()).ok()));
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        attack.url("/echo").replace("https", "http")
    );
    let mut agent = UnixStream::connect(&socket).unwrap();
    agent.write_all(request.as_bytes()).unwrap();
    let (text, _) = read_some(&mut agent, Duration::from_secs(10));
    assert!(!text.contains("too_many_connections"), "{text}");
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    drop(idle);

    // Once the gateway has seen the idle ones go, a request without a token gets 407,
    // and its connection ends.
    let mut answer = (String::new(), false);
    wait_until(Duration::from_secs(10), || {
        let mut anonymous = std::net::TcpStream::connect(attack.setup.addr()).unwrap();
        anonymous
            .write_all(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        answer = read_some(&mut anonymous, Duration::from_secs(5));
        !answer.0.starts_with("HTTP/1.1 503")
    });
    let (text, closed) = answer;
    assert!(text.starts_with("HTTP/1.1 407"), "{text}");
    assert!(closed, "the connection stayed open after its 407: {text}");
}

/// Sends one request in a TLS tunnel, prints `before STATUS`, waits for a line on stdin,
/// then sends another in the same tunnel (never reconnecting) and prints `after STATUS`,
/// or `after closed` if the tunnel was closed meanwhile.
const TWO_REQUESTS_CLIENT: &str = r#"
import base64, http.client, os, ssl, sys
proxy_host, proxy_port = os.environ["PROXY"].rsplit(":", 1)
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
conn = http.client.HTTPSConnection(proxy_host, int(proxy_port), context=context, timeout=20)
conn.set_tunnel("localhost", int(os.environ["UPSTREAM_PORT"]), headers={"Proxy-Authorization": "Basic " + auth})
conn.connect()
conn.auto_open = 0
for step in ("before", "after"):
    if step == "after":
        sys.stdin.readline()
    try:
        conn.request("GET", "/v1/" + step)
        response = conn.getresponse()
        response.read()
    except (http.client.HTTPException, OSError):
        print(step, "closed", flush=True)
        continue
    print(step, response.status, flush=True)
"#;

/// A local address remembered in the home (`palisade vault local allow`) is reached on
/// the very next request and after a restart without any flag; forgotten, the next
/// request is refused and a tunnel that reached it is ended. Each change is a row.
/// (`--allow-local-upstream` was not remembered: a restart without it broke a working
/// setup, and the only way to allow a model server was to restart.)
#[test]
fn local_addresses_remembered_in_the_home_are_in_force_at_once_and_after_restarts() {
    let mut setup = Setup::new();
    setup.start_vault_exactly(&[]);
    let mut attack = Attack { setup };
    let token = attack.setup.agent("probe");
    let reply = attack.curl(&token, &[&attack.url("/v1/x")]);
    refused(&reply, 403, "local_upstream_refused");
    assert!(
        reply.raw.contains("palisade vault local allow localhost"),
        "{}",
        reply.raw
    );
    // With a credential for it over plain HTTP (a local model server has no HTTPS),
    // the cause named is the local address, not the missing HTTPS.
    attack.setup.secret(
        "local-key",
        "localhost",
        None,
        "bearer",
        &["probe"],
        "tok-local-value",
    );
    let plain = format!("http://localhost:{}/v1/x", attack.setup.upstream.port());
    let reply = attack.curl(&token, &[&plain]);
    refused(&reply, 403, "local_upstream_refused");
    assert!(
        reply.raw.contains(&format!(
            "palisade vault local allow localhost:{}`",
            attack.setup.upstream.port()
        )),
        "{}",
        reply.raw
    );
    attack.cli(&["vault", "local", "allow", "localhost"]);
    let reply = attack.curl(&token, &[&attack.url("/v1/x")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);

    attack.setup.stop_vault();
    attack.setup.start_vault_exactly(&[]);
    let mut client = Interactive::start(&attack, TWO_REQUESTS_CLIENT, &token, &[]);
    assert_eq!(client.line(), "before 200");
    let served = attack.setup.upstream.count();
    attack.cli(&["vault", "local", "forget", "localhost"]);
    client.send("go");
    let after = client.line();
    assert!(after == "after closed" || after == "after 403", "{after}");
    assert_eq!(
        attack.setup.upstream.count(),
        served,
        "reached after it was forgotten"
    );
    let reply = attack.curl(&token, &[&attack.url("/v1/x")]);
    refused(&reply, 403, "local_upstream_refused");
    let listed = attack.json(&["vault", "local", "list"]);
    assert_eq!(listed["patterns"], serde_json::json!([]), "{listed}");
    for event in ["local_upstream.allow", "local_upstream.forget"] {
        let rows = attack.json(&["audit", "list", "--event", event]);
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{event}: {rows}");
        assert_eq!(rows[0]["host"], "localhost", "{rows}");
    }
}

/// A token rotated while a tunnel opened with it is still up ends that tunnel's use:
/// the tunnel is closed (a request that arrives before it is gets 407) and nothing
/// reaches the upstream, with or without the agent's credential. (Only new connections
/// were refused before; an open HTTP/1.1 or HTTP/2 tunnel kept getting the credential
/// injected for as long as it lived.)
#[test]
fn a_rotated_token_ends_the_tunnels_opened_with_it() {
    let attack = Attack::start(&[]);
    let token = attack.probe_with_v1_key("v1-secret-value-8d2f");
    let mut client = Interactive::start(&attack, TWO_REQUESTS_CLIENT, &token, &[]);
    assert_eq!(client.line(), "before 200");
    let served = attack.setup.upstream.count();
    let rotated = attack.json(&["agents", "token", "probe", "--rotate"]);
    assert_ne!(rotated["token"].as_str(), Some(token.as_str()), "{rotated}");
    client.send("go");
    let after = client.line();
    assert!(after == "after closed" || after == "after 407", "{after}");
    assert_eq!(
        attack.setup.upstream.count(),
        served,
        "the request went upstream"
    );
    // The new token works, on a new connection.
    let new = rotated["token"].as_str().unwrap();
    let reply = attack.curl(new, &[&attack.url("/v1/again")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

/// A header through which some servers act on another path than the one sent to
/// (`X-Original-URL` on IIS, Symfony) is refused with 400 `ambiguous_path`, over both
/// HTTP versions: a block rule on `/admin/*` passed `GET /public` carrying
/// `X-Original-URL: /admin/users`. A request without one is served.
#[test]
fn a_path_override_header_is_refused() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("mover");
    attack.rule(
        "no-admin",
        &["--path-pattern", "/admin/*", "--action", "block"],
    );
    let upstream = &attack.setup.upstream;
    for version in ["--http1.1", "--http2"] {
        for header in [
            "X-Original-URL: /admin/users",
            "X-Rewrite-URL: /admin/users",
            "x-original-uri: /admin/users",
            // PHP reads `_` in a header name as `-`.
            "X_Original_URL: /admin/users",
        ] {
            let before = upstream.count();
            let reply = attack.curl(&token, &[version, "-H", header, &attack.url("/public")]);
            refused(&reply, 400, "ambiguous_path");
            assert_eq!(upstream.count(), before, "{version} {header} was sent");
        }
        let reply = attack.curl(&token, &[version, &attack.url("/public")]);
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
}

/// A header naming another host than the one judged is refused: a server behind a
/// proxy it trusts (Django, Rails, Express, Traefik) routes by `X-Forwarded-Host` or
/// `Forwarded: host=`, or builds the links it sends out from it, while the rules and
/// secrets judged the host the request was sent to. One naming that host itself passes.
#[test]
fn a_host_override_header_is_refused() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("mover");
    let upstream = &attack.setup.upstream;
    let own = format!("localhost:{}", upstream.port());
    for version in ["--http1.1", "--http2"] {
        for header in [
            "X-Forwarded-Host: admin.internal.example",
            "X-Forwarded-Host: localhost, admin.internal.example",
            "X-Host: admin.internal.example",
            "X_Forwarded_Host: admin.internal.example",
            "X-Original-Host: admin.internal.example",
            "X-Backend-Host: admin.internal.example",
            "Forwarded: for=192.0.2.1;Host=\"admin.internal.example\"",
            "Forwarded: for=192.0.2.1, host=admin.internal.example",
        ] {
            let before = upstream.count();
            let reply = attack.curl(&token, &[version, "-H", header, &attack.url("/public")]);
            refused(&reply, 400, "ambiguous_host");
            assert_eq!(upstream.count(), before, "{version} {header} was sent");
        }
        for header in [
            format!("X-Forwarded-Host: {own}"),
            "X-Forwarded-Host: LOCALHOST".to_string(),
            "Forwarded: for=192.0.2.1;proto=https".to_string(),
        ] {
            let reply = attack.curl(&token, &[version, "-H", &header, &attack.url("/public")]);
            assert_eq!(reply.status, 200, "{header}: {}", reply.raw);
        }
    }
}

/// Sends a WebSocket handshake for `PATH` in a TLS tunnel and prints the status line;
/// on a 101, sends `GET /admin/smuggled` on the same connection and prints `sent`.
const HANDSHAKE_CLIENT: &str = r#"
import base64, os, socket, ssl
upstream = "localhost:" + os.environ["UPSTREAM_PORT"]
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
host, port = os.environ["PROXY"].rsplit(":", 1)
sock = socket.create_connection((host, int(port)), timeout=20)
sock.sendall(f"CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
answer = b""
while b"\r\n\r\n" not in answer:
    answer += sock.recv(4096)
tls = context.wrap_socket(sock, server_hostname="localhost")
key = base64.b64encode(os.urandom(16)).decode()
tls.sendall(f"GET {os.environ['WS_PATH']} HTTP/1.1\r\nHost: {upstream}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
answer = b""
while b"\r\n\r\n" not in answer:
    chunk = tls.recv(4096)
    if not chunk:
        break
    answer += chunk
status = answer.split(b"\r\n")[0].decode()
print(status, flush=True)
if " 101" in status:
    tls.sendall(f"GET /admin/smuggled HTTP/1.1\r\nHost: {upstream}\r\n\r\n".encode())
    print("sent", flush=True)
print("done", flush=True)
"#;

/// A WebSocket is relayed unjudged once the upstream accepts it, so a 101 that accepts
/// nothing (no `Sec-WebSocket-Accept` for the agent's key; a front end passing on a
/// backend's status sends one) is refused, 502, and the connection closed: the agent's
/// next bytes would otherwise reach the upstream as requests no rule judged (`GET
/// /admin/smuggled` past a block rule on `/admin/*`). After a real accept, only
/// WebSocket frames go upstream. A real WebSocket still works.
#[test]
fn a_switch_of_protocols_that_accepts_no_websocket_is_refused() {
    let attack = Attack::start(&[]);
    let agent = attack.setup.agent("sender");
    attack.rule(
        "no-admin",
        &["--path-pattern", "/admin/*", "--action", "block"],
    );
    let mut client = Interactive::start(
        &attack,
        HANDSHAKE_CLIENT,
        &agent,
        &[("WS_PATH", "/ws-unaccepted")],
    );
    let smuggled = || {
        std::thread::sleep(Duration::from_millis(300));
        attack
            .setup
            .upstream
            .requests()
            .iter()
            .any(|r| r.path() == "/admin/smuggled")
    };
    let status = client.line();
    assert!(status.starts_with("HTTP/1.1 502"), "{status}");
    assert_eq!(client.line(), "done");
    assert!(!smuggled(), "a request went upstream unjudged");
    // An upstream that accepts the key and then reads on as HTTP gets nothing that is
    // not a WebSocket frame: the agent's HTTP ends the WebSocket.
    let mut client = Interactive::start(
        &attack,
        HANDSHAKE_CLIENT,
        &agent,
        &[("WS_PATH", "/ws-accepted-then-http")],
    );
    assert_eq!(client.line(), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(client.line(), "sent");
    assert_eq!(client.line(), "done");
    assert!(
        !smuggled(),
        "the agent's HTTP went upstream past the accepted WebSocket"
    );
    let mut client = Interactive::start(&attack, HANDSHAKE_CLIENT, &agent, &[("WS_PATH", "/ws")]);
    assert_eq!(client.line(), "HTTP/1.1 101 Switching Protocols");
}

/// Opens, through the gateway (the TCP listener with `TOKEN`, or the agent's socket
/// `SOCKET` if set), each of the comma-separated `OPEN`: `websocket` (a WebSocket to
/// the upstream's `/ws` in a TLS tunnel), `tunnel-stream` (a slow event stream in a
/// TLS tunnel), `listener-stream` (the same stream asked for as an absolute-form
/// `https://` request, the gateway making the TLS connection), `idle-tunnel` (a tunnel
/// kept open after one answered request); checks each is under way (101 and the first
/// message, the first event, the answer) and prints `opened`. On a line from stdin,
/// watches them all for up to `WAIT` seconds and prints `NAME closed SECONDS` for each
/// that the gateway ended, or `NAME open`.
const LONG_CONNECTIONS_CLIENT: &str = r#"
import base64, os, socket, ssl, sys, threading, time
upstream = "localhost:" + os.environ["UPSTREAM_PORT"]
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
if os.environ.get("SOCKET"):
    credential = ""
else:
    auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
    credential = f"Proxy-Authorization: Basic {auth}\r\n"

def gateway():
    if os.environ.get("SOCKET"):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(20)
        sock.connect(os.environ["SOCKET"])
        return sock
    host, port = os.environ["PROXY"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=20)

def answer(sock, until):
    received = b""
    while until not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit(f"closed before {until!r}: {received!r}")
        received += chunk
    return received.decode(errors="replace")

def tunnel():
    sock = gateway()
    sock.sendall(f"CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n{credential}\r\n".encode())
    status = answer(sock, b"\r\n\r\n").split("\r\n")[0]
    assert " 200" in status, status
    return context.wrap_socket(sock, server_hostname="localhost")

def open_one(kind):
    if kind == "websocket":
        sock = tunnel()
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {upstream}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        text = answer(sock, b"}")
        assert text.startswith("HTTP/1.1 101"), text
    elif kind == "tunnel-stream":
        sock = tunnel()
        sock.sendall(f"GET /sse?n=600&interval_ms=100 HTTP/1.1\r\nHost: {upstream}\r\n\r\n".encode())
        text = answer(sock, b"data: event-")
        assert text.startswith("HTTP/1.1 200"), text
    elif kind == "listener-stream":
        sock = gateway()
        sock.sendall(f"GET https://{upstream}/sse?n=600&interval_ms=100 HTTP/1.1\r\nHost: {upstream}\r\n{credential}\r\n".encode())
        text = answer(sock, b"data: event-")
        assert text.startswith("HTTP/1.1 200"), text
    elif kind == "idle-tunnel":
        sock = tunnel()
        sock.sendall(f"GET /v1/idle HTTP/1.1\r\nHost: {upstream}\r\n\r\n".encode())
        text = answer(sock, b"\r\n\r\n")
        assert text.startswith("HTTP/1.1 200"), text
    return sock

opened = [(kind, open_one(kind)) for kind in os.environ["OPEN"].split(",")]
print("opened", flush=True)
sys.stdin.readline()
start = time.monotonic()
deadline = start + float(os.environ["WAIT"])
ended = {}

def watch(kind, sock):
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536):
                continue
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except OSError:
            pass
        ended[kind] = time.monotonic() - start
        return

watchers = [threading.Thread(target=watch, args=pair) for pair in opened]
for watcher in watchers:
    watcher.start()
for watcher in watchers:
    watcher.join()
for kind, _ in opened:
    print(kind, f"closed {ended[kind]:.1f}" if kind in ended else "open", flush=True)
"#;

/// How long a client watches its connections after a credential changed; the gateway
/// must have ended the stale ones well before.
const REVOCATION_WAIT_SECS: &str = "5";
/// Seconds within which the gateway ends a connection whose credential it no longer
/// honours (the CLI returns once the gateway has reloaded; a second, with margin).
const REVOCATION_BOUND_SECS: f64 = 2.5;

/// Reads the client's `NAME closed SECONDS` lines and checks that every one of `kinds`
/// was ended within [`REVOCATION_BOUND_SECS`].
#[track_caller]
fn assert_all_ended(client: &mut Interactive, kinds: &[&str]) {
    for kind in kinds {
        let line = client.line();
        let seconds: f64 = line
            .strip_prefix(&format!("{kind} closed "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{kind} was not ended by the gateway: {line:?}"));
        assert!(
            seconds <= REVOCATION_BOUND_SECS,
            "{kind} ended only after {seconds} s"
        );
    }
}

/// What [`LONG_CONNECTIONS_CLIENT`] opens for the revocation tests.
const LONG_CONNECTION_KINDS: [&str; 4] = [
    "websocket",
    "tunnel-stream",
    "listener-stream",
    "idle-tunnel",
];

/// A rotated token ends at once whatever was opened with it and sends no next request:
/// a WebSocket after its handshake, a stream in a tunnel or asked for on the TCP
/// listener, an idle HTTP/1.1 tunnel. Another agent's WebSocket stays open, and the new
/// token works. (Before, only the next request in a tunnel was refused: a WebSocket or a
/// stream under way ran to its end, an idle tunnel stayed open.)
#[test]
fn a_rotated_token_ends_the_websockets_streams_and_tunnels_opened_with_it() {
    // `-v`: the log line saying why is at the info level.
    let attack = Attack::start(&["-v"]);
    let token = attack.setup.agent("probe");
    let bystander = attack.setup.agent("bystander");
    let kinds = LONG_CONNECTION_KINDS;
    let open = kinds.join(",");
    let mut client = Interactive::start(
        &attack,
        LONG_CONNECTIONS_CLIENT,
        &token,
        &[("OPEN", &open), ("WAIT", REVOCATION_WAIT_SECS)],
    );
    let mut other = Interactive::start(
        &attack,
        LONG_CONNECTIONS_CLIENT,
        &bystander,
        &[("OPEN", "websocket"), ("WAIT", REVOCATION_WAIT_SECS)],
    );
    assert_eq!(client.line(), "opened");
    assert_eq!(other.line(), "opened");
    client.send("watch");
    other.send("watch");
    let rotated = attack.json(&["agents", "token", "probe", "--rotate"]);
    let new = rotated["token"].as_str().expect("a new token");
    assert_ne!(new, token);

    assert_all_ended(&mut client, &kinds);
    assert_eq!(other.line(), "websocket open", "another agent's WebSocket");
    let output = attack.setup.vault_output();
    assert!(
        output.contains("agent probe's proxy token changed"),
        "no log line says why: {output}"
    );
    // The new token works; the old one is refused.
    let reply = attack.curl(new, &[&attack.url("/v1/again")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let old = attack.setup.curl(
        &token,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            &attack.url("/v1/again"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&old.stdout),
        "407",
        "{}",
        output_text(&old)
    );
}

/// Deleting an agent ends at once its WebSockets, streams and tunnels, on its socket as
/// on the TCP listener. (Before, its socket was removed, but a connection already made to
/// it, and whatever ran in it, stayed open.)
#[test]
fn a_deleted_agent_loses_its_open_websockets_streams_and_tunnels() {
    // `-v`: the log line saying why is at the info level.
    let attack = Attack::start(&["-v"]);
    let token = attack.setup.agent("probe");
    let socket = attack.setup.palisade.home().join("run/agents/probe.sock");
    wait_until(Duration::from_secs(10), || socket.exists());
    let socket = socket.to_str().expect("UTF-8 path").to_string();
    let kinds = LONG_CONNECTION_KINDS;
    let open = kinds.join(",");
    let mut by_socket = Interactive::start(
        &attack,
        LONG_CONNECTIONS_CLIENT,
        "",
        &[
            ("OPEN", &open),
            ("WAIT", REVOCATION_WAIT_SECS),
            ("SOCKET", &socket),
        ],
    );
    let mut by_token = Interactive::start(
        &attack,
        LONG_CONNECTIONS_CLIENT,
        &token,
        &[("OPEN", "websocket"), ("WAIT", REVOCATION_WAIT_SECS)],
    );
    assert_eq!(by_socket.line(), "opened");
    assert_eq!(by_token.line(), "opened");
    by_socket.send("watch");
    by_token.send("watch");
    attack.cli(&["agents", "delete", "probe", "--yes"]);

    assert_all_ended(&mut by_socket, &kinds);
    assert_all_ended(&mut by_token, &["websocket"]);
    let output = attack.setup.vault_output();
    assert!(
        output.contains("agent probe no longer exists"),
        "no log line says why: {output}"
    );
}

/// Opens `COUNT` WebSockets to the upstream's `/ws`, each in its own tunnel, printing
/// `i STATUS` for each (the CONNECT's status when it is refused, else the upgrade's),
/// then `opened`. On a line from stdin, waits up to `WAIT` seconds on each open one and
/// prints `i closed` or `i open`, then `done`.
const WEBSOCKETS_CLIENT: &str = r#"
import base64, os, socket, ssl, sys
proxy_host, proxy_port = os.environ["PROXY"].rsplit(":", 1)
host, port = "localhost", int(os.environ["UPSTREAM_PORT"])
auth = base64.b64encode(("x:" + os.environ["TOKEN"]).encode()).decode()
context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])

def status_of(sock):
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n")[0].decode()

sockets = []
for i in range(int(os.environ["COUNT"])):
    sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=20)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    status = status_of(sock)
    if " 200" not in status:
        print(i, status, flush=True)
        sock.close()
        continue
    tls = context.wrap_socket(sock, server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    tls.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    print(i, status_of(tls), flush=True)
    sockets.append((i, tls))
print("opened", flush=True)
sys.stdin.readline()
for i, tls in sockets:
    tls.settimeout(float(os.environ["WAIT"]))
    closed = False
    try:
        while True:
            if not tls.recv(65536):
                closed = True
                break
    except socket.timeout:
        pass
    except OSError:
        closed = True
    print(i, "closed" if closed else "open", flush=True)
print("done", flush=True)
"#;

/// A WebSocket is the connection it was upgraded from: it keeps that connection's place
/// under its agent's share and is closed once idle, like any tunnel. (The tunnel gave
/// its place back at the upgrade, so one agent could open WebSockets past its share,
/// and idle ones were never closed.)
#[test]
fn websockets_keep_their_place_and_are_closed_when_idle() {
    let attack = Attack::start(&[
        "--max-connections-per-agent",
        "3",
        "--client-idle-timeout",
        "2s",
    ]);
    let greedy = attack.setup.agent("greedy");
    let other = attack.setup.agent("other");
    let mut client = Interactive::start(
        &attack,
        WEBSOCKETS_CLIENT,
        &greedy,
        &[("COUNT", "5"), ("WAIT", "10")],
    );
    for i in 0..3 {
        assert_eq!(
            client.line(),
            format!("{i} HTTP/1.1 101 Switching Protocols")
        );
    }
    for i in 3..5 {
        assert_eq!(
            client.line(),
            format!("{i} HTTP/1.1 503 Service Unavailable")
        );
    }
    assert_eq!(client.line(), "opened");
    // Another agent is served meanwhile.
    let reply = attack.curl(&other, &[&attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);

    // Silent WebSockets are closed after the idle timeout...
    client.send("check");
    for i in 0..3 {
        assert_eq!(client.line(), format!("{i} closed"));
    }
    assert_eq!(client.line(), "done");
    // ...and the agent's share is whole again.
    let reply = attack.curl(&greedy, &[&attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

/// Sends `COUNT` GETs of `URL` at once over one HTTP/2 connection through the proxy and
/// prints each answer as a JSON line `{"status": S, "error": E}`.
const CONCURRENT_H2_CLIENT: &str = r#"
import asyncio, json, os, ssl, httpx
async def main():
    context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
    async with httpx.AsyncClient(http2=True, proxy=os.environ["PROXY"], verify=context, timeout=30) as client:
        async def one():
            r = await client.get(os.environ["URL"])
            error = r.json().get("error") if r.status_code != 200 else None
            return {"status": r.status_code, "error": error, "version": r.http_version}
        for answer in await asyncio.gather(*[one() for _ in range(int(os.environ["COUNT"]))]):
            print(json.dumps(answer))
asyncio.run(main())
"#;

/// One agent cannot have more requests in flight than its share
/// (`--max-requests-per-agent`), however many HTTP/2 streams it opens: each request to
/// an upstream that speaks only HTTP/1.1 holds an upstream connection, and one tunnel
/// carries up to 200 streams. (One agent's 256 tunnels could hold 51,200 upstream
/// connections.) Those beyond the share get 503 `too_many_requests_in_flight`, each with
/// an audit row, and the share is free again once the requests end.
#[test]
fn one_agent_cannot_have_unbounded_requests_in_flight() {
    let mut setup = Setup::with_upstream(palisade_testkit::Upstream::builder().http1_only());
    setup.start_vault(&["--max-requests-per-agent", "4"]);
    let attack = Attack { setup };
    let greedy = attack.setup.agent("greedy");
    let proxy = palisade_testkit::proxy_url(attack.setup.addr(), &greedy);
    let url = attack.url("/slow?ms=1500");
    let ca = attack.setup.vault_ca_str();
    let output = python(
        CONCURRENT_H2_CLIENT,
        &[
            ("PROXY", &proxy),
            ("URL", &url),
            ("VAULT_CA", &ca),
            ("COUNT", "10"),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let answers: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers.len(), 10);
    assert!(
        answers.iter().all(|a| a["version"] == "HTTP/2"),
        "{answers:?}"
    );
    let served = answers.iter().filter(|a| a["status"] == 200).count();
    let refused: Vec<&Value> = answers.iter().filter(|a| a["status"] == 503).collect();
    assert_eq!(served, 4, "{answers:?}");
    assert_eq!(refused.len(), 6, "{answers:?}");
    assert!(refused
        .iter()
        .all(|a| a["error"] == "too_many_requests_in_flight"));
    let rows = attack.rows("too_many_requests_in_flight", 6);
    assert_eq!(rows.as_array().map(Vec::len), Some(6), "{rows}");

    // Once those requests have ended, the agent's share is whole again.
    let reply = attack.curl(&greedy, &["--http2", &attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

const SEQUENTIAL_CLIENT: &str = r#"
import json, os, requests
session = requests.Session()
session.proxies = {"https": os.environ["PROXY"]}
session.verify = os.environ["VAULT_CA"]
statuses = [session.get(os.environ["BASE"] + path, timeout=20).status_code for path in os.environ["PATHS"].split(",")]
session.close()
print(json.dumps(statuses))
"#;

const QUIET_TUNNEL_CLIENT: &str = r#"
import os, time, requests
def session():
    s = requests.Session()
    s.proxies = {"https": os.environ["PROXY"]}
    s.verify = os.environ["VAULT_CA"]
    return s
first, second = session(), session()
assert first.get(os.environ["BASE"] + "/echo", timeout=20).status_code == 200
time.sleep(3.5)
assert second.get(os.environ["BASE"] + "/echo", timeout=20).status_code == 200
assert first.get(os.environ["BASE"] + "/echo", timeout=20).status_code == 200
"#;

/// A tunnel's requests go upstream over one connection of its own, replaced when the
/// upstream closes it. When the tunnel ends, that connection waits for the same agent's
/// next tunnel to the same target, never another agent's, and closes within the client
/// idle timeout; so does the connection of a tunnel that stays open but quiet.
/// Upstream connections are bounded by the tunnels that hold places under the
/// connection caps, and none outlives them for long.
#[test]
fn a_tunnels_upstream_connection_is_its_agents_alone_and_expires() {
    let attack = Attack::start(&["--client-idle-timeout", "6s"]);
    let first = attack.setup.agent("first");
    let other = attack.setup.agent("other");
    let upstream = &attack.setup.upstream;
    let tunnel = |token: &str, paths: &str| -> Vec<(String, u64)> {
        upstream.clear();
        let proxy = palisade_testkit::proxy_url(attack.setup.addr(), token);
        let output = python(
            SEQUENTIAL_CLIENT,
            &[
                ("PROXY", &proxy),
                ("BASE", &attack.url("")),
                ("VAULT_CA", &attack.setup.vault_ca_str()),
                ("PATHS", paths),
            ],
            CLIENT_TIMEOUT,
        );
        assert!(output.status.success(), "{}", output_text(&output));
        let statuses: Vec<u16> = serde_json::from_slice(&output.stdout).unwrap();
        let expected: Vec<u16> = paths
            .split(',')
            .map(|p| if p == "/close" { 502 } else { 200 })
            .collect();
        assert_eq!(statuses, expected, "{paths}");
        upstream
            .requests()
            .into_iter()
            .map(|r| (r.path().to_string(), r.connection))
            .collect()
    };

    let seen = tunnel(&first, "/echo,/echo,/close,/echo");
    assert_eq!(seen.len(), 4, "{seen:?}");
    let (broken, kept) = (seen[0].1, seen[3].1);
    assert!(seen[..3].iter().all(|(_, c)| *c == broken), "{seen:?}");
    assert_ne!(kept, broken, "{seen:?}");

    // The same agent's next tunnel takes the connection up again.
    assert_eq!(tunnel(&first, "/echo"), [("/echo".to_string(), kept)]);
    // Another agent's tunnel gets one of its own.
    let seen = tunnel(&other, "/echo");
    assert!(seen[0].1 > kept, "{seen:?}");

    // A connection is kept for its target alone: the agent's tunnel to another port
    // of the same host reaches that port's server, never the connection left idle.
    let second = palisade_testkit::Upstream::start(&attack.setup.ca).unwrap();
    let proxy = palisade_testkit::proxy_url(attack.setup.addr(), &first);
    let output = python(
        SEQUENTIAL_CLIENT,
        &[
            ("PROXY", &proxy),
            ("BASE", &format!("https://localhost:{}", second.port())),
            ("VAULT_CA", &attack.setup.vault_ca_str()),
            ("PATHS", "/echo"),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!((second.count(), upstream.count()), (1, 1));
    drop(second);

    // A tunnel quiet for 2 s has let its connection go: the agent's next tunnel takes
    // it up while the first is still open, and the first opens another.
    upstream.clear();
    let proxy = palisade_testkit::proxy_url(attack.setup.addr(), &first);
    let output = python(
        QUIET_TUNNEL_CLIENT,
        &[
            ("PROXY", &proxy),
            ("BASE", &attack.url("")),
            ("VAULT_CA", &attack.setup.vault_ca_str()),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let connections: Vec<u64> = upstream.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 3, "{connections:?}");
    assert_eq!(connections[1], connections[0], "{connections:?}");
    assert_ne!(connections[2], connections[0], "{connections:?}");

    assert!(
        wait_until(Duration::from_secs(20), || upstream.open_connections() == 0),
        "{} upstream connections still open after the tunnels closed",
        upstream.open_connections()
    );
}

/// One agent's HTTP/2 streams cannot hold up another agent's requests to the same
/// upstream. A server allows a number of streams per connection (here 4); when every
/// agent's requests shared one upstream connection, an agent that kept them all busy
/// (long model streams do) made every other agent's request to that host wait.
#[test]
fn one_agents_streams_cannot_hold_up_another_agents_requests() {
    let mut setup =
        Setup::with_upstream(palisade_testkit::Upstream::builder().max_concurrent_streams(4));
    setup.start_vault(&[]);
    let attack = Attack { setup };
    let greedy = attack.setup.agent("greedy");
    let other = attack.setup.agent("other");
    let proxy = palisade_testkit::proxy_url(attack.setup.addr(), &greedy);
    let url = attack.url("/slow?ms=6000");
    let ca = attack.setup.vault_ca_str();
    let streams = std::thread::spawn(move || {
        python(
            CONCURRENT_H2_CLIENT,
            &[
                ("PROXY", &proxy),
                ("URL", &url),
                ("VAULT_CA", &ca),
                ("COUNT", "4"),
            ],
            CLIENT_TIMEOUT,
        )
    });
    let upstream = &attack.setup.upstream;
    assert!(
        wait_until(Duration::from_secs(10), || upstream.count() >= 4),
        "the greedy agent's streams did not arrive"
    );
    let reply = attack.curl(
        &other,
        &["--http2", "--max-time", "3", &attack.url("/echo")],
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let output = streams.join().unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let served = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("\"status\": 200"))
        .count();
    assert_eq!(served, 4, "{}", output_text(&output));
}

const UNREAD_RESPONSES_CLIENT: &str = r#"
import asyncio, os, ssl, sys, httpx
async def main():
    context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(http2=True, proxy=os.environ["PROXY_URL"], verify=context, timeout=20, limits=limits) as client:
        held = []
        for url in os.environ["URLS"].split(","):
            for _ in range(int(os.environ["STREAMS"])):
                response = await client.send(client.build_request("GET", url), stream=True)
                assert response.status_code == 200 and response.http_version == "HTTP/2", response
                held.append(response)
        print("held", len(held), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for response in held:
            await response.aclose()
    print("done", flush=True)
asyncio.run(main())
"#;

/// The gateway's resident memory in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Starts `script` as the agent `token` against `urls` (`PROXY_URL`, `URLS`, `env`)
/// once the gateway has served it one request (so its allocator and tunnel machinery
/// are warm); returns the client, the gateway's pid and its resident memory before.
fn memory_client(
    attack: &mut Attack,
    token: &str,
    script: &str,
    urls: &[String],
    env: &[(&str, &str)],
) -> (Interactive, u32, u64) {
    let pid = attack.setup.vault_process().id();
    let reply = attack.curl(token, &["--http2", &attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let before = resident_bytes(pid);
    let proxy = palisade_testkit::proxy_url(attack.setup.addr(), token);
    let urls = urls.join(",");
    let mut full = vec![("PROXY_URL", proxy.as_str()), ("URLS", urls.as_str())];
    full.extend_from_slice(env);
    (
        Interactive::start(attack, script, token, &full),
        pid,
        before,
    )
}

/// Watches the gateway's resident memory for 3 s (time for its peers to fill whatever
/// window they are given) and fails if it rose `limit_mib` or more above `before`.
#[track_caller]
fn assert_grows_less(pid: u32, before: u64, limit_mib: u64, doing: &str) {
    let mut peak = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(resident_bytes(pid));
    }
    let grown = peak.saturating_sub(before);
    eprintln!("the gateway grew by {} KiB {doing}", grown >> 10);
    assert!(
        grown < limit_mib << 20,
        "the gateway grew by {} MiB {doing}",
        grown >> 20
    );
}

/// One agent cannot make the gateway keep unread answers in memory beyond a small
/// window per upstream connection. An HTTP/2 upstream sends as much of a response as
/// the gateway's flow-control window allows, whether or not the agent reads it, and
/// the gateway keeps what arrived until the agent reads it: with hyper's client
/// defaults that was up to 5 MiB per upstream connection, so one agent with 16 large
/// downloads (3 streams each, to 16 hosts), read no further than their headers, made
/// the gateway hold ~80 MiB; 256 such hosts (its share of connections) would have been
/// 1.25 GiB. The window is now 1 MiB per connection.
#[test]
fn one_agent_cannot_fill_the_gateways_memory_with_unread_answers() {
    const HOSTS: usize = 16;
    let mut attack = Attack::start(&[]);
    let greedy = attack.setup.agent("greedy");
    let hosts: Vec<palisade_testkit::Upstream> = (0..HOSTS)
        .map(|_| palisade_testkit::Upstream::start(&attack.setup.ca).unwrap())
        .collect();
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("https://localhost:{}/bytes?n=268435456", h.port()))
        .collect();
    let (mut client, pid, before) = memory_client(
        &mut attack,
        &greedy,
        UNREAD_RESPONSES_CLIENT,
        &urls,
        &[("STREAMS", "3")],
    );
    assert_eq!(client.line(), format!("held {}", HOSTS * 3));
    assert_grows_less(pid, before, 40, "holding 16 hosts' unread answers");
    client.send("finish");
    assert_eq!(client.line(), "done");
    // The gateway still serves the agent.
    let reply = attack.curl(&greedy, &["--http2", &attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

const UNTAKEN_BODIES_CLIENT: &str = r#"
import asyncio, os, ssl, sys, httpx
async def main():
    context = ssl.create_default_context(cafile=os.environ["VAULT_CA"])
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    body = b"b" * (4 << 20)
    async with httpx.AsyncClient(http2=True, proxy=os.environ["PROXY_URL"], verify=context, timeout=60, limits=limits) as client:
        sends = [asyncio.ensure_future(client.post(url, content=body)) for url in os.environ["URLS"].split(",")]
        print("sending", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for send in sends:
            send.cancel()
    print("done", flush=True)
asyncio.run(main())
"#;

/// Nor with request bodies an upstream is slow to take. An HTTP/2 agent sends as much
/// of a body as the gateway's flow-control window allows, and the gateway keeps it
/// until the upstream takes it: with hyper's defaults that was 1 MiB per tunnel, so
/// one agent posting 4 MiB bodies to 32 hosts that accept a connection and then say
/// nothing made the gateway hold 32 MiB, and its 256 tunnels could hold 256 MiB. The
/// window is now 256 KiB per tunnel.
#[test]
fn one_agent_cannot_fill_the_gateways_memory_with_bodies_nobody_takes() {
    const HOSTS: usize = 32;
    let mut attack = Attack::start(&[]);
    let greedy = attack.setup.agent("greedy");
    // Listeners that never accept: the kernel completes each connection, and the
    // gateway's TLS handshake waits for an answer that does not come.
    let silent: Vec<std::net::TcpListener> = (0..HOSTS)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let urls: Vec<String> = silent
        .iter()
        .map(|l| {
            format!(
                "https://localhost:{}/upload",
                l.local_addr().unwrap().port()
            )
        })
        .collect();
    let (mut client, pid, before) =
        memory_client(&mut attack, &greedy, UNTAKEN_BODIES_CLIENT, &urls, &[]);
    assert_eq!(client.line(), "sending");
    assert_grows_less(pid, before, 20, "holding bodies for 32 silent hosts");
    client.send("finish");
    assert_eq!(client.line(), "done");
    drop(silent);
    let reply = attack.curl(&greedy, &["--http2", &attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

/// A request head inside an HTTP/1.1 tunnel is held to the same 64 KiB as one on the
/// TCP listener: larger gets 431 and goes nowhere. (Tunnels took hyper's default, about
/// 400 KB, so one agent's 256 tunnels dripping heads could hold 100 MB; an HTTP/2
/// tunnel's header list is held to 16 KiB by the connection's settings.)
///
/// The gateway reads away what it did not read before it closes (conn.rs `linger`),
/// but only what has arrived by then: a client still sending on a loaded machine can
/// meet a reset before it reads the 431 (curl: "Send failure" or "Recv failure"),
/// which refuses the request all the same.
#[test]
fn a_tunnels_request_head_is_bounded() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("probe");
    let huge = format!("X-Huge: {}", "a".repeat(100 * 1024));
    let mut args: Vec<String> = [
        "-sS",
        "-i",
        "--suppress-connect-headers",
        "--max-time",
        "20",
    ]
    .map(String::from)
    .to_vec();
    args.extend(attack.setup.proxy_args(&token));
    args.extend(["--http1.1".into(), "-H".into(), huge, attack.url("/echo")]);
    let output = curl(&args, CLIENT_TIMEOUT);
    match output.status.code() {
        Some(0) => {
            let reply = CurlReply::parse(&output);
            assert_eq!(reply.status, 431, "{}", reply.raw);
        }
        Some(55 | 56) => {}
        _ => panic!("the oversized head: {}", output_text(&output)),
    }
    assert_eq!(attack.setup.upstream.count(), 0);
    let reply = attack.curl(&token, &["--http1.1", &attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

/// The audit writer loses no row while another process holds the database's write lock
/// past SQLite's busy timeout (5 s; a long `audit prune`, a backup): it waits and tries
/// again. (Before, the batch was logged as an error and dropped, so a credential went
/// out with no row to show it.)
#[test]
fn audit_rows_wait_out_a_locked_database() {
    let attack = Attack::start(&[]);
    let token = attack.probe_with_v1_key("locked-out-value-1234");
    let database = attack.setup.palisade.home().join("palisade.db");
    let lock = rusqlite::Connection::open(&database).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let reply = attack.curl(&token, &[&attack.url("/v1/while-locked")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    std::thread::sleep(Duration::from_secs(7));
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let rows = attack.rows("injected", 1);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["path"], "/v1/while-locked");
    ok_verify(&attack);
}

/// A row put where the log's next row goes (by someone who can write the database,
/// without the key) no longer makes the gateway drop its own rows: they wait, while
/// they do credentialed requests are refused with `503 audit_unavailable` and never
/// sent, the anchor records the log was altered, and once the row is gone the rows
/// are written with an `audit.delayed` row. (Before, the batch was logged and lost, and
/// `audit verify` said the log was intact without the credentialed requests.)
/// A gateway whose probe agent has a `/v1` key, `value`, and has sent one request with
/// it (its row written); the probe's token.
fn with_one_credentialed_row(value: &str) -> (Attack, String) {
    let attack = Attack::start(&[]);
    let token = attack.probe_with_v1_key(value);
    let reply = attack.curl(&token, &[&attack.url("/v1/before")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    attack.rows("injected", 1);
    (attack, token)
}

/// A credentialed request is refused with `503 audit_unavailable` and never reaches
/// the upstream.
fn a_credential_stays_home(attack: &Attack, token: &str) {
    let before = attack.setup.upstream.count();
    let reply = attack.curl(token, &[&attack.url("/v1/refused")]);
    refused(&reply, 503, "audit_unavailable");
    assert_eq!(
        attack.setup.upstream.count(),
        before,
        "a credential went out unrecorded"
    );
}

/// Credentialed requests to `prefix-N`, one every 200 ms, until one is not answered
/// 200 (at most 50): the paths that went out, and the first answer that was not.
fn sent_until_refused(
    attack: &Attack,
    token: &str,
    prefix: &str,
) -> Option<(Vec<String>, CurlReply)> {
    let mut sent = Vec::new();
    for i in 0..50 {
        let path = format!("{prefix}-{i}");
        let reply = attack.curl(token, &[&attack.url(&path)]);
        if reply.status != 200 {
            return Some((sent, reply));
        }
        sent.push(path);
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn a_row_in_the_way_of_the_log_stops_credentials_not_their_rows() {
    let (attack, token) = with_one_credentialed_row("in-the-way-value-1234");
    let database = attack.setup.palisade.home().join("palisade.db");
    let raw = rusqlite::Connection::open(&database).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    let next: i64 = raw
        .query_row("SELECT last_id + 1 FROM audit_head", [], |row| row.get(0))
        .unwrap();
    raw.execute(
        "INSERT INTO audit (id, at_ms, event, prev_hash, hash) VALUES (?1, 0, 'x', '', '')",
        [next],
    )
    .unwrap();
    // The request whose row finds the way blocked has gone out; the next ones do not.
    let (sent, reply) = sent_until_refused(&attack, &token, "/v1/while-blocked")
        .expect("credentialed requests went on while their rows could not be written");
    refused(&reply, 503, "audit_unavailable");
    assert!(
        !sent.is_empty(),
        "no request went out before the log was found blocked"
    );
    a_credential_stays_home(&attack, &token);
    // Requests without a credential leave no row and go on.
    let reply = attack.curl(&token, &[&attack.url("/open")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    raw.execute("DELETE FROM audit WHERE id = ?1", [next])
        .unwrap();
    drop(raw);
    assert!(
        wait_until(Duration::from_secs(20), || {
            attack.curl(&token, &[&attack.url("/v1/after")]).status == 200
        }),
        "credentialed requests stayed refused once the log could be written\n{}",
        attack.setup.vault_output()
    );
    let rows = attack.rows("injected", 2 + sent.len());
    let paths: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["path"].as_str())
        .collect();
    for path in &sent {
        assert!(
            paths.contains(&path.as_str()),
            "no row for {path}: {paths:?}"
        );
    }
    let delayed = attack.json(&["audit", "list", "--event", "audit.delayed"]);
    assert_eq!(delayed.as_array().map(Vec::len), Some(1), "{delayed}");
    assert!(
        delayed[0]["detail"]["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("outside palisade"),
        "{delayed}"
    );
    // The row taken away, the log looks whole; the anchor still says it was altered.
    let verified = attack.setup.palisade.run(&["audit", "verify"]);
    assert!(!verified.status.success(), "{}", output_text(&verified));
    assert!(
        output_text(&verified).contains(&format!("altered at row {next}")),
        "{}",
        output_text(&verified)
    );
}

/// The database's write-ahead log deleted while the gateway runs (review round seven):
/// its writer went on writing rows into the deleted file, which no other process reads,
/// and credentials went on going out. Now the first batch that finds the file gone is
/// refused as tampering, and requests that would send a credential are refused too.
#[test]
fn a_log_deleted_under_the_gateway_stops_credentials() {
    let (attack, token) = with_one_credentialed_row("wal-deleted-value-1234");
    let wal = attack.setup.palisade.home().join("palisade.db-wal");
    std::fs::remove_file(&wal).unwrap();
    let (_, reply) = sent_until_refused(&attack, &token, "/v1/after")
        .expect("credentialed requests went on while their rows went into a deleted file");
    refused(&reply, 503, "audit_unavailable");
    a_credential_stays_home(&attack, &token);
    assert!(
        attack
            .setup
            .vault_output()
            .contains("palisade.db-wal was moved, deleted or replaced"),
        "{}",
        attack.setup.vault_output()
    );
}

/// A gateway applies the audit retention on its own: rows older than it are pruned
/// when it starts (and hourly after), recorded as an `audit.prune` row with the
/// retention, and the chain still verifies; rows younger than the retention stay.
/// (The rows are written with old times and the retention set through the store, which
/// unlike `palisade audit retention` does not prune at once.)
#[test]
fn the_gateway_prunes_audit_rows_older_than_the_retention() {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let mut setup = Setup::new();
    let home = palisade_store::Home::at(setup.palisade.home());
    let now = palisade_store::now_ms();
    let rows: Vec<(i64, palisade_store::AuditEntry)> = [60, 31, 29, 1]
        .iter()
        .map(|days| {
            let entry = palisade_store::AuditEntry {
                event: "request".into(),
                agent: Some("earlier".into()),
                path: Some(format!("/{days}-days-ago")),
                ..Default::default()
            };
            (now - days * DAY_MS, entry)
        })
        .collect();
    let store = palisade_store::Store::open(&home).unwrap();
    store.append_audit_batch(&rows).unwrap();
    store
        .set_audit_retention(Some(Duration::from_secs(30 * 24 * 3600)))
        .unwrap();
    drop(store);
    let paths = |setup: &Setup| -> Vec<String> {
        let listed: Value =
            serde_json::from_str(&setup.cli(&["--json", "audit", "list", "--agent", "earlier"]))
                .unwrap();
        let mut paths: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["path"].as_str().unwrap_or_default().to_string())
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(paths(&setup).len(), 4);

    setup.start_vault(&[]);
    assert!(
        wait_until(Duration::from_secs(10), || paths(&setup).len() == 2),
        "still there: {:?}\n{}",
        paths(&setup),
        setup.vault_output()
    );
    assert_eq!(paths(&setup), ["/1-days-ago", "/29-days-ago"]);
    let pruning: Value =
        serde_json::from_str(&setup.cli(&["--json", "audit", "list", "--event", "audit.prune"]))
            .unwrap();
    assert_eq!(pruning[0]["actor"], "vault", "{pruning}");
    assert_eq!(pruning[0]["detail"]["keep_ms"], 30 * DAY_MS, "{pruning}");
    assert_eq!(pruning[0]["detail"]["removes"], 2, "{pruning}");
    let verified: Value = serde_json::from_str(&setup.cli(&["--json", "audit", "verify"])).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
}

/// An HTTP/1.1 upstream's response head is held to 64 KiB (hyper read up to ~400 KB,
/// for as long as the response timeout, so one agent's share of upstream connections
/// could hold 100 MB of heads): a larger one is refused as `502 unreadable_response`
/// with its audit row, a head of 30 KB passes whole. (Before, 100 KB passed.)
#[test]
fn an_upstreams_response_head_is_bounded() {
    let mut setup = Setup::with_upstream(palisade_testkit::Upstream::builder().http1_only());
    setup.start_vault(&[]);
    let attack = Attack { setup };
    let token = attack.setup.agent("probe");
    let reply = attack.curl(&token, &["--http1.1", &attack.url("/big-head?n=30000")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert!(reply.raw.contains(&"a".repeat(30000)));
    let reply = attack.curl(&token, &["--http1.1", &attack.url("/big-head?n=100000")]);
    assert_eq!(
        reply.status,
        502,
        "{}",
        &reply.raw[..reply.raw.len().min(300)]
    );
    assert_eq!(
        reply.json()["error"],
        "unreadable_response",
        "{}",
        reply.raw
    );
    let rows = attack.rows("unreadable_response", 1);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let reply = attack.curl(&token, &["--http1.1", &attack.url("/echo")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
}

/// Upstream connections take places under the gateway's connection cap like client
/// connections do, so a gateway short of places refuses the request that needs one
/// more (503 `too_many_connections`, with an audit row) instead of running out of
/// descriptors for everyone; once places are free again, the same request succeeds.
#[test]
fn upstream_connections_count_under_the_gateways_cap() {
    let attack = Attack::start(&["--max-connections", "4"]);
    attack.setup.agent("greedy");
    let other = attack.setup.agent("other");
    let socket = attack.setup.palisade.home().join("run/agents/greedy.sock");
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));
    // Three idle connections, and curl's own: the fifth place, for the upstream
    // connection, is not there.
    let idle: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&socket).expect("connect to the agent socket"))
        .collect();
    let reply = attack.curl(&other, &[&attack.url("/echo")]);
    refused(&reply, 503, "too_many_connections");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("upstream connection"));
    assert_eq!(attack.setup.upstream.count(), 0);
    let rows = attack.rows("too_many_connections", 1);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");

    drop(idle);
    let served = wait_until(Duration::from_secs(5), || {
        attack.curl(&other, &[&attack.url("/echo")]).status == 200
    });
    assert!(served, "the request was not served once places were free");
}

/// An agent's upstream connections of every kind (pooled, a tunnel's own, WebSocket),
/// open or idle, to every host together, count against one share as large as its
/// share of client connections. Before, each kind was bounded on its own, so one agent
/// could hold about four times its share of the gateway's places.
#[test]
fn an_agents_upstream_connections_of_every_kind_share_one_bound() {
    let attack = Attack::start(&["--max-connections-per-agent", "3"]);
    let greedy = attack.setup.agent("greedy");
    let other = attack.setup.agent("other");
    let hosts: Vec<palisade_testkit::Upstream> = (0..4)
        .map(|_| palisade_testkit::Upstream::start(&attack.setup.ca).unwrap())
        .collect();
    let url = |host: &palisade_testkit::Upstream| format!("https://localhost:{}/echo", host.port());
    let open = || -> usize { hosts.iter().map(|h| h.open_connections()).sum() };

    // Three HTTP/2 requests to three hosts leave three pooled connections idle.
    for host in &hosts[..3] {
        let reply = attack.curl(&greedy, &["--http2", &url(host)]);
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    assert_eq!(open(), 3);
    // The fourth host gets no connection of any kind from this agent...
    refused(
        &attack.curl(&greedy, &["--http2", &url(&hosts[3])]),
        503,
        "too_many_connections",
    );
    refused(
        &attack.curl(&greedy, &["--http1.1", &url(&hosts[3])]),
        503,
        "too_many_connections",
    );
    let port = hosts[3].port().to_string();
    let mut websocket = Interactive::start(
        &attack,
        WEBSOCKETS_CLIENT,
        &greedy,
        &[("COUNT", "1"), ("WAIT", "1"), ("UPSTREAM_PORT", &port)],
    );
    assert_eq!(websocket.line(), "0 HTTP/1.1 503 Service Unavailable");
    assert_eq!(websocket.line(), "opened");
    drop(websocket);
    assert_eq!(hosts[3].count(), 0);
    // ...while another agent's is served.
    let reply = attack.curl(&other, &["--http1.1", &url(&hosts[3])]);
    assert_eq!(reply.status, 200, "{}", reply.raw);

    // A tunnel that needs a connection when its agent's share is full of idle ones it
    // left closes the oldest to make room.
    let tunnels = attack.setup.agent("tunnels");
    for host in &hosts {
        let reply = attack.curl(&tunnels, &["--http1.1", &url(host)]);
        assert_eq!(reply.status, 200, "{}", reply.raw);
    }
    // greedy's 3, other's 1, and tunnels' 3 (its first was closed for its fourth).
    assert!(
        wait_until(Duration::from_secs(5), || open() == 7),
        "{} upstream connections open",
        open()
    );
}

/// The gateway's own listener is never an upstream, in any spelling of its address,
/// even when every host is allowed to be local.
#[test]
fn the_gateways_own_listener_is_refused_in_every_spelling() {
    let attack = Attack::start(&["--allow-local-upstream", "*"]);
    let token = attack.setup.agent("probe");
    let port = attack.setup.addr().port();
    for host in ["127.0.0.1", "localhost", "localhost.", "127.0.0.7"] {
        for scheme in ["http", "https"] {
            let reply = attack.curl(&token, &[&format!("{scheme}://{host}:{port}/healthz")]);
            refused(&reply, 403, "local_upstream_refused");
        }
    }
    // Legacy spellings of IPv4 addresses are no DNS names; they are refused outright.
    // (Sent raw: curl would rewrite them to the dotted form itself.) So is an IPv6
    // address that spells an IPv4 one: a rule naming the IPv4 address would not match
    // it (a block on 127.0.0.1 was passed by `[::ffff:127.0.0.1]`), and every IPv4
    // host has one form.
    let auth = vault_fixture::base64(format!("x:{token}").as_bytes());
    for host in [
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[2002:7f00:1::]",
    ] {
        for request in [
            format!("GET http://{host}:{port}/healthz HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"),
            format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"),
        ] {
            let response = vault_fixture::raw_exchange(attack.setup.addr(), &request);
            assert_eq!(response.status, 400, "{host}: {response:?}");
            assert_eq!(response.json()["error"], "bad_request", "{host}");
        }
    }
}

/// A local address allowed with a port (a model server on `127.0.0.1:8080`) is that
/// port only: an agent cannot reach every other service listening on the address, by
/// its address or by a name allowed with a port.
#[test]
fn a_local_address_allowed_with_a_port_opens_that_port_only() {
    let mut setup = Setup::new();
    let allowed = format!("127.0.0.1:{}", setup.upstream.port());
    setup.start_vault_exactly(&["--allow-local-upstream", &allowed]);
    let attack = Attack { setup };
    let token = attack.setup.agent("probe");
    let reply = attack.curl(&token, &[&format!("https://{allowed}/public")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    // Another service on the same address: never connected to.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let port = other.local_addr().unwrap().port();
    for scheme in ["http", "https"] {
        let reply = attack.curl(&token, &[&format!("{scheme}://127.0.0.1:{port}/")]);
        refused(&reply, 403, "local_upstream_refused");
        // The way to allow it names that port alone.
        assert!(
            reply
                .raw
                .contains(&format!("palisade vault local allow 127.0.0.1:{port}`")),
            "{}",
            reply.raw
        );
    }
    assert!(
        matches!(other.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the gateway connected to another local port"
    );
    // A name with a port is that port only too (review: the web UI's button allowed
    // `localhost` for a model server at `localhost:PORT`, every service of the machine
    // to every agent): its resolved addresses are checked with the request's port.
    let by_name = format!("localhost:{}", attack.setup.upstream.port());
    attack.cli(&["vault", "local", "allow", &by_name]);
    let reply = attack.curl(&token, &[&format!("https://{by_name}/public")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    for scheme in ["http", "https"] {
        let reply = attack.curl(&token, &[&format!("{scheme}://localhost:{port}/")]);
        refused(&reply, 403, "local_upstream_refused");
        assert!(
            reply
                .raw
                .contains(&format!("palisade vault local allow localhost:{port}`")),
            "{}",
            reply.raw
        );
    }
    assert!(
        matches!(other.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the gateway connected to another local port by name"
    );
}

/// Deleting the newest audit rows and moving the head back leaves a chain that is
/// consistent inside the database; `palisade audit verify` still finds the cut, because
/// the chain is anchored in a signed file outside it.
#[test]
fn deleting_the_audit_tail_is_detected() {
    let attack = Attack::start(&[]);
    for name in ["a", "b", "c", "d"] {
        attack.cli(&["agents", "create", name]);
    }
    let verified = attack.setup.palisade.run(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", output_text(&verified));
    let database = attack.setup.palisade.home().join("palisade.db");
    let cut = Command::new("sqlite3")
        .arg(&database)
        .arg(
            "DELETE FROM audit WHERE id > 3; \
             UPDATE audit_head SET last_id = 3, last_hash = (SELECT hash FROM audit WHERE id = 3);",
        )
        .output()
        .expect("sqlite3");
    assert!(cut.status.success(), "{}", output_text(&cut));
    let verified = attack.setup.palisade.run(&["audit", "verify"]);
    assert!(
        !verified.status.success(),
        "the cut went unnoticed: {}",
        output_text(&verified)
    );
    assert!(
        output_text(&verified).contains("anchor"),
        "{}",
        output_text(&verified)
    );
    // Later changes do not sign the cut log: it stays reported past the row the
    // anchor named.
    for name in ["e", "f", "g", "h"] {
        attack.cli(&["agents", "create", name]);
    }
    let verified = attack.setup.palisade.run(&["audit", "verify"]);
    assert!(
        !verified.status.success() && output_text(&verified).contains("palisade audit anchor"),
        "{}",
        output_text(&verified)
    );
    // A person signs it, explicitly; the signing is in the log.
    let unasked = attack.setup.palisade.run(&["audit", "anchor"]);
    assert!(
        !unasked.status.success() && output_text(&unasked).contains("--yes"),
        "{}",
        output_text(&unasked)
    );
    attack.cli(&["audit", "anchor", "--yes"]);
    let verified = attack.setup.palisade.run(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", output_text(&verified));
    let rows = attack.cli(&["audit", "list", "--event", "audit.anchor", "--json"]);
    assert!(rows.contains("verify_said"), "{rows}");
}

/// A change made with the CLI is in force when the command returns: a new agent's
/// token, a new block rule and a new secret each work on the very next request, many
/// times in a row, with no pause.
#[test]
fn changes_apply_to_the_very_next_request() {
    let attack = Attack::start(&[]);
    for round in 0..8 {
        let name = format!("fresh{round}");
        attack.cli(&["agents", "create", &name]);
        let token = attack.setup.token(&name);
        let reply = attack.curl(&token, &[&attack.url(&format!("/open/{round}"))]);
        assert_eq!(reply.status, 200, "round {round}: {}", reply.raw);

        let blocked = format!("/blocked/{round}");
        attack.rule(
            &format!("block{round}"),
            &["--path-pattern", &blocked, "--action", "block"],
        );
        let reply = attack.curl(&token, &[&attack.url(&blocked)]);
        refused(&reply, 403, "blocked_by_policy");

        let scoped = format!("/keyed/{round}");
        attack.setup.secret(
            &format!("key{round}"),
            "localhost",
            Some(&scoped),
            "bearer",
            &[&name],
            &format!("value-{round}"),
        );
        let reply = attack.curl(&token, &[&attack.url(&scoped)]);
        assert_eq!(reply.status, 200, "{}", reply.raw);
        let expected = format!("Bearer value-{round}");
        assert_eq!(
            attack
                .setup
                .upstream
                .last_request()
                .unwrap()
                .header("authorization"),
            Some(expected.as_str()),
            "round {round}: the new secret was not used"
        );

        attack.cli(&["agents", "delete", &name, "--yes"]);
        let plain = format!(
            "http://localhost:{}/after-delete",
            attack.setup.upstream.port()
        );
        let reply = attack.curl(&token, &[&plain]);
        assert_eq!(
            reply.status, 407,
            "round {round}: a deleted agent's token still works: {}",
            reply.raw
        );
    }
}

/// An upstream that leaves a body unread (many skip a GET's or an unusual method's,
/// some answer a POST, or one that expects `100-continue`, without reading it) must
/// not read that body as its next request: that request was never judged, and would
/// carry the agent's credential.
const CARELESS_UPSTREAM: &str = r#"
import socket, sys, threading
port, log = int(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
def serve(c):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            log.write(lines[0] + "\n")
            h = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
            n = int(h.get("content-length", "0") or 0)
            careless = lines[0].startswith(("GET ", "PROPFIND ")) or " /early" in lines[0]
            if not careless and "expect" not in h:
                while len(buf) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                buf = buf[n:]
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if h.get("connection", "").lower() == "close":
                c.close()
                return
    except OSError:
        pass
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Sends `request` to the gateway on a connection of its own; what came back once the
/// answer's `ok` arrived (or after 10 s).
fn exchange_until_ok(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream.write_all(request).expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if got.ends_with(b"\r\n\r\nok") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_body_the_upstream_leaves_unread_is_not_read_as_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let (_upstream, port) = vault_fixture::python_server(CARELESS_UPSTREAM, &[log.as_os_str()]);
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("probe");
    attack.cli(&[
        "rules",
        "create",
        "--name",
        "no-admin",
        "--host-pattern",
        "127.0.0.1",
        "--path-pattern",
        "/admin/*",
        "--action",
        "block",
    ]);
    let auth = vault_fixture::base64(format!("x:{token}").as_bytes());
    let head = |method: &str, path: &str, extra: &str| {
        format!(
            "{method} http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {auth}\r\n{extra}\r\n"
        )
    };
    let smuggled = "DELETE /admin/everything HTTP/1.1\r\nX-Ignore: ";
    let innocent = head("GET", "/innocent", "");
    let cases = [
        ("GET", "/ok", ""),
        ("POST", "/ok", "Expect: 100-continue\r\n"),
        ("POST", "/early", ""),
        ("PROPFIND", "/ok", ""),
    ];
    for (method, path, extra) in cases {
        let request = format!(
            "{}{smuggled}",
            head(
                method,
                path,
                &format!("{extra}Content-Length: {}\r\n", smuggled.len())
            )
        );
        let answer = exchange_until_ok(attack.setup.addr(), request.as_bytes());
        assert!(answer.contains("200 OK"), "{method}: {answer}");
        let answer = exchange_until_ok(attack.setup.addr(), innocent.as_bytes());
        assert!(answer.contains("200 OK"), "{method} then GET: {answer}");
    }
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        seen.lines().filter(|l| l.contains("/innocent")).count() == cases.len(),
        "{seen}"
    );
    assert!(
        !seen.contains("/admin"),
        "the upstream ran a request nobody judged:\n{seen}"
    );
}

/// An upstream answer with both `Content-Length` and `Transfer-Encoding: chunked` has
/// the chunked body (RFC 9112, 6.3); a proxy passes it on without the length, which is
/// not the body's. With it, an HTTP/1.1 client read three bytes of sixteen and an
/// HTTP/2 client reset the stream.
const LENGTH_AND_CHUNKED_UPSTREAM: &str = r#"
import socket, sys, threading
port = int(sys.argv[1])
def serve(c):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            _, buf = buf.split(b"\r\n\r\n", 1)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    except OSError:
        pass
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[test]
fn a_length_beside_chunked_coding_is_not_passed_on() {
    let (_upstream, port) = vault_fixture::python_server(LENGTH_AND_CHUNKED_UPSTREAM, &[]);
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("probe");
    let reply = attack.curl(&token, &[&format!("http://127.0.0.1:{port}/both")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.body, "0123456789abcdef", "{}", reply.raw);
    assert!(
        !reply.raw.to_ascii_lowercase().contains("content-length: 3"),
        "{}",
        reply.raw
    );
}

/// A change the running gateway cannot put in force is not reported as done: with a
/// rule in the database the gateway cannot read, it keeps its previous configuration,
/// so a command's change (here a new block rule) fails with the gateway's reason, and
/// `palisade doctor` names it. Once the broken rule is deleted, the block is in force.
#[test]
fn a_change_the_gateway_cannot_load_is_reported() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("probe");
    attack.rule(
        "broken",
        &["--path-pattern", "/broken", "--action", "block"],
    );
    let database = attack.setup.palisade.home().join("palisade.db");
    let connection = rusqlite::Connection::open(&database).expect("open the database");
    connection
        .execute(
            "UPDATE rules SET host_pattern = 'not a host' WHERE name = 'broken'",
            [],
        )
        .expect("break the rule");
    drop(connection);

    let output = attack.setup.palisade.run(&[
        "rules",
        "create",
        "--name",
        "later",
        "--host-pattern",
        "localhost",
        "--path-pattern",
        "/later",
        "--action",
        "block",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("cannot load the configuration")
            && stderr.contains("rule \"broken\"")
            && stderr.trim().lines().count() == 1,
        "{}",
        output_text(&output)
    );
    // Not in force, as the command said.
    let reply = attack.curl(&token, &[&attack.url("/later")]);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    // Nor does the admin API call an agent it created there ready to use.
    let admin_key = attack.cli(&["vault", "admin-key"]).trim().to_string();
    let body = r#"{"name":"viaapi","identifier":"viaapi"}"#;
    let created = vault_fixture::raw_exchange(
        attack.setup.addr(),
        &format!(
            "POST /v1/agents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(
        created.status == 503
            && created.body.contains("not_in_force")
            && created.body.contains("broken"),
        "{} {}",
        created.status,
        created.body
    );

    let doctor = attack.setup.palisade.run(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&doctor.stdout).expect("doctor --json");
    let vault: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["area"] == "vault" && f["status"] == "fail")
        .collect();
    assert!(
        vault.len() == 1
            && vault[0]["what"]
                .as_str()
                .is_some_and(|w| w.contains("rule \"broken\"")),
        "{}",
        output_text(&doctor)
    );

    let broken = attack
        .cli(&["rules", "list", "--json"])
        .parse::<Value>()
        .expect("rules JSON");
    let id = broken
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == "broken")
        .and_then(|r| r["id"].as_i64())
        .expect("the broken rule is listed");
    attack.cli(&["rules", "delete", &id.to_string()]);
    let reply = attack.curl(&token, &[&attack.url("/later")]);
    refused(&reply, 403, "blocked_by_policy");
    let doctor = attack.setup.palisade.run(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&doctor.stdout).expect("doctor --json");
    assert!(
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["area"] == "vault"
                && f["status"] == "ok"
                && f["what"]
                    .as_str()
                    .is_some_and(|w| w.contains("1 running gateway enforces"))),
        "{}",
        output_text(&doctor)
    );
}

/// A head the HTTP server refuses before any phase sees it (a target that is no URI,
/// a head over the size limit) leaves an audit row too, with the agent when the socket
/// names it, and so does a guess at the admin key: a process probing the parser or the
/// admin API is on record.
#[test]
fn a_head_the_server_cannot_parse_and_an_admin_guess_leave_audit_rows() {
    let attack = Attack::start(&[]);
    attack.setup.agent("probe");
    let socket = attack.setup.palisade.home().join("run/agents/probe.sock");
    let mut stream = UnixStream::connect(&socket).expect("connect to the agent socket");
    stream
        .write_all(b"GET http://[unclosed/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send the head");
    let (text, _) = read_some(&mut stream, Duration::from_secs(3));
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    let huge = format!(
        "GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let reply = vault_fixture::raw_exchange(attack.setup.addr(), &huge);
    assert_eq!(reply.status, 431, "{}", reply.body);

    let guess = vault_fixture::raw_exchange(
        attack.setup.addr(),
        "GET /v1/agents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer guess\r\n\r\n",
    );
    assert_eq!(guess.status, 401, "{}", guess.body);
    let guesses = attack.rows("admin_unauthorized", 1);
    assert!(
        guesses.as_array().is_some_and(|rows| rows.len() == 1
            && rows[0]["path"] == "/v1/agents"
            && rows[0]["status"] == 401),
        "{guesses:?}"
    );

    let rows = attack.rows("bad_request", 2);
    let rows = rows.as_array().expect("rows");
    let of = |status: i64| {
        rows.iter()
            .filter(|row| row["status"].as_i64() == Some(status))
            .collect::<Vec<_>>()
    };
    let unparsable = of(400);
    assert!(
        unparsable.len() == 1 && unparsable[0]["agent"] == "probe",
        "{rows:?}"
    );
    assert_eq!(of(431).len(), 1, "{rows:?}");
}

/// Every way a request can end, refusals above all, leaves exactly one audit row with
/// its decision: the gateway writes the row in one place, whatever ended the request.
#[test]
fn every_outcome_leaves_exactly_one_audit_row() {
    let attack = Attack::start(&[
        "--approval-timeout",
        "1s",
        "--max-holds-per-agent",
        "1",
        "--max-judged-body",
        "1KiB",
        "--max-connections-per-agent",
        "2",
        "--upstream-timeout",
        "1s",
    ]);
    let token = attack.setup.agent("probe");
    attack.cli(&["agents", "create", "locked", "--profile", "action"]);
    let locked = attack.setup.token("locked");
    let rules: &[&[&str]] = &[
        &[
            "--name",
            "block",
            "--host-pattern",
            "localhost",
            "--path-pattern",
            "/blocked",
            "--action",
            "block",
        ],
        &[
            "--name",
            "limit",
            "--host-pattern",
            "localhost",
            "--path-pattern",
            "/limited",
            "--action",
            "rate_limit",
            "--rate-limit",
            "1",
            "--rate-window",
            "1h",
        ],
        &[
            "--name",
            "ask",
            "--host-pattern",
            "localhost",
            "--path-pattern",
            "/ask/*",
            "--action",
            "require_approval",
        ],
        &[
            "--name",
            "inspect",
            "--host-pattern",
            "localhost",
            "--path-pattern",
            "/inspect",
            "--body-contains",
            "secret-plan",
            "--action",
            "block",
        ],
    ];
    for rule in rules {
        let mut args = vec!["rules", "create"];
        args.extend_from_slice(rule);
        attack.cli(&args);
    }
    attack
        .setup
        .secret("plain", "api.example.com", None, "bearer", &["probe"], "v");
    attack.setup.secret(
        "tmpl",
        "localhost",
        Some("/tmpl/*"),
        "path-template:/bot{value}/",
        &["probe"],
        "v",
    );
    attack.setup.secret(
        "injected",
        "localhost",
        Some("/keyed"),
        "bearer",
        &["probe"],
        "v",
    );
    let big = "x".repeat(2048);
    let url = |path: &str| attack.url(path);
    let port = attack.setup.upstream.port();

    let mut expected: Vec<&str> = Vec::new();
    let mut check = |decision: &'static str, reply: Option<CurlReply>, status: Option<u16>| {
        if let (Some(reply), Some(status)) = (&reply, status) {
            assert_eq!(reply.status, status, "{decision}: {}", reply.raw);
        }
        expected.push(decision);
    };

    check(
        "injected",
        Some(attack.curl(&token, &[&url("/keyed")])),
        Some(200),
    );
    check(
        "blocked",
        Some(attack.curl(&token, &[&url("/blocked")])),
        Some(403),
    );
    check(
        "default_denied",
        Some(attack.curl(&locked, &["https://unnamed.example/"])),
        Some(403),
    );
    check(
        "ambiguous_path",
        Some(attack.curl(&token, &[&url("/a%2Fb")])),
        Some(400),
    );
    check(
        "local_refused",
        Some(attack.curl(&token, &["http://10.255.255.1/"])),
        Some(403),
    );
    attack.curl(&token, &[&url("/limited")]);
    check(
        "rate_limited",
        Some(attack.curl(&token, &[&url("/limited")])),
        Some(429),
    );
    check(
        "timed_out",
        Some(attack.curl(&token, &[&url("/ask/timeout")])),
        Some(504),
    );
    check(
        "too_large_for_approval",
        Some(attack.curl(&token, &["--data", &big, &url("/ask/large")])),
        Some(413),
    );
    check(
        "too_large_to_inspect",
        Some(attack.curl(&token, &["--data", &big, &url("/inspect")])),
        Some(413),
    );
    check(
        "unsupported_encoding",
        Some(attack.curl(
            &token,
            &[
                "-H",
                "content-encoding: br",
                "--data",
                "x",
                &url("/inspect"),
            ],
        )),
        Some(415),
    );
    check(
        "body_unreadable",
        Some(attack.curl(
            &token,
            &[
                "-H",
                "content-encoding: gzip",
                "--data",
                "not gzip",
                &url("/inspect"),
            ],
        )),
        Some(400),
    );
    check(
        "plaintext_refused",
        Some(attack.curl(&token, &["http://api.example.com/x"])),
        Some(403),
    );
    check(
        "injection_failed",
        Some(attack.curl(&token, &[&url("/tmpl/x")])),
        Some(400),
    );
    let unreachable = attack.curl(&token, &["https://localhost:1/"]);
    // Said with the port and what to check, not only the HTTP client's chain.
    assert!(
        unreachable.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Nothing answered at localhost:1 (connection refused)"),
        "{}",
        unreachable.raw
    );
    check("upstream_unreachable", Some(unreachable), Some(502));
    check(
        "upstream_timeout",
        Some(attack.curl(&token, &[&url("/slow?ms=3000")])),
        Some(504),
    );
    let proxy = format!("http://{}", attack.setup.addr());
    let plain = format!("http://localhost:{port}/no-token");
    let no_token = curl(
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--proxy",
            &proxy,
            &plain,
        ],
        CLIENT_TIMEOUT,
    );
    assert_eq!(String::from_utf8_lossy(&no_token.stdout), "407");
    check("proxy_auth_required", None, None);
    let auth = vault_fixture::base64(format!("x:{token}").as_bytes());
    let bad = vault_fixture::raw_exchange(
        attack.setup.addr(),
        &format!("CONNECT 127.1:443 HTTP/1.1\r\nHost: 127.1:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n"),
    );
    assert_eq!(bad.status, 400);
    check("bad_request", None, None);

    // Approved and denied: a person decides.
    for (path, verb, decision) in [
        ("/ask/approve", "approve", "approved"),
        ("/ask/deny", "deny", "denied"),
    ] {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "--max-time".into(),
            "20".into(),
        ];
        args.extend(attack.setup.proxy_args(&token));
        args.push(url(path));
        let client = std::thread::spawn(move || curl(&args, CLIENT_TIMEOUT));
        let mut held = Vec::new();
        assert!(wait_until(Duration::from_secs(10), || {
            held = attack.pending();
            held.len() == 1
        }));
        attack.cli(&["approvals", verb, held[0]["id"].as_str().unwrap()]);
        let _ = client.join();
        check(decision, None, None);
    }

    // One held, then a second of the same agent: beyond its share of one.
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-o".into(),
        "/dev/null".into(),
        "--max-time".into(),
        "20".into(),
    ];
    args.extend(attack.setup.proxy_args(&token));
    args.push(url("/ask/first"));
    let first = std::thread::spawn(move || curl(&args, CLIENT_TIMEOUT));
    assert!(wait_until(Duration::from_secs(10), || attack
        .pending()
        .len()
        == 1));
    check(
        "too_many_pending_approvals",
        Some(attack.curl(&token, &[&url("/ask/second")])),
        Some(429),
    );
    let _ = first.join();
    check("timed_out", None, None);

    // A client that leaves while its request is held.
    let leaving = Killed(
        Command::new("python3")
            .arg("-c")
            .arg(HOLD_THEN_WAIT_CLIENT)
            .env("PROXY", attack.setup.addr().to_string())
            .env("UPSTREAM_PORT", port.to_string())
            .env("TOKEN", &token)
            .env("VAULT_CA", attack.setup.vault_ca())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
    );
    assert!(wait_until(Duration::from_secs(10), || attack
        .pending()
        .len()
        == 1));
    drop(leaving);
    assert!(wait_until(Duration::from_secs(10), || attack
        .pending()
        .is_empty()));
    check("client_gone", None, None);

    // Beyond the agent's connection share on its socket.
    let socket = attack.setup.palisade.home().join("run/agents/probe.sock");
    let _held: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let mut third = UnixStream::connect(&socket).unwrap();
    let (text, _) = read_some(&mut third, Duration::from_secs(3));
    assert!(text.contains("too_many_connections"), "{text}");
    check("too_many_connections", None, None);

    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let settled = wait_until(Duration::from_secs(10), || {
        counts.clear();
        for row in attack
            .json(&["audit", "list", "--event", "request", "--limit", "10000"])
            .as_array()
            .unwrap()
        {
            *counts
                .entry(row["decision"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        expected.iter().all(|d| counts.contains_key(*d))
    });
    assert!(settled, "missing rows: {expected:?} vs {counts:?}");
    std::thread::sleep(Duration::from_millis(300));
    let mut wanted = std::collections::BTreeMap::<String, usize>::new();
    for decision in &expected {
        *wanted.entry(decision.to_string()).or_default() += 1;
    }
    // `allowed` requests are not audited; the rate limit's first request was one.
    counts.remove("allowed");
    assert_eq!(counts, wanted, "one row per outcome");
}

/// A WebSocket handshake has no body: one that carries a body (here the text of another
/// request) is refused, since the body would go upstream as the handshake's and a
/// server that upgrades anyway would read it as frames the agent-side check never saw.
#[test]
fn a_websocket_handshake_with_a_body_is_refused() {
    let attack = Attack::start(&[]);
    let token = attack.setup.agent("probe");
    let before = attack.setup.upstream.count();
    let reply = attack.curl(
        &token,
        &[
            "--http1.1",
            "-X",
            "GET",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "--data",
            "GET /admin/x HTTP/1.1",
            &attack.url("/ws"),
        ],
    );
    assert_eq!(reply.status, 400, "{}", reply.raw);
    assert!(reply.body.contains("carries a body"), "{}", reply.raw);
    assert_eq!(attack.setup.upstream.count(), before, "it went upstream");
}
