//! The `palisade` binary: parses arguments and wires the crates together.
//!
//! Every command returns `anyhow::Result`; this file turns an error into one line on
//! stderr (`error: cause: cause`) and exit status 1. Usage errors are clap's (status 2).

mod cmd;
mod context;
mod input;
mod output;

use clap::{CommandFactory, Parser, Subcommand};
use cmd::agents::AgentsCommand;
use cmd::approvals::ApprovalsCommand;
use cmd::audit::AuditCommand;
use cmd::channels::{ApproversCommand, ChannelsCommand};
use cmd::folders::FoldersCommand;
use cmd::rules::RulesCommand;
use cmd::sandbox::{SandboxCommand, ShimArgs};
use cmd::secrets::SecretsCommand;
use cmd::sessions::SessionsCommand;
use cmd::vault::VaultCommand;
use context::Context;
use std::path::PathBuf;

const LONG_ABOUT: &str = "\
Palisade runs AI agents in sandboxes and puts every control at the sandbox's boundary:
credentials are injected by the vault gateway on the way out and never enter a sandbox,
sensitive actions wait for a person's approval, and every request is written to a
hash-chained audit log.

State lives in $PALISADE_HOME (default ~/.palisade), or the directory given with --home.";

const EXAMPLES: &str = "\
Examples:
  palisade agents create mailer --profile action
  palisade secrets create --name gmail --host-pattern gmail.googleapis.com --inject bearer --agent mailer < token.txt
  palisade rules create --name ask-before-send --host-pattern gmail.googleapis.com --method POST --action require_approval
  palisade vault serve
  palisade approvals list
  palisade audit verify";

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "A personal AI-agent host whose security lives at the sandbox boundary",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// State directory [default: $PALISADE_HOME, else ~/.palisade]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print JSON instead of tables (arrays for lists, objects otherwise).
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, change, inspect and delete agents; their dial, whom they may message, their tokens.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Credentials the vault injects into agents' requests (values go in, never out).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Host folders shared with agents' sandboxes at /mnt/NAME (sensitive ones never
    /// with research agents).
    #[command(subcommand)]
    Folders(FoldersCommand),
    /// Allow, block, rate-limit or require approval for requests by host, path and method.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Held actions waiting for a person: list, show, approve, deny; rules to stop asking.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The hash-chained audit log: list rows, verify nothing was edited.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Chat channels (Telegram, Slack, Discord): add, link chats, who may talk, strangers, test, remove.
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Who decides an agent's approvals on which channel.
    #[command(subcommand)]
    Approvers(ApproversCommand),
    /// The vault gateway: serve, CA certificate, container environment, admin key.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Run commands in an agent's sandbox.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Inside a sandbox: relay the loopback proxy port to the vault socket.
    Shim(ShimArgs),
    /// Start the host: vault, agents' runners on demand, the web UI and the local JSON API.
    #[command(after_help = "Examples:
  palisade up
  ANTHROPIC_API_KEY=... palisade up --detach
  palisade up --listen 127.0.0.1:10260 --idle-timeout 30m --turn-timeout 1h
  palisade up --vault-listen 127.0.0.1:10255   # also serve agents outside a sandbox

The web UI (chat, agents, sessions, approvals, audit log, vault, health) is at the
--listen address; agents, secrets and rules can be managed there too. Open the login
URL printed at start (http://ADDR/login?token=...): it works once, within an hour,
and sets the browser's session cookie (good only for the local user whose browser
logged in); `palisade login` prints a new one.

On a first start with no model key: --anthropic-key-file, else ANTHROPIC_API_KEY, else
a hidden prompt on a terminal; without any, the web UI's dashboard asks for one.")]
    Up(cmd::up::UpArgs),
    /// Check what Palisade needs on this machine and say how to fix each problem.
    #[command(after_help = "Examples:
  palisade doctor            # sandbox runtimes and limits, store, master key, audit chain,
                             # vault CA, model keys, free disk, the running host
  palisade doctor --online   # also one tiny request per agent to its model, through the vault
  palisade doctor --json

Exits 1 when something must be fixed (a FAIL line); warnings alone exit 0.
`palisade sandbox doctor` prints the sandbox part in full.")]
    Doctor(cmd::doctor::DoctorArgs),
    /// Print a fresh one-time login link for the running host's web UI.
    #[command(
        after_help = "Example:\n  palisade login          # open the printed link in a browser on this machine\n\nEach link works once, within 10 minutes."
    )]
    Login,
    /// Stop a host started with `palisade up --detach` (or in another terminal).
    Down,
    /// Whether the host is running, where, and which agents are active.
    Status,
    /// Send a message to an agent and print its reply as it streams (piped: once, whole).
    Send(cmd::send::SendArgs),
    /// Chat with an agent in the terminal: replies stream, the session's history continues.
    Chat(cmd::chat::ChatArgs),
    /// Conversations with agents: list, show, reset.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Show what an agent would receive of a text from another agent (read from stdin).
    Sanitize(cmd::sanitize::SanitizeArgs),
    /// Inside a sandbox: the agent loop, driven by the host over its socket.
    #[command(hide = true)]
    Runner(cmd::runner::RunnerArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  palisade completions bash > ~/.local/share/bash-completion/completions/palisade"
    )]
    Completions {
        /// The shell to print the script for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

fn main() {
    // Before any thread exists: the model key leaves the environment at once.
    cmd::up::take_environment_key();
    // The shim starts every sandbox: it skips building the whole CLI (its own
    // arguments are parsed by palisade_sandbox::shim).
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.first().is_some_and(|a| a == "shim")
        && !argv.get(1).is_some_and(|a| a == "--help" || a == "-h")
    {
        cmd::sandbox::run_shim_args(argv[1..].to_vec());
    }
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let long_lived = matches!(cli.command, Command::Up(_));
    let home = palisade_store::Home::resolve(cli.home.as_deref()).ok();
    let code = match run(cli) {
        // What this command changed is saved, but a running gateway could not load the
        // configuration: it still enforces the previous one, so the command failed.
        Ok(()) if !long_lived => match home
            .as_ref()
            .and_then(|home| not_in_force(&palisade_store::gateways::take_refused(home)))
        {
            Some(message) => {
                eprintln!("error: {}", output::clean(&message));
                1
            }
            None => 0,
        },
        Ok(()) => 0,
        Err(error) if is_broken_pipe(&error) => 0,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let context = || Context::new(cli.home.as_deref(), cli.json);
    match cli.command {
        Command::Agents(command) => cmd::agents::run(command, &context()?),
        Command::Secrets(command) => cmd::secrets::run(command, &context()?),
        Command::Folders(command) => cmd::folders::run(command, &context()?),
        Command::Rules(command) => cmd::rules::run(command, &context()?),
        Command::Approvals(command) => cmd::approvals::run(command, &context()?),
        Command::Audit(command) => cmd::audit::run(command, &context()?),
        Command::Channels(command) => cmd::channels::run(command, &context()?),
        Command::Approvers(command) => cmd::channels::run_approvers(command, &context()?),
        Command::Vault { command } => cmd::vault::run(command, &context()?),
        Command::Sandbox { command } => cmd::sandbox::run(command, &context()?),
        Command::Shim(args) => cmd::sandbox::run_shim(args),
        Command::Up(args) => cmd::up::up(args, &context()?),
        Command::Doctor(args) => cmd::doctor::run(args, &context()?),
        Command::Login => cmd::up::login(&context()?),
        Command::Down => cmd::up::down(&context()?),
        Command::Status => cmd::up::status(&context()?),
        Command::Send(args) => cmd::send::run(args, &context()?),
        Command::Chat(args) => cmd::chat::run(args, &context()?),
        Command::Sessions(command) => cmd::sessions::run(command, &context()?),
        Command::Runner(args) => cmd::runner::run(args),
        Command::Sanitize(args) => cmd::sanitize::run(args, cli.json),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "palisade", &mut script);
            output::print(&String::from_utf8_lossy(&script))
        }
    }
}

/// The error and its causes on one line, joined with ": ", each cause once (an error
/// that quotes its source, `database error: malformed`, is not followed by it again),
/// control characters escaped.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        // Causes quote what others wrote (a model server's error, a runner's last
        // words): escape sequences are shown, never sent to the terminal.
        let cause = cause
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(output::clean)
            .collect::<Vec<_>>()
            .join(" ");
        if cause.is_empty() || text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// What to say when running gateways refused the change just made (`None` when none
/// did).
fn not_in_force(refused: &[palisade_store::gateways::Unconfirmed]) -> Option<String> {
    let first = refused.first()?;
    Some(format!(
        "saved, but {}; fix or delete what it names (`palisade doctor` checks it again) and the change takes effect at once",
        first.describe()
    ))
}

/// `palisade audit list | head` closing the pipe early is not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr so stdout stays clean for tables, JSON and tokens. `-v` flags win
/// over RUST_LOG; without either only warnings and errors are shown, and of the h2
/// crate only errors: it warns once per stream an agent resets past its limit, which
/// one agent's loop turned into a thousand lines in 15 s that no budget of ours bounds.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,h2=error")),
        1 => EnvFilter::new("info"),
        2 => EnvFilter::new("debug"),
        _ => EnvFilter::new("trace"),
    };
    // Colour only on a terminal: a detached host's stderr is its log file.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_target(false)
        .fmt_fields(escaped_fields())
        .try_init();
}

/// How log fields are written: each value with its control and invisible characters
/// escaped (`\u{1b}`, `\u{a}`). Fields carry what others wrote (a runner's malformed
/// frame quoted in a parse error, a runner's stderr, an upstream's error): written raw,
/// they could set the terminal's title, clear it, or start a forged log line.
fn escaped_fields() -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = output::clean(&format!("{value:?}"));
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--help` explains every argument: one without a line is a name the user must
    /// guess the meaning of (`<NAME>`: of what?).
    #[test]
    fn every_argument_says_what_it_is() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for argument in command.get_arguments() {
                let id = argument.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let said = argument
                    .get_help()
                    .or(argument.get_long_help())
                    .is_some_and(|help| !help.to_string().trim().is_empty());
                if !said {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "palisade", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn errors_are_one_line() {
        let error = anyhow::anyhow!("inner\nproblem").context("outer");
        assert_eq!(one_line(&error), "outer: inner problem");
        // A model server's words with escape sequences: shown, not obeyed.
        let error = anyhow::anyhow!("bad\u{1b}]0;TITLE\u{7}\u{1b}[2K palisade: approved");
        let line = one_line(&error);
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{7}'),
            "{line:?}"
        );
        assert!(
            line.contains("TITLE") && line.contains("palisade: approved"),
            "{line}"
        );
    }

    #[derive(Debug)]
    struct Sqlite;
    impl std::fmt::Display for Sqlite {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("database disk image is malformed")
        }
    }
    impl std::error::Error for Sqlite {}

    #[derive(Debug)]
    struct Store(Sqlite);
    impl std::fmt::Display for Store {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error: {}", self.0)
        }
    }
    impl std::error::Error for Store {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Each cause once: a store error quoting SQLite's is not followed by SQLite's again.
    #[test]
    fn each_cause_is_said_once() {
        let error = anyhow::Error::new(Store(Sqlite)).context("cannot list agents");
        assert_eq!(
            one_line(&error),
            "cannot list agents: database error: database disk image is malformed"
        );
    }
}
