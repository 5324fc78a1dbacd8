//! `nginx-medic facts`: the snapshot, as a table for a person or JSON for a program.

use super::table::Table;
use super::Exit;
use crate::adapters::procfs::Procfs;
use crate::config::Settings;
use crate::facts::{gather::gather, Facts, Gathered};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the whole snapshot as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let mut facts = gather(settings, &Procfs::system()).await;
    if let Gathered::Ok { data: units } = &mut facts.units {
        for unit in units.iter_mut() {
            crate::redact::assignments(&mut unit.environment);
            for file in &mut unit.environment_files {
                crate::redact::env_vars(&mut file.vars);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
    } else {
        print!("{}", render(&facts));
    }
    Ok(Exit::Ok)
}

/// How many classified log lines the human view shows.
const RECENT_LOG_LINES: usize = 5;

fn render(facts: &Facts) -> String {
    let mut out = String::new();
    out.push_str(&nginx_section(facts));
    out.push_str(&routes_section(facts));
    out.push_str(&units_section(facts));
    out.push_str(&log_section(facts));
    out
}

fn unavailable<T>(what: &str, g: &Gathered<T>) -> Option<String> {
    match g {
        Gathered::Unavailable { reason } => Some(format!("{what}: unavailable: {reason}\n\n")),
        Gathered::Ok { .. } => None,
    }
}

fn nginx_section(facts: &Facts) -> String {
    if let Some(text) = unavailable("nginx configuration", &facts.nginx) {
        return text;
    }
    let Some(n) = facts.nginx.ok() else {
        return String::new();
    };
    format!(
        "nginx: {} ({} files), worker user {}, error log {}\n\n",
        n.conf.display(),
        n.files.len(),
        n.user.as_deref().unwrap_or("(default)"),
        n.error_logs
            .first()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
    )
}

fn routes_section(facts: &Facts) -> String {
    let mut t = Table::new(&[
        "SITE", "LOCATION", "TARGET", "AT", "ENDPOINT", "LISTENER", "UNIT", "PID",
    ]);
    let dash = || "-".to_string();
    for r in &facts.routes {
        let head = [
            r.site.clone(),
            r.location.clone(),
            r.target.clone(),
            r.at.clone(),
        ];
        if r.endpoints.is_empty() {
            let note = if r.dynamic { "(dynamic)" } else { "(none)" };
            t.row(
                head.iter()
                    .cloned()
                    .chain([note.into(), dash(), dash(), dash()])
                    .collect(),
            );
        }
        for e in &r.endpoints {
            t.row(
                head.iter()
                    .cloned()
                    .chain([
                        e.address.clone(),
                        e.listener
                            .clone()
                            .unwrap_or_else(|| "(nothing listens)".into()),
                        e.unit.clone().unwrap_or_else(dash),
                        e.pid.map_or_else(dash, |p| p.to_string()),
                    ])
                    .collect(),
            );
        }
    }
    format!("{}\n", t.render())
}

fn units_section(facts: &Facts) -> String {
    if let Some(text) = unavailable("systemd", &facts.units) {
        return text;
    }
    let mut t = Table::new(&["UNIT", "ACTIVE", "SUB", "RESULT", "PID", "RESTARTS"]);
    for u in facts.units.ok().into_iter().flatten() {
        t.row(vec![
            u.name.clone(),
            u.active_state.clone(),
            u.sub_state.clone(),
            u.result.clone().unwrap_or_else(|| "-".into()),
            u.main_pid.to_string(),
            u.n_restarts.map_or_else(|| "-".into(), |n| n.to_string()),
        ]);
    }
    format!("{}\n", t.render())
}

fn log_section(facts: &Facts) -> String {
    if let Some(text) = unavailable("error log", &facts.error_log) {
        return text;
    }
    let Some(log) = facts.error_log.ok() else {
        return String::new();
    };
    let mut out = format!(
        "error log: {} ({} lines classified)\n",
        log.path.display(),
        log.entries.len()
    );
    for (class, count) in &log.counts {
        out.push_str(&format!(
            "  {count:>6}  {}\n",
            serde_json::to_value(class)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ));
    }
    let recent = log
        .entries
        .iter()
        .rev()
        .take(RECENT_LOG_LINES)
        .collect::<Vec<_>>();
    for e in recent.into_iter().rev() {
        out.push_str(&format!("  {} [{}] {}\n", e.time, e.level, e.message));
    }
    out
}
