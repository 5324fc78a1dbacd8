//! `nginx-medic status`: what the running daemon thinks of each target, read from the file it
//! writes (`STATE_DIR/status.json`, see `crate::daemon::status`); whether it runs is told by its
//! instance lock.

use super::table::Table;
use super::Exit;
use crate::config::Settings;
use crate::daemon::pause::utc;
use crate::daemon::status::{self, Status, TargetStatus};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the whole state as JSON: `running`, `pid`, `current`, `file` and `daemon` (the
    /// daemon's document, version 1, or `null`).
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Output<'a> {
    /// The daemon holds its instance lock now.
    running: bool,
    /// The lock holder's PID.
    pid: Option<u32>,
    /// The file was written by the daemon running now (not by an earlier one).
    current: bool,
    file: PathBuf,
    daemon: Option<&'a Status>,
}

pub fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let lock = &settings.daemon.lock_file;
    let holder = status::lock_holder(lock)
        .with_context(|| {
            format!(
                "cannot tell whether the daemon runs (`{}`)\nhelp: run `nginx-medic status` as the daemon's user (root), with the daemon's `--config`",
                lock.display()
            )
        })?;
    let file = status::path(&settings.state_dir);
    let doc = status::read(&settings.state_dir)?;
    let current = doc
        .as_ref()
        .is_some_and(|d| holder.is_some_and(|pid| pid == d.pid));
    if args.json {
        let out = Output {
            running: holder.is_some(),
            pid: holder,
            current,
            file,
            daemon: doc.as_ref(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(holder, current, &file, doc.as_ref()));
    }
    Ok(match (holder, &doc) {
        (None, _) => Exit::NotRunning,
        (Some(_), Some(d)) if current && d.targets.iter().any(|t| t.state.is_open()) => {
            Exit::Findings
        }
        _ => Exit::Ok,
    })
}

fn ago(now: f64, at: f64) -> String {
    let s = (now - at).max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn render(
    holder: Option<u32>,
    current: bool,
    file: &std::path::Path,
    doc: Option<&Status>,
) -> String {
    let now = crate::daemon::pause::unix_now() as f64;
    let mut out = String::new();
    match (holder, doc) {
        (None, None) => {
            out.push_str("the daemon is not running (`nginx-medic run`), and no status was written\n");
            return out;
        }
        (None, Some(d)) => out.push_str(&format!(
            "the daemon is not running; its last status ({}, PID {}) follows\n",
            ago(now, d.updated),
            d.pid
        )),
        (Some(pid), None) => {
            out.push_str(&format!(
                "the daemon runs (PID {pid}) but has written no status yet (`{}`)\n",
                file.display()
            ));
            return out;
        }
        (Some(pid), Some(d)) if !current => out.push_str(&format!(
            "the daemon runs (PID {pid}) but has not written its status yet; an earlier daemon's (PID {}, {}) follows\n",
            d.pid,
            ago(now, d.updated)
        )),
        (Some(pid), Some(d)) => out.push_str(&format!(
            "the daemon runs (PID {pid}), {} mode; updated {}; {} evaluations, {} triggers absorbed\n",
            d.mode,
            ago(now, d.updated),
            d.evaluations,
            d.absorbed
        )),
    }
    let Some(d) = doc else { return out };
    let b = &d.breaker;
    out.push_str(&format!(
        "circuit breaker: {} ({} of {} failed heals within {} s)\n",
        if b.open { "open" } else { "closed" },
        b.failures,
        b.max_failures,
        b.per_seconds
    ));
    if let Some(reason) = &d.pause_error {
        out.push_str(&format!(
            "pause state unreadable, nothing is done: {reason}\n"
        ));
    }
    for p in &d.paused {
        let name = if p.unit == crate::daemon::pause::HOST {
            "the whole host"
        } else {
            p.unit.as_str()
        };
        let until = p.until.map_or_else(
            || "until resumed".to_string(),
            |u| format!("until {}", utc(u)),
        );
        out.push_str(&format!("paused: {name} {until}\n"));
    }
    if d.targets.is_empty() {
        out.push_str("no targets known yet\n");
        return out;
    }
    out.push('\n');
    let mut table = Table::new(&[
        "TARGET", "SITE", "UNIT", "STATE", "SINCE", "INCIDENT", "BRAKES",
    ]);
    for t in &d.targets {
        table.row(row(now, t));
    }
    out.push_str(&table.render());
    out
}

fn row(now: f64, t: &TargetStatus) -> Vec<String> {
    let state = match t.left_alone {
        Some(why) => format!("{} ({})", t.state.as_str(), why.as_str()),
        None => t.state.as_str().to_string(),
    };
    let incident = t.incident.as_ref().map_or_else(
        || "-".to_string(),
        |i| format!("{}, opened {}", i.cause, ago(now, i.opened)),
    );
    let b = &t.brakes;
    let mut brakes = format!(
        "{}/{} heals per {} s, {}/{} failures per {} s",
        b.actions,
        b.max_actions,
        b.rate_per_seconds,
        b.failures,
        b.max_failures,
        b.crash_within_seconds
    );
    if b.rate_limited {
        brakes.push_str(", rate limited");
    }
    if let Some(e) = b.escalated {
        brakes.push_str(&format!(", escalated: {}", e.as_str()));
    }
    vec![
        t.target.clone(),
        t.site.clone(),
        t.unit.clone().unwrap_or_else(|| "-".into()),
        state,
        ago(now, t.since),
        incident,
        brakes,
    ]
}
