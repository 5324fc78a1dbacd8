//! The shared first half of `diagnose`, `plan` and `apply`: settings → playbooks → facts →
//! targets → findings.

use crate::adapters::procfs::Procfs;
use crate::config::Settings;
use crate::engine::context::{targets, Target};
use crate::engine::evaluate::{evaluate, Finding};
use crate::engine::plan::{plan, Plan};
use crate::facts::{gather::gather, Facts};
use crate::playbook::{load_dirs, PlaybookSet};
use anyhow::Context;

/// Everything known after diagnosis.
pub struct Diagnosis {
    pub facts: Facts,
    pub playbooks: PlaybookSet,
    pub targets: Vec<Target>,
    pub findings: Vec<Finding>,
}

/// The playbooks of the configured dirs, or every error in them.
pub fn playbooks(settings: &Settings) -> anyhow::Result<PlaybookSet> {
    load_dirs(&settings.playbooks, &settings.templates)
        .map_err(InvalidPlaybooks)
        .context("the playbooks do not load; `nginx-medic playbooks check` lists every error")
}

/// A playbook set that failed to load: invalid input (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlaybooks(pub crate::playbook::PlaybookErrors);

/// Gathers facts and matches them against the playbooks.
pub async fn diagnose(settings: &Settings) -> anyhow::Result<Diagnosis> {
    let playbooks = playbooks(settings)?;
    let facts = gather(settings, &Procfs::system()).await;
    let targets = targets(
        &facts,
        &settings.backends,
        settings.daemon.start_failure_window,
    );
    let mut findings = evaluate(&playbooks, &targets);
    // nginx -t failing already is global: reported first, it blocks every action on nginx
    crate::engine::preflight::check(&facts, &playbooks, &mut findings);
    Ok(Diagnosis {
        facts,
        playbooks,
        targets,
        findings,
    })
}

/// Plans the findings, reading the files the edits touch.
pub fn plan_of(d: Diagnosis) -> Plan {
    let read = |path: &std::path::Path| crate::adapters::fs::read_settings_file(path);
    let mut plan = plan(
        d.facts.taken_at,
        &d.playbooks,
        &d.targets,
        d.findings,
        &read,
    );
    crate::engine::sandbox::refuse_blocked(&mut plan, &d.facts, &crate::adapters::sandbox::blocked);
    plan
}
