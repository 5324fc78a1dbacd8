//! `nginx-medic diagnose`: the causes found, with their evidence. Changes nothing.

use super::Exit;
use crate::adapters::procfs::Procfs;
use crate::config::Settings;
use crate::engine::context::Target;
use crate::engine::evaluate::Finding;
use crate::engine::plan::Plan;
use crate::facts::Facts;
use crate::pipeline;
use crate::playbook::PlaybookSet;
use anyhow::Context;
use serde::Serialize;
use std::io::Write as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"healthy": bool, "findings": [...]}` as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    healthy: bool,
    findings: &'a [Finding],
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let playbooks = playbooks(settings)?;
    let facts = pipeline::gather(settings, &Procfs::system()).await;
    // only the findings are printed: each target is dropped once evaluated
    let (targets, findings) = pipeline::findings(&facts, &playbooks, settings);
    let healthy = findings.is_empty();
    if args.json {
        let out = Output {
            healthy,
            findings: &findings,
        };
        // straight to stdout: at 10,000 sites the text is ~19 MB, not worth holding twice
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut stdout, &out)?;
        writeln!(stdout)?;
        stdout.flush()?;
    } else {
        print!("{}", render(&findings, targets));
    }
    // the process ends here: freeing a snapshot of thousands of sites piece by piece took
    // about a sixth of the run, and the OS takes the memory back at once
    std::mem::forget((facts, playbooks, findings));
    Ok(if healthy { Exit::Ok } else { Exit::Findings })
}

/// One snapshot of this host, diagnosed: what `diagnose`, `plan`, `apply` and `explain` share.
pub struct Diagnosed {
    pub facts: Facts,
    pub playbooks: PlaybookSet,
    pub targets: Vec<Target>,
    pub findings: Vec<Finding>,
}

impl Diagnosed {
    /// The plan that heals the findings.
    pub fn plan(&self) -> Plan {
        pipeline::plan(
            &self.facts,
            &self.playbooks,
            &self.targets,
            self.findings.clone(),
        )
    }
}

/// The playbooks of the configured dirs, or every error in them (exit 3).
pub fn playbooks(settings: &Settings) -> anyhow::Result<PlaybookSet> {
    pipeline::load_playbooks(settings)
        .context("the playbooks do not load; `nginx-medic playbooks check` lists every error")
}

/// Loads the playbooks, gathers the facts and diagnoses them.
pub async fn diagnose(settings: &Settings) -> anyhow::Result<Diagnosed> {
    let playbooks = playbooks(settings)?;
    let facts = pipeline::gather(settings, &Procfs::system()).await;
    let pipeline::Diagnosis { targets, findings } =
        pipeline::diagnose(&facts, &playbooks, settings);
    Ok(Diagnosed {
        facts,
        playbooks,
        targets,
        findings,
    })
}

/// The findings for a person: one block per finding.
pub fn render(findings: &[Finding], targets: usize) -> String {
    if findings.is_empty() {
        return format!("healthy: {targets} upstream target(s) checked, no cause found\n");
    }
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{} {} -> {}: {} ({})\n  {}\n",
            f.site,
            f.location,
            f.upstream,
            f.cause,
            f.severity.as_str(),
            f.description
        ));
        if let Some(unit) = &f.unit {
            out.push_str(&format!("  unit: {unit}\n"));
        }
        for e in &f.evidence {
            out.push_str(&super::table::bullet("  ", e));
        }
        for m in &f.missing {
            out.push_str(&format!("  inconclusive: {m}\n"));
        }
        if let Some(why) = &f.covered_by {
            out.push_str(&format!("  covered: {why}\n"));
        }
        if !f.also_matched.is_empty() {
            out.push_str(&format!("  also matched: {}\n", f.also_matched.join(", ")));
        }
    }
    out
}
