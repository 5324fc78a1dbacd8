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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::evaluate::Finding;
    use crate::engine::plan::{FileEdit, PlannedAction, Step};
    use crate::facts::Gathered;

    fn finding(upstream: &str) -> Finding {
        Finding {
            cause: "bind-mismatch".into(),
            description: String::new(),
            severity: crate::playbook::Severity::Critical,
            site: "s".into(),
            location: "/".into(),
            upstream: upstream.into(),
            unit: None,
            evidence: Vec::new(),
            conclusive: true,
            missing: Vec::new(),
            also_matched: Vec::new(),
            covered_by: None,
            target: 0,
        }
    }

    fn edit(finding: usize, path: &str) -> Step {
        Step {
            playbook: "bind-mismatch".into(),
            finding,
            target: "t".into(),
            action: PlannedAction::RenderSite {
                directive: "proxy_pass".into(),
                edit: FileEdit {
                    path: path.into(),
                    before_hash: None,
                    after: String::new(),
                },
            },
            diff: None,
        }
    }

    fn facts() -> Facts {
        fn gone<T>() -> Gathered<T> {
            Gathered::Unavailable {
                reason: "test".into(),
            }
        }
        Facts {
            taken_at: 0,
            nginx: gone(),
            sockets: gone(),
            units: gone(),
            error_log: gone(),
            nginx_test: gone(),
            routes: Vec::new(),
            worker: None,
            unix_paths: Vec::new(),
            disk: Default::default(),
            pm2: Vec::new(),
            supervision: Vec::new(),
            fpm_pools: Vec::new(),
            backend_probes: Vec::new(),
            reproductions: Vec::new(),
            rolled_back_edits: Vec::new(),
            verified_edits: Vec::new(),
            last_good: crate::facts::Gathered::Ok {
                data: crate::facts::last_good::LastGood::empty(),
            },
        }
    }

    #[test]
    fn a_blocked_edit_makes_only_its_finding_inconclusive_and_drops_only_its_steps() {
        let mut plan = Plan {
            created_at: 0,
            findings: vec![finding("a"), finding("b")],
            actions: vec![edit(0, "/etc/myapp/env"), edit(1, "/etc/default/api")],
        };
        let blocked = |p: &Path, access: Access| {
            (access == Access::Write && p.starts_with("/etc/myapp"))
                .then(|| "read-only; add ReadWritePaths=/etc/myapp".to_string())
        };
        refuse_blocked(&mut plan, &facts(), &blocked);
        assert!(!plan.findings[0].conclusive);
        assert_eq!(
            plan.findings[0].missing,
            ["read-only; add ReadWritePaths=/etc/myapp"]
        );
        assert!(plan.findings[1].conclusive, "the neighbour is untouched");
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].finding, 1);
    }
}
