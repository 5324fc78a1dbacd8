//! The pipeline as a library: `gather` → [`diagnose`] → [`plan`] → `apply`. The command line
//! and the daemon are shells over it that only choose when to run a step and what to print.
//!
//! The floors: `adapters` < `facts` < `playbook` < `engine` < `apply` < this module <
//! `cli`/`daemon`. A lower floor never imports a higher one.

use crate::config::Settings;
use crate::engine::context::{targets, Target};
use crate::engine::evaluate::{evaluate, Finding};
use crate::engine::plan::Plan;
use crate::facts::Facts;
use crate::playbook::{load_dirs, PlaybookErrors, PlaybookSet};

pub use crate::apply::execute::apply;
pub use crate::engine::describe::describe as describe_action;
pub use crate::facts::gather::{gather, gather_on};

/// The targets of a snapshot and what the playbooks found in them.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub targets: Vec<Target>,
    pub findings: Vec<Finding>,
}

/// A playbook set that failed to load: every error in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlaybooks(pub PlaybookErrors);

/// The playbooks of the configured dirs, or every error in them.
pub fn load_playbooks(settings: &Settings) -> Result<PlaybookSet, InvalidPlaybooks> {
    load_dirs(&settings.playbooks, &settings.templates).map_err(InvalidPlaybooks)
}

/// Binds the facts to targets and matches them against the playbooks. Pure: it reads nothing
/// (every file it needs was read by `gather`); of the settings it uses the `backends:` hints
/// and `daemon.start_failure_window`.
pub fn diagnose(facts: &Facts, playbooks: &PlaybookSet, settings: &Settings) -> Diagnosis {
    let targets = targets(
        facts,
        &settings.backends,
        settings.daemon.start_failure_window,
    );
    let mut findings = evaluate(playbooks, &targets);
    // nginx -t failing already is global: reported first, it blocks every action on nginx
    crate::engine::preflight::check(facts, playbooks, &mut findings);
    Diagnosis { targets, findings }
}

/// [`diagnose`] without keeping the targets: each is evaluated and dropped before the next is
/// made (at 10,000 sites the kept contexts were most of the process's memory). The number of
/// targets checked, and the findings.
pub fn findings(
    facts: &Facts,
    playbooks: &PlaybookSet,
    settings: &Settings,
) -> (usize, Vec<Finding>) {
    let mut count = 0;
    let mut findings = Vec::new();
    let evaluator = crate::engine::evaluate::Evaluator::new(playbooks);
    crate::engine::context::each_target(
        facts,
        &settings.backends,
        settings.daemon.start_failure_window,
        |target| {
            findings.extend(evaluator.finding_for(count, &target));
            count += 1;
        },
    );
    crate::engine::preflight::check(facts, playbooks, &mut findings);
    (count, findings)
}

/// Plans the findings, reading the settings files the edits touch, and refuses the edits the
/// service sandbox would block.
pub fn plan(
    facts: &Facts,
    playbooks: &PlaybookSet,
    targets: &[Target],
    findings: Vec<Finding>,
) -> Plan {
    let read = |path: &std::path::Path| crate::adapters::fs::read_settings_file(path);
    let mut plan = crate::engine::plan::plan(facts.taken_at, playbooks, targets, findings, &read);
    crate::engine::sandbox::refuse_blocked(&mut plan, facts, &crate::adapters::sandbox::blocked);
    plan
}

#[cfg(test)]
mod captured;
