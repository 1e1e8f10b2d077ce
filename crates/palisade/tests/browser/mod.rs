//! What the headless-Chromium tests share: chromedriver on a free loopback port (in its
//! own process group, a ChildGuard), a WebDriver session with a throwaway profile,
//! bounded waits for text on a page, screenshots under the cargo target dir, and
//! `palisade up` started until it prints its login URL.

#![allow(dead_code)]

use fantoccini::{Client, ClientBuilder, Locator};
use palisade_testkit::{free_port, wait_for_tcp, ChildGuard, Palisade, TestCa};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const STARTUP: Duration = Duration::from_secs(60);
pub const WAIT: Duration = Duration::from_secs(60);

/// Where screenshots go: `$CARGO_TARGET_DIR/web-ui`, else `target/web-ui` found from
/// this test binary's path (`target/debug/deps/web_ui-…`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .expect("cannot find the target directory");
    let dir = target.join("web-ui");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// chromedriver on a free loopback port, in its own process group.
pub fn start_chromedriver(dir: &std::path::Path) -> (ChildGuard, u16) {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "this test needs Debian's chromium and chromium-driver (scripts/install-deps.sh installs them)"
    );
    let port = free_port();
    let log = std::fs::File::create(dir.join("chromedriver.log")).expect("log file");
    let mut command = Command::new(CHROMEDRIVER);
    command
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    let guard = ChildGuard::spawn(&mut command).expect("start chromedriver");
    assert!(
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(20)
        ),
        "chromedriver did not listen on {port}"
    );
    (guard, port)
}

pub async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        STARTUP,
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect("Chromium did not start within 60 s")
    .expect("cannot start a WebDriver session")
}

/// Polls `css` until an element's text satisfies `done`; returns that text.
pub async fn wait_for_text(
    client: &Client,
    css: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(elements) = client.find_all(Locator::Css(css)).await {
            for element in elements {
                if let Ok(text) = element.text().await {
                    if done(&text) {
                        return text;
                    }
                }
            }
        }
        if Instant::now() > deadline {
            let source = client.source().await.unwrap_or_default();
            panic!("timed out waiting for {what} ({css}); page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Starts `palisade up` and returns it with the login URL it printed.
pub fn start_palisade(
    palisade: &Palisade,
    ca: &TestCa,
    listen: SocketAddr,
) -> (ChildGuard, String) {
    let listen = listen.to_string();
    let ca = ca.pem_path().to_str().unwrap().to_string();
    let mut guard = palisade.spawn(&[
        "up",
        "--listen",
        &listen,
        "--upstream-ca",
        &ca,
        "--allow-local-upstream",
        "localhost",
    ]);
    let deadline = Instant::now() + STARTUP;
    loop {
        let stdout = guard.stdout();
        if let Some(url) = stdout
            .split_whitespace()
            .find(|word| word.starts_with("http://") && word.contains("/login?token="))
        {
            return (guard, url.to_string());
        }
        if let Ok(Some(status)) = guard.try_wait() {
            panic!("palisade up exited ({status}): {}", guard.stderr());
        }
        assert!(
            Instant::now() < deadline,
            "palisade up printed no login URL: {}",
            guard.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Types `value` into the field `name` of the form `form` (a CSS selector), replacing
/// what it held.
pub async fn fill(client: &Client, form: &str, name: &str, value: &str) {
    let field = client
        .find(Locator::Css(&format!("{form} [name=\"{name}\"]")))
        .await
        .unwrap_or_else(|e| panic!("no field {name} in {form}: {e}"));
    field.clear().await.expect("clear the field");
    if !value.is_empty() {
        field.send_keys(value).await.expect("type into the field");
    }
}

/// Chooses `value` in the `<select name=NAME>` of the form `form`.
pub async fn choose(client: &Client, form: &str, name: &str, value: &str) {
    client
        .find(Locator::Css(&format!("{form} select[name=\"{name}\"]")))
        .await
        .unwrap_or_else(|e| panic!("no select {name} in {form}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("no option {value} for {name}: {e}"));
}

/// Clicks the element `css`.
///
/// A button that decides something comes disabled and is armed a second after it is
/// shown (app.js): this waits (bounded) until it is enabled, as a person would.
pub async fn click(client: &Client, css: &str) {
    let element = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !element.is_enabled().await.unwrap_or(false) {
        assert!(
            std::time::Instant::now() < deadline,
            "{css} stayed disabled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

/// Opens `path` on the server at `listen` and waits for its `h1` to start with `heading`.
pub async fn open(client: &Client, listen: SocketAddr, path: &str, heading: &str) {
    client
        .goto(&format!("http://{listen}{path}"))
        .await
        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    wait_for_text(client, "h1", heading, |t| t.starts_with(heading)).await;
}
