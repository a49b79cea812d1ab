//! The homebase command-line tool: the CLI on the laptop (and, later, `homebase daemon` on
//! the host). `main` parses flags, runs one command and turns its outcome into an exit code.
//!
//! Boundary: everything printed here is user-facing. Human output goes through `ui`, JSON
//! output through the wire types of `homebase-proto`.

pub mod cli;
mod commands;
mod loop_view;
mod probe;
mod progress;
pub mod project;
mod tunnel;
pub mod ui;

pub use homebase_host::exit;
use homebase_host::{self as host, daemon_client, release, source};

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::init(cli.global.color);
    host::report::install(host::report::Sink {
        note: ui::note,
        warn: ui::warn,
    });
    let json = wants_json(&cli.command);
    match run(cli) {
        Ok(code) => code.into(),
        Err(err) => report(&err, json),
    }
}

/// Ctrl-C, SIGTERM and SIGHUP are noted for the release under way (read between steps and
/// while it follows the job) instead of killing this process mid-step.
pub(crate) fn catch_interrupts() {
    let _ = ctrlc::set_handler(release::interrupt);
}

fn wants_json(cmd: &Command) -> bool {
    match cmd {
        Command::Plan(a) => a.json,
        Command::Deploy(a) => a.json,
        Command::Status(a) => a.json,
        Command::Releases(a) => a.json,
        Command::Rollback(a) => a.json,
        Command::Tunnel(a) => a.json,
        Command::Backup(a) => a.json,
        Command::Setup(a) => a.json,
        Command::Preflight(a) => a.json,
        Command::Loop(a) => a.json,
        Command::Nodes(a) => a.json,
        Command::Restart(a) => a.json,
        _ => false,
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Init(args) => commands::init::run(&cli.global, &args),
        Command::Plan(args) => commands::plan::run(&cli.global, &args),
        Command::Render(args) => commands::render::run(&cli.global, &args),
        Command::Deploy(args) => commands::deploy::run(&cli.global, &args),
        Command::Status(args) => commands::status::status(&cli.global, &args),
        Command::Releases(args) => commands::rollback::releases(&cli.global, &args),
        Command::Rollback(args) => commands::rollback::rollback(&cli.global, &args),
        Command::Logs(args) => commands::ops::logs(&cli.global, &args),
        Command::Restart(args) => commands::ops::restart(&cli.global, &args),
        Command::Exec(args) => commands::ops::exec(&cli.global, &args),
        Command::Tunnel(args) => commands::tunnel::run(&cli.global, &args),
        Command::SshConfig(args) => commands::tunnel::ssh_config(&cli.global, &args),
        Command::Backup(args) => commands::backup::run(&cli.global, &args),
        Command::Setup(args) => commands::setup::run(&cli.global, &args),
        Command::Preflight(args) => commands::setup::away::run(&cli.global, &args),
        Command::Loop(args) => commands::loops::run(&cli.global, &args),
        Command::Nodes(args) => commands::swarm::nodes(&cli.global, &args),
        Command::Dash(args) => commands::dash::run(&cli.global, &args),
        Command::Daemon(args) => commands::daemon::run(&args),
        Command::Mcp => commands::mcp::run(&cli.global),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "homebase", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
    }
}

/// Prints an error with its cause chain and picks the exit code; a broken pipe is quiet.
fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    let code = exit::classify(err);
    if json {
        let report = homebase_proto::ErrorReport {
            error: format!("{err:#}"),
            exit_code: code.code(),
        };
        if let Ok(text) = serde_json::to_string_pretty(&report) {
            crate::say!("{text}");
        }
    }
    ui::error(&format!("{err:#}"));
    code.into()
}
