//! `facts --json` as a program reads it: the snapshot of a real lab (nginx, systemd over D-Bus,
//! real backends) deserializes into the library's `Facts`, and the library's pure `diagnose`
//! and `plan` over it give what the binary gives on the same host. This is the proof behind the
//! captured-facts unit tests (`src/pipeline/captured.rs`): with `MEDIC_CAPTURE_TO=DIR` set, the
//! test writes what it captured to DIR, which is how `tests/fixtures/facts/` was made.

use crate::support::lab::Lab;
use nginx_medic::config::Settings;
use nginx_medic::facts::Facts;
use nginx_medic::pipeline;
use serde_json::Value;
use std::fs;
use std::path::PathBuf;

/// A secret beside the bind key: `facts --json` shows the key's value and hides this one.
const SECRET: &str = "SESSION_SECRET=do-not-print-me";

fn captured(lab: &Lab) -> (Value, Facts) {
    let out = lab.medic(&["facts", "--json"]);
    assert!(
        out.status.success(),
        "facts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_slice(&out.stdout).expect("facts --json prints JSON");
    let facts: Facts = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("facts --json does not read back as Facts: {e}"));
    (value, facts)
}

/// `(cause, unit)` of each finding of a `findings` JSON array, sorted.
fn causes_and_units(findings: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = findings
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["cause"].as_str().unwrap_or_default().to_string(),
                f["unit"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

/// The findings as the binary's `diagnose --json` prints them.
fn binary_findings(lab: &Lab) -> Vec<(String, String)> {
    let (_, diagnosed) = lab.medic_json(&["diagnose"]);
    causes_and_units(&diagnosed["findings"])
}

fn library_findings(facts: &Facts, settings: &Settings) -> Vec<(String, String)> {
    let playbooks = pipeline::load_playbooks(settings).expect("the shipped playbooks load");
    let d = pipeline::diagnose(facts, &playbooks, settings);
    causes_and_units(&serde_json::to_value(&d.findings).expect("findings serialize"))
}

fn save(lab: &Lab, name: &str, facts: &Value) {
    let Some(dir) = std::env::var_os("MEDIC_CAPTURE_TO").map(PathBuf::from) else {
        return;
    };
    fs::create_dir_all(&dir).unwrap();
    let text = serde_json::to_string_pretty(facts).unwrap() + "\n";
    fs::write(dir.join(format!("{name}.json")), text).unwrap();
    for env in ["web.env", "api.env"] {
        let bytes = fs::read(lab.dir.join("config").join(env)).unwrap();
        fs::write(dir.join(format!("{name}.{env}")), bytes).unwrap();
    }
    fs::copy(lab.config(), dir.join("medic.yaml")).unwrap();
}

#[test]
fn lab_captured_facts_read_back_and_diagnose_as_the_binary_does() {
    let lab = Lab::start();
    let env = lab.dir.join("config/web.env");
    let text = fs::read_to_string(&env).unwrap();
    fs::write(&env, format!("{text}{SECRET}\n")).unwrap();
    lab.restart_and_wait("web.service");
    let settings = Settings::load(Some(&lab.config())).expect("the lab's medic.yaml");

    let (value, facts) = captured(&lab);
    assert_eq!(library_findings(&facts, &settings), Vec::new(), "healthy");
    assert_eq!(binary_findings(&lab), Vec::new());
    save(&lab, "healthy", &value);

    // two faults at once: api stopped, web bound to another host than nginx dials
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    lab.set_env("web.env", "HOST", "127.0.0.2");
    lab.restart_and_wait("web.service");
    let (value, facts) = captured(&lab);
    let shown = value.to_string();
    assert!(
        shown.contains("127.0.0.2") && !shown.contains("do-not-print-me"),
        "the bind key's value is shown, the secret beside it is not"
    );
    let want = vec![
        ("backend-down".to_string(), "api.service".to_string()),
        ("bind-mismatch".to_string(), "web.service".to_string()),
    ];
    assert_eq!(library_findings(&facts, &settings), want);
    assert_eq!(binary_findings(&lab), want);
    let playbooks = pipeline::load_playbooks(&settings).unwrap();
    let d = pipeline::diagnose(&facts, &playbooks, &settings);
    let plan = pipeline::plan(&facts, &playbooks, &d.targets, d.findings);
    let plan = serde_json::to_string(&plan).unwrap();
    assert!(
        plan.contains("-HOST=127.0.0.2") && plan.contains("+HOST=127.0.0.1"),
        "{plan}"
    );
    save(&lab, "two-faults", &value);
}
