//! `nginx-medic apply`: heals what `plan` shows — or exactly the reviewed plan given with
//! `--plan FILE` — in transactions that roll back whatever does not verify.

use super::diagnose::diagnose;
use super::Exit;
use crate::adapters::systemd::Systemd;
use crate::apply::execute::{apply, ApplyReport, Effects, NoProgress, Outcome, StepStatus};
use crate::config::Settings;
use crate::engine::evaluate::Finding;
use crate::engine::plan::{Plan, Step};
use crate::facts::gather::{error_log_path, nginx_binary};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the findings, each action with its result, and the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// Run this reviewed plan (written by `plan --out FILE`): the host is planned afresh and
    /// only what the fresh plan does too is run; a step that is not (another file, unit or
    /// content, a file changed since) refuses the whole plan with exit 3, nothing done.
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
    /// `paused`, `heal_false`, `pause_state_unreadable` or `recovery_escalated` (a file of a
    /// transaction a crash left that could not be rolled back).
    hold: &'static str,
    reason: String,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    // A reviewed plan is read (and refused when it does not parse) before anything else.
    let reviewed = args.plan.as_deref().map(read_plan).transpose()?;
    // One actor per host: the daemon's lock, held until the apply is over.
    let _lock = crate::daemon::lock::InstanceLock::acquire(&settings.daemon.lock_file, "apply")?;
    // What a killed apply left open is finished before the host is looked at.
    let recovered = crate::apply::recover::at_start(settings).await;
    for t in &recovered.transactions {
        eprintln!(
            "recovered transaction {} left open by a crash: {}",
            t.txn,
            describe(&t.outcome)
        );
    }
    let d = diagnose(settings).await?;
    // A finding whose playbook has no actions (a crash loop) is reported, never acted on.
    let report_only = d.findings.iter().any(|f| {
        d.playbooks
            .get(&f.cause)
            .is_some_and(|p| p.actions.is_empty())
    });
    let fresh = d.plan();
    let mut plan = match (&args.plan, reviewed) {
        (Some(path), Some(reviewed)) => verified(path, &reviewed, fresh)?,
        _ => fresh,
    };
    let mut held = drop_held(settings, &mut plan);
    held.extend(drop_escalated(&recovered, &mut plan));
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
        let mut shown = report.clone();
        for r in &mut shown.actions {
            crate::redact::step(&mut r.step);
        }
        let out = Output {
            findings: &plan.findings,
            held: &held,
            report: &shown,
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
        Outcome::RolledBack | Outcome::Failed | Outcome::RollbackIncomplete => Exit::Failure,
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

/// Takes out the actions of findings that would edit a file of an escalated transaction.
fn drop_escalated(recovered: &crate::apply::recover::RecoveryReport, plan: &mut Plan) -> Vec<Held> {
    let mut held = Vec::new();
    let mut groups: Vec<usize> = plan.actions.iter().map(|s| s.finding).collect();
    groups.dedup();
    for index in groups {
        let steps = plan.actions.iter().filter(|s| s.finding == index);
        let Some((path, txn)) = recovered.holds(steps.map(|s| &s.action)) else {
            continue;
        };
        let reason = format!(
            "`{}` belongs to transaction {txn}, which a crash left and which could not be rolled back completely; move its folder in the state directory away once the file is right",
            path.display()
        );
        let (upstream, unit) = plan
            .findings
            .get(index)
            .map(|f| (f.upstream.clone(), f.unit.clone()))
            .unwrap_or_default();
        plan.actions.retain(|s| s.finding != index);
        held.push(Held {
            upstream,
            unit,
            hold: "recovery_escalated",
            reason,
        });
    }
    held
}

fn describe(outcome: &crate::apply::recover::Recovery) -> String {
    use crate::apply::recover::Recovery;
    match outcome {
        Recovery::Committed => "its commit was recorded: the edits stay".into(),
        Recovery::RolledBack => "rolled back".into(),
        Recovery::Escalated { reason } => {
            format!("not rolled back completely, left for a person: {reason}")
        }
    }
}

/// The fresh plan's findings whose steps the reviewed plan holds exactly (compared as shown:
/// both redacted), with the fresh plan's contents and diffs; any reviewed step that a fresh
/// plan does not take refuses the whole plan.
fn verified(path: &Path, reviewed: &Plan, fresh: Plan) -> anyhow::Result<Plan> {
    let shown = |step: &Step| {
        let mut step = step.clone();
        crate::redact::step(&mut step);
        step.diff = None;
        step
    };
    let groups = |plan: &Plan| {
        let mut ids: Vec<usize> = Vec::new();
        for s in &plan.actions {
            if !ids.contains(&s.finding) {
                ids.push(s.finding);
            }
        }
        ids.into_iter()
            .map(|id| {
                let steps: Vec<Step> = plan
                    .actions
                    .iter()
                    .filter(|s| s.finding == id)
                    .map(|s| Step {
                        finding: 0,
                        ..shown(s)
                    })
                    .collect();
                (id, steps)
            })
            .collect::<Vec<_>>()
    };
    let fresh_groups = groups(&fresh);
    let mut keep: Vec<usize> = Vec::new();
    for (_, steps) in groups(reviewed) {
        let found = fresh_groups
            .iter()
            .find(|(id, fresh_steps)| *fresh_steps == steps && !keep.contains(id));
        match found {
            Some((id, _)) => keep.push(*id),
            None => {
                let fresh_steps: Vec<Step> = fresh.actions.iter().map(shown).collect();
                let why = steps
                    .iter()
                    .find_map(|s| refusal(s, &fresh_steps).map(|r| (s, r)));
                let (what, reason) = match (why, steps.first()) {
                    (Some((s, r)), _) => (crate::pipeline::describe_action(&s.action), r),
                    (None, first) => (
                        first.map(|s| crate::pipeline::describe_action(&s.action)).unwrap_or_default(),
                        "its finding's steps are not the ones a fresh plan takes now (added, dropped or reordered)".into(),
                    ),
                };
                return Err(anyhow::Error::new(super::InvalidInput(format!(
                    "`{}`: refused, nothing was done: {what}: {reason}\nhelp: make a new plan with `nginx-medic plan --out FILE`, review it and apply that",
                    path.display(),
                ))));
            }
        }
    }
    Ok(Plan {
        created_at: reviewed.created_at.min(fresh.created_at),
        actions: fresh
            .actions
            .into_iter()
            .filter(|s| keep.contains(&s.finding))
            .collect(),
        findings: fresh.findings,
    })
}

/// Why a fresh plan does not take `step`, or `None` when one of its steps is the same.
fn refusal(step: &Step, fresh: &[Step]) -> Option<String> {
    if fresh
        .iter()
        .any(|f| f.action == step.action && f.playbook == step.playbook)
    {
        return None;
    }
    let unit = crate::daemon::pause::action_unit(&step.action);
    if let Some(edit) = step.action.edit() {
        let same_path: Vec<&Step> = fresh
            .iter()
            .filter(|f| f.action.edit().is_some_and(|e| e.path == edit.path))
            .collect();
        let Some(other) = same_path.first().and_then(|f| f.action.edit()) else {
            return Some(format!(
                "`{}` is not a file the current findings edit",
                edit.path.display()
            ));
        };
        if other.before_hash != edit.before_hash {
            return Some(format!(
                "`{}` changed since the plan was made",
                edit.path.display()
            ));
        }
        if other.after != edit.after {
            return Some(format!(
                "the new content of `{}` is not what a fresh plan writes",
                edit.path.display()
            ));
        }
    }
    if let Some(unit) = unit {
        if !fresh
            .iter()
            .any(|f| crate::daemon::pause::action_unit(&f.action) == Some(unit))
        {
            return Some(format!("unit `{unit}` is not one of the current findings'"));
        }
    }
    Some("a fresh plan does not take this step".into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::PlannedAction;

    fn plan(path: &str, unit: &str, before: &str, after: &str) -> Plan {
        let hash = crate::adapters::fs::bytes_hash(before.as_bytes());
        serde_json::from_value(serde_json::json!({
            "created_at": 100,
            "actions": [{
                "playbook": "bind-mismatch", "finding": 0, "target": "t",
                "kind": "set_bind_host", "unit": unit, "host": "127.0.0.1", "previous": "0.0.0.0",
                "key": "HOST", "daemon_reload": false, "diff": "-HOST=0.0.0.0\n+HOST=127.0.0.1\n SECRET=s\n",
                "edit": {"path": path, "before_hash": hash, "after": after},
            }, {
                "playbook": "bind-mismatch", "finding": 0, "target": "t",
                "kind": "systemd", "unit": unit, "op": "restart", "diff": null,
            }],
        }))
        .unwrap()
    }

    const BEFORE: &str = "HOST=0.0.0.0\nSECRET=s\n";
    const AFTER: &str = "HOST=127.0.0.1\nSECRET=s\n";

    fn check(reviewed: &Plan) -> Result<Plan, String> {
        let fresh = plan("/srv/app/.env", "app.service", BEFORE, AFTER);
        verified(Path::new("p.json"), reviewed, fresh).map_err(|e| e.to_string())
    }

    #[test]
    fn a_reviewed_plan_runs_as_a_fresh_plan_has_it() {
        let mut reviewed = plan("/srv/app/.env", "app.service", BEFORE, AFTER);
        crate::redact::plan(&mut reviewed);
        assert!(reviewed.actions[0]
            .action
            .edit()
            .unwrap()
            .after
            .contains("SECRET=<redacted>"));
        reviewed.actions[0].diff = Some("+anything the reviewer saw\n".into());
        let run = check(&reviewed).unwrap();
        // the fresh plan's content and diff, not the file's
        assert_eq!(run.actions[0].action.edit().unwrap().after, AFTER);
        assert!(run.actions[0].diff.as_deref().unwrap().contains("SECRET=s"));
        assert_eq!(run.actions.len(), 2);
        // an empty reviewed plan runs nothing
        let empty = Plan {
            actions: Vec::new(),
            ..reviewed
        };
        assert!(check(&empty).unwrap().actions.is_empty());
    }

    #[test]
    fn a_tampered_plan_is_refused_with_the_reason() {
        let refused = |p: Plan| {
            let e = check(&p).unwrap_err();
            assert!(
                e.starts_with("`p.json`: refused, nothing was done: "),
                "{e}"
            );
            e
        };
        let e = refused(plan(
            "/root/.ssh/authorized_keys",
            "app.service",
            BEFORE,
            AFTER,
        ));
        assert!(
            e.contains("`/root/.ssh/authorized_keys` is not a file the current findings edit"),
            "{e}"
        );
        let mut unit = plan("/srv/app/.env", "app.service", BEFORE, AFTER);
        unit.actions[1].action = PlannedAction::Systemd {
            unit: "sshd.service".into(),
            op: crate::playbook::SystemdOp::Restart,
        };
        let e = refused(unit);
        assert!(
            e.contains("unit `sshd.service` is not one of the current findings'"),
            "{e}"
        );
        let e = refused(plan(
            "/srv/app/.env",
            "app.service",
            BEFORE,
            "HOST=127.0.0.1\nLD_PRELOAD=/x\n",
        ));
        assert!(
            e.contains("the new content of `/srv/app/.env` is not what a fresh plan writes"),
            "{e}"
        );
        let e = refused(plan("/srv/app/.env", "app.service", "HOST=::\n", AFTER));
        assert!(
            e.contains("`/srv/app/.env` changed since the plan was made"),
            "{e}"
        );
        let mut dropped = plan("/srv/app/.env", "app.service", BEFORE, AFTER);
        dropped.actions.truncate(1);
        let e = refused(dropped);
        assert!(e.contains("added, dropped or reordered"), "{e}");
    }
}
