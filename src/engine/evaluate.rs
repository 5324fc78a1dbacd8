//! Facts → findings: every target is matched against the playbooks in priority order. The first
//! playbook whose `when` holds names the cause; later matches are reported as "also matched" and
//! never act. A finding whose `conclusive` requirements fail is reported with what is missing.

use super::conditions::{evaluate as holds, unmet};
use super::context::Target;
use super::render::{render_evidence, without_nulls, RenderContext};
use crate::playbook::{PlaybookSet, Severity};
use serde::Serialize;

/// A named cause found on one target, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The playbook id.
    pub cause: String,
    pub description: String,
    pub severity: Severity,
    /// The site (first `server_name`).
    pub site: String,
    pub location: String,
    /// The address nginx dials: `host:port` or `unix:/path`.
    pub upstream: String,
    pub unit: Option<String>,
    pub evidence: Vec<String>,
    /// Whether the evidence is conclusive enough to act on.
    pub conclusive: bool,
    /// What is missing before anything may be done (empty when conclusive).
    pub missing: Vec<String>,
    /// Other playbooks that matched this target too, lower in priority.
    pub also_matched: Vec<String>,
    /// Another finding's fix heals this target too, so nothing of its own is planned: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    /// Index of the target in the evaluated list.
    #[serde(skip)]
    pub target: usize,
}

/// Matches every target against the playbooks.
pub fn evaluate(playbooks: &PlaybookSet, targets: &[Target]) -> Vec<Finding> {
    targets
        .iter()
        .enumerate()
        .filter_map(|(index, target)| finding_for(playbooks, index, target))
        .collect()
}

fn finding_for(playbooks: &PlaybookSet, index: usize, target: &Target) -> Option<Finding> {
    // once per target: conditions see no difference without the nulls, templates need it
    let ctx = without_nulls(target.context.json());
    let mut matched = playbooks.iter().filter(|p| holds(&p.when, &ctx));
    let first = matched.next()?;
    let missing = unmet(&first.conclusive, &ctx);
    let also_matched = matched.map(|p| p.id.clone()).collect();
    let evidence = render_evidence(&first.evidence, &RenderContext::of(ctx));
    Some(Finding {
        cause: first.id.clone(),
        description: first.description.clone(),
        severity: first.severity,
        site: target.route.site.clone(),
        location: target.route.location.clone(),
        upstream: target.endpoint.address.clone(),
        unit: target.endpoint.unit.clone(),
        evidence,
        conclusive: missing.is_empty(),
        missing,
        also_matched,
        covered_by: None,
        target: index,
    })
}
