//! The workspace and host tools, driven through `Tools::execute` as the loop does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_runner::{Grant, InMemoryHost, ToolLimits, ToolOutput, Tools, Workspace};
use serde_json::{json, Value};

struct Fixture {
    dir: tempfile::TempDir,
    host: Arc<InMemoryHost>,
    tools: Tools,
}

fn fixture() -> Fixture {
    fixture_with(ToolLimits::default())
}

fn fixture_with(limits: ToolLimits) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("workspace")).expect("workspace dir");
    let host = Arc::new(InMemoryHost::new().with_grants(vec![Grant {
        secret: "github".into(),
        host_pattern: "api.github.com".into(),
        path_pattern: None,
    }]));
    let workspace = Workspace::new(dir.path().join("workspace")).expect("workspace");
    let tools = Tools::new(workspace, host.clone()).with_limits(limits);
    Fixture { dir, host, tools }
}

impl Fixture {
    fn path(&self, relative: &str) -> std::path::PathBuf {
        self.dir.path().join("workspace").join(relative)
    }

    async fn run(&self, name: &str, input: Value) -> ToolOutput {
        self.tools.execute(name, &input).await
    }

    async fn ok(&self, name: &str, input: Value) -> String {
        let output = self.run(name, input.clone()).await;
        assert!(
            !output.is_error,
            "{name} {input} failed: {}",
            output.content
        );
        output.content
    }

    async fn fails(&self, name: &str, input: Value) -> String {
        let output = self.run(name, input.clone()).await;
        assert!(
            output.is_error,
            "{name} {input} should fail: {}",
            output.content
        );
        output.content
    }
}

#[tokio::test]
async fn write_then_read_with_line_range() {
    let kit = fixture();
    let text: String = (1..=10).map(|n| format!("line {n}\n")).collect();
    let wrote = kit
        .ok("write", json!({"path": "notes/a.txt", "content": text}))
        .await;
    assert!(wrote.contains("notes/a.txt"), "{wrote}");
    assert_eq!(
        std::fs::read_to_string(kit.path("notes/a.txt")).unwrap(),
        text
    );

    let all = kit.ok("read", json!({"path": "notes/a.txt"})).await;
    assert!(all.starts_with("     1\tline 1\n"), "{all}");
    assert!(all.contains("    10\tline 10\n"));

    let part = kit
        .ok(
            "read",
            json!({"path": "notes/a.txt", "offset": 3, "limit": 2}),
        )
        .await;
    assert!(
        part.starts_with("     3\tline 3\n     4\tline 4\n"),
        "{part}"
    );
    assert!(part.contains("read more with offset 5"), "{part}");
    assert!(!part.contains("line 5\n"));

    let missing = kit.fails("read", json!({"path": "nope.txt"})).await;
    assert!(missing.contains("nope.txt"), "{missing}");
    let past = kit
        .fails("read", json!({"path": "notes/a.txt", "offset": 50}))
        .await;
    assert!(past.contains("10 lines"), "{past}");
}

#[tokio::test]
async fn read_refuses_binary_and_large_files() {
    let kit = fixture_with(ToolLimits {
        file_max_bytes: 100,
        ..ToolLimits::default()
    });
    std::fs::write(kit.path("bin"), b"abc\0def").unwrap();
    assert!(kit
        .fails("read", json!({"path": "bin"}))
        .await
        .contains("binary"));
    std::fs::write(kit.path("big"), vec![b'x'; 200]).unwrap();
    assert!(kit
        .fails("read", json!({"path": "big"}))
        .await
        .contains("limit"));
    let too_long = "y".repeat(200);
    assert!(kit
        .fails("write", json!({"path": "w", "content": too_long}))
        .await
        .contains("limit"));
}

#[tokio::test]
async fn edit_replaces_exact_unique_text() {
    let kit = fixture();
    std::fs::write(kit.path("a.rs"), "let a = 1;\nlet b = 1;\nlet c = 2;\n").unwrap();

    kit.ok(
        "edit",
        json!({"path": "a.rs", "old_string": "let c = 2;", "new_string": "let c = 3;"}),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(kit.path("a.rs")).unwrap(),
        "let a = 1;\nlet b = 1;\nlet c = 3;\n"
    );

    let missing = kit
        .fails(
            "edit",
            json!({"path": "a.rs", "old_string": "let d", "new_string": "x"}),
        )
        .await;
    assert!(missing.contains("not found"), "{missing}");

    let ambiguous = kit
        .fails(
            "edit",
            json!({"path": "a.rs", "old_string": "= 1;", "new_string": "= 5;"}),
        )
        .await;
    assert!(ambiguous.contains("2 times"), "{ambiguous}");
    // Nothing changed by the refused edits.
    assert!(std::fs::read_to_string(kit.path("a.rs"))
        .unwrap()
        .contains("let a = 1;\nlet b = 1;"));

    let all = kit
        .ok(
            "edit",
            json!({"path": "a.rs", "old_string": "= 1;", "new_string": "= 5;", "replace_all": true}),
        )
        .await;
    assert!(all.contains("2 occurrences"), "{all}");
    assert_eq!(
        std::fs::read_to_string(kit.path("a.rs")).unwrap(),
        "let a = 5;\nlet b = 5;\nlet c = 3;\n"
    );
    kit.fails(
        "edit",
        json!({"path": "a.rs", "old_string": "", "new_string": "x"}),
    )
    .await;
}

#[tokio::test]
async fn glob_and_grep_find_files_and_lines() {
    let kit = fixture();
    std::fs::create_dir_all(kit.path("src/deep")).unwrap();
    std::fs::write(kit.path("README.md"), "Hello world\n").unwrap();
    std::fs::write(kit.path("src/main.rs"), "// start\nfn main() {}\n").unwrap();
    std::fs::write(
        kit.path("src/deep/lib.rs"),
        "pub fn helper() {}\nfn Main() {}\n",
    )
    .unwrap();
    std::fs::write(kit.path("src/data.bin"), b"fn main\0").unwrap();

    let rust = kit.ok("glob", json!({"pattern": "**/*.rs"})).await;
    assert_eq!(rust, "src/deep/lib.rs\nsrc/main.rs");
    let top = kit.ok("glob", json!({"pattern": "*.md"})).await;
    assert_eq!(top, "README.md");
    let under = kit
        .ok("glob", json!({"pattern": "*.rs", "path": "src"}))
        .await;
    assert_eq!(under, "src/main.rs");
    let none = kit.ok("glob", json!({"pattern": "*.py"})).await;
    assert!(none.starts_with("no files match"), "{none}");
    kit.fails("glob", json!({"pattern": "a[", "path": "."}))
        .await;

    let found = kit.ok("grep", json!({"pattern": r"fn \w+\(\)"})).await;
    assert!(found.contains("src/main.rs:2:fn main() {}"), "{found}");
    assert!(
        found.contains("src/deep/lib.rs:1:pub fn helper() {}"),
        "{found}"
    );
    assert!(
        !found.contains("data.bin"),
        "binary files are skipped: {found}"
    );

    let insensitive = kit
        .ok(
            "grep",
            json!({"pattern": "fn main", "case_insensitive": true, "glob": "lib.rs"}),
        )
        .await;
    assert_eq!(insensitive.trim(), "src/deep/lib.rs:2:fn Main() {}");
    let in_file = kit
        .ok("grep", json!({"pattern": "Hello", "path": "README.md"}))
        .await;
    assert_eq!(in_file.trim(), "README.md:1:Hello world");
    kit.fails("grep", json!({"pattern": "("})).await;
}

#[tokio::test]
async fn paths_outside_the_workspace_are_refused() {
    let kit = fixture();
    std::fs::write(kit.dir.path().join("secret.txt"), "outside").unwrap();
    std::fs::write(kit.path("inside.txt"), "inside").unwrap();

    for path in ["../secret.txt", "a/../../secret.txt", "/etc/passwd"] {
        let refused = kit.fails("read", json!({"path": path})).await;
        assert!(
            refused.contains("outside the workspace"),
            "{path}: {refused}"
        );
    }
    let refused = kit
        .fails("write", json!({"path": "../escape.txt", "content": "x"}))
        .await;
    assert!(refused.contains("outside the workspace"), "{refused}");
    assert!(!kit.dir.path().join("escape.txt").exists());
    kit.fails("glob", json!({"pattern": "*", "path": ".."}))
        .await;
    kit.fails("grep", json!({"pattern": "x", "path": "/etc"}))
        .await;

    // Symbolic links that lead out are refused, for reading and for writing
    // through a dangling link alike; links that stay inside work.
    std::os::unix::fs::symlink(kit.dir.path(), kit.path("up")).unwrap();
    std::os::unix::fs::symlink(kit.dir.path().join("new.txt"), kit.path("dangling")).unwrap();
    std::os::unix::fs::symlink(kit.path("inside.txt"), kit.path("alias")).unwrap();
    let through = kit.fails("read", json!({"path": "up/secret.txt"})).await;
    assert!(through.contains("symbolic link"), "{through}");
    kit.fails("write", json!({"path": "up/x.txt", "content": "x"}))
        .await;
    kit.fails("write", json!({"path": "dangling", "content": "x"}))
        .await;
    assert!(!kit.dir.path().join("new.txt").exists());
    assert!(!kit.dir.path().join("x.txt").exists());
    let glob = kit.ok("glob", json!({"pattern": "**/*"})).await;
    assert!(!glob.contains("secret"), "{glob}");

    assert!(kit
        .ok("read", json!({"path": "alias"}))
        .await
        .contains("inside"));
    let absolute = kit.path("inside.txt");
    let absolute = absolute.to_str().unwrap();
    assert!(kit
        .ok("read", json!({"path": absolute}))
        .await
        .contains("inside"));
}

#[tokio::test]
async fn bash_runs_in_the_workspace_and_reports_failures() {
    let kit = fixture();
    let output = kit
        .ok(
            "bash",
            json!({"command": "echo hi > made.txt; pwd; echo oops >&2"}),
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(kit.path("made.txt")).unwrap(),
        "hi\n"
    );
    assert!(output.contains("workspace"), "{output}");
    assert!(output.contains("[stderr]\noops"), "{output}");

    let failed = kit
        .fails("bash", json!({"command": "echo no; exit 3"}))
        .await;
    assert!(
        failed.contains("no") && failed.contains("exit code 3"),
        "{failed}"
    );
    kit.fails("bash", json!({"cmd": "true"})).await;
}

#[tokio::test]
async fn bash_output_is_capped() {
    let kit = fixture_with(ToolLimits {
        output_cap_bytes: 1000,
        ..ToolLimits::default()
    });
    let output = kit
        .ok("bash", json!({"command": "yes | head -c 100000"}))
        .await;
    assert!(output.len() < 1200, "{} bytes", output.len());
    assert!(
        output.contains("[output truncated: 100000 bytes"),
        "{output}"
    );
}

#[tokio::test]
async fn bash_timeout_kills_the_whole_process_group() {
    let kit = fixture();
    let started = Instant::now();
    let output = kit
        .fails(
            "bash",
            json!({"command": "sleep 300 & echo $! > sleeper.pid; echo started; wait", "timeout_seconds": 1}),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(output.contains("timed out"), "{output}");
    assert!(output.contains("started"), "{output}");

    let pid = std::fs::read_to_string(kit.path("sleeper.pid")).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Killed (gone, or a zombie waiting for its new parent to reap it).
        let state = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        let alive = !state.is_empty() && !state.contains(") Z ");
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {pid} still running: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn host_tools_and_unknown_tools() {
    let kit = fixture();
    kit.ok("memory_append", json!({"note": "Prefers tea."}))
        .await;
    kit.ok("memory_append", json!({"note": "Lives in Lyon."}))
        .await;
    assert_eq!(kit.host.memory(), "Prefers tea.\nLives in Lyon.\n");
    assert!(kit
        .ok("memory_read", json!({}))
        .await
        .contains("Lives in Lyon."));
    kit.ok("send_message", json!({"text": "working on it"}))
        .await;
    assert_eq!(kit.host.sent_messages(), vec!["working on it".to_string()]);
    assert!(kit
        .ok("list_grants", json!({}))
        .await
        .contains("github: injected for api.github.com"));

    let unknown = kit.fails("launch_rockets", json!({})).await;
    assert!(unknown.contains("bash"), "lists the real tools: {unknown}");
    // web_fetch is offered only with an HTTP client.
    kit.fails("web_fetch", json!({"url": "https://example.test"}))
        .await;
    let bad = kit.fails("read", json!({"file": "x"})).await;
    assert!(bad.contains("bad input for read"), "{bad}");
}

#[tokio::test]
async fn allowed_tools_limit_definitions_and_execution() {
    let kit = fixture();
    let workspace = kit.tools.workspace().clone();
    let tools = Tools::new(workspace, kit.host.clone()).allow_only(["read", "glob"]);
    let names: Vec<String> = tools.definitions().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["read", "glob"]);
    let refused = tools.execute("bash", &json!({"command": "true"})).await;
    assert!(refused.is_error);
    for definition in kit.tools.definitions() {
        assert_eq!(
            definition.input_schema["type"], "object",
            "{}",
            definition.name
        );
    }
}
