//! `nginx-medic apply`: heals what `plan` shows — or exactly the reviewed plan given with
//! `--plan FILE` — in transactions that roll back whatever does not verify.

use super::diagnose::diagnose;
use super::Exit;
use crate::adapters::systemd::Systemd;
use crate::apply::execute::{apply, ApplyReport, Effects, NoProgress, Outcome, StepStatus};
use crate::config::Settings;
use crate::engine::evaluate::Finding;
use crate::engine::plan::Plan;
use crate::facts::gather::{error_log_path, nginx_binary};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the findings, each action with its result, and the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// Run exactly this plan (written by `plan --out FILE`) instead of planning afresh; a file
    /// that changed since is refused.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
}

#[derive(Serialize)]
struct Output<'a> {
    findings: &'a [Finding],
    /// Findings left alone: paused, or `heal: false`.
    held: &'a [Held],
    #[serde(flatten)]
    report: &'a ApplyReport,
}

/// A finding whose actions were not run, and why.
#[derive(Debug, Serialize)]
struct Held {
    upstream: String,
    unit: Option<String>,
    /// `paused`, `heal_false` or `pause_state_unreadable`.
    hold: &'static str,
    reason: String,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    // A finding whose playbook has no actions (a crash loop) is reported, never acted on.
    let mut report_only = false;
    let mut plan = match &args.plan {
        Some(path) => read_plan(path)?,
        None => {
            let d = diagnose(settings).await?;
            report_only = d.findings.iter().any(|f| {
                d.playbooks
                    .get(&f.cause)
                    .is_some_and(|p| p.actions.is_empty())
            });
            d.plan()
        }
    };
    let held = drop_held(settings, &mut plan);
    let systemd = Systemd::connect(settings.bus).await?;
    let nginx = nginx_binary(settings);
    let facts_nginx = crate::nginx_conf::load(&nginx.conf, &crate::nginx_conf::RealFs)
        .ok()
        .map(|c| crate::facts::nginx::extract(&c, &nginx.effective_prefix()));
    let effects = Effects {
        systemd: &systemd,
        error_log: error_log_path(settings, facts_nginx.as_ref()),
        nginx,
        reload: settings.nginx.reload,
        nginx_unit: settings.nginx.unit.clone(),
        state_dir: settings.state_dir.clone(),
        progress: &NoProgress,
    };
    let report = apply(&plan, &effects)
        .await
        .context("cannot keep the audit journal")?;
    if args.json {
        let out = Output {
            findings: &plan.findings,
            held: &held,
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!(
            "{}",
            super::diagnose::render(&plan.findings, plan.findings.len())
        );
        for h in &held {
            let unit = h
                .unit
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            println!("left alone: {}{unit}: {}", h.upstream, h.reason);
        }
        print!("{}", render(&report));
    }
    let inconclusive = plan.findings.iter().any(|f| !f.conclusive);
    Ok(match report.outcome {
        Outcome::RolledBack | Outcome::Failed => Exit::Failure,
        _ if inconclusive || report_only || !held.is_empty() => Exit::Findings,
        Outcome::Healed | Outcome::NothingToDo => Exit::Ok,
    })
}

/// Takes the actions of held findings (paused, `heal: false`) out of the plan. A finding is
/// named by its steps when the plan came from a file (which keeps no findings).
fn drop_held(settings: &Settings, plan: &mut Plan) -> Vec<Held> {
    let pauses = crate::daemon::pause::load_for_hold(&settings.state_dir);
    let now = crate::daemon::pause::unix_now();
    let mut groups: Vec<usize> = plan.actions.iter().map(|s| s.finding).collect();
    groups.extend(0..plan.findings.len());
    groups.sort_unstable();
    groups.dedup();
    let mut held = Vec::new();
    for index in groups {
        let (upstream, unit) = match plan.findings.get(index) {
            Some(f) => (f.upstream.clone(), f.unit.clone()),
            None => {
                let steps = || plan.actions.iter().filter(|s| s.finding == index);
                let upstream = steps()
                    .find_map(|s| s.target.rsplit_once(" -> ").map(|(_, a)| a.to_string()))
                    .unwrap_or_default();
                (
                    upstream,
                    steps()
                        .find_map(|s| crate::daemon::pause::action_unit(&s.action))
                        .map(String::from),
                )
            }
        };
        let actions = plan.actions.iter().filter(|s| s.finding == index);
        let Some((unit, hold)) = crate::daemon::pause::hold_of_actions(
            &pauses,
            &settings.backends,
            unit.as_deref(),
            &upstream,
            actions.map(|s| &s.action),
            now,
        ) else {
            continue;
        };
        plan.actions.retain(|s| s.finding != index);
        held.push(Held {
            upstream,
            unit,
            hold: hold.kind(),
            reason: hold.describe(),
        });
    }
    held
}

fn read_plan(path: &std::path::Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        let reason = e.to_string();
        let reason = reason
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string();
        anyhow::Error::new(super::InvalidInput(format!(
            "{}:{}:{}: not a plan written by `nginx-medic plan --out`: {reason}",
            path.display(),
            e.line(),
            e.column()
        )))
    })
}

fn render(report: &ApplyReport) -> String {
    let mut out = String::from("\napply:\n");
    for (i, r) in report.actions.iter().enumerate() {
        let mark = match r.status {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
            StepStatus::RolledBack => "rolled back",
            StepStatus::NotRun => "not run",
        };
        out.push_str(&format!(
            "{:>3}. [{}] {} — {mark}: {}\n",
            i + 1,
            r.step.playbook,
            crate::pipeline::describe_action(&r.step.action),
            r.detail
        ));
    }
    let outcome = serde_json::to_value(report.outcome)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    out.push_str(&format!("outcome: {outcome}\n"));
    out
}
