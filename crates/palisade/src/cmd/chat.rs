//! `palisade chat`: an interactive conversation with an agent in the terminal.
//!
//! Each line typed is one message to the running host's local API (as `palisade send`
//! sends it), and the reply streams back as it comes. The conversation is a session of
//! the durable queue, so a chat continues where the last one (or `palisade send` with
//! the same conversation key) left off. `/reset` forgets the session's history, `/exit`
//! or end of input (Ctrl-D) ends the chat. Works the same with stdin from a pipe, where
//! no prompts are printed, so scripts can drive it.

use super::send::{acknowledge, check_text, clean_text, stream_reply};
use super::up::running_host;
use crate::context::Context;
use anyhow::{bail, Context as _};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Debug, clap::Args)]
#[command(after_help = "Commands inside the chat:
  /reset   forget this conversation's history (the agent starts afresh)
  /exit    end the chat (so does Ctrl-D)
  /help    list these commands

Examples:
  palisade chat --agent assistant
  palisade chat --agent helper --conversation project-x
  palisade chat --agent helper --session 12
  printf 'hello\\n/reset\\nhello again\\n' | palisade chat --agent helper")]
pub struct ChatArgs {
    /// The agent to talk to (may be left out when there is only one).
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Conversation key; the same key continues the same session (`palisade send` uses `cli` too).
    #[arg(
        long,
        default_value = "cli",
        value_name = "KEY",
        conflicts_with = "session"
    )]
    conversation: String,
    /// Continue this session (an id from `palisade sessions list`).
    #[arg(long, value_name = "ID")]
    session: Option<i64>,
}

/// What a line typed in the chat asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Message(&'a str),
    Reset,
    Exit,
    Help,
    Unknown(&'a str),
    Blank,
}

fn parse_line(line: &str) -> Line<'_> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Line::Blank;
    }
    match trimmed {
        "/reset" => Line::Reset,
        "/exit" | "/quit" => Line::Exit,
        "/help" | "/?" => Line::Help,
        command if command.starts_with('/') && !command.contains(char::is_whitespace) => {
            Line::Unknown(command)
        }
        _ => Line::Message(line.trim_end_matches(['\r', '\n'])),
    }
}

/// One line of input, at most `limit` bytes kept (the rest of a longer line is read
/// and dropped). `None` at end of input; `Some(Err(len))` for a line over the limit.
fn read_line(
    input: &mut impl BufRead,
    limit: usize,
) -> std::io::Result<Option<Result<String, usize>>> {
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut saw_any = false;
    let mut newline = false;
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, ends) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        total += chunk.len();
        if kept.len() < limit + 1 {
            let room = limit + 1 - kept.len();
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        let used = chunk.len();
        input.consume(used);
        if ends {
            newline = true;
            break;
        }
    }
    if !saw_any {
        return Ok(None);
    }
    let content_length = total - usize::from(newline);
    if content_length > limit {
        return Ok(Some(Err(content_length)));
    }
    Ok(Some(Ok(String::from_utf8_lossy(&kept).into_owned())))
}

pub fn run(args: ChatArgs, ctx: &Context) -> anyhow::Result<()> {
    let agent = super::send::agent_or_only_one(args.agent.as_deref(), ctx)?;
    if running_host(&ctx.home).is_none() {
        bail!("palisade is not running for this home; start it with `palisade up` (or `palisade up --detach`)");
    }
    let store = ctx.open_store()?;
    store.get_agent(&agent)?;
    let (conversation, mut session_id) = match args.session {
        Some(id) => {
            let session = store
                .get_session(id)
                .with_context(|| format!("cannot continue session {id}"))?;
            if session.agent != agent {
                bail!(
                    "session {id} belongs to agent \"{}\", not \"{agent}\"; list yours with `palisade sessions list --agent {agent}`",
                    session.agent
                );
            }
            (session.conversation, Some(id))
        }
        None => {
            let existing = store
                .list_sessions(Some(&agent))?
                .into_iter()
                .find(|session| session.conversation == args.conversation)
                .map(|session| session.id);
            (args.conversation, existing)
        }
    };
    let interactive = std::io::stdin().is_terminal();
    // Messages stay listed after a reset, but the agent no longer has them.
    let (earlier, forgotten) = match session_id {
        Some(id) => {
            let session = store.get_session(id)?;
            let forgotten = session.history.as_array().is_some_and(Vec::is_empty);
            (session.messages, forgotten)
        }
        None => (0, false),
    };
    eprintln!(
        "palisade: chatting with {agent} (conversation {:?}{}); /reset forgets the history, /exit or Ctrl-D ends",
        crate::output::clean(&conversation),
        match session_id {
            Some(id) if forgotten && earlier > 0 => format!(
                ", session {id}, {earlier} earlier message(s), none of which the agent remembers (the session was reset, or they were not answered)"
            ),
            Some(id) => format!(", session {id}, {earlier} earlier message(s)"),
            None => ", new session".to_string(),
        }
    );

    if let Some(id) = session_id {
        show_unseen_replies(&store, id)?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = format!("/api/agents/{agent}/messages");
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut stdout = std::io::stdout();
    loop {
        if interactive {
            write!(stdout, "you> ")?;
            stdout.flush()?;
        }
        let line = match read_line(&mut input, palisade_host::MAX_MESSAGE_BYTES)
            .context("cannot read from the terminal")?
        {
            None => {
                if interactive {
                    writeln!(stdout)?;
                }
                return Ok(());
            }
            Some(Err(length)) => {
                eprintln!(
                    "palisade: the message is too large ({length} bytes; at most {}); send a shorter one or put the text in a file in the agent's workspace",
                    palisade_host::MAX_MESSAGE_BYTES
                );
                continue;
            }
            Some(Ok(line)) => line,
        };
        match parse_line(&line) {
            Line::Blank => continue,
            Line::Exit => return Ok(()),
            Line::Help => {
                eprintln!("palisade: /reset forgets this conversation's history, /exit ends the chat (so does Ctrl-D)");
            }
            Line::Unknown(command) => {
                eprintln!(
                    "palisade: unknown command {}; try /help",
                    crate::output::clean(command)
                );
            }
            Line::Reset => {
                match session_id {
                    Some(id) => {
                        store.reset_session(id)?;
                        eprintln!("palisade: session {id} reset; the agent starts this conversation afresh");
                    }
                    None => eprintln!("palisade: nothing to reset yet"),
                }
            }
            Line::Message(text) => {
                if let Err(error) = check_text(text) {
                    eprintln!("palisade: {error}");
                    continue;
                }
                // Looked up each time: a restarted host has a new address and token.
                let Some(info) = running_host(&ctx.home) else {
                    bail!("the host stopped; start it again with `palisade up` and rerun `palisade chat`");
                };
                if interactive {
                    write!(stdout, "{agent}> ")?;
                    stdout.flush()?;
                }
                let body = serde_json::json!({
                    "text": text,
                    "conversation": conversation,
                    "channel": "chat",
                });
                // An error here means the message was not accepted: the chat cannot go on.
                let streamed = runtime
                    .block_on(stream_reply(&info, &path, body, ctx.json))
                    .context("the host stopped; start it again with `palisade up` and rerun `palisade chat`")?;
                if let Some(lost) = &streamed.lost {
                    // The host went away mid-reply: the message stays queued.
                    if interactive {
                        writeln!(stdout)?;
                    }
                    eprintln!("palisade: {}", crate::output::clean(lost));
                    continue;
                }
                if streamed.session_id.is_some() {
                    session_id = streamed.session_id;
                }
                acknowledge(&store, &streamed);
                if let Some(error) = streamed.error {
                    if interactive {
                        writeln!(stdout)?;
                    }
                    eprintln!("palisade: {}", crate::output::clean(&error));
                }
            }
        }
    }
}

/// Prints the replies of this session that no one has seen yet (answered after a
/// `send` or `chat` lost its host, e.g. in a crash) and marks them seen.
fn show_unseen_replies(store: &palisade_store::Store, session_id: i64) -> anyhow::Result<()> {
    let messages = store.session_messages(session_id)?;
    let unseen: Vec<_> = messages
        .iter()
        .filter_map(|(message, reply)| reply.as_ref().map(|reply| (message, reply)))
        .filter(|(_, reply)| !reply.delivered)
        .collect();
    if unseen.is_empty() {
        return Ok(());
    }
    eprintln!(
        "palisade: {} repl{} you have not seen yet:",
        unseen.len(),
        if unseen.len() == 1 { "y" } else { "ies" }
    );
    let mut stdout = std::io::stdout();
    for (message, reply) in unseen {
        let asked: String = message.text.chars().take(200).collect();
        writeln!(stdout, "> {}", crate::output::clean(&asked))?;
        for sent in store.outbound_messages(message.id)? {
            writeln!(stdout, "{}", clean_text(&sent.text))?;
        }
        if reply.is_error {
            writeln!(stdout, "(error) {}", clean_text(&reply.text))?;
        } else {
            writeln!(stdout, "{}", clean_text(&reply.text))?;
        }
        store.mark_reply_delivered(message.id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_commands_or_messages() {
        assert_eq!(parse_line("/reset\n"), Line::Reset);
        assert_eq!(parse_line("  /exit "), Line::Exit);
        assert_eq!(parse_line("/quit"), Line::Exit);
        assert_eq!(parse_line("/help"), Line::Help);
        assert_eq!(parse_line("/frobnicate"), Line::Unknown("/frobnicate"));
        assert_eq!(parse_line("   \n"), Line::Blank);
        assert_eq!(parse_line("hello there\n"), Line::Message("hello there"));
        // A path is a message, not a command.
        assert_eq!(
            parse_line("/etc/hosts is what?"),
            Line::Message("/etc/hosts is what?")
        );
    }

    #[test]
    fn long_lines_are_refused_and_skipped_whole() {
        let mut input = std::io::Cursor::new(format!("{}\nnext\nlast", "x".repeat(100)));
        assert_eq!(read_line(&mut input, 10).unwrap(), Some(Err(100)));
        assert_eq!(
            read_line(&mut input, 10).unwrap(),
            Some(Ok("next\n".into()))
        );
        assert_eq!(read_line(&mut input, 10).unwrap(), Some(Ok("last".into())));
        assert_eq!(read_line(&mut input, 10).unwrap(), None);
        let mut exact = std::io::Cursor::new("0123456789\n");
        assert_eq!(
            read_line(&mut exact, 10).unwrap(),
            Some(Ok("0123456789\n".into()))
        );
    }
}
