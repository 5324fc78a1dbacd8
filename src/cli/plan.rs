//! `nginx-medic plan`: the actions that would heal the findings, with diffs. A dry run: it reads,
//! renders and prints, and writes nothing anywhere.

use super::Exit;
use crate::config::Settings;
use crate::engine::plan::Plan;
use crate::pipeline::describe_action as describe;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the plan (findings and actions) as JSON; `apply --plan FILE` runs such a file.
    #[arg(long)]
    json: bool,
    /// Also write the plan as JSON to FILE, for review and `apply --plan FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let diagnosis = super::diagnose::diagnose(settings).await?;
    let checked = diagnosis.targets.len();
    let plan = diagnosis.plan();
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&plan)?)
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", super::diagnose::render(&plan.findings, checked));
        print!("{}", render(&plan));
    }
    Ok(if plan.actions.is_empty() && plan.findings.is_empty() {
        Exit::Ok
    } else {
        Exit::Findings
    })
}

/// The actions for a person, numbered, each file edit followed by its diff.
pub fn render(plan: &Plan) -> String {
    if plan.actions.is_empty() {
        return "\nno actions planned\n".into();
    }
    let mut out = String::from("\nplan:\n");
    for (i, step) in plan.actions.iter().enumerate() {
        out.push_str(&format!(
            "{:>3}. [{}] {}\n",
            i + 1,
            step.playbook,
            describe(&step.action)
        ));
        if let Some(diff) = &step.diff {
            for line in diff.lines() {
                out.push_str(&format!("       {line}\n"));
            }
        }
    }
    out
}
