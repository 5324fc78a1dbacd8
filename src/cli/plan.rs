//! `nginx-medic plan`: the actions that would heal the findings, with diffs. A dry run: it reads,
//! renders and prints, and writes nothing but the `--out` file. Environment values other than
//! the bind key are redacted in what is printed and written.

use super::Exit;
use crate::config::Settings;
use crate::engine::plan::Plan;
use crate::pipeline::describe_action as describe;
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the plan (findings and actions) as JSON; `apply --plan FILE` runs such a file.
    #[arg(long)]
    json: bool,
    /// Also write the plan as JSON to FILE (a new file, mode 0600), for review and
    /// `apply --plan FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let diagnosis = super::diagnose::diagnose(settings).await?;
    let checked = diagnosis.targets.len();
    let mut plan = diagnosis.plan();
    crate::redact::plan(&mut plan);
    if let Some(path) = &args.out {
        write_new(path, serde_json::to_string_pretty(&plan)?.as_bytes())?;
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

/// Writes a new file at `path`, mode 0600: never over an existing file, never through a symlink.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::Error::new(super::InvalidInput(format!(
                "cannot write `{}`: it exists\nhelp: `plan --out` writes a new file only; remove it or name another",
                path.display()
            ))),
            _ => anyhow::Error::new(e).context(format!("cannot write `{}`", path.display())),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))
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
