//! The command line: one file per subcommand; `anyhow` context lives here and nowhere deeper.

mod apply;
mod assets;
mod diagnose;
mod explain;
mod facts;
mod logging;
mod pause;
mod plan;
mod playbooks;
mod run;
mod status;
mod table;
mod unit_for;

pub use logging::Logs;

use crate::config::{ConfigError, Settings};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  healthy / done
  1  failure (a source could not be read, an action failed)
  2  findings or planned changes (status: an incident is open)
  3  invalid input (configuration, playbook, template)
  4  status: the daemon is not running";

/// `--version`: the package version, and the cargo features when a test build has any (the
/// release package's check that it has no fail points reads this line).
#[cfg(not(feature = "failpoints"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "failpoints")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: failpoints)");

/// Finds out why Nginx answers 502/504, and heals it.
#[derive(Debug, Parser)]
#[command(name = "nginx-medic", version = VERSION, after_help = EXIT_CODES)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, value_name = "PATH", env = "NGINX_MEDIC_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what nginx-medic sees: sites and their pass targets, the sockets and units behind
    /// them, and the classified error log.
    Facts(facts::Args),
    /// Name the cause of each failing upstream, with the evidence. Changes nothing.
    /// Exit 0 when healthy, 2 when something is found.
    Diagnose(diagnose::Args),
    /// Show the actions that would heal each finding, with unified diffs. A dry run: writes
    /// nothing, restarts nothing. Exit 0 when nothing is to be done, 2 otherwise.
    Plan(plan::Args),
    /// Heal: run the plan in transactions (backup, atomic write, nginx -t, reload, probe) and
    /// roll back any change that does not verify. Exit 0 healed or nothing to do, 1 rolled
    /// back or failed, 2 findings left that are report-only or not conclusive enough to act on.
    Apply(apply::Args),
    /// Explain each site for a person: is the backend running, does nginx dial where it
    /// listens, what the logs say, the cause, the planned fix and the commands to check it.
    /// Changes nothing. Exit 0 when healthy, 2 when something is found.
    Explain(explain::Args),
    /// Leave units (or the whole host, when none is named) alone for a maintenance or a deploy:
    /// they are diagnosed and reported, never touched, by the daemon and by `apply`, until
    /// `--for` runs out or `resume`. The state survives restarts (`STATE_DIR/paused.json`).
    /// Exit 0 when done, 3 on invalid input (a duration that does not parse).
    Pause(pause::PauseArgs),
    /// End pauses: of the named units, or every pause when none is named. The daemon acts on
    /// them again within a second. Exit 0 when done.
    Resume(pause::ResumeArgs),
    /// Work with playbooks.
    #[command(subcommand)]
    Playbooks(playbooks::Command),
    GenerateAssets(assets::Args),
    /// Watch and heal, unattended: follows the error log, systemd's signals and a periodic
    /// probe; `daemon.mode: observe` (the default) only logs the plans, `apply` runs them.
    /// Stops on SIGTERM (after the transaction in flight), reloads on SIGHUP. Exit 0 when
    /// stopped, 1 when it cannot start, 3 on invalid configuration or playbooks.
    Run(run::Args),
    /// Show what the running daemon thinks of each target: its state (healthy, incident,
    /// healing, verified, left alone and why), the open incident, the brakes (heals and failures
    /// in their windows, escalation, the circuit breaker) and the pauses in force. Read from
    /// `STATE_DIR/status.json`, which the daemon rewrites within a second of a change; whether the
    /// daemon runs is told by its lock. Exit 0 when it runs and no incident is open, 2 when one is
    /// open, 4 when the daemon is not running (its last status is still shown), 1 when the status
    /// cannot be read.
    Status(status::Args),
    /// Print a ready systemd unit for the backend of UPSTREAM when no supervisor runs it (a
    /// process started by hand, seen listening now or remembered by `nginx-medic run`): its
    /// ExecStart, WorkingDirectory and User, bound to the address nginx dials; its environment
    /// only as commented-out names. Exit 0 when printed, 1 when no such process is known.
    UnitFor(unit_for::Args),
}

/// The process exit codes, documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Findings = 2,
    InvalidInput = 3,
    /// `status`: the daemon is not running.
    NotRunning = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        Self::from(e as u8)
    }
}

impl Exit {
    /// Invalid input when the chain holds a configuration error, failure otherwise.
    pub fn from_error(e: &anyhow::Error) -> Self {
        if e.chain().any(|c| {
            c.is::<ConfigError>()
                || c.is::<InvalidInput>()
                || c.is::<crate::pipeline::InvalidPlaybooks>()
        }) {
            Self::InvalidInput
        } else {
            Self::Failure
        }
    }
}

/// Input that cannot be used as given (a plan file that does not parse, …): exit 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Sets up logging (see `logging`): `run` logs at info by default, the other commands at warn.
pub fn init_tracing(cli: &Cli) -> Logs {
    let daemon = matches!(cli.command, Command::Run(_));
    let default = match cli.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    logging::init(default)
}

/// `FAILPOINTS`, armed in a test build and reported (ignored) in a release build.
fn arm_failpoints() -> anyhow::Result<()> {
    let release = crate::failpoint::FEATURES.is_empty();
    let points = match crate::failpoint::arm_from_env() {
        Ok(points) if points.is_empty() => return Ok(()),
        Ok(points) => points,
        Err(_) if release => Vec::new(),
        Err(e) => return Err(InvalidInput(e.to_string()).into()),
    };
    let list: Vec<String> = points.iter().map(|(n, a)| format!("{n}={a}")).collect();
    if release {
        tracing::warn!("`FAILPOINTS` is set but this build has no fail points; ignored");
    } else {
        tracing::warn!(failpoints = %list.join(";"), "fail points armed: this is a test build");
    }
    Ok(())
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    if let Command::GenerateAssets(args) = &cli.command {
        return assets::run(args); // needs no configuration: it runs at package build time
    }
    arm_failpoints()?;
    let settings = Settings::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Facts(args) => runtime.block_on(facts::run(&settings, &args)),
        Command::Diagnose(args) => runtime.block_on(diagnose::run(&settings, &args)),
        Command::Plan(args) => runtime.block_on(plan::run(&settings, &args)),
        Command::Apply(args) => runtime.block_on(apply::run(&settings, &args)),
        Command::Explain(args) => runtime.block_on(explain::run(&settings, &args)),
        Command::UnitFor(args) => runtime.block_on(unit_for::run(&settings, &args)),
        Command::Pause(args) => pause::pause(&settings, &args),
        Command::Resume(args) => pause::resume(&settings, &args),
        Command::Status(args) => status::run(&settings, &args),
        Command::Playbooks(command) => playbooks::run(&settings, &command),
        Command::GenerateAssets(args) => assets::run(&args),
        Command::Run(args) => runtime.block_on(run::run(settings, cli.config, &args)),
    }
}
