//! The seed causes healed end to end in the lab: a real 502 through nginx → `diagnose` names the
//! cause and the unit → `plan` shows actions and diffs and changes nothing → `apply` → 200.

use crate::support::lab::Lab;
use serde_json::Value;
use std::fs;
use std::path::PathBuf;

fn restart(lab: &Lab, unit: &str) {
    lab.restart_and_wait(unit);
}

fn unit_states(lab: &Lab) -> Vec<(String, String, Option<u32>)> {
    ["nginx.service", "api.service", "web.service"]
        .iter()
        .map(|u| {
            (
                u.to_string(),
                lab.unit_property(u, "ActiveState"),
                lab.main_pid(u),
            )
        })
        .collect()
}

/// The whole story for one cause: 502 → diagnose → plan (dry) → apply → 200.
fn heal(lab: &Lab, site_port: u16, cause: &str, unit: &str, expect_kinds: &[&str]) -> Value {
    assert_eq!(
        lab.http_status(site_port, "/"),
        502,
        "the fault must show as a 502 first"
    );

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2, "diagnose exits 2 on findings: {diagnosis:#}");
    assert_eq!(diagnosis["healthy"], false);
    let finding = &diagnosis["findings"][0];
    assert_eq!(finding["cause"], cause, "{diagnosis:#}");
    assert_eq!(finding["unit"], unit, "{diagnosis:#}");
    assert_eq!(finding["conclusive"], true, "{diagnosis:#}");

    let (files, units) = (lab.config_files(), unit_states(lab));
    let (code, plan) = lab.medic_json(&["plan"]);
    assert_eq!(code, 2, "plan exits 2 when it plans changes");
    let kinds: Vec<&str> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, expect_kinds, "{plan:#}");
    assert!(plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["playbook"] == cause));
    assert!(lab.config_files() == files, "plan must not change any file");
    assert_eq!(unit_states(lab), units, "plan must not touch any unit");

    let (code, applied) = lab.apply(&[], &[]);
    assert_eq!(
        applied["outcome"],
        "healed",
        "{applied:#}\n{}",
        lab.nginx_error_log()
    );
    assert_eq!(code, 0);
    assert_eq!(lab.http_status(site_port, "/"), 200);
    plan
}

#[test]
fn lab_heals_a_stopped_backend() {
    let lab = Lab::start();
    let stop = lab.systemctl(&["stop", "api.service"]);
    assert!(stop.status.success());
    heal(
        &lab,
        lab.port("api_site"),
        "backend-down",
        "api.service",
        &["systemd", "wait_listen", "probe"],
    );
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "active");
}

#[test]
fn lab_heals_a_backend_bound_to_another_host() {
    let lab = Lab::start();
    lab.set_env("web.env", "HOST", "127.0.0.2");
    restart(&lab, "web.service");
    let plan = heal(
        &lab,
        lab.port("web_site"),
        "bind-mismatch",
        "web.service",
        &["set_bind_host", "systemd", "wait_listen", "probe"],
    );
    let diff = plan["actions"][0]["diff"]
        .as_str()
        .expect("a diff for the bind edit");
    assert!(
        diff.contains("-HOST=127.0.0.2") && diff.contains("+HOST=127.0.0.1"),
        "{diff}"
    );
    let env = fs::read_to_string(lab.dir.join("config/web.env")).unwrap();
    assert!(
        env.contains("HOST=127.0.0.1\n"),
        "the exact address nginx dials, never a wildcard: {env}"
    );
}

#[test]
fn lab_heals_a_wrong_proxy_pass_port() {
    let lab = Lab::start();
    let moved = lab.port("api") + 5;
    lab.set_env("api.env", "PORT", &moved.to_string());
    restart(&lab, "api.service");
    let plan = heal(
        &lab,
        lab.port("api_site"),
        "wrong-port",
        "api.service",
        &["render_site", "nginx_test", "nginx_reload", "probe"],
    );
    let diff = plan["actions"][0]["diff"]
        .as_str()
        .expect("a diff for the site");
    assert!(
        diff.contains(&format!("+        proxy_pass http://127.0.0.1:{moved};")),
        "{diff}"
    );
    let site = fs::read_to_string(lab.dir.join("nginx/sites-enabled/api.conf")).unwrap();
    assert!(site.contains(&format!("proxy_pass http://127.0.0.1:{moved};")));
}

#[test]
fn lab_rolls_back_a_site_edit_that_nginx_rejects() {
    let lab = Lab::start();
    // A template that renders a directive which passes our checks but not nginx -t (port > 65535).
    let broken = lab.dir.join("broken-templates");
    fs::create_dir_all(&broken).unwrap();
    fs::write(
        broken.join("pass-target.hbs"),
        "{{pass.directive}} {{#if pass.scheme}}{{pass.scheme}}://{{/if}}{{endpoint.host}}:9{{unit.other_ports.[0]}}{{pass.uri}};\n",
    )
    .unwrap();
    let config = fs::read_to_string(lab.config()).unwrap();
    let repo_templates = format!("{}/templates", env!("CARGO_MANIFEST_DIR"));
    // a later template dir overrides an earlier one: only `pass-target.hbs` is broken
    let config = config.replace(
        &repo_templates,
        &format!("{repo_templates}\n  - {}", broken.display()),
    );
    assert!(config.contains("broken-templates"), "{config}");
    fs::write(lab.config(), config).unwrap();

    lab.set_env("api.env", "PORT", &(lab.port("api") + 5).to_string());
    restart(&lab, "api.service");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    let site = lab.dir.join("nginx/sites-enabled/api.conf");
    let before = fs::read(&site).unwrap();
    let meta_before = fs::metadata(&site).unwrap();

    let (code, applied) = lab.apply(&[], &[(lab.port("api_site"), 502)]);
    assert_eq!(applied["outcome"], "rolled_back", "{applied:#}");
    assert_eq!(code, 1, "a rollback exits 1");
    assert_eq!(
        fs::read(&site).unwrap(),
        before,
        "the site file is restored byte for byte"
    );
    use std::os::unix::fs::MetadataExt;
    let meta_after = fs::metadata(&site).unwrap();
    assert_eq!(
        (meta_after.mode(), meta_after.uid(), meta_after.gid()),
        (meta_before.mode(), meta_before.uid(), meta_before.gid())
    );
    let statuses: Vec<(&str, &str)> = applied["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["kind"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("render_site", "rolled_back"),
            ("nginx_test", "failed"),
            ("nginx_reload", "not_run"),
            ("probe", "not_run")
        ]
    );
    // nginx still runs the old configuration: the api site still dials the old port.
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 200);
    let journal =
        fs::read_to_string(lab.dir.join("state/journal.jsonl")).expect("the audit journal");
    let kinds: Vec<(String, String)> = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("heal_begin", "ok"),
            ("render_site", "ok"),
            ("nginx_test", "failed"),
            ("restore_file", "rolled_back"),
            ("heal_end", "rolled_back")
        ]
        .map(|(k, s)| (k.to_string(), s.to_string())),
        "{journal}"
    );
}

#[test]
fn lab_healthy_means_exit_zero_and_no_actions() {
    let lab = Lab::start();
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(
        (code, &diagnosis["healthy"]),
        (0, &Value::Bool(true)),
        "{diagnosis:#}"
    );
    let (code, plan) = lab.medic_json(&["plan"]);
    assert_eq!(code, 0);
    assert_eq!(plan["actions"], serde_json::json!([]));
}

#[test]
fn lab_apply_runs_a_reviewed_plan_and_refuses_it_once_a_file_changed() {
    let lab = Lab::start();
    let moved = lab.port("api") + 5;
    lab.set_env("api.env", "PORT", &moved.to_string());
    restart(&lab, "api.service");
    let plan_file = lab.dir.join("reviewed-plan.json");
    let out = lab.medic(&["plan", "--out", plan_file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Someone edits the site after the review: the plan no longer describes the file.
    let site = lab.dir.join("nginx/sites-enabled/api.conf");
    let edited = fs::read_to_string(&site).unwrap() + "# edited after the review\n";
    fs::write(&site, &edited).unwrap();
    // The host is planned afresh: the reviewed step is not the fresh plan's, so the plan is
    // refused as invalid input before anything is done.
    let out = lab.medic(&["apply", "--plan", plan_file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("refused, nothing was done")
            && stderr.contains("changed since the plan was made"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(&site).unwrap(),
        edited,
        "the newer edit is kept"
    );

    // A fresh plan of the same fault, reviewed and run as written, heals (`--out` writes a
    // new file only).
    let plan_file = lab.dir.join("reviewed-again.json");
    let out = lab.medic(&["plan", "--out", plan_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let (code, applied) = lab.apply(&["--plan", plan_file.to_str().unwrap()], &[]);
    assert_eq!(
        (code, applied["outcome"].as_str()),
        (0, Some("healed")),
        "{applied:#}"
    );
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
}

#[test]
fn lab_heals_a_bind_host_written_in_execstart_with_a_drop_in() {
    let lab = Lab::start();
    let port = lab.port("django");
    // Someone's drop-in binds gunicorn to 127.0.0.2: the host lives in ExecStart, not in a file
    // of settings, so the fix is a drop-in of our own that repeats the command with the host nginx dials.
    let unit_dir = lab.dir.join("config/systemd/user/django.service.d");
    fs::create_dir_all(&unit_dir).unwrap();
    let venv = std::env::var("MEDIC_LAB_VENV")
        .unwrap_or_else(|_| format!("{}/.venv-lab", env!("CARGO_MANIFEST_DIR")));
    let venv = fs::canonicalize(&venv).unwrap_or_else(|_| PathBuf::from(&venv));
    let broken = format!(
        "[Service]\nExecStart=\nExecStart={}/bin/gunicorn --chdir {}/apps/django --bind 127.0.0.2:{port} --workers 1 project.wsgi\n",
        venv.display(),
        lab.dir.display()
    );
    fs::write(unit_dir.join("10-moved.conf"), broken).unwrap();
    assert!(lab.systemctl(&["daemon-reload"]).status.success());
    restart(&lab, "django.service");

    let plan = heal(
        &lab,
        lab.port("django_site"),
        "bind-mismatch",
        "django.service",
        &["set_bind_host", "systemd", "wait_listen", "probe"],
    );
    let diff = plan["actions"][0]["diff"]
        .as_str()
        .expect("a diff for the drop-in");
    assert!(diff.contains(&format!("--bind 127.0.0.1:{port}")), "{diff}");
    let ours = fs::read_to_string(unit_dir.join("zz-nginx-medic-bind.conf")).expect("our drop-in");
    assert!(ours.contains("ExecStart=\nExecStart="), "{ours}");
    assert!(!ours.contains("0.0.0.0"), "{ours}");
}
