//! `nginx-medic diagnose`: the causes found, with their evidence. Changes nothing.

use super::pipeline::diagnose;
use super::Exit;
use crate::config::Settings;
use crate::engine::evaluate::Finding;
use serde::Serialize;

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
    let d = diagnose(settings).await?;
    let healthy = d.findings.is_empty();
    if args.json {
        let out = Output {
            healthy,
            findings: &d.findings,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&d.findings, d.targets.len()));
    }
    Ok(if healthy { Exit::Ok } else { Exit::Findings })
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
