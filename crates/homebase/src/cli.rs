//! Command-line flags. Raw flags only: validation into project objects happens in
//! `project.rs`. Every flag has an environment variable (flags > environment > file > defaults).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  homebase init                      write homebase.toml for the compose file here
  homebase plan                      prove the stack fits the host's memory budget
  homebase plan --json | jq .fits
  homebase render -o rendered.yml    the exact compose file deploy will use
  homebase deploy                    one command: plan, upload, start, health gate, rollback
  homebase status --json             every service's state, health and memory on the host
  homebase rollback                  back to the release before the current one
  homebase loop logs ralph -f        follow the agent loop the host daemon runs
  homebase completions zsh > ~/.zfunc/_homebase

Exit codes: 0 ok, 1 refused or unhealthy, 2 bad input or configuration,
            3 host or engine unreachable, 4 another deploy holds the lock.";

/// The longest health-gate wait a command takes (a day): beyond it a deadline would overflow
/// the clock, and no deploy should wait longer.
pub const MAX_TIMEOUT: u64 = 86_400;

#[derive(Debug, Parser)]
#[command(
    name = "homebase",
    version,
    about = "Run your AI-agent Docker stack on an always-on home server, driven from your laptop over SSH",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Run as if started in DIR (homebase.toml is searched from there upwards)
    #[arg(
        short = 'C',
        long = "directory",
        global = true,
        env = "HOMEBASE_DIRECTORY",
        value_name = "DIR"
    )]
    pub directory: Option<PathBuf>,
    /// Use this homebase.toml instead of searching for one
    #[arg(long, global = true, env = "HOMEBASE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read variables for compose interpolation from FILE instead of .env (repeatable)
    #[arg(
        long = "env-file",
        global = true,
        env = "HOMEBASE_ENV_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub env_files: Vec<PathBuf>,
    /// Enable a compose profile (repeatable; also COMPOSE_PROFILES)
    #[arg(
        long = "profile",
        global = true,
        env = "COMPOSE_PROFILES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub profiles: Vec<String>,
    /// The host daemon's state directory on the host (default: ~/.homebase/daemon)
    #[arg(long, global = true, env = "HOMEBASE_DAEMON_STATE", value_name = "DIR")]
    pub daemon_dir: Option<String>,
    /// When to use colour
    #[arg(long, global = true, env = "HOMEBASE_COLOR", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a homebase.toml for an existing compose file, with proposed priorities and limits
    #[command(
        after_help = "Example:\n  homebase init --compose docker-compose.yml --name blackbox4"
    )]
    Init(InitArgs),
    /// Show every service's memory limit and reservation and prove the stack fits the budget
    #[command(
        after_help = "Examples:\n  homebase plan\n  homebase plan --host-memory 16GiB --json"
    )]
    Plan(PlanArgs),
    /// Print the exact compose file deploy will use
    #[command(
        after_help = "Examples:\n  homebase render\n  homebase render -o rendered.yml && docker compose -f rendered.yml config -q"
    )]
    Render(RenderArgs),
    /// Deploy the stack to the host: plan, lock, upload, start, health gate, automatic rollback
    #[command(
        after_help = "The host runs the start, health gate and rollback by itself: Ctrl-C asks whether to abort\n(roll back) or detach, and a lost connection is picked up again.\n\nExamples:\n  homebase deploy\n  homebase deploy --json | jq -c 'select(.event==\"result\")'\n  homebase deploy --attach         # follow a deploy after a detach or a lost link\n  homebase deploy --force-unlock   # after an older homebase died holding the lock"
    )]
    Deploy(DeployArgs),
    /// Show each service's state, health, uptime, restarts and memory on the host
    #[command(
        after_help = "Examples:\n  homebase status\n  homebase status --json | jq '.services[] | select(.health==\"unhealthy\")'"
    )]
    Status(StatusArgs),
    /// List the releases recorded on the host
    Releases(ReleasesArgs),
    /// Go back to an earlier release (default: the one before the current)
    #[command(
        after_help = "Examples:\n  homebase rollback\n  homebase rollback 20261123T203107Z-1a2b3c4d"
    )]
    Rollback(RollbackArgs),
    /// Show a service's logs
    #[command(
        after_help = "Examples:\n  homebase logs ralph -f\n  homebase logs postgres --since 10m"
    )]
    Logs(LogsArgs),
    /// Restart one service's containers and wait until they are healthy again
    #[command(
        after_help = "Examples:\n  homebase restart brain-api\n  homebase restart ralph --timeout 300 --json"
    )]
    Restart(RestartArgs),
    /// Run a command in a service's container
    #[command(after_help = "Example:\n  homebase exec postgres -- psql -U brain -c 'select 1'")]
    Exec(ExecArgs),
    /// Forward every port the stack publishes to this machine's loopback, and keep it up
    #[command(
        after_help = "Examples:\n  homebase tunnel                 # foreground, with a live status line\n  homebase tunnel --check         # probe every service through the tunnel\n  homebase tunnel --install       # keep it running in the background (launchd / systemd)"
    )]
    Tunnel(TunnelArgs),
    /// Print an ~/.ssh/config block with a LocalForward per service
    #[command(
        name = "ssh-config",
        after_help = "Example:\n  homebase ssh-config >> ~/.ssh/config && ssh -N homebase-blackbox4"
    )]
    SshConfig(SshConfigArgs),
    /// Back up databases and volumes on the host, list, restore, or copy them to this machine
    #[command(
        after_help = "Examples:\n  homebase backup now\n  homebase backup ls\n  homebase backup restore 20261123T030000Z postgres\n  homebase backup pull"
    )]
    Backup(BackupArgs),
    /// Swarm mode: every node's state, role, labels, memory and what runs on it
    Nodes(NodesArgs),
    /// Agent loops on the host: list, start, stop, pause, resume, output and history
    #[command(
        name = "loop",
        after_help = "Examples:\n  homebase loop ls\n  homebase loop logs ralph -f\n  homebase loop history ralph --json | jq '.[0]'\n  homebase loop start ralph      # a new run: counters and breaker reset"
    )]
    Loop(LoopArgs),
    /// Make the host ready: check Docker/Compose/memory, install homebase and its daemon service
    #[command(
        after_help = "Examples:\n  homebase setup            # idempotent: a second run changes nothing\n  homebase setup --check    # only report what is ready and what is not"
    )]
    Setup(SetupArgs),
    /// Before leaving home: will everything keep working while you are away?
    #[command(
        long_about = "Before leaving home: will everything keep working while you are away?\n\nRuns setup's checks (what a power cut needs counts as a failure here), tries each way to the host but the first for real (the relay, a tailnet name), reads the relay's tunnel, verifies the last backup's checksums on the host, sends a test message through every alert sink, estimates the disk for the coming weeks' backups and looks at the loops' spending limits. Exits 0 when everything holds, 1 when something would fail away from home (each ✗ says how to fix it).",
        after_help = "Examples:\n  homebase preflight             # the checklist, each item with its fix\n  homebase preflight --days 30   # a month away: the disk for 30 days of backups\n  homebase preflight --json"
    )]
    Preflight(PreflightArgs),
    /// Open the live dashboard in the browser, through an SSH forward to the host's daemon
    #[command(after_help = "Examples:\n  homebase dash\n  homebase dash --no-browser --port 7780")]
    Dash(DashArgs),
    /// Run the host daemon: history, self-healing, memory governor, alerts, API (on the host)
    #[command(
        after_help = "Normally started by `homebase setup` as a service. By hand:\n  homebase daemon --listen 127.0.0.1:7780"
    )]
    Daemon(DaemonArgs),
    /// Serve the project's stack and agent loops as tools to a coding agent (MCP over stdio)
    #[command(
        after_help = "Register it with Claude Code, for the project in the current directory:\n  claude mcp add homebase -- homebase -C \"$PWD\" mcp\nTools that change the host are offered only when [mcp] allow names them in homebase.toml:\n  [mcp]\n  allow = [\"loop_control\", \"restart\", \"deploy\", \"rollback\"]"
    )]
    Mcp,
    /// Print shell completions
    #[command(
        after_help = "Example:\n  homebase completions bash > /etc/bash_completion.d/homebase"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The compose file to describe (default: compose.yml, compose.yaml, docker-compose.yml or docker-compose.yaml)
    #[arg(long, value_name = "FILE")]
    pub compose: Option<PathBuf>,
    /// Project name (default: the compose file's `name`, else the directory's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Host memory to budget against
    #[arg(long, default_value = "16GiB", value_name = "SIZE")]
    pub host_memory: String,
    /// Overwrite an existing homebase.toml
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Print the plan as JSON (printed even when the stack does not fit; the exit code says so)
    #[arg(long)]
    pub json: bool,
    /// Budget against this much host memory instead of budget.host_memory
    #[arg(long, env = "HOMEBASE_HOST_MEMORY", value_name = "SIZE")]
    pub host_memory: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Write to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Budget against this much host memory instead of budget.host_memory
    #[arg(long, env = "HOMEBASE_HOST_MEMORY", value_name = "SIZE")]
    pub host_memory: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Print one JSON event per line
    #[arg(long)]
    pub json: bool,
    /// Follow the deploy that runs on the host (after a detach or a lost connection) until
    /// it ends
    #[arg(long, conflicts_with_all = ["force", "force_unlock"])]
    pub attach: bool,
    /// Break a lock left by a deploy that died
    #[arg(long)]
    pub force_unlock: bool,
    /// Redeploy even when the host already runs this exact release
    #[arg(long)]
    pub force: bool,
    /// Go on when files of the project were edited on the host since the last deploy: the
    /// host's versions are moved to ~/.homebase/<project>/set-aside/<release>/
    #[arg(long)]
    pub set_aside: bool,
    /// Seconds to wait for every service to be running and healthy
    #[arg(
        long,
        default_value_t = 120,
        env = "HOMEBASE_DEPLOY_TIMEOUT",
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT)
    )]
    pub timeout: u64,
    /// Budget against this much host memory instead of budget.host_memory
    #[arg(long, env = "HOMEBASE_HOST_MEMORY", value_name = "SIZE")]
    pub host_memory: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Sample memory now (`docker stats`, ~2 s) rather than take the daemon's last sample
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The release to go back to (see `homebase releases`)
    pub id: Option<String>,
    /// Print one JSON event per line
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for every service to be running and healthy
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub service: String,
    /// Keep printing new lines
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines newer than this (`10m`, `2h`, an RFC 3339 time)
    #[arg(long)]
    pub since: Option<String>,
    /// How many lines from the end (`-n`, as in `loop logs` and tail)
    #[arg(short = 'n', long, default_value_t = 100)]
    pub tail: u32,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    pub service: String,
    /// Seconds to wait for the service to be running and healthy again
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT))]
    pub timeout: u64,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub service: String,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// Probe each service through the tunnel (a temporary one if none runs) and report round trips
    #[arg(long, conflicts_with = "install")]
    pub check: bool,
    /// Install a background service (launchd agent on macOS, systemd user unit on Linux)
    #[arg(long)]
    pub install: bool,
    /// JSON: one event per line, or the check report
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// The Host alias (default: homebase-<project>)
    #[arg(long)]
    pub alias: Option<String>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Loopback address for the API
    #[arg(long, default_value = "127.0.0.1:7780", env = "HOMEBASE_DAEMON_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// homebase's directory on the host (default: ~/.homebase)
    #[arg(long, env = "HOMEBASE_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Docker engine endpoint (default: DOCKER_HOST, then the docker context, then the default socket)
    #[arg(long, value_name = "URL")]
    pub engine: Option<String>,
    /// Where the daemon keeps its token, history and endpoint (default: <home>/daemon)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Watch only this project (repeatable; default: every deployed project)
    #[arg(long = "project", value_name = "NAME")]
    pub projects: Vec<String>,
    /// Hours of raw samples to keep
    #[arg(long, default_value_t = 1, value_name = "HOURS")]
    pub keep_raw_hours: i64,
    /// Days of 1-minute averages to keep
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub keep_minute_days: i64,
    /// Days of 15-minute averages (and of events) to keep
    #[arg(long, default_value_t = 90, value_name = "DAYS")]
    pub keep_quarter_days: i64,
}

#[derive(Debug, Args)]
pub struct DashArgs {
    /// Local port for the forward (default: the daemon's port, or a free one)
    #[arg(long)]
    pub port: Option<u16>,
    /// Swarm mode: the dashboard of this node's daemon (default: the manager's, which also
    /// shows every node)
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Do not open a browser; print where the dashboard is
    #[arg(long)]
    pub no_browser: bool,
    /// Print a sign-in URL (a one-time code in its fragment, valid for 2 minutes)
    #[arg(long)]
    pub print_url: bool,
    /// Print where the dashboard is as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: BackupCommand,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup now: pg_dump for PostgreSQL, archives of named volumes (service paused)
    Now {
        /// Only these services (default: every PostgreSQL service and every service with a named volume)
        services: Vec<String>,
        /// Swarm mode, run on a node by its daemon: back up the tasks running on this
        /// machine's engine and keep them here as node NAME's part
        #[arg(long, value_name = "NAME", hide = true)]
        this_node: Option<String>,
        /// The daemon's daily run: a stack with nothing to back up is an empty backup, not
        /// an error
        #[arg(long, hide = true)]
        scheduled: bool,
    },
    /// List the backups kept on the host
    Ls,
    /// Restore a backup (checksums verified first)
    Restore {
        id: String,
        /// Only these services
        services: Vec<String>,
    },
    /// Copy a backup (default: the newest) to this machine, verifying every checksum
    Pull {
        id: Option<String>,
        /// Where to (default: .homebase-backups beside homebase.toml)
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoopArgs {
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: LoopCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoopCommand {
    /// Every loop of the project: state, iteration, breaker, what it waits for, last outcome
    Ls,
    /// Begin a new run (iterations, breaker and back-offs reset)
    Start { name: String },
    /// Stop the loop; a running iteration is killed and recorded as stopped
    Stop { name: String },
    /// Start no new iteration; a running one finishes
    Pause { name: String },
    /// Continue a paused or stopped loop in the same run
    Resume { name: String },
    /// The loop's output, every iteration with a header line
    Logs {
        name: String,
        /// Keep printing new output, across iterations
        #[arg(short, long)]
        follow: bool,
        /// How many lines from the end
        #[arg(short = 'n', long, default_value_t = 100)]
        tail: u32,
    },
    /// Bring the loop's branch (`workspace = "git"`) into this repository as
    /// `homebase/NAME`, and show what came: commits, files, changes
    Pull { name: String },
    /// Recorded iterations, newest first: outcome, exit code, duration, files changed
    History {
        name: String,
        /// How many iterations
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// How many days you will be away (the disk the backups of those days need)
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: u32,
    /// Print the checklist as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Only check and report; change nothing
    #[arg(long)]
    pub check: bool,
    /// The homebase executable to install on the host, when the host's OS or architecture
    /// differs from this one's (for example one built there, or cross-compiled)
    #[arg(long, value_name = "FILE", env = "HOMEBASE_SETUP_BINARY")]
    pub binary: Option<std::path::PathBuf>,
    /// Print the checklist as JSON
    #[arg(long)]
    pub json: bool,
}
