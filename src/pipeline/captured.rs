//! The pipeline over captured facts: `facts --json` of a real lab (`tests/fixtures/facts/`,
//! written by the lab test `lab_captured` with `MEDIC_CAPTURE_TO`), read back into [`Facts`]
//! and taken through `targets`, `diagnose` and `plan` without root, a bus or a file of the host.

use super::diagnose;
use crate::config::Settings;
use crate::engine::context::targets;
use crate::engine::plan::{plan, PlannedAction};
use crate::facts::Facts;
use crate::playbook::{load_dirs, PlaybookSet, SystemdOp};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/facts")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn facts(name: &str) -> Facts {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The lab's own medic.yaml (its `backends:` hint for api.service), as captured.
fn settings() -> Settings {
    Settings::from_yaml(&fixture("medic.yaml"), &read("medic.yaml")).unwrap()
}

fn playbooks() -> PlaybookSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    load_dirs(&[root.join("playbooks")], &[root.join("templates")]).unwrap()
}

/// The files a plan reads, from the fixtures: each lab env file by its name.
fn read_captured(path: &Path) -> std::io::Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match name {
        "web.env" | "api.env" => Ok(read(&format!("two-faults.{name}"))),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not captured: {}", path.display()),
        )),
    }
}

#[test]
fn captured_facts_read_back_whole() {
    for name in ["healthy.json", "two-faults.json"] {
        let text = read(name);
        let again = serde_json::to_value(facts(name)).unwrap();
        let captured: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, captured, "{name}: a field is lost on the way back");
    }
}

#[test]
fn targets_of_the_captured_lab_are_its_four_sites() {
    let settings = settings();
    let facts = facts("healthy.json");
    let found = targets(
        &facts,
        &settings.backends,
        settings.daemon.start_failure_window,
    );
    let mut sites: Vec<&str> = found.iter().map(|t| t.route.site.as_str()).collect();
    sites.dedup();
    assert_eq!(sites, ["api.lab", "django.lab", "php.lab", "web.lab"]);
    let php = found.iter().find(|t| t.route.site == "php.lab").unwrap();
    assert!(php.endpoint.address.starts_with("unix:/"), "{}", php.label);
}

#[test]
fn the_healthy_capture_has_no_finding() {
    let d = diagnose(&facts("healthy.json"), &playbooks(), &settings());
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
    assert!(!d.targets.is_empty());
}

#[test]
fn a_stopped_backend_and_a_wrong_bind_host_are_both_found_conclusive() {
    let d = diagnose(&facts("two-faults.json"), &playbooks(), &settings());
    let mut found: Vec<(&str, Option<&str>, bool)> = d
        .findings
        .iter()
        .map(|f| (f.cause.as_str(), f.unit.as_deref(), f.conclusive))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("backend-down", Some("api.service"), true),
            ("bind-mismatch", Some("web.service"), true),
        ]
    );
}

#[test]
fn the_plan_starts_one_unit_and_rebinds_the_other_to_the_address_nginx_dials() {
    let facts = facts("two-faults.json");
    let playbooks = playbooks();
    let d = diagnose(&facts, &playbooks, &settings());
    let planned = plan(
        facts.taken_at,
        &playbooks,
        &d.targets,
        d.findings,
        &read_captured,
    );
    let starts_api = planned.actions.iter().any(|s| {
        matches!(&s.action, PlannedAction::Systemd { unit, op }
            if unit == "api.service" && matches!(op, SystemdOp::Start | SystemdOp::Restart))
    });
    assert!(starts_api, "{:#?}", planned.actions);
    let rebind = planned
        .actions
        .iter()
        .find_map(|s| match &s.action {
            PlannedAction::SetBindHost {
                unit, host, key, ..
            } => Some((
                unit.as_str(),
                host.as_str(),
                key.as_str(),
                s.diff.as_deref(),
            )),
            _ => None,
        })
        .expect("a bind edit");
    let (unit, host, key, diff) = rebind;
    assert_eq!((unit, host, key), ("web.service", "127.0.0.1", "HOST"));
    let diff = diff.unwrap_or_default();
    assert!(
        diff.contains("-HOST=127.0.0.2") && diff.contains("+HOST=127.0.0.1"),
        "{diff}"
    );
}

#[test]
fn the_capture_shows_the_bind_key_and_hides_the_secret_beside_it() {
    let facts = facts("two-faults.json");
    let web = facts.unit("web.service").unwrap();
    let vars = &web.environment_files[0].vars;
    assert_eq!(vars.get("HOST").map(String::as_str), Some("127.0.0.2"));
    assert_eq!(
        vars.get("SESSION_SECRET").map(String::as_str),
        Some(crate::redact::REDACTED)
    );
    assert!(!read("two-faults.json").contains("do-not-print-me"));
}
