//! The global check before any playbook may act: when `nginx -t` already fails on the
//! configuration as it is on disk, nginx-medic reports nginx's own `file:line` as a finding
//! (`host-not-found` or `nginx-config-invalid`), and every finding whose playbook edits nginx's
//! configuration, tests it or reloads nginx is made inconclusive, so that nginx is never reloaded
//! over a configuration that does not load. A finding whose actions leave nginx alone (a unit
//! restart, a wait, a probe through the running nginx) still proceeds: the running nginx keeps
//! the configuration it loaded before the broken edit.
//!
//! This is a built-in check rather than a playbook: it concerns no upstream target, and it must
//! hold for the actions of every playbook, including ones a site adds.

use super::evaluate::Finding;
use crate::facts::nginx_test::NginxTest;
use crate::facts::Facts;
use crate::playbook::{Action, PlaybookSet, Severity};

/// The cause id when nginx cannot resolve an upstream's host name at load time.
pub const HOST_NOT_FOUND: &str = "host-not-found";
/// The cause id for any other configuration nginx refuses to load.
pub const CONFIG_INVALID: &str = "nginx-config-invalid";
/// `Finding::target` of a global finding: it names no upstream target.
pub const GLOBAL_TARGET: usize = usize::MAX;

/// The global finding for a failing `nginx -t`, if it fails.
pub fn config_finding(test: &NginxTest) -> Option<Finding> {
    if test.ok {
        return None;
    }
    let first = test.problems.first();
    let host = test.problems.iter().find_map(|p| p.host_not_found.clone());
    let (cause, description) = match &host {
        Some(_) => (
            HOST_NOT_FOUND,
            "nginx cannot resolve an upstream host name, so its configuration does not load",
        ),
        None => (
            CONFIG_INVALID,
            "nginx -t fails: the configuration on disk does not load",
        ),
    };
    let place = |p: &crate::facts::nginx_test::ConfigProblem| match (&p.file, p.line) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.clone(),
        _ => "nginx -t".to_string(),
    };
    let mut evidence: Vec<String> = test
        .problems
        .iter()
        .map(|p| format!("{}: [{}] {}", place(p), p.level, p.message))
        .collect();
    if evidence.is_empty() {
        evidence.push(format!("nginx -t: {}", test.output));
    }
    evidence.push(
        "nginx -t fails on the configuration as it is on disk, before nginx-medic changed anything"
            .to_string(),
    );
    let at = first.map_or_else(|| "nginx -t".to_string(), place);
    Some(Finding {
        cause: cause.to_string(),
        description: description.to_string(),
        severity: Severity::Critical,
        site: "nginx".to_string(),
        location: at.clone(),
        upstream: host.unwrap_or_default(),
        unit: None,
        evidence,
        conclusive: false,
        missing: vec![format!(
            "fix {at} by hand and check with `nginx -t`; nginx-medic edits no nginx file and never reloads over a configuration that does not load"
        )],
        also_matched: Vec::new(),
        covered_by: None,
        target: GLOBAL_TARGET,
    })
}

/// Whether an action edits nginx's configuration, runs `nginx -t` or reloads nginx.
pub fn touches_nginx(action: &Action) -> bool {
    matches!(
        action,
        Action::RenderSite { .. }
            | Action::SetDirective { .. }
            | Action::NginxTest
            | Action::NginxReload
    )
}

/// Puts the global finding first while `nginx -t` fails, and blocks every finding whose
/// playbook touches nginx (`touches_nginx`), or whose playbook is not known. The others keep
/// their verdict, with a line saying why they may act.
pub fn check(facts: &Facts, playbooks: &PlaybookSet, findings: &mut Vec<Finding>) {
    if let Some(global) = facts.nginx_test.ok().and_then(config_finding) {
        block_nginx_actions(global, playbooks, findings);
    }
}

/// `check` once `nginx -t` has failed with `global`.
fn block_nginx_actions(global: Finding, playbooks: &PlaybookSet, findings: &mut Vec<Finding>) {
    for f in findings.iter_mut() {
        let touches = playbooks
            .get(&f.cause)
            .map_or(true, |p| p.actions.iter().any(touches_nginx));
        if touches {
            f.conclusive = false;
            f.missing.push(format!(
                "`nginx -t` already fails ({}, {}); nginx is not edited or reloaded until the configuration loads",
                global.cause, global.location
            ));
        } else {
            f.evidence.push(format!(
                "`nginx -t` fails ({}, {}), but this fix neither edits nor reloads nginx",
                global.cause, global.location
            ));
        }
    }
    findings.insert(0, global);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> NginxTest {
        let path = format!(
            "{}/tests/fixtures/nginx_test/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        NginxTest::from_output(false, &std::fs::read_to_string(path).unwrap())
    }

    fn seeds() -> PlaybookSet {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::playbook::load_dirs(&[root.join("playbooks")], &[root.join("templates")]).unwrap()
    }

    fn found(cause: &str) -> Finding {
        let mut f = config_finding(&fixture("syntax.stderr")).unwrap();
        f.cause = cause.to_string();
        f.conclusive = true;
        f.evidence.clear();
        f.missing.clear();
        f.target = 0;
        f
    }

    #[test]
    fn a_failing_test_blocks_only_findings_that_touch_nginx() {
        let global = config_finding(&fixture("syntax.stderr")).unwrap();
        let mut findings = vec![
            found("backend-down"),
            found("wrong-port"),
            found("too-big-header"),
            found("bind-mismatch"),
            found("a-site-playbook-nobody-loaded"),
        ];
        block_nginx_actions(global, &seeds(), &mut findings);
        let verdicts: Vec<(&str, bool)> = findings
            .iter()
            .map(|f| (f.cause.as_str(), f.conclusive))
            .collect();
        assert_eq!(
            verdicts,
            [
                (CONFIG_INVALID, false),
                ("backend-down", true),
                ("wrong-port", false),
                ("too-big-header", false),
                ("bind-mismatch", true),
                ("a-site-playbook-nobody-loaded", false),
            ]
        );
        assert_eq!(
            findings[1].evidence,
            ["`nginx -t` fails (nginx-config-invalid, /tmp/ngt/b.conf:9), but this fix neither edits nor reloads nginx"]
        );
        assert!(findings[2].missing[0].contains("nginx is not edited or reloaded"));
    }

    #[test]
    fn a_passing_test_is_no_finding() {
        assert_eq!(config_finding(&NginxTest::from_output(true, "")), None);
    }

    #[test]
    fn host_not_found_names_the_file_line_and_acts_on_nothing() {
        let f = config_finding(&fixture("host-not-found.stderr")).unwrap();
        assert_eq!(f.cause, HOST_NOT_FOUND);
        assert_eq!(f.location, "/tmp/ngt/a.conf:8");
        assert_eq!(f.upstream, "app.nosuch.invalid");
        assert!(!f.conclusive);
        assert_eq!(
            f.evidence[0],
            "/tmp/ngt/a.conf:8: [emerg] host not found in upstream \"app.nosuch.invalid\""
        );
    }

    #[test]
    fn a_syntax_error_is_config_invalid() {
        let f = config_finding(&fixture("syntax.stderr")).unwrap();
        assert_eq!(f.cause, CONFIG_INVALID);
        assert_eq!(f.location, "/tmp/ngt/b.conf:9");
    }
}
