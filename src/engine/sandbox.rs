//! Plans checked against what nginx-medic's own sandbox allows, before anything runs: a finding
//! whose edit could not be written (or whose backend's settings cannot even be read) from where
//! nginx-medic runs is reported inconclusive with the drop-in that would allow it, never
//! attempted and failed. Pure: the caller says what is blocked.

use super::plan::Plan;
use crate::adapters::sandbox::Access;
use crate::facts::Facts;
use std::collections::BTreeSet;
use std::path::Path;

/// Says why `path` cannot be accessed from nginx-medic's sandbox (with the fix), or `None`.
pub type Blocked<'a> = &'a dyn Fn(&Path, Access) -> Option<String>;

/// Makes inconclusive every finding whose edits are blocked (and drops its actions), and adds
/// to an inconclusive finding's `missing` the settings files of its unit that are hidden.
pub fn refuse_blocked(plan: &mut Plan, facts: &Facts, blocked: Blocked<'_>) {
    let mut refused = BTreeSet::new();
    for (index, finding) in plan.findings.iter_mut().enumerate() {
        let mut reasons: Vec<String> = if finding.conclusive {
            plan.actions
                .iter()
                .filter(|s| s.finding == index)
                .filter_map(|s| s.action.edit())
                .filter_map(|e| blocked(&e.path, Access::Write))
                .collect()
        } else {
            finding
                .unit
                .as_deref()
                .and_then(|u| facts.unit(u))
                .map(|u| {
                    u.environment_files
                        .iter()
                        .filter(|f| f.vars.is_empty())
                        .filter_map(|f| blocked(Path::new(&f.path), Access::Read))
                        .collect()
                })
                .unwrap_or_default()
        };
        reasons.dedup();
        if reasons.is_empty() {
            continue;
        }
        if finding.conclusive {
            finding.conclusive = false;
            refused.insert(index);
        }
        finding.missing.extend(reasons);
    }
    plan.actions.retain(|s| !refused.contains(&s.finding));
}
