//! `nginx-medic pause` and `nginx-medic resume`: maintenance windows and deploys. They only
//! write `STATE_DIR/paused.json` (see `crate::daemon::pause`); the daemon notices the change
//! within about a second, and `apply` and `explain` read it each time.

use super::{Exit, InvalidInput};
use crate::config::Settings;
use crate::daemon::pause::{unix_now, utc, Pause, PauseError, PauseState, HOST};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// How long, as in medic.yaml: `90s`, `10m`, `2h`. Without it the pause lasts until
    /// `nginx-medic resume`.
    #[arg(long = "for", value_name = "DURATION")]
    span: Option<String>,
    /// Print the pauses in force as JSON.
    #[arg(long)]
    json: bool,
    /// The units (`api.service`; a name without a suffix gets `.service`) or upstream addresses
    /// (`127.0.0.1:8000`) to leave alone. None: the whole host.
    #[arg(value_name = "UNIT")]
    units: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Print the pauses still in force as JSON.
    #[arg(long)]
    json: bool,
    /// The units or upstream addresses to act on again. None: every pause, the host's too.
    #[arg(value_name = "UNIT")]
    units: Vec<String>,
}

/// What both commands print with `--json`.
#[derive(Serialize)]
struct Output {
    file: PathBuf,
    /// The names this command paused or resumed (`*`: the whole host).
    changed: Vec<String>,
    /// Every pause in force afterwards.
    paused: Vec<Entry>,
}

#[derive(Serialize)]
struct Entry {
    unit: String,
    since: u64,
    /// Seconds since the epoch; `null` until resumed.
    until: Option<u64>,
    until_utc: Option<String>,
}

pub fn pause(settings: &Settings, args: &PauseArgs) -> anyhow::Result<Exit> {
    let span = match &args.span {
        None => None,
        Some(text) => Some(crate::playbook::parse_duration(text).ok_or_else(|| {
            InvalidInput(format!(
                "`--for {text}` is not a duration\nhelp: write a whole number above zero with `s`, `m` or `h`, e.g. `--for 10m`"
            ))
        })?),
    };
    let units = names(&args.units)?;
    let now = unix_now();
    let mut state = load(settings)?;
    let pause = state.pause(&units, now, span);
    save(settings, &state)?;
    let changed = if units.is_empty() {
        vec![HOST.to_string()]
    } else {
        units
    };
    if args.json {
        print_json(settings, &state, changed, now)?;
    } else {
        let what = if args.units.is_empty() {
            "the whole host".to_string()
        } else {
            changed.join(", ")
        };
        println!("paused {what} {}", pause.until_text());
        println!("diagnosed and reported, never touched; the daemon picks this up within a second");
        let resume = if args.units.is_empty() {
            "nginx-medic resume".to_string()
        } else {
            format!("nginx-medic resume {}", changed.join(" "))
        };
        println!("end it early with `{resume}`");
    }
    Ok(Exit::Ok)
}

pub fn resume(settings: &Settings, args: &ResumeArgs) -> anyhow::Result<Exit> {
    let units = names(&args.units)?;
    let now = unix_now();
    let mut state = match PauseState::load(&settings.state_dir) {
        Ok(state) => state,
        // `resume` with no names is the way out of a damaged or foreign file.
        Err(e @ (PauseError::Invalid { .. } | PauseError::Version { .. })) if units.is_empty() => {
            eprintln!(
                "warning: {}; replacing it with an empty one",
                first_line(&e)
            );
            PauseState::empty()
        }
        Err(e) => return Err(e.into()),
    };
    let changed = state.resume(&units, now);
    save(settings, &state)?;
    if args.json {
        print_json(settings, &state, changed, now)?;
        return Ok(Exit::Ok);
    }
    if changed.is_empty() {
        println!("nothing was paused there");
    } else {
        let names: Vec<&str> = changed
            .iter()
            .map(|n| if n == HOST { "the whole host" } else { n })
            .collect();
        println!("resumed {}", names.join(", "));
        println!("the daemon acts on them again within a second (or run `nginx-medic apply` now)");
    }
    for (name, p) in state.active(now) {
        let name = if name == HOST {
            "the whole host".to_string()
        } else {
            name
        };
        println!("still paused: {name} {}", p.until_text());
    }
    Ok(Exit::Ok)
}

/// The names as given, a bare unit name completed with `.service` as systemctl does.
fn names(given: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(given.len());
    for name in given {
        if name.is_empty() || name.contains(char::is_whitespace) || name == HOST {
            return Err(InvalidInput(format!(
                "`{name}` is not a unit name or an upstream address\nhelp: give units such as `api.service` or addresses such as `127.0.0.1:8000`; give none to pause the whole host"
            ))
            .into());
        }
        let full = if name.contains(['.', ':', '/']) {
            name.clone()
        } else {
            format!("{name}.service")
        };
        if !out.contains(&full) {
            out.push(full);
        }
    }
    Ok(out)
}

fn load(settings: &Settings) -> anyhow::Result<PauseState> {
    Ok(PauseState::load(&settings.state_dir)?)
}

fn save(settings: &Settings, state: &PauseState) -> anyhow::Result<()> {
    state.save(&settings.state_dir).with_context(|| {
        format!(
            "cannot write `{}`; pausing needs the rights of the nginx-medic service (root)",
            PauseState::path(&settings.state_dir).display()
        )
    })
}

fn print_json(
    settings: &Settings,
    state: &PauseState,
    changed: Vec<String>,
    now: u64,
) -> anyhow::Result<()> {
    let paused = state
        .active(now)
        .into_iter()
        .map(|(unit, Pause { since, until })| Entry {
            unit,
            since,
            until,
            until_utc: until.map(utc),
        })
        .collect();
    let out = Output {
        file: PauseState::path(&settings.state_dir),
        changed,
        paused,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
