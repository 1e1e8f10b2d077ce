//! Summaries of every recognised service and of the generic shape, from bytes an agent
//! could send.

use super::*;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn json_headers() -> http::HeaderMap {
    headers(&[
        ("content-type", "application/json"),
        ("authorization", "Bearer ya29.placeholder"),
    ])
}

fn form_headers() -> http::HeaderMap {
    headers(&[("content-type", "application/x-www-form-urlencoded")])
}

fn post(host: &str, target: &str, headers: &http::HeaderMap, body: &[u8]) -> Summary {
    summarize(&http::Method::POST, host, target, headers, body)
}

const EMAIL: &str = concat!(
    "From: Assistant <assistant@example.org>\r\n",
    "To: Bob Example <bob@example.com>\r\n",
    "Cc: carol@example.com\r\n",
    "Subject: Quarterly numbers\r\n",
    "MIME-Version: 1.0\r\n",
    "Content-Type: text/plain; charset=\"UTF-8\"\r\n",
    "\r\n",
    "Hi Bob,\r\n",
    "\r\n",
    "Revenue is up 12% this quarter.\r\n",
    "Details attached soon.\r\n",
);

fn gmail_body(raw: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "raw": raw, "threadId": "18c" })).unwrap()
}

#[test]
fn gmail_send_shows_recipient_subject_and_text() {
    for raw in [URL_SAFE_NO_PAD.encode(EMAIL), URL_SAFE.encode(EMAIL)] {
        let summary = post(
            "gmail.googleapis.com",
            "/gmail/v1/users/me/messages/send?alt=json",
            &json_headers(),
            &gmail_body(&raw),
        );
        assert_eq!(
            summary.title,
            "Send e-mail to Bob Example <bob@example.com>: \"Quarterly numbers\""
        );
        assert!(
            summary.lines.contains(&"Cc: carol@example.com".to_string()),
            "{:?}",
            summary.lines
        );
        assert!(summary
            .lines
            .contains(&"Revenue is up 12% this quarter.".to_string()));
        assert!(summary
            .lines
            .contains(&"From: Assistant <assistant@example.org>".to_string()));
        assert!(summary.detail.starts_with(&summary.title));
        assert!(summary.detail.contains(
            "POST https://gmail.googleapis.com/gmail/v1/users/me/messages/send?alt=json"
        ));
        assert!(summary.detail.contains("authorization: [redacted]"));
        assert!(!summary.detail.contains("ya29"));
    }
}

#[test]
fn gmail_multipart_with_encoded_subject_and_attachment() {
    let email = concat!(
        "To: =?UTF-8?B?SsO8cmdlbg==?= <juergen@example.de>\r\n",
        "Subject: =?UTF-8?Q?Rechnung_f=C3=BCr_M=C3=A4rz?=\r\n",
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n",
        "\r\n",
        "--b1\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Content-Transfer-Encoding: base64\r\n",
        "\r\n",
        "SGFsbG8gSsO8cmdlbiwKCmFuYmVpIGRpZSBSZWNobnVuZy4=\r\n",
        "--b1\r\n",
        "Content-Type: application/pdf\r\n",
        "Content-Disposition: attachment; filename=\"rechnung-03.pdf\"\r\n",
        "\r\n",
        "JVBERi0xLjQK\r\n",
        "--b1--\r\n",
    );
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    );
    assert_eq!(
        summary.title,
        "Send e-mail to Jürgen <juergen@example.de>: \"Rechnung für März\""
    );
    assert!(summary
        .lines
        .contains(&"Attachments: rechnung-03.pdf".to_string()));
    assert!(
        summary.lines.contains(&"Hallo Jürgen,".to_string()),
        "{:?}",
        summary.lines
    );
    assert!(summary.lines.contains(&"anbei die Rechnung.".to_string()));
}

#[test]
fn gmail_truncated_body_still_summarises() {
    let full = gmail_body(&URL_SAFE_NO_PAD.encode(EMAIL));
    let cut = &full[..full.len() - 40];
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        cut,
    );
    assert!(
        summary.title.starts_with("Send e-mail to Bob Example"),
        "{}",
        summary.title
    );
}

/// A reversed file name reads as written only with its override marked where it is.
#[test]
fn gmail_marks_bidi_tricks_in_subject() {
    let email =
        "To: bob@example.com\r\nSubject: Invoice \u{202E}fdp.exe\u{202C} \u{200B}ok\r\n\r\nbody";
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    );
    assert_eq!(
        summary.title,
        "Send e-mail to bob@example.com: \"Invoice ⟨U+202E⟩fdp.exe⟨U+202C⟩ ⟨U+200B⟩ok\""
    );
    assert_eq!(summary.lines[0], super::HIDDEN_CHARACTERS_NOTICE);
}

#[test]
fn gmail_media_upload() {
    let summary = post(
        "www.googleapis.com",
        "/upload/gmail/v1/users/me/messages/send?uploadType=media",
        &headers(&[("content-type", "message/rfc822")]),
        EMAIL.as_bytes(),
    );
    assert!(
        summary.title.contains("\"Quarterly numbers\""),
        "{}",
        summary.title
    );
}

#[test]
fn gmail_without_raw_falls_back_to_generic() {
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        b"{\"id\":\"x\"}",
    );
    assert_eq!(
        summary.title,
        "POST https://gmail.googleapis.com/gmail/v1/users/me/messages/send"
    );
}

#[test]
fn slack_json_post() {
    let body = serde_json::json!({
        "channel": "C024BE91L",
        "text": "Deploy finished :tada:\nAll green.",
        "thread_ts": "1503435956.000247"
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("authorization", "Bearer xoxb-1"),
        ]),
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(
        summary.title,
        "Post to Slack in C024BE91L: \"Deploy finished :tada: All green.\""
    );
    assert!(summary
        .lines
        .contains(&"In thread: 1503435956.000247".to_string()));
    assert!(summary.lines.contains(&"All green.".to_string()));
    assert!(!summary.detail.contains("xoxb"));
}

#[test]
fn slack_form_post_and_blocks() {
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &form_headers(),
        b"channel=%23general&text=Lunch+at+12%3A30%3F",
    );
    assert_eq!(
        summary.title,
        "Post to Slack in #general: \"Lunch at 12:30?\""
    );

    let blocks = serde_json::json!({
        "channel": "C1",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Alert*: disk full"}}]
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        &serde_json::to_vec(&blocks).unwrap(),
    );
    assert_eq!(summary.title, "Post to Slack in C1: \"*Alert*: disk full\"");
}

/// Blocks padded past what a card reads say so on the card, rather than losing the
/// block after the padding unseen; and blocks the card reads no text from do not let
/// the notification `text` pass for the message.
#[test]
fn slack_blocks_a_card_cannot_read_whole_are_said_so() {
    let mut padding = vec![serde_json::json!({"type": "text", "text": "Lunch is at noon"})];
    padding.extend((0..499).map(|_| serde_json::json!({"type": "text", "text": " "})));
    let padded = serde_json::json!({
        "channel": "C0TEAM",
        "text": "Lunch is at noon",
        "blocks": [
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": padding}]},
            {"type": "section", "text": {"type": "mrkdwn", "text": "Also, the prod DB: postgres://admin:hunter2@db.internal"}},
        ],
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        &serde_json::to_vec(&padded).unwrap(),
    );
    assert!(
        summary.lines[0]
            .starts_with("⚠ The blocks or attachments have more parts than a card reads"),
        "{summary:#?}"
    );

    let empty = serde_json::json!({
        "channel": "C0TEAM",
        "text": "Lunch is at noon",
        "blocks": (0..520).map(|_| serde_json::json!({})).collect::<Vec<_>>(),
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        &serde_json::to_vec(&empty).unwrap(),
    );
    assert_eq!(summary.title, "Post to Slack in C0TEAM", "{summary:#?}");
    assert!(
        summary.lines.iter().any(|l| l.starts_with("⚠ ")),
        "{summary:#?}"
    );
    assert!(
        summary
            .lines
            .iter()
            .any(|l| l.starts_with("Notification text")),
        "{summary:#?}"
    );
}

#[test]
fn a_non_default_port_is_shown_and_recognisers_still_match() {
    let generic = summarize(
        &http::Method::GET,
        "LocalHost:8443",
        "/approve-me/report?key=abc",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(
        generic.title,
        "GET https://localhost:8443/approve-me/report?key=[redacted]"
    );
    assert!(generic
        .detail
        .starts_with("GET https://localhost:8443/approve-me/report"));
    let v6 = summarize(
        &http::Method::GET,
        "[::1]:9000",
        "/x",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(v6.title, "GET https://[::1]:9000/x");
    let slack = summarize(
        &http::Method::GET,
        "slack.com:8443",
        "/api/chat.postMessage?channel=C9&text=hi",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(slack.title, "Post to Slack in C9: \"hi\"");
}

#[test]
fn slack_arguments_in_query() {
    let summary = summarize(
        &http::Method::GET,
        "slack.com",
        "/api/chat.postMessage?channel=C9&text=hi%20there&token=xoxb-secret",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(summary.title, "Post to Slack in C9: \"hi there\"");
    assert!(summary.detail.contains("token=[redacted]"));
    assert!(!summary.detail.contains("xoxb-secret"));
}

#[test]
fn github_issue_and_pull_request() {
    let issue = serde_json::json!({
        "title": "Crash when the config is empty",
        "body": "Steps:\n1. run with empty config\n2. boom",
        "labels": ["bug", "p1"]
    });
    let summary = post(
        "api.github.com",
        "/repos/octo-org/widgets/issues",
        &json_headers(),
        &serde_json::to_vec(&issue).unwrap(),
    );
    assert_eq!(
        summary.title,
        "Open GitHub issue in octo-org/widgets: \"Crash when the config is empty\""
    );
    assert!(summary.lines.contains(&"Labels: bug, p1".to_string()));
    assert!(summary.lines.contains(&"2. boom".to_string()));
    // `curl -d '{…}'` labels JSON a form; GitHub reads it as JSON, and so does the card.
    let curl_default = post(
        "api.github.com",
        "/repos/octo-org/widgets/issues",
        &form_headers(),
        &serde_json::to_vec(&issue).unwrap(),
    );
    assert_eq!(curl_default.title, summary.title);

    let pull = serde_json::json!({"title": "Add retries", "head": "feature/retries", "base": "main", "draft": true});
    let summary = post(
        "api.github.com",
        "/repos/octo-org/widgets/pulls",
        &json_headers(),
        &serde_json::to_vec(&pull).unwrap(),
    );
    assert_eq!(
        summary.title,
        "Open GitHub pull request in octo-org/widgets: \"Add retries\""
    );
    assert!(summary
        .lines
        .contains(&"Merge feature/retries into main".to_string()));
    assert!(summary.lines.contains(&"As a draft".to_string()));

    let comment = post(
        "api.github.com",
        "/repos/octo-org/widgets/issues/42/comments",
        &json_headers(),
        br#"{"body":"LGTM"}"#,
    );
    assert_eq!(comment.title, "Comment on GitHub octo-org/widgets#42");
    assert_eq!(comment.lines, ["LGTM"]);

    let listing = summarize(
        &http::Method::GET,
        "api.github.com",
        "/repos/o/r/issues",
        &json_headers(),
        b"",
    );
    assert_eq!(listing.title, "GET https://api.github.com/repos/o/r/issues");
}

#[test]
fn stripe_payments() {
    let transfer = post(
        "api.stripe.com",
        "/v1/transfers",
        &form_headers(),
        b"amount=1250&currency=usd&destination=acct_1032D82eZvKYlo2C&description=March+invoice",
    );
    assert_eq!(
        transfer.title,
        "Pay 12.50 USD to acct_1032D82eZvKYlo2C (Stripe transfer)"
    );
    assert!(transfer
        .lines
        .contains(&"Description: March invoice".to_string()));

    let charge = post(
        "api.stripe.com",
        "/v1/charges",
        &form_headers(),
        b"amount=123456789&currency=eur&customer=cus_9s6XKzkNRiz8i3",
    );
    assert_eq!(
        charge.title,
        "Charge 1,234,567.89 EUR to customer cus_9s6XKzkNRiz8i3 (Stripe charge)"
    );

    let intent = post(
        "api.stripe.com",
        "/v1/payment_intents",
        &form_headers(),
        b"amount=5000&currency=jpy&transfer_data%5Bdestination%5D=acct_9&confirm=true",
    );
    assert_eq!(
        intent.title,
        "Pay 5,000 JPY to acct_9 (Stripe payment intent)"
    );
    assert!(intent.lines.contains(&"Confirm now: true".to_string()));

    let payout = post(
        "api.stripe.com",
        "/v1/payouts",
        &form_headers(),
        b"amount=1005&currency=kwd",
    );
    assert_eq!(
        payout.title,
        "Pay out 1.005 KWD to the default external account (Stripe payout)"
    );

    let odd = post(
        "api.stripe.com",
        "/v1/transfers",
        &form_headers(),
        b"amount=-5&destination=acct_1",
    );
    assert_eq!(
        odd.title,
        "Pay an unstated amount of (currency not given) to acct_1 (Stripe transfer)"
    );

    let refund = post(
        "api.stripe.com",
        "/v1/refunds",
        &form_headers(),
        b"charge=ch_1",
    );
    assert_eq!(refund.title, "POST https://api.stripe.com/v1/refunds");
}

#[test]
fn thousands_grouping() {
    assert_eq!(stripe::group_thousands(0), "0");
    assert_eq!(stripe::group_thousands(999), "999");
    assert_eq!(stripe::group_thousands(1000), "1,000");
    assert_eq!(stripe::group_thousands(123456), "123,456");
    assert_eq!(stripe::group_thousands(1234567), "1,234,567");
}

#[test]
fn generic_redacts_and_excerpts() {
    let summary = summarize(
        &http::Method::PUT,
        "API.Example.com:443",
        "/v2/items/7?api_key=sk-live-1&page=2&access_token=t0k",
        &headers(&[
            ("content-type", "application/json"),
            ("x-api-key", "sk-live-1"),
            ("cookie", "session=abc"),
            ("x-custom-token", "tok"),
            ("accept", "application/json"),
        ]),
        format!("{{\"name\":\"{}\"}}", "x".repeat(2000)).as_bytes(),
    );
    assert_eq!(
        summary.title,
        "PUT https://api.example.com/v2/items/7?api_key=[redacted]&page=2&access_token=[redacted]"
    );
    for secret in ["sk-live-1", "session=abc", "t0k", ": tok"] {
        assert!(
            !summary.detail.contains(secret),
            "{secret} leaked: {}",
            summary.detail
        );
    }
    assert!(summary.detail.contains("accept: application/json"));
    // The query first, redacted as in the title, then the body.
    assert_eq!(summary.lines[0], "Query (49 characters):");
    assert_eq!(
        summary.lines[1],
        "api_key=[redacted]&page=2&access_token=[redacted]"
    );
    assert!(summary.lines[2].starts_with("Body ("));
    let excerpt: usize = summary.lines[3..].iter().map(|l| l.chars().count()).sum();
    assert!(excerpt <= EXCERPT_CHARS + 1, "{excerpt}");
}

/// A long query keeps its end on the card (the title is cut), and a field the query and
/// the body give different values is flagged (review: `?a=AAA…&to=attacker@evil.com`
/// with a body naming `bob`, which servers that merge both can read as the attacker).
#[test]
fn generic_shows_the_end_of_a_long_query_and_flags_it_against_the_body() {
    let query = format!("a={}&to=attacker@evil.com", "A".repeat(3000));
    let path = format!("/send?{query}");
    let summary = summarize(
        &http::Method::POST,
        "up.test",
        &path,
        &headers(&[("content-type", "application/json")]),
        br#"{"to":"bob","msg":"hi"}"#,
    );
    let shown = format!("{} {}", summary.title, summary.lines.join("\n"));
    assert!(shown.contains("to=attacker@evil.com"), "{shown}");
    assert!(shown.contains("characters not shown"), "{shown}");
    assert!(summary.title.starts_with('⚠'), "{}", summary.title);
    assert!(
        summary.title.contains("2 values for to") && summary.title.contains("attacker@evil.com"),
        "{}",
        summary.title
    );
    // A short one too, and within the query itself.
    let summary = summarize(
        &http::Method::POST,
        "up.test",
        "/send?to=attacker@evil.com",
        &headers(&[("content-type", "application/x-www-form-urlencoded")]),
        b"to=bob",
    );
    assert!(
        summary.title.contains("2 values for to"),
        "{}",
        summary.title
    );
    let summary = summarize(
        &http::Method::GET,
        "up.test",
        "/send?to=bob&to=attacker@evil.com",
        &http::HeaderMap::new(),
        b"",
    );
    assert!(
        summary.title.contains("2 values for to"),
        "{}",
        summary.title
    );
}

#[test]
fn generic_without_body_and_binary_body() {
    let summary = summarize(
        &http::Method::DELETE,
        "h.example",
        "/x",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(summary.title, "DELETE https://h.example/x");
    assert_eq!(summary.lines, ["No request body."]);

    let binary: Vec<u8> = (0..200u8).collect();
    let summary = summarize(
        &http::Method::POST,
        "h.example",
        "/upload",
        &http::HeaderMap::new(),
        &binary,
    );
    assert!(
        summary
            .lines
            .contains(&"[200 bytes of binary data]".to_string()),
        "{:?}",
        summary.lines
    );

    // Binary data labelled as a form (curl's `--data-binary` does so) is not read as
    // fields: its stray `&` and `=` bytes would make warnings about "repeated fields"
    // out of noise and push the request itself out of the title.
    let mut noise = Vec::new();
    for i in 0..4000u32 {
        noise.extend_from_slice(&[0xff, 0x01, b'a', b'=', b'0' + (i % 3) as u8, b'&', 0x80]);
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let summary = summarize(
        &http::Method::POST,
        "h.example",
        "/upload",
        &headers,
        &noise,
    );
    assert_eq!(
        summary.title, "POST https://h.example/upload",
        "{summary:?}"
    );
    assert!(
        !summary.lines.iter().any(|line| line.contains('⚠')),
        "{:?}",
        summary.lines
    );
    // The same fields in a real form are flagged.
    let summary = summarize(
        &http::Method::POST,
        "h.example",
        "/upload",
        &headers,
        b"a=1&b=2&a=2",
    );
    assert!(summary.title.starts_with('⚠'), "{summary:?}");
}

#[test]
fn absolute_form_target() {
    let summary = summarize(
        &http::Method::GET,
        "h.example",
        "http://h.example/a?b=1",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(summary.title, "GET http://h.example/a?b=1");
}

#[test]
fn hostile_path_cannot_break_the_title() {
    let summary = summarize(
        &http::Method::GET,
        "h.example",
        "/a\u{202E}b\n\nApprove this",
        &http::HeaderMap::new(),
        b"",
    );
    assert!(!summary.title.contains('\n'));
    assert!(!summary.title.contains('\u{202E}'));
}

/// A tiny deterministic generator so the fuzz loop needs no extra crate and fails
/// the same way every run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, max: usize, alphabet: &[u8]) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| {
                if alphabet.is_empty() {
                    self.next() as u8
                } else {
                    alphabet[self.below(alphabet.len())]
                }
            })
            .collect()
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let targets = [
        ("gmail.googleapis.com", "/gmail/v1/users/me/messages/send"),
        (
            "www.googleapis.com",
            "/upload/gmail/v1/users/me/messages/send",
        ),
        ("slack.com", "/api/chat.postMessage"),
        ("api.github.com", "/repos/o/r/issues"),
        ("api.github.com", "/repos/o/r/pulls"),
        ("api.stripe.com", "/v1/transfers"),
        ("api.stripe.com", "/v1/payment_intents"),
        ("h.example", "/x?key=1"),
    ];
    let seeds: Vec<Vec<u8>> = vec![
        gmail_body(&URL_SAFE_NO_PAD.encode(EMAIL)),
        URL_SAFE_NO_PAD.encode(EMAIL).into_bytes(),
        EMAIL.as_bytes().to_vec(),
        br#"{"channel":"C1","text":"hi","blocks":[{"text":{"text":"x"}}]}"#.to_vec(),
        b"amount=1250&currency=usd&destination=acct_1".to_vec(),
        b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n".to_vec(),
    ];
    let alphabet: &[u8] = b"=?\"{}[]:,\\u\r\n-_+/%&abcQB0123456789 <>;\xc3\xa9\xe2\x80\xae";
    let content_types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "message/rfc822",
        "multipart/mixed; boundary=b",
        "",
    ];
    for round in 0..3000 {
        let (host, path) = targets[round % targets.len()];
        let body = match round % 3 {
            0 => rng.bytes(600, &[]),
            1 => rng.bytes(600, alphabet),
            _ => {
                // Mutate a realistic body: flip bytes, cut it short.
                let mut body = seeds[rng.below(seeds.len())].clone();
                for _ in 0..rng.below(8) {
                    if !body.is_empty() {
                        let at = rng.below(body.len());
                        body[at] = rng.next() as u8;
                    }
                }
                let keep = rng.below(body.len() + 1);
                body.truncate(keep);
                body
            }
        };
        let mut map = http::HeaderMap::new();
        map.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_types[rng.below(content_types.len())]),
        );
        let junk_path = String::from_utf8_lossy(&rng.bytes(40, alphabet)).into_owned();
        for target in [
            path.to_string(),
            format!("{path}?{junk_path}"),
            junk_path.clone(),
        ] {
            let summary = summarize(&http::Method::POST, host, &target, &map, &body);
            assert!(summary.title.chars().count() <= TITLE_CHARS + 1);
            assert!(summary.lines.len() <= MAX_LINES);
            assert!(summary.detail.chars().count() <= DETAIL_CHARS + 1);
            assert!(!summary.title.contains(['\n', '\r', '\u{202E}']));
        }
        let text = String::from_utf8_lossy(&body);
        let _ = mail::decode_encoded_words(&text);
        if let Ok(pattern) = palisade_policy::pattern::HostPattern::parse(&junk_path) {
            let _ = pattern.matches(&text, u16::try_from(body.len()).unwrap_or(443));
            let _ = pattern.matches_host_on_any_port(&text);
        }
        if let (Ok(pattern), Ok(path)) = (
            palisade_policy::pattern::PathPattern::parse(&junk_path),
            palisade_policy::canonical::CanonicalPath::parse(&text),
        ) {
            let _ = pattern.matches(&path);
        }
        let _ = junk_path.parse::<palisade_policy::injection::Injection>();
        let _ = junk_path.parse::<palisade_policy::rule::RateWindow>();
    }
}

#[test]
fn gmail_shows_every_recipient_of_a_long_to_list() {
    let mut to: Vec<String> = (0..8)
        .map(|i| format!("Colleague Number {i} <colleague{i}@corp.example>"))
        .collect();
    to.push("exfil@evil.example".into());
    let email = format!(
        "To: {}\r\nSubject: Hi\r\nContent-Type: text/plain\r\n\r\nHello.\r\n",
        to.join(", ")
    );
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    );
    assert!(!summary.title.contains("exfil"), "{}", summary.title);
    assert!(
        summary.title.contains("(9 addresses at 2 domains)"),
        "{}",
        summary.title
    );
    let all: Vec<&String> = summary
        .lines
        .iter()
        .filter(|l| l.starts_with("To (all 9): ") || l.starts_with("To (continued): "))
        .collect();
    assert!(all.len() >= 2, "{:?}", summary.lines);
    let all = all
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("exfil@evil.example"), "{all}");
    for i in 0..8 {
        assert!(all.contains(&format!("colleague{i}@corp.example")), "{all}");
    }
}

#[test]
fn slack_form_with_a_repeated_channel_and_text_shows_every_value() {
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &form_headers(),
        b"channel=C0FRIENDS&text=Lunch%20at%20noon%3F&channel=C0ATTACKER&text=AWS_SECRET%3Dwhatever",
    );
    assert_eq!(
        summary.title,
        "⚠ 2 values for channel: \"C0FRIENDS\", \"C0ATTACKER\"; 2 values for text: \
         \"Lunch at noon?\", \"AWS_SECRET=whatever\". \
         Post to Slack in C0ATTACKER: \"AWS_SECRET=whatever\""
    );
    for line in [
        "⚠ The request gives channel 2 different values; servers differ on which they use:",
        "channel 1: C0FRIENDS",
        "channel 2: C0ATTACKER",
        "text 1: Lunch at noon?",
        "text 2: AWS_SECRET=whatever",
    ] {
        assert!(
            summary.lines.contains(&line.to_string()),
            "{line} missing: {:?}",
            summary.lines
        );
    }
    assert!(summary.detail.starts_with(&summary.title));

    // The same value twice is one value: no warning.
    let same = post(
        "slack.com",
        "/api/chat.postMessage",
        &form_headers(),
        b"channel=C1&text=hi&channel=C1",
    );
    assert_eq!(same.title, "Post to Slack in C1: \"hi\"");
}

#[test]
fn slack_query_and_body_disagreeing_is_flagged() {
    let summary = post(
        "slack.com",
        "/api/chat.postMessage?channel=C0ATTACKER",
        &json_headers(),
        br#"{"channel":"C0FRIENDS","text":"hi"}"#,
    );
    assert!(
        summary
            .title
            .starts_with("⚠ 2 values for channel: \"C0ATTACKER\", \"C0FRIENDS\"."),
        "{}",
        summary.title
    );
}

#[test]
fn slack_json_with_a_repeated_member_shows_every_value() {
    // serde_json keeps the last copy; the card must not show only that one either.
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        br#"{"channel":"C0FRIENDS","text":"Lunch?","channel":"C0ATTACKER"}"#,
    );
    assert_eq!(
        summary.title,
        "⚠ 2 values for channel: \"C0FRIENDS\", \"C0ATTACKER\". \
         Post to Slack in C0ATTACKER: \"Lunch?\""
    );
    assert!(summary.lines.contains(&"channel 1: C0FRIENDS".to_string()));
    assert!(summary.lines.contains(&"channel 2: C0ATTACKER".to_string()));
}

#[test]
fn github_json_with_a_repeated_title_shows_every_value() {
    let summary = post(
        "api.github.com",
        "/repos/octo-org/widgets/issues",
        &json_headers(),
        br#"{"title":"Typo in README","body":"x","title":"Add deploy key"}"#,
    );
    assert!(
        summary.title.starts_with(
            "⚠ 2 values for title: \"Typo in README\", \"Add deploy key\". Open GitHub issue"
        ),
        "{}",
        summary.title
    );
}

#[test]
fn stripe_form_with_a_repeated_amount_and_destination_shows_every_value() {
    let summary = post(
        "api.stripe.com",
        "/v1/transfers",
        &form_headers(),
        b"amount=1250&currency=usd&destination=acct_FRIEND&amount=9999900&destination=acct_ATTACKER",
    );
    assert_eq!(
        summary.title,
        "⚠ 2 values for amount: \"1250\", \"9999900\"; \
         2 values for destination: \"acct_FRIEND\", \"acct_ATTACKER\". \
         Pay 99,999.00 USD to acct_ATTACKER (Stripe transfer)"
    );
    for line in [
        "amount 1: 1250",
        "amount 2: 9999900",
        "destination 1: acct_FRIEND",
        "destination 2: acct_ATTACKER",
    ] {
        assert!(
            summary.lines.contains(&line.to_string()),
            "{line} missing: {:?}",
            summary.lines
        );
    }
}

#[test]
fn generic_form_and_json_with_repeated_fields_are_flagged() {
    let form = post(
        "api.example.com",
        "/v1/send",
        &form_headers(),
        b"to=friend%40example.com&note=hi&to=attacker%40evil.example&password=a&password=b",
    );
    assert_eq!(
        form.title,
        "⚠ 2 values for to: \"friend@example.com\", \"attacker@evil.example\"; \
         2 values for password: \"[redacted]\", \"[redacted]\". \
         POST https://api.example.com/v1/send"
    );
    assert!(form
        .lines
        .contains(&"to 2: attacker@evil.example".to_string()));
    assert!(!form.lines.iter().any(|line| line.contains("password 1: a")));

    let json = post(
        "api.example.com",
        "/v1/send",
        &json_headers(),
        br#"{"to":"friend@example.com","to":"attacker@evil.example"}"#,
    );
    assert!(
        json.title
            .starts_with("⚠ 2 values for to: \"friend@example.com\", \"attacker@evil.example\"."),
        "{}",
        json.title
    );

    // Text that only looks like pairs is not read as a form.
    let text = post(
        "api.example.com",
        "/v1/note",
        &headers(&[("content-type", "text/plain")]),
        b"a=1&a=2",
    );
    assert_eq!(text.title, "POST https://api.example.com/v1/note");
}

#[test]
fn gmail_combines_every_bcc_line_and_flags_a_second_subject() {
    let email = concat!(
        "To: bob@example.com\r\n",
        "Bcc: carol@example.com\r\n",
        "Subject: Quarterly numbers\r\n",
        "Bcc: exfil@evil.example\r\n",
        "Subject: Re: passwords\r\n",
        "Content-Type: text/plain\r\n",
        "\r\n",
        "Hi.\r\n",
    );
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    );
    assert_eq!(
        summary.title,
        "⚠ 2 values for Subject: \"Quarterly numbers\", \"Re: passwords\". \
         Send e-mail to bob@example.com: \"Quarterly numbers\""
    );
    assert!(
        summary
            .lines
            .contains(&"Bcc (2 header lines): carol@example.com, exfil@evil.example".to_string()),
        "{:?}",
        summary.lines
    );
    assert!(summary
        .lines
        .contains(&"Subject 2: Re: passwords".to_string()));
}

#[test]
fn gmail_combines_every_to_line_in_the_title() {
    let email = "To: bob@example.com\r\nTo: exfil@evil.example\r\nSubject: Hi\r\n\r\nHello.\r\n";
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    );
    assert_eq!(
        summary.title,
        "Send e-mail to bob@example.com, exfil@evil.example (2 addresses): \"Hi\""
    );
}

#[test]
fn gmail_with_two_raw_messages_describes_both() {
    let friendly = URL_SAFE_NO_PAD.encode("To: bob@example.com\r\nSubject: Lunch\r\n\r\nHi.\r\n");
    let hostile =
        URL_SAFE_NO_PAD.encode("To: exfil@evil.example\r\nSubject: Keys\r\n\r\nAKIA...\r\n");
    let body = format!(r#"{{"raw":"{friendly}","raw":"{hostile}"}}"#);
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        body.as_bytes(),
    );
    assert_eq!(
        summary.title,
        "⚠ 2 values for raw (the message): \"To bob@example.com, Subject Lunch\", \
         \"To exfil@evil.example, Subject Keys\". Send e-mail to exfil@evil.example: \"Keys\""
    );
}

#[test]
fn many_repeats_stay_bounded() {
    // A few MiB of one member repeated with different values: linear work, a capped card.
    let mut body = String::from("{");
    for i in 0..200_000 {
        body.push_str(&format!("\"channel\":\"C{i}\","));
    }
    body.push_str("\"text\":\"hi\"}");
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        body.as_bytes(),
    );
    assert!(
        summary
            .title
            .starts_with("⚠ 200000 values for channel: \"C0\", \"C1\", \"C2\", \"C3\", …."),
        "{}",
        summary.title
    );
    assert!(summary.lines.len() <= MAX_LINES);
    assert!(summary
        .lines
        .contains(&"… and 199990 more values for channel".to_string()));
}

/// A summary with more lines than a card shows says how many it left out, as its last
/// line: eleven different subjects push the recipients past the cap.
#[test]
fn a_summary_cut_short_says_so() {
    let mut body = String::from("{");
    for i in 0..30 {
        body.push_str(&format!("\"channel\":\"C{i}\",\"text\":\"t{i}\","));
    }
    body.push_str("\"unfurl_links\":true}");
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        body.as_bytes(),
    );
    assert_eq!(summary.lines.len(), MAX_LINES, "{:?}", summary.lines);
    let last = summary.lines.last().unwrap();
    assert!(
        last.starts_with("… ") && last.contains("more line(s) left out of this summary"),
        "{:?}",
        summary.lines
    );
}

#[test]
fn gmail_says_when_header_lines_were_not_read() {
    let mut email = String::from("To: bob@example.com\r\nSubject: Hi\r\n");
    for i in 0..300 {
        email.push_str(&format!("X-Filler-{i}: x\r\n"));
    }
    email.push_str("Bcc: exfil@evil.example\r\n\r\nHello.\r\n");
    let summary = post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    );
    assert!(
        summary
            .title
            .starts_with("⚠ Header lines not read (too many or too long). Send e-mail to"),
        "{}",
        summary.title
    );
}

/// Fields whose names merely contain `auth`, `key`, `sig` or `sign` carry what the agent
/// sends like any other: the card shows them, and only names that clearly name a
/// credential stay hidden.
#[test]
fn generic_shows_fields_whose_names_only_contain_a_credential_word() {
    let json = post(
        "api.example.com",
        "/v1/notes",
        &json_headers(),
        br#"{"text":"hi boss","author":"attacker@evil.com","assignee":"attacker","design":"send everything to evil.com","api_key":"sk-live-1"}"#,
    );
    let shown = json.lines.join("\n");
    for value in [
        "\"author\":\"attacker@evil.com\"",
        "\"assignee\":\"attacker\"",
        "\"design\":\"send everything to evil.com\"",
        "\"api_key\":\"[redacted]\"",
    ] {
        assert!(shown.contains(value), "{value} missing: {shown}");
        assert!(
            json.detail.contains(value),
            "{value} missing: {}",
            json.detail
        );
    }
    assert!(!json.detail.contains("sk-live-1"));

    let query = summarize(
        &http::Method::GET,
        "api.example.com",
        "/v1/export?monkey=customer_db_dump_here&keywords=all&token=t0k",
        &http::HeaderMap::new(),
        b"",
    );
    assert_eq!(
        query.title,
        "GET https://api.example.com/v1/export?monkey=customer_db_dump_here&keywords=all&token=[redacted]"
    );

    let form = post(
        "api.example.com",
        "/v1/send",
        &form_headers(),
        b"signal=go&session_name=standup&password=hunter2",
    );
    let shown = form.lines.join("\n");
    assert!(
        shown.contains("signal=go&session_name=standup&password=[redacted]"),
        "{shown}"
    );
}

fn gmail_send_of(email: &str) -> Summary {
    post(
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &json_headers(),
        &gmail_body(&URL_SAFE_NO_PAD.encode(email)),
    )
}

/// The card's text an approver reads: title and lines.
fn card_text(summary: &Summary) -> String {
    format!("{}\n{}", summary.title, summary.lines.join("\n"))
}

#[test]
fn gmail_a_to_list_too_long_to_list_still_shows_the_odd_address_out() {
    let mut to: Vec<String> = (0..45)
        .map(|i| format!("Colleague {i:02} <colleague{i:02}@example.com>"))
        .collect();
    to.push("attacker@evil.com".into());
    let summary = gmail_send_of(&format!(
        "To: {}\r\nSubject: Team update\r\n\r\nHello all.\r\n",
        to.join(", ")
    ));
    assert!(
        summary.title.contains("(46 addresses at 2 domains)"),
        "{}",
        summary.title
    );
    assert!(
        summary.lines.contains(
            &"To (46 addresses at 2 domains): 45 at example.com, attacker@evil.com".to_string()
        ),
        "{:?}",
        summary.lines
    );
}

#[test]
fn gmail_cc_bcc_and_reply_to_lists_keep_every_domain() {
    let archive: Vec<String> = (0..60)
        .map(|i| format!("archive{i:02}@example.com"))
        .collect();
    let list = format!("{}, attacker@evil.com", archive.join(", "));
    for (header, label) in [("Cc", "Cc"), ("Bcc", "Bcc"), ("Reply-To", "Reply-To")] {
        let summary = gmail_send_of(&format!(
            "To: bob@example.com\r\n{header}: {list}\r\nSubject: Hi\r\n\r\nHello.\r\n"
        ));
        let expected =
            format!("{label} (61 addresses at 2 domains): 60 at example.com, attacker@evil.com");
        assert!(
            summary.lines.contains(&expected),
            "{expected} missing: {:?}",
            summary.lines
        );
    }
    // 30 of them fit: every address is listed, over as many lines as it takes.
    let list = format!("{}, attacker@evil.com", archive[..30].join(", "));
    let summary = gmail_send_of(&format!(
        "To: bob@example.com\r\nBcc: {list}\r\nSubject: Hi\r\n\r\nHello.\r\n"
    ));
    let bcc: Vec<&String> = summary
        .lines
        .iter()
        .filter(|line| line.starts_with("Bcc: ") || line.starts_with("Bcc (continued): "))
        .collect();
    assert!(
        bcc.last()
            .is_some_and(|line| line.ends_with(", attacker@evil.com")),
        "{:?}",
        summary.lines
    );
    // A short list is still shown address by address.
    let summary = gmail_send_of(
        "To: bob@example.com\r\nBcc: archive@example.com, attacker@evil.com\r\nSubject: Hi\r\n\r\nHello.\r\n",
    );
    assert!(
        summary
            .lines
            .contains(&"Bcc: archive@example.com, attacker@evil.com".to_string()),
        "{:?}",
        summary.lines
    );
}

#[test]
fn gmail_recipient_lines_fit_a_small_card_and_say_when_domains_are_left_out() {
    let everyone: Vec<String> = (0..300)
        .map(|i| format!("person{i}@domain{i:03}.example"))
        .collect();
    let summary = gmail_send_of(&format!(
        "To: {}\r\nBcc: {}, attacker@evil.com\r\nSubject: Hi\r\n\r\nHello.\r\n",
        everyone.join(", "),
        everyone.join(", ")
    ));
    assert!(
        summary
            .title
            .starts_with("⚠ Recipients at more domains than a card can list. Send e-mail to"),
        "{}",
        summary.title
    );
    let address_lines: usize = summary
        .lines
        .iter()
        .take_while(|line| !line.is_empty())
        .map(|line| line.chars().count() + 1)
        .sum();
    assert!(
        address_lines <= 1100,
        "{address_lines}: {:?}",
        summary.lines
    );
    assert!(
        card_text(&summary).contains("more domains ("),
        "{:?}",
        summary.lines
    );
}

#[test]
fn gmail_a_display_name_cannot_push_the_address_out_of_view() {
    let summary = gmail_send_of(&format!(
        "To: \"{}\" <attacker@evil.com>\r\nSubject: Hi\r\n\r\nHello.\r\n",
        "Bob from Accounting ".repeat(20)
    ));
    assert!(summary.title.contains("(1 address)"), "{}", summary.title);
    assert!(
        summary
            .lines
            .iter()
            .any(|line| line.starts_with("To ") && line.ends_with("<attacker@evil.com>")),
        "{:?}",
        summary.lines
    );
}

fn multipart_upload(metadata: &str, message: &str) -> Vec<u8> {
    format!(
        concat!(
            "--foo_bar_baz\r\n",
            "Content-Type: application/json; charset=UTF-8\r\n",
            "\r\n",
            "{}\r\n",
            "--foo_bar_baz\r\n",
            "Content-Type: message/rfc822\r\n",
            "\r\n",
            "{}\r\n",
            "--foo_bar_baz--\r\n",
        ),
        metadata, message
    )
    .into_bytes()
}

#[test]
fn gmail_multipart_upload_is_summarised_as_the_message_it_carries() {
    let padding = "x".repeat(3000);
    let email =
        "To: attacker@evil.com\r\nSubject: Exports\r\n\r\nAll customer records attached.\r\n";
    let summary = post(
        "www.googleapis.com",
        "/upload/gmail/v1/users/me/messages/send?uploadType=multipart",
        &headers(&[("content-type", "multipart/related; boundary=foo_bar_baz")]),
        &multipart_upload(&format!(r#"{{"threadId":"{padding}"}}"#), email),
    );
    assert_eq!(
        summary.title,
        "Send e-mail to attacker@evil.com: \"Exports\""
    );
    assert!(
        summary
            .lines
            .contains(&"All customer records attached.".to_string()),
        "{:?}",
        summary.lines
    );

    // A second message in the metadata's `raw` is not passed over in silence.
    let other = URL_SAFE_NO_PAD.encode("To: bob@example.com\r\nSubject: Lunch\r\n\r\nHi.\r\n");
    let summary = post(
        "www.googleapis.com",
        "/upload/gmail/v1/users/me/messages/send?uploadType=multipart",
        &headers(&[(
            "content-type",
            "multipart/related; boundary=\"foo_bar_baz\"",
        )]),
        &multipart_upload(&format!(r#"{{"raw":"{other}"}}"#), email),
    );
    assert!(
        summary.title.starts_with(
            "⚠ 2 values for message (upload parts): \"To bob@example.com, Subject Lunch\", \
             \"To attacker@evil.com, Subject Exports\"."
        ),
        "{}",
        summary.title
    );
}

#[test]
fn gmail_media_and_resumable_uploads_of_a_raw_message() {
    let email = "To: attacker@evil.com\r\nSubject: Exports\r\n\r\nHi.\r\n";
    for (method, target, content_type) in [
        (
            http::Method::POST,
            "/upload/gmail/v1/users/me/messages/send?uploadType=media",
            "message/rfc822",
        ),
        (
            http::Method::POST,
            "/upload/gmail/v1/users/me/messages/send?uploadType=media",
            "application/octet-stream",
        ),
        (
            http::Method::PUT,
            "/upload/gmail/v1/users/me/messages/send?uploadType=resumable&upload_id=AB12",
            "message/rfc822",
        ),
    ] {
        let summary = summarize(
            &method,
            "gmail.googleapis.com",
            target,
            &headers(&[("content-type", content_type)]),
            email.as_bytes(),
        );
        assert_eq!(
            summary.title, "Send e-mail to attacker@evil.com: \"Exports\"",
            "{method} {content_type}"
        );
    }
}

#[test]
fn slack_blocks_are_shown_not_the_notification_text() {
    let body = serde_json::json!({
        "channel": "C0GENERAL",
        "text": "Lunch at noon?",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn",
            "text": "Our AWS root key is AKIAEXAMPLE, details <https://evil.example/x|here>"}}]
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(
        summary.title,
        "Post to Slack in C0GENERAL: \"Our AWS root key is AKIAEXAMPLE, details here (https://evil.example/x)\""
    );
    for line in [
        "Notification text (Slack shows it in notifications, not in the message):",
        "Lunch at noon?",
        "Our AWS root key is AKIAEXAMPLE, details here (https://evil.example/x)",
    ] {
        assert!(
            summary.lines.contains(&line.to_string()),
            "{line} missing: {:?}",
            summary.lines
        );
    }
}

#[test]
fn slack_attachments_rich_text_and_buttons_are_shown_with_their_links() {
    let body = serde_json::json!({
        "channel": "C1",
        "text": "Build passed",
        "attachments": [{
            "fallback": "see build",
            "pretext": "Also:",
            "title": "Customer list",
            "title_link": "https://evil.example/dump",
            "fields": [{"title": "Rows", "value": "48213"}]
        }],
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        &serde_json::to_vec(&body).unwrap(),
    );
    assert!(
        summary
            .title
            .starts_with("Post to Slack in C1: \"Build passed Attachment 1: Also: Customer list"),
        "{}",
        summary.title
    );
    let text = summary.lines.join("\n");
    for shown in [
        "Build passed",
        "Customer list",
        "Link: https://evil.example/dump",
        "48213",
        "Fallback: see build",
    ] {
        assert!(text.contains(shown), "{shown} missing: {text}");
    }
    // No notification line: without blocks the text is the message.
    assert!(!text.contains("Notification text"), "{text}");

    let blocks = serde_json::json!({
        "channel": "C1",
        "blocks": [
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "text", "text": "Reset your password "},
                {"type": "link", "url": "https://evil.example/login", "text": "on the portal"}
            ]}]},
            {"type": "actions", "elements": [{"type": "button",
                "text": {"type": "plain_text", "text": "Open"}, "url": "https://evil.example/b"}]}
        ]
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &form_headers(),
        format!(
            "channel=C1&blocks={}",
            percent_encoding::utf8_percent_encode(
                &blocks["blocks"].to_string(),
                percent_encoding::NON_ALPHANUMERIC
            )
        )
        .as_bytes(),
    );
    let text = card_text(&summary);
    for shown in [
        "Reset your password on the portal (https://evil.example/login)",
        "Open",
        "Link: https://evil.example/b",
    ] {
        assert!(text.contains(shown), "{shown} missing: {text}");
    }
}

/// A recipient with a right-to-left override is shown with it marked, and the summary
/// says once, first, that the request carries hidden characters: the approver reads
/// that the address the upstream gets is not the one it looks like.
#[test]
fn hidden_characters_are_marked_and_announced_once() {
    let body = serde_json::json!({
        "channel": "C024\u{200B}BE91L",
        "text": "Pay al\u{202E}ice@example.com\nand\u{2066} bob",
    });
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        &serde_json::to_vec(&body).unwrap(),
    );
    assert!(
        summary.title.contains("C024⟨U+200B⟩BE91L")
            && summary.title.contains("al⟨U+202E⟩ice@example.com"),
        "{}",
        summary.title
    );
    assert_eq!(summary.lines[0], HIDDEN_CHARACTERS_NOTICE);
    let notices = summary
        .lines
        .iter()
        .filter(|line| line.as_str() == HIDDEN_CHARACTERS_NOTICE);
    assert_eq!(notices.count(), 1, "{:?}", summary.lines);
    assert!(
        summary.detail.contains("al⟨U+202E⟩ice"),
        "{}",
        summary.detail
    );
    assert!(!summary.title.contains('\u{202E}') && !summary.detail.contains('\u{202E}'));

    // In a generic request: the path, a header, the body.
    for (target, header, body) in [
        ("/a\u{202E}b", "x", &b"{}"[..]),
        ("/ab", "x\u{200B}y", b"{}"),
        ("/ab", "x", "{\"to\":\"al\u{202E}ice\"}".as_bytes()),
    ] {
        let summary = post(
            "h.example",
            target,
            &headers(&[("content-type", "application/json"), ("x-note", header)]),
            body,
        );
        assert_eq!(
            summary.lines[0], HIDDEN_CHARACTERS_NOTICE,
            "{target} {header}"
        );
    }

    // None without a hidden character, emoji included.
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        "{\"channel\":\"C1\",\"text\":\"shipped \u{2764}\u{FE0F} \u{1F469}\u{200D}\u{1F4BB}\"}"
            .as_bytes(),
    );
    assert!(
        !summary.lines.iter().any(|l| l == HIDDEN_CHARACTERS_NOTICE),
        "{:?}",
        summary.lines
    );
}

/// The notice does not push a full summary past its line cap, and a flood of hidden
/// characters in every line keeps each line and the whole bounded.
#[test]
fn hidden_characters_keep_a_summary_bounded() {
    let flood = "\u{E0041}".repeat(50_000);
    let mut body = String::from("{");
    for i in 0..60 {
        body.push_str(&format!("\"field{i}\":\"v{flood}\","));
    }
    body.push_str("\"end\":1}");
    let summary = post("h.example", "/x", &json_headers(), body.as_bytes());
    assert_eq!(summary.lines[0], HIDDEN_CHARACTERS_NOTICE);
    assert!(summary.lines.len() <= MAX_LINES, "{}", summary.lines.len());
    assert!(summary.title.chars().count() <= TITLE_CHARS + 1);
    assert!(summary.detail.chars().count() <= DETAIL_CHARS + 1);
    for line in &summary.lines {
        assert!(line.chars().count() <= LINE_CHARS + 1, "{line}");
    }
    assert!(
        summary.lines.iter().any(|l| l.contains("hidden⟩")),
        "{:?}",
        summary.lines
    );
}

/// A name written with letters of another script that pass for Latin ones is named on
/// a line of its own, with the name the request really has; the same names in plain
/// ASCII, or all in another script, are not.
#[test]
fn look_alike_letters_in_a_domain_are_named_with_the_real_name() {
    // "gmаil.com" with a Cyrillic а, in a JSON body and in the host itself.
    let body = "{\"to\": \"alice@gm\u{0430}il.com\", \"amount\": \"10\"}";
    let spoofed = post(
        "api.example.com",
        "/v1/send",
        &json_headers(),
        body.as_bytes(),
    );
    let notice = spoofed
        .lines
        .iter()
        .find(|line| line.starts_with(LOOK_ALIKE_NOTICE))
        .unwrap_or_else(|| panic!("no look-alike line: {spoofed:#?}"));
    assert!(
        notice.contains("gm\u{0430}il.com (really xn--gmil-63d.com)"),
        "{notice}"
    );
    assert_eq!(spoofed.lines[0], *notice, "the notice leads the lines");
    let host = post("p\u{0430}ypal.com", "/send", &json_headers(), b"{}");
    assert!(
        host.lines.iter().any(|l| l.contains("xn--pypal-4ve.com")),
        "{host:#?}"
    );
    // All in Cyrillic, the top-level domain too: "аррӏе.рф" still reads "apple".
    let whole = post(
        "\u{0430}\u{0440}\u{0440}\u{04cf}\u{0435}.\u{0440}\u{0444}",
        "/send",
        &json_headers(),
        b"{}",
    );
    assert!(
        whole.lines.iter().any(|l| l.starts_with(LOOK_ALIKE_NOTICE)
            && l.contains(
                &idna::domain_to_ascii("\u{0430}\u{0440}\u{0440}\u{04cf}\u{0435}.\u{0440}\u{0444}")
                    .unwrap()
            )),
        "{whole:#?}"
    );

    // However long the name, the line stays short (cards never cut it).
    let long = format!("{{\"to\": \"a@gm\u{0430}il.{}com\"}}", "x.".repeat(2500));
    let long = post(
        "api.example.com",
        "/v1/send",
        &json_headers(),
        long.as_bytes(),
    );
    let line = long
        .lines
        .iter()
        .find(|line| line.starts_with(LOOK_ALIKE_NOTICE))
        .expect("a look-alike line");
    assert!(line.chars().count() <= 300, "{line}");

    for plain in [
        &br#"{"to": "alice@gmail.com"}"#[..],
        "{\"to\": \"ivan@\u{043f}\u{0440}\u{0438}\u{043c}\u{0435}\u{0440}.\u{0440}\u{0444}\"}"
            .as_bytes(),
        "{\"note\": \"caf\u{e9} r\u{e9}sum\u{e9}.\"}".as_bytes(),
    ] {
        let summary = post("api.example.com", "/v1/send", &json_headers(), plain);
        assert!(
            !summary
                .lines
                .iter()
                .any(|l| l.starts_with(LOOK_ALIKE_NOTICE)),
            "{summary:#?}"
        );
    }
}

/// A JSON object whose strings carry form pairs reads as another request to a form
/// reader; with no Content-Type, one that is neither JSON nor a form, or a form's (which
/// `curl -d` gives JSON, and which some services read as JSON all the same), the card
/// does not show either reading as what the service will act on, and its title leads
/// with the form reading's values.
#[test]
fn an_unlabelled_body_that_reads_otherwise_as_a_form_is_flagged() {
    let stripe_body = br#"{"amount":"100","currency":"usd","description":"coffee","a":"=1&amount=9999999&currency=usd&destination=acct_EVIL&z="}"#;
    let slack_body =
        br#"{"channel":"C0FRIENDS","text":"lunch?","a":"=1&channel=C0EXTERNAL&text=the+keys&z="}"#;
    for labels in [
        vec![("content-type", "application/x-www-form-urlencoded; x=json")],
        vec![(
            "content-type",
            "Application/X-WWW-Form-Urlencoded ; charset=utf-8",
        )],
        vec![],
        vec![("content-type", "text/plain")],
    ] {
        let labels = headers(&labels);
        let stripe = post("api.stripe.com", "/v1/transfers", &labels, stripe_body);
        let slack = post("slack.com", "/api/chat.postMessage", &labels, slack_body);
        for (summary, shown) in [(&stripe, "acct_EVIL"), (&slack, "C0EXTERNAL")] {
            let card = card_text(summary);
            assert!(card.contains(shown), "{card}");
            assert!(summary.title.starts_with('⚠'), "{card}");
            assert!(summary.title.contains(shown), "{card}");
        }
    }
    // A body that does not look like JSON, labelled a form, is read as one.
    let form = post(
        "api.stripe.com",
        "/v1/transfers",
        &form_headers(),
        b"amount=9999999&currency=usd&destination=acct_EVIL",
    );
    assert!(
        form.title
            .contains("Pay 99,999.99 USD to acct_EVIL (Stripe transfer)"),
        "{}",
        form.title
    );
    // Without a label, both readings are named field by field.
    let unlabelled = post(
        "api.stripe.com",
        "/v1/transfers",
        &http::HeaderMap::new(),
        stripe_body,
    );
    assert!(
        unlabelled.title.starts_with(
            "⚠ Body with no Content-Type reads otherwise as a form: amount \"9999999\""
        ),
        "{}",
        unlabelled.title
    );
    assert!(
        unlabelled
            .lines
            .contains(&"destination: as JSON (not given), as a form \"acct_EVIL\"".to_string()),
        "{:?}",
        unlabelled.lines
    );
    // A `+json` type is JSON, and unlabelled JSON that a form reader finds nothing in
    // is shown as it is, without a warning.
    for labels in [
        headers(&[("content-type", "application/vnd.api+json")]),
        http::HeaderMap::new(),
    ] {
        let plain = post(
            "slack.com",
            "/api/chat.postMessage",
            &labels,
            br#"{"channel":"C1","text":"a=b & c"}"#,
        );
        assert_eq!(plain.title, "Post to Slack in C1: \"a=b & c\"");
    }
}

/// Mail clients show the HTML of a `multipart/alternative` message: when it says
/// something else than the plain text, the card shows it first.
#[test]
fn gmail_shows_an_html_alternative_that_says_something_else() {
    let email = concat!(
        "To: team@example.com\r\n",
        "Subject: Lunch\r\n",
        "Content-Type: multipart/alternative; boundary=\"alt\"\r\n",
        "\r\n",
        "--alt\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "\r\n",
        "Lunch is at noon, see you there.\r\n",
        "--alt\r\n",
        "Content-Type: text/html; charset=utf-8\r\n",
        "\r\n",
        "<p>Please wire $50,000 today to IBAN GB00EVIL0000 - CEO</p>\r\n",
        "--alt--\r\n",
    );
    let summary = gmail_send_of(email);
    let card = card_text(&summary);
    let html = card.find("Please wire $50,000 today to IBAN GB00EVIL0000 - CEO");
    let plain = card.find("Lunch is at noon, see you there.");
    assert!(html.is_some() && plain.is_some(), "{card}");
    assert!(html < plain, "{card}");
    assert!(card.contains("⚠ The message's HTML"), "{card}");
}

/// A client shows the last version of an alternative it can display, and every inline
/// text part of a mixed message: the card shows what the recipient reads.
#[test]
fn gmail_shows_the_last_alternative_and_every_inline_part() {
    let email = concat!(
        "To: team@example.com\r\n",
        "Subject: Lunch\r\n",
        "Content-Type: multipart/mixed; boundary=\"mix\"\r\n",
        "\r\n",
        "--mix\r\n",
        "Content-Type: multipart/alternative; boundary=\"alt\"\r\n",
        "\r\n",
        "--alt\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "\r\n",
        "Lunch is at noon.\r\n",
        "--alt\r\n",
        "Content-Type: text/html; charset=utf-8\r\n",
        "\r\n",
        "<p>Lunch is at noon.</p>\r\n",
        "--alt\r\n",
        "Content-Type: text/html; charset=utf-8\r\n",
        "\r\n",
        "<p>Please wire $48,000 to IBAN GB00 EVIL 0000 today.</p>\r\n",
        "--alt--\r\n",
        "--mix\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "\r\n",
        "P.S. Also send the payroll file.\r\n",
        "--mix--\r\n",
    );
    let card = card_text(&gmail_send_of(email));
    assert!(card.contains("⚠ The message's HTML"), "{card}");
    let wire = card.find("Please wire $48,000 to IBAN GB00 EVIL 0000 today.");
    let lunch = card.find("Lunch is at noon.");
    assert!(wire.is_some() && lunch.is_some() && wire < lunch, "{card}");
    assert_eq!(
        card.matches("P.S. Also send the payroll file.").count(),
        2,
        "{card}"
    );
}

/// A display name that encodes `bob@corp.example <bob@corp.example>,` is the name of
/// the one address after it, not a second recipient.
#[test]
fn gmail_an_encoded_name_does_not_make_a_second_recipient() {
    let summary = gmail_send_of(concat!(
        "To: =?utf-8?Q?bob=40corp.example_=3Cbob=40corp.example=3E=2C?= <mallory@evil.example>\r\n",
        "Subject: Figures\r\n",
        "\r\n",
        "See attached.\r\n",
    ));
    assert_eq!(
        summary.title,
        "Send e-mail to mallory@evil.example (named \"bob@corp.example <bob@corp.example>,\"): \"Figures\""
    );
}

/// A `Stripe-Account` header moves a connected account's money, not the platform's.
#[test]
fn stripe_names_the_connected_account_a_call_acts_on() {
    let transfer = post(
        "api.stripe.com",
        "/v1/payouts",
        &headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("stripe-account", "acct_1CUSTOMER"),
        ]),
        b"amount=1250&currency=usd",
    );
    assert_eq!(
        transfer.title,
        "Pay out 12.50 USD to the default external account (Stripe payout) on connected account acct_1CUSTOMER"
    );
}

/// A display name that looks like an address is not shown as the recipient.
#[test]
fn gmail_a_display_name_that_looks_like_an_address_is_marked() {
    let summary = gmail_send_of(concat!(
        "To: =?utf-8?B?Ym9iQGNvcnAuZXhhbXBsZQ==?= <mallory@evil.example>\r\n",
        "Cc: Carol <carol@corp.example>\r\n",
        "Subject: Figures\r\n",
        "\r\n",
        "Attached.\r\n",
    ));
    assert_eq!(
        summary.title,
        "Send e-mail to mallory@evil.example (named \"bob@corp.example\"): \"Figures\""
    );
    let card = card_text(&summary);
    assert!(!card.contains("bob@corp.example <"), "{card}");
    assert!(card.contains("Cc: Carol <carol@corp.example>"), "{card}");
}

/// A key given twice inside a nested JSON object is warned of first on the card: an
/// excerpt cut in the middle showed the first recipient and hid the second, which a
/// server keeping the last copy sends to.
#[test]
fn a_key_repeated_inside_nested_json_is_warned_of() {
    let body = format!(
        r#"{{"msg":{{"to":"alice@corp.example","note":"{}","to":"mallory@evil.example","pad":"{}"}}}}"#,
        "x".repeat(600),
        "y".repeat(600)
    );
    let summary = post(
        "api.example.com",
        "/v1/send",
        &json_headers(),
        body.as_bytes(),
    );
    assert!(
        summary.lines[0].starts_with("⚠ Keys given twice inside the JSON")
            && summary.lines[0].ends_with("msg.to"),
        "{summary:#?}"
    );
    let plain = post(
        "api.example.com",
        "/v1/send",
        &json_headers(),
        br#"{"msg":{"to":"alice@corp.example"}}"#,
    );
    assert!(
        !plain.lines.iter().any(|l| l.starts_with("⚠")),
        "{plain:#?}"
    );
}

/// A multipart form is read part by part, as Slack and Stripe read it: a part whose
/// text carries `&channel=…&` does not pass for the channel. A body read as a form only
/// by guess (its Content-Type another), JSON that some parsers read past and this one
/// refuses, and two Content-Types that disagree each put a warning first.
#[test]
fn bodies_the_card_cannot_read_as_the_service_does_are_said_so() {
    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n&channel=C_GENERAL&text=Lunch+is+at+noon&\r\n--XyZ\r\nContent-Disposition: form-data; name=\"channel\"\r\n\r\nC_EVIL\r\n--XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nPlease wire 50k to IBAN GB00EVIL\r\n--XyZ--\r\n";
    let summary = post(
        "slack.com",
        "/api/chat.postMessage",
        &headers(&[("content-type", "multipart/form-data; boundary=XyZ")]),
        multipart,
    );
    assert_eq!(
        summary.title,
        "Post to Slack in C_EVIL: \"Please wire 50k to IBAN GB00EVIL\""
    );
    // A part with two names is read by no one the same way: no field is shown from
    // it, and the card says so first.
    let two_names = b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"; name=\"channel\"\r\n\r\nC_EVIL\r\n--XyZ--\r\n";
    let unread = post(
        "slack.com",
        "/api/chat.postMessage",
        &headers(&[("content-type", "multipart/form-data; boundary=XyZ")]),
        two_names,
    );
    assert!(unread.title.starts_with('⚠'), "{unread:#?}");
    assert!(
        unread.lines[0].contains("does not read as one"),
        "{unread:#?}"
    );

    let plain = post(
        "slack.com",
        "/api/chat.postMessage",
        &headers(&[("content-type", "text/plain")]),
        b"channel=C_GENERAL&text=hello",
    );
    assert!(plain.title.starts_with('⚠'), "{plain:#?}");
    assert!(
        plain.lines[0].contains("reads as a URL-encoded form"),
        "{plain:#?}"
    );

    let past_the_parser = br#"{"n":1e400,"metadata":{"event_payload":{"channel":"C_GENERAL","text":"Lunch is at noon"}},"chan\u006eel":"C_EVIL","te\u0078t":"Please wire 50k"}"#;
    let loose = post(
        "slack.com",
        "/api/chat.postMessage",
        &json_headers(),
        past_the_parser,
    );
    assert!(loose.title.starts_with('⚠'), "{loose:#?}");
    assert!(
        loose.lines[0].contains("does not parse as JSON"),
        "{loose:#?}"
    );

    let mut two = http::HeaderMap::new();
    two.append("content-type", "application/json".parse().unwrap());
    two.append(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let twice = post(
        "slack.com",
        "/api/chat.postMessage",
        &two,
        br#"{"channel":"C_GENERAL","text":"Lunch is at noon","x":"&channel=C_EVIL&"}"#,
    );
    assert!(twice.title.starts_with('⚠'), "{twice:#?}");
    assert!(twice.lines[0].contains("2 Content-Types"), "{twice:#?}");
}

/// Where a Stripe charge's money goes besides the title's payee is on the card: the
/// legacy `destination[account]` and the parts a connected account and the platform's
/// fee take.
#[test]
fn stripe_shows_where_a_charges_money_goes() {
    let summary = post(
        "api.stripe.com",
        "/v1/charges",
        &form_headers(),
        b"amount=5000&currency=usd&customer=cus_OURS&destination[account]=acct_EVIL&destination[amount]=4000&application_fee_amount=1000",
    );
    assert_eq!(
        summary.title, "Pay 50.00 USD to acct_EVIL (Stripe charge)",
        "{summary:#?}"
    );
    assert!(
        summary
            .lines
            .contains(&"Of which to the destination: 40.00 USD".to_string()),
        "{summary:#?}"
    );
    assert!(
        summary
            .lines
            .contains(&"Application fee: 10.00 USD".to_string()),
        "{summary:#?}"
    );
}
