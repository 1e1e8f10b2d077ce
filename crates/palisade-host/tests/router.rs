//! The router, queue and supervisor with in-process fake runners on the real host
//! socket: delivery, streaming, crash and redelivery, idle stop, several conversations
//! of one agent at once, and runners or strangers that break the protocol.

use futures_util::future::BoxFuture;
use palisade_host::protocol::{HostFrame, RunnerConnection, RunnerFrame, PROTOCOL_VERSION};
use palisade_host::{Host, HostConfig, HostError, RunnerLauncher, RunnerProcess, StreamEvent};
use palisade_policy::{AgentName, Profile};
use palisade_store::{Home, MessageStatus, Store};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers "echo: TEXT" with a streamed delta and a host tool call.
    Echo,
    /// Disconnects on the first delivery of each message id below 0 … i.e. the first
    /// `crashes` launches crash, later ones echo.
    CrashFirst(usize),
    /// Replies with another session id.
    WrongSession,
    /// Exits before connecting, saying why (as a sandbox whose disk is full does).
    ExitAtOnce,
}

struct FakeLauncher {
    behaviour: Behaviour,
    launches: Arc<AtomicUsize>,
    /// A message whose text starts with "hold" waits for a permit before its reply.
    gate: Arc<tokio::sync::Semaphore>,
}

struct FakeProcess(Option<tokio::task::JoinHandle<()>>, Option<String>);

impl RunnerProcess for FakeProcess {
    fn why_exited(&self) -> Option<String> {
        self.1.clone()
    }
    fn exited(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(handle) = &mut self.0 {
                let _ = handle.await;
                self.0 = None;
            } else {
                std::future::pending::<()>().await
            }
        })
    }
    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(handle) = self.0.take() {
                handle.abort();
                let _ = handle.await;
            }
        })
    }
}

impl RunnerLauncher for FakeLauncher {
    fn launch(
        &self,
        _agent: &AgentName,
        host_socket: &Path,
    ) -> Result<Box<dyn RunnerProcess>, HostError> {
        let launch = self.launches.fetch_add(1, Ordering::SeqCst);
        let behaviour = match self.behaviour {
            Behaviour::CrashFirst(n) if launch >= n => Behaviour::Echo,
            other => other,
        };
        if matches!(behaviour, Behaviour::ExitAtOnce) {
            return Ok(Box::new(FakeProcess(
                Some(tokio::spawn(async {})),
                Some("the disk holding the workspace is nearly full (17.2M free)".into()),
            )));
        }
        let socket = host_socket.to_path_buf();
        let gate = Arc::clone(&self.gate);
        Ok(Box::new(FakeProcess(
            Some(tokio::spawn(async move {
                let _ = fake_runner(&socket, behaviour, gate).await;
            })),
            None,
        )))
    }
}

async fn fake_runner(
    socket: &Path,
    behaviour: Behaviour,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<(), Box<dyn std::error::Error>> {
    let stream = UnixStream::connect(socket).await?;
    let mut conn: RunnerConnection<UnixStream> = RunnerConnection::new(stream);
    conn.send(&RunnerFrame::Hello {
        version: PROTOCOL_VERSION,
    })
    .await?;
    match conn.expect().await? {
        HostFrame::Hello { .. } => {}
        other => return Err(format!("expected hello, got {other:?}").into()),
    }
    loop {
        match conn.recv().await? {
            None | Some(HostFrame::Shutdown) => return Ok(()),
            Some(HostFrame::Deliver(delivery)) => {
                if let Behaviour::CrashFirst(_) = behaviour {
                    return Ok(());
                }
                conn.send(&RunnerFrame::Event {
                    message_id: delivery.message_id,
                    event: serde_json::json!({"kind": "text_delta", "text": "echo: "}),
                })
                .await?;
                if delivery.text.starts_with("flood") {
                    // 100 deltas of 64 KiB each: 6.25 MiB of text in one turn.
                    let chunk = "y".repeat(64 * 1024);
                    for _ in 0..100 {
                        conn.send(&RunnerFrame::Event {
                            message_id: delivery.message_id,
                            event: serde_json::json!({"kind": "text_delta", "text": chunk}),
                        })
                        .await?;
                    }
                }
                conn.send(&RunnerFrame::ToolCall {
                    call_id: "c1".into(),
                    message_id: delivery.message_id,
                    name: "memory_append".into(),
                    input: serde_json::json!({"note": format!("saw {}", delivery.text)}),
                })
                .await?;
                match conn.expect().await? {
                    HostFrame::ToolResult { ok: true, .. } => {}
                    other => return Err(format!("tool failed: {other:?}").into()),
                }
                if delivery.text.starts_with("hold") {
                    gate.acquire().await?.forget();
                }
                let mut answer = format!("echo: {}", delivery.text);
                if delivery.text == "ids" {
                    answer = format!("{} {}", delivery.message_id, delivery.session_id);
                }
                if let Some(action) = delivery.text.strip_prefix("approve:") {
                    conn.send(&RunnerFrame::ToolCall {
                        call_id: "c2".into(),
                        message_id: delivery.message_id,
                        name: "request_approval".into(),
                        input: serde_json::json!({"action": action, "details": "because"}),
                    })
                    .await?;
                    match conn.expect().await? {
                        HostFrame::ToolResult { content, .. } => answer = content,
                        other => return Err(format!("unexpected {other:?}").into()),
                    }
                }
                let mut history = delivery.history.as_array().cloned().unwrap_or_default();
                history.push(serde_json::json!(delivery.text));
                let session_id = match behaviour {
                    Behaviour::WrongSession => delivery.session_id + 1000,
                    _ => delivery.session_id,
                };
                conn.send(&RunnerFrame::Reply {
                    message_id: delivery.message_id,
                    session_id,
                    text: answer,
                    history: serde_json::Value::Array(history),
                    is_error: false,
                })
                .await?;
            }
            Some(other) => return Err(format!("unexpected {other:?}").into()),
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    host: Host,
    agent: AgentName,
    launches: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
    home: Home,
}

async fn fixture(behaviour: Behaviour, tune: impl FnOnce(&mut HostConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let store = Store::open(&home).unwrap();
    let agent = AgentName::new("helper").unwrap();
    store.create_agent(&agent, Profile::Research).unwrap();
    let mut config = HostConfig::new(home.clone());
    config.initial_backoff = Duration::from_millis(20);
    config.start_timeout = Duration::from_secs(5);
    tune(&mut config);
    let launches = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let launcher = Arc::new(FakeLauncher {
        behaviour,
        launches: Arc::clone(&launches),
        gate: Arc::clone(&gate),
    });
    let host = Host::start(store.clone(), config, launcher).await.unwrap();
    Fixture {
        _dir: dir,
        store,
        host,
        agent,
        launches,
        gate,
        home,
    }
}

async fn reply_of(
    receiver: &mut tokio::sync::broadcast::Receiver<StreamEvent>,
) -> (Vec<StreamEvent>, String, bool) {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), receiver.recv())
            .await
            .expect("no reply within 20 s")
            .expect("stream closed");
        if let StreamEvent::Reply { text, is_error } = &event {
            return (seen, text.clone(), *is_error);
        }
        seen.push(event);
    }
}

#[tokio::test]
async fn message_is_delivered_streamed_answered_and_runner_stays_warm() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let (accepted, mut events) = f
        .host
        .submit(&f.agent, "cli", "cli", "hello")
        .await
        .unwrap();
    let (seen, text, is_error) = reply_of(&mut events).await;
    assert_eq!(text, "echo: hello");
    assert!(!is_error);
    assert!(seen.contains(&StreamEvent::TextDelta {
        text: "echo: ".into()
    }));
    let message = f.store.get_message(accepted.message_id).unwrap();
    assert_eq!(message.status, MessageStatus::Answered);
    assert_eq!(message.attempts, 1);
    let session = f.store.get_session(accepted.session_id).unwrap();
    assert_eq!(session.history, serde_json::json!(["hello"]));
    // The second message goes to the same, warm runner with the stored history.
    let (second, mut events) = f
        .host
        .submit(&f.agent, "cli", "cli", "again")
        .await
        .unwrap();
    assert_eq!(reply_of(&mut events).await.1, "echo: again");
    assert_eq!(f.launches.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.store.get_session(second.session_id).unwrap().history,
        serde_json::json!(["hello", "again"])
    );
    let memory = std::fs::read_to_string(f.home.agent_dir("helper").join("memory.md")).unwrap();
    assert_eq!(memory, "saw hello\nsaw again\n");
    // The socket is private.
    use std::os::unix::fs::PermissionsExt;
    let socket = palisade_host::socket_path(&f.host.config().socket_dir, &f.agent);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    f.host.shutdown().await;
    assert!(!socket.exists(), "socket removed on shutdown");
}

/// A runner may stream any number of bounded deltas: whoever watches gets at most
/// 4 MiB of them in a turn, then one line saying the rest waits for the answer, which
/// still comes whole.
#[tokio::test]
async fn a_turns_streamed_text_is_bounded() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let (_, mut events) = f
        .host
        .submit(&f.agent, "cli", "cli", "flood please")
        .await
        .unwrap();
    let (seen, text, is_error) = reply_of(&mut events).await;
    assert_eq!(text, "echo: flood please");
    assert!(!is_error);
    let streamed: usize = seen
        .iter()
        .map(|event| match event {
            StreamEvent::TextDelta { text } => text.len(),
            _ => 0,
        })
        .sum();
    assert!(streamed <= 4 << 20, "{streamed} bytes streamed");
    assert!(streamed >= 3 << 20, "{streamed} bytes streamed");
    let said = seen.iter().any(|event| {
        matches!(event, StreamEvent::Status { message } if message.contains("more than 4 MiB"))
    });
    assert!(said, "nothing said the rest is not shown");
    f.host.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let unknown = AgentName::new("nobody").unwrap();
    assert!(matches!(
        f.host.submit(&unknown, "cli", "cli", "hi").await,
        Err(HostError::UnknownAgent(_))
    ));
    assert!(matches!(
        f.host.submit(&f.agent, "cli", "cli", " \n").await,
        Err(HostError::EmptyMessage)
    ));
    let huge = "x".repeat(palisade_host::MAX_MESSAGE_BYTES + 1);
    assert!(matches!(
        f.host.submit(&f.agent, "cli", "cli", &huge).await,
        Err(HostError::TooLarge { .. })
    ));
    assert!(f.store.list_sessions(None).unwrap().is_empty());
    f.host.shutdown().await;
}

#[tokio::test]
async fn crashed_runner_is_restarted_and_the_message_answered_once() {
    let f = fixture(Behaviour::CrashFirst(2), |_| {}).await;
    let (accepted, mut events) = f.host.submit(&f.agent, "c", "cli", "boom").await.unwrap();
    let (_, text, is_error) = reply_of(&mut events).await;
    assert_eq!(text, "echo: boom");
    assert!(!is_error);
    assert_eq!(f.launches.load(Ordering::SeqCst), 3);
    assert_eq!(
        f.store.get_message(accepted.message_id).unwrap().attempts,
        3
    );
    assert_eq!(
        f.store.session_messages(accepted.session_id).unwrap().len(),
        1
    );
    f.host.shutdown().await;
}

#[tokio::test]
async fn a_message_that_keeps_crashing_runners_gets_an_error_reply() {
    let f = fixture(Behaviour::CrashFirst(usize::MAX), |config| {
        config.max_attempts = 2
    })
    .await;
    let (accepted, mut events) = f.host.submit(&f.agent, "c", "cli", "poison").await.unwrap();
    let (_, text, is_error) = reply_of(&mut events).await;
    assert!(is_error, "{text}");
    assert!(text.contains("failed"), "{text}");
    assert_eq!(
        f.store.get_message(accepted.message_id).unwrap().status,
        MessageStatus::Answered
    );
    f.host.shutdown().await;
}

/// A runner that cannot start says why to the person waiting, not only in the log:
/// a sandbox whose disk is nearly full.
#[tokio::test]
async fn a_runner_that_cannot_start_says_why_in_the_reply() {
    let f = fixture(Behaviour::ExitAtOnce, |config| config.max_attempts = 1).await;
    let (_, mut events) = f.host.submit(&f.agent, "c", "cli", "hi").await.unwrap();
    let (_, text, is_error) = reply_of(&mut events).await;
    assert!(is_error, "{text}");
    assert!(text.contains("nearly full (17.2M free)"), "{text}");
    f.host.shutdown().await;
}

/// The ids a runner is given say nothing of other conversations or agents: the
/// store's are counters every agent's messages move, and the gap between two of an
/// agent's own told it how many messages others had sent meanwhile (review: an action
/// agent signalled a research agent that way, one bit a message, no person asked).
#[tokio::test]
async fn the_ids_a_runner_sees_do_not_count_other_messages() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let seen = |text: String| -> (i64, i64) {
        let mut parts = text.split(' ').map(|n| n.parse::<i64>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let (first, mut events) = f.host.submit(&f.agent, "x", "cli", "ids").await.unwrap();
    let (first_seen, first_session) = seen(reply_of(&mut events).await.1);
    for i in 0..3 {
        let (_, mut events) = f
            .host
            .submit(&f.agent, "y", "cli", &format!("m{i}"))
            .await
            .unwrap();
        reply_of(&mut events).await;
    }
    let (second, mut events) = f.host.submit(&f.agent, "x", "cli", "ids").await.unwrap();
    let (second_seen, _) = seen(reply_of(&mut events).await.1);
    assert_eq!(
        second.message_id - first.message_id,
        4,
        "the store's ids moved"
    );
    assert_ne!(
        first_seen, first.message_id,
        "the runner saw the store's message id"
    );
    assert_ne!(
        first_session, first.session_id,
        "the runner saw the store's session id"
    );
    assert_ne!(
        second_seen - first_seen,
        4,
        "the runner can count the messages sent between its own"
    );
    f.host.shutdown().await;
}

#[tokio::test]
async fn a_runner_naming_another_session_is_refused() {
    let f = fixture(Behaviour::WrongSession, |config| config.max_attempts = 2).await;
    let (accepted, mut events) = f.host.submit(&f.agent, "c", "cli", "hi").await.unwrap();
    let (_, text, is_error) = reply_of(&mut events).await;
    assert!(is_error, "{text}");
    let session = f.store.get_session(accepted.session_id).unwrap();
    assert_eq!(
        session.history,
        serde_json::json!([]),
        "nothing from the bad runner was stored"
    );
    f.host.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_host_socket_does_not_stop_the_host() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let (_, mut events) = f.host.submit(&f.agent, "c", "cli", "first").await.unwrap();
    reply_of(&mut events).await;
    let socket = palisade_host::socket_path(&f.host.config().socket_dir, &f.agent);
    for garbage in [
        &b"\xff\xff\xff\xffjunk"[..],
        b"\x00\x00\x00\x05hello",
        b"\x00\x00\x00\x10{\"type\":\"reply\"}",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = UnixStream::connect(&socket).await.unwrap();
        let _ = stream.write_all(garbage).await;
        let _ = stream.shutdown().await;
    }
    let (_, mut events) = f.host.submit(&f.agent, "c", "cli", "second").await.unwrap();
    assert_eq!(reply_of(&mut events).await.1, "echo: second");
    f.host.shutdown().await;
}

#[tokio::test]
async fn idle_runner_is_stopped_and_started_again_on_demand() {
    let f = fixture(Behaviour::Echo, |config| {
        config.idle_timeout = Duration::from_millis(200)
    })
    .await;
    let (_, mut events) = f.host.submit(&f.agent, "c", "cli", "one").await.unwrap();
    reply_of(&mut events).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, mut events) = f.host.submit(&f.agent, "c", "cli", "two").await.unwrap();
    assert_eq!(reply_of(&mut events).await.1, "echo: two");
    assert_eq!(f.launches.load(Ordering::SeqCst), 2);
    f.host.shutdown().await;
}

#[tokio::test]
async fn unanswered_messages_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    let store = Store::open(&home).unwrap();
    let agent = AgentName::new("helper").unwrap();
    store.create_agent(&agent, Profile::Research).unwrap();
    // Accepted and even delivered once by a host that then died.
    let accepted = store.accept_message(&agent, "c", "cli", "survive").unwrap();
    store.mark_delivered(accepted.message_id).unwrap();
    let launcher = Arc::new(FakeLauncher {
        behaviour: Behaviour::Echo,
        launches: Arc::new(AtomicUsize::new(0)),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    });
    let host = Host::start(store.clone(), HostConfig::new(home), launcher)
        .await
        .unwrap();
    let answered = async {
        loop {
            if let Some(reply) = store.get_reply(accepted.message_id).unwrap() {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let reply = tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .unwrap();
    assert_eq!(reply.text, "echo: survive");
    assert_eq!(store.get_message(accepted.message_id).unwrap().attempts, 2);
    host.shutdown().await;
}

#[tokio::test]
async fn conversations_run_side_by_side_up_to_the_agents_concurrency_each_in_order() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    f.store
        .update_agent_settings(&f.agent, &serde_json::json!({"concurrency": 2}))
        .unwrap();
    // a1 is held by its runner; a2 (same conversation) must wait for it, while b1
    // (another conversation) is answered by the second slot meanwhile.
    let (a1, mut a1_events) = f
        .host
        .submit(&f.agent, "a", "cli", "hold a1")
        .await
        .unwrap();
    let (a2, mut a2_events) = f.host.submit(&f.agent, "a", "cli", "a2").await.unwrap();
    let (_, mut b1_events) = f.host.submit(&f.agent, "b", "cli", "b1").await.unwrap();
    assert_eq!(reply_of(&mut b1_events).await.1, "echo: b1");
    assert_eq!(
        f.store.get_message(a1.message_id).unwrap().status,
        MessageStatus::Delivered
    );
    let waiting = f.store.get_message(a2.message_id).unwrap();
    assert_eq!(waiting.status, MessageStatus::Pending);
    assert_eq!(waiting.attempts, 0);
    assert_eq!(f.launches.load(Ordering::SeqCst), 2, "one runner per slot");
    // b1's slot is free again: c1 (held too) takes it, so both slots are busy and d1,
    // a fourth conversation, waits: there is no third runner.
    let (_, mut c1_events) = f
        .host
        .submit(&f.agent, "c", "cli", "hold c1")
        .await
        .unwrap();
    let (d1, mut d1_events) = f.host.submit(&f.agent, "d", "cli", "d1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.store.get_message(d1.message_id).unwrap().status,
        MessageStatus::Pending,
        "no third runner: the concurrency is 2"
    );
    assert_eq!(f.launches.load(Ordering::SeqCst), 2);
    f.gate.add_permits(2);
    assert_eq!(reply_of(&mut a1_events).await.1, "echo: hold a1");
    assert_eq!(reply_of(&mut c1_events).await.1, "echo: hold c1");
    assert_eq!(reply_of(&mut a2_events).await.1, "echo: a2");
    assert_eq!(reply_of(&mut d1_events).await.1, "echo: d1");
    let session = f.store.get_session(a1.session_id).unwrap();
    assert_eq!(session.history, serde_json::json!(["hold a1", "a2"]));
    // Each slot has its own socket, removed on shutdown.
    let second = f.host.config().socket_dir.join("helper.2.sock");
    assert!(second.exists());
    f.host.shutdown().await;
    assert!(!second.exists());
}

/// The pending approval of `agent`, once one exists.
async fn pending_approval(store: &Store) -> palisade_store::Approval {
    for _ in 0..200 {
        let pending = store
            .list_approvals(Some(palisade_store::ApprovalStatus::Pending), 10)
            .unwrap();
        if let Some(approval) = pending.into_iter().next() {
            return approval;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no approval was asked for within 5 s");
}

/// Sends `text` (`approve:ACTION`) in `conversation`; the stream of its events and the
/// approval its turn asked for.
async fn ask(
    f: &Fixture,
    conversation: &str,
    text: &str,
) -> (
    tokio::sync::broadcast::Receiver<StreamEvent>,
    palisade_store::Approval,
) {
    let (_, events) = f
        .host
        .submit(&f.agent, conversation, "cli", text)
        .await
        .unwrap();
    (events, pending_approval(&f.store).await)
}

/// The vault's engine and the host's may both announce the same approval: the person
/// waiting is told each line once (`palisade send` printed "Approved by …" twice).
#[tokio::test]
async fn each_approval_line_is_told_once() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let (mut events, approval) = ask(&f, "a", "approve:wire 20 EUR").await;
    for _ in 0..2 {
        f.host
            .config()
            .approval_events
            .publish(palisade_approvals::Event::Created(approval.clone()));
    }
    let decided = f
        .host
        .engine()
        .decide(
            &approval.id,
            &palisade_approvals::ApproverIdentity::cli("ana"),
            palisade_approvals::Choice::Once,
            None,
        )
        .unwrap();
    f.host
        .config()
        .approval_events
        .publish(palisade_approvals::Event::Closed(decided));
    let (seen, _, _) = reply_of(&mut events).await;
    let told = |needle: &str| {
        seen.iter()
            .filter(|event| matches!(event, StreamEvent::Status { message } if message.contains(needle)))
            .count()
    };
    assert_eq!(told("waiting for a person to approve"), 1, "{seen:?}");
    assert_eq!(told("Approved by cli:ana"), 1, "{seen:?}");
    f.host.shutdown().await;
}

#[tokio::test]
async fn request_approval_waits_for_a_person_and_tells_the_agent_who_decided() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let (mut events, approval) = ask(&f, "a", "approve:wire 20 EUR").await;
    assert_eq!(approval.kind, "tool_action");
    assert_eq!(approval.title, "helper asks: wire 20 EUR");
    assert_eq!(approval.lines, vec!["because"]);
    // Decided by another process (its own engine and events): found by the poll.
    let elsewhere = palisade_approvals::Engine::new(f.store.clone(), Default::default());
    elsewhere
        .decide(
            &approval.id,
            &palisade_approvals::ApproverIdentity::cli("ana"),
            palisade_approvals::Choice::Once,
            None,
        )
        .unwrap();
    let (_, text, _) = reply_of(&mut events).await;
    assert_eq!(text, "approved by cli:ana; go ahead");

    // A denial with a comment, made in this process, reaches the agent at once.
    let (mut events, approval) = ask(&f, "b", "approve:delete the backups").await;
    f.host
        .engine()
        .decide(
            &approval.id,
            &palisade_approvals::ApproverIdentity::web(),
            palisade_approvals::Choice::Deny,
            Some("keep last week's"),
        )
        .unwrap();
    let (_, text, _) = reply_of(&mut events).await;
    assert_eq!(
        text,
        "denied by web:admin, who said: keep last week's; do not do it"
    );
    f.host.shutdown().await;
}

#[tokio::test]
async fn request_approval_expires_denied() {
    let f = fixture(Behaviour::Echo, |_| {}).await;
    let mut settings = f.store.get_agent(&f.agent).unwrap().settings;
    settings["approval_timeout_secs"] = serde_json::json!(1);
    f.store.update_agent_settings(&f.agent, &settings).unwrap();
    let (_, mut events) = f
        .host
        .submit(&f.agent, "a", "cli", "approve:something")
        .await
        .unwrap();
    let (_, text, _) = reply_of(&mut events).await;
    assert!(
        text.starts_with("nobody decided in time, so it is denied"),
        "{text}"
    );
    let all = f.store.list_approvals(None, 10).unwrap();
    assert_eq!(all[0].status, palisade_store::ApprovalStatus::TimedOut);
    f.host.shutdown().await;
}
