//! The global check before any playbook may act: when `nginx -t` already fails on the
//! configuration as it is on disk, nginx-medic reports nginx's own `file:line` as a finding
//! (`host-not-found` or `nginx-config-invalid`), and every other finding is made inconclusive so
//! that nothing is changed and nginx is never reloaded over a configuration that does not load.
//!
//! This is a built-in check rather than a playbook: it concerns no upstream target, and it must
//! block the actions of every playbook, including ones a site adds.

use super::evaluate::Finding;
use crate::facts::nginx_test::NginxTest;
use crate::facts::Facts;
use crate::playbook::Severity;

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
            "fix {at} by hand and check with `nginx -t`; nginx-medic changes nothing and never reloads over a configuration that does not load"
        )],
        also_matched: Vec::new(),
        target: GLOBAL_TARGET,
    })
}

/// Puts the global finding first and blocks every other one while `nginx -t` fails.
pub fn check(facts: &Facts, findings: &mut Vec<Finding>) {
    let Some(global) = facts.nginx_test.ok().and_then(config_finding) else {
        return;
    };
    for f in findings.iter_mut() {
        f.conclusive = false;
        f.missing.push(format!(
            "`nginx -t` already fails ({}, {}); nothing is changed until the configuration loads",
            global.cause, global.location
        ));
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
