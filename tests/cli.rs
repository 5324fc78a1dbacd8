//! The binary's own behaviour on bad input and `--help`: exact text and exit codes, snapshotted.

use std::process::{Command, Output};

fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nginx-medic"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env_remove("NGINX_MEDIC_CONFIG")
        .output()
        .expect("the binary runs")
}

#[test]
fn playbooks_check_reports_every_error_with_file_line_and_field() {
    let out = medic(&[
        "--config",
        "/dev/null",
        "playbooks",
        "check",
        "tests/fixtures/playbooks/bad",
        "--templates",
        "templates",
    ]);
    assert_eq!(out.status.code(), Some(3), "invalid input exits 3");
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shipped_playbooks_pass_the_check() {
    let out = medic(&[
        "--config",
        "/dev/null",
        "playbooks",
        "check",
        "playbooks",
        "--templates",
        "templates",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 15 playbook(s) valid\n"
    );
}

#[test]
fn a_config_with_an_unknown_key_names_file_line_and_field() {
    let out = medic(&[
        "--config",
        "tests/fixtures/config/unknown-key.yaml",
        "facts",
    ]);
    assert_eq!(out.status.code(), Some(3));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_plan_file_that_is_not_a_plan_is_invalid_input() {
    let out = medic(&["--config", "/dev/null", "apply", "--plan", "Cargo.toml"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(
        "error: Cargo.toml:1:2: not a plan written by `nginx-medic plan --out`: expected value"
    ));
}

#[test]
fn help_documents_the_commands_and_exit_codes() {
    let out = medic(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn pause_and_resume_keep_a_versioned_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medic.yaml");
    let state = dir.path().join("state");
    std::fs::write(&config, format!("state_dir: {}\n", state.display())).unwrap();
    let config = config.to_str().unwrap();
    let json = |out: &Output| -> serde_json::Value {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let out = medic(&["--config", config, "pause", "--for", "10 minutes", "api"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a bad duration is invalid input"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("error: `--for 10 minutes` is not a duration\nhelp: "));
    assert!(!state.join("paused.json").exists());

    let paused = json(&medic(&[
        "--config", config, "pause", "--for", "10m", "api", "--json",
    ]));
    assert_eq!(paused["changed"], serde_json::json!(["api.service"]));
    let entry = &paused["paused"][0];
    assert_eq!(entry["unit"], "api.service");
    assert_eq!(
        entry["until"].as_u64().unwrap() - entry["since"].as_u64().unwrap(),
        600
    );
    let file = std::fs::read_to_string(state.join("paused.json")).unwrap();
    assert!(file.contains("\"version\": 1"), "{file}");

    let host = json(&medic(&["--config", config, "pause", "--json"]));
    assert_eq!(host["paused"][0]["unit"], "*");
    assert_eq!(host["paused"][0]["until"], serde_json::Value::Null);

    let resumed = json(&medic(&[
        "--config",
        config,
        "resume",
        "api.service",
        "--json",
    ]));
    assert_eq!(resumed["changed"], serde_json::json!(["api.service"]));
    assert_eq!(
        resumed["paused"].as_array().unwrap().len(),
        1,
        "the host stays paused"
    );
    let out = medic(&["--config", config, "resume"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("resumed the whole host")
    );

    // a file from another version is named, and `resume` replaces it
    std::fs::write(state.join("paused.json"), "{\"version\": 9}").unwrap();
    let out = medic(&["--config", config, "pause", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("paused.json` holds pause state version 9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = medic(&["--config", config, "resume"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replacing it with an empty one"));
}

#[test]
fn version_names_the_features_of_a_test_build_only() {
    let out = medic(&["--version"]);
    assert!(out.status.success());
    let expected = if cfg!(feature = "failpoints") {
        concat!(
            "nginx-medic ",
            env!("CARGO_PKG_VERSION"),
            " (features: failpoints)\n"
        )
    } else {
        concat!("nginx-medic ", env!("CARGO_PKG_VERSION"), "\n")
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn failpoints_are_armed_in_a_test_build_and_ignored_in_a_release_build() {
    let with = |spec: &str| {
        Command::new(env!("CARGO_BIN_EXE_nginx-medic"))
            .args(["--config", "/nonexistent/medic.yaml", "facts"])
            .env("FAILPOINTS", spec)
            .env_remove("NGINX_MEDIC_LOG")
            .output()
            .expect("the binary runs")
    };
    let armed = with("daemon.loop=return");
    let stderr = String::from_utf8_lossy(&armed.stderr);
    let bad = with("daemon.loop");
    let bad_stderr = String::from_utf8_lossy(&bad.stderr);
    if cfg!(feature = "failpoints") {
        assert!(stderr.contains("fail points armed"), "{stderr}");
        assert_eq!(bad.status.code(), Some(3), "{bad_stderr}");
        assert!(
            bad_stderr.contains("invalid `FAILPOINTS` entry `daemon.loop`"),
            "{bad_stderr}"
        );
    } else {
        for stderr in [&stderr, &bad_stderr] {
            assert!(
                stderr.contains("`FAILPOINTS` is set but this build has no fail points; ignored"),
                "{stderr}"
            );
        }
    }
}

/// A config whose state (lock, journal, backups) lives in `dir`.
fn config_in(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("medic.yaml");
    std::fs::write(
        &config,
        format!("state_dir: {}\n", dir.join("state").display()),
    )
    .unwrap();
    config
}

#[test]
fn a_tampered_plan_is_refused_with_exit_3_and_nothing_done() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let env = dir.path().join(".env");
    let before = "HOST=0.0.0.0\nSECRET_KEY=hunter2\n";
    std::fs::write(&env, before).unwrap();
    let hash = nginx_medic::adapters::fs::bytes_hash(before.as_bytes());
    let bind = |path: &std::path::Path, unit: &str, after: &str| {
        serde_json::json!({
            "created_at": 1,
            "actions": [{
                "playbook": "bind-mismatch", "finding": 0, "target": "site / -> 127.0.0.1:3000",
                "kind": "set_bind_host", "unit": unit, "host": "127.0.0.1", "previous": "0.0.0.0",
                "key": "HOST", "daemon_reload": false, "diff": null,
                "edit": {"path": path, "before_hash": hash, "after": after},
            }, {
                "playbook": "bind-mismatch", "finding": 0, "target": "site / -> 127.0.0.1:3000",
                "kind": "systemd", "unit": unit, "op": "restart", "diff": null,
            }],
        })
    };
    let other = dir.path().join("authorized_keys");
    std::fs::write(&other, "ssh-ed25519 AAAA root\n").unwrap();
    let plans = [
        (
            "another path",
            bind(&other, "app.service", "ssh-ed25519 AAAA attacker\n"),
        ),
        (
            "another unit",
            bind(&env, "sshd.service", "HOST=127.0.0.1\nSECRET_KEY=hunter2\n"),
        ),
        (
            "edited after",
            bind(
                &env,
                "app.service",
                "HOST=127.0.0.1\nLD_PRELOAD=/tmp/x.so\n",
            ),
        ),
    ];
    for (what, plan) in plans {
        let file = dir.path().join(format!("{what}.json"));
        std::fs::write(&file, serde_json::to_string(&plan).unwrap()).unwrap();
        let out = medic(&[
            "--config",
            config.to_str().unwrap(),
            "apply",
            "--plan",
            file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        assert!(
            stderr.contains("refused, nothing was done"),
            "{what}: {stderr}"
        );
        assert_eq!(std::fs::read_to_string(&env).unwrap(), before, "{what}");
        assert_eq!(
            std::fs::read_to_string(&other).unwrap(),
            "ssh-ed25519 AAAA root\n",
            "{what}"
        );
        assert!(
            !dir.path().join("state/backups").exists(),
            "{what}: no transaction was begun"
        );
    }
}

#[test]
fn plan_out_writes_a_new_private_file_and_never_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let config = config.to_str().unwrap();
    let out_file = dir.path().join("plan.json");
    let out = medic(&[
        "--config",
        config,
        "plan",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // An existing file is not overwritten; a symlink is not followed.
    let again = medic(&[
        "--config",
        config,
        "plan",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&again.stderr).contains("it exists"));
    let target = dir.path().join("victim");
    std::fs::write(&target, "untouched").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let linked = medic(&["--config", config, "plan", "--out", link.to_str().unwrap()]);
    assert_ne!(linked.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
}

/// A status file as the daemon writes it: one target left alone after a crash loop.
const STATUS: &str = r#"{
  "version": 1,
  "pid": 4242,
  "mode": "apply",
  "started": 1764590000.0,
  "updated": 1764590100.0,
  "evaluations": 12,
  "absorbed": 340000,
  "targets": [
    {
      "target": "127.0.0.1:8000",
      "site": "api.lab",
      "unit": "api.service",
      "state": "left_alone",
      "left_alone": "escalated",
      "since": 1764590050.0,
      "last_evaluated": 1764590090.0,
      "requeue_at": 1764590120.0,
      "pending": false,
      "absorbed": 339990,
      "incident": { "cause": "backend-down", "opened": 1764590040.0, "first_evidence": 1764590039.5 },
      "brakes": { "actions": 2, "max_actions": 3, "rate_per_seconds": 600, "failures": 2, "max_failures": 2, "crash_within_seconds": 60, "rate_limited": false, "escalated": "crash_loop" }
    },
    {
      "target": "127.0.0.1:8001",
      "site": "web.lab",
      "unit": "web.service",
      "state": "healthy",
      "left_alone": null,
      "since": 1764590000.0,
      "last_evaluated": 1764590090.0,
      "requeue_at": null,
      "pending": false,
      "absorbed": 0,
      "incident": null,
      "brakes": { "actions": 0, "max_actions": 3, "rate_per_seconds": 600, "failures": 0, "max_failures": 2, "crash_within_seconds": 60, "rate_limited": false, "escalated": null }
    }
  ],
  "breaker": { "open": false, "failures": 2, "max_failures": 5, "per_seconds": 600 },
  "paused": [ { "unit": "db.service", "until": null } ],
  "pause_error": null
}
"#;

#[test]
fn status_reads_the_daemon_file_and_says_when_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medic.yaml");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(&config, format!("state_dir: {}\n", state.display())).unwrap();
    let config = config.to_str().unwrap();

    // no daemon, no file
    let out = medic(&["--config", config, "status"]);
    assert_eq!(out.status.code(), Some(4), "not running exits 4");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the daemon is not running (`nginx-medic run`), and no status was written\n"
    );

    // no daemon, a file left by the last one: shown, still exit 4
    std::fs::write(state.join("status.json"), STATUS).unwrap();
    let out = medic(&["--config", config, "status"]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("the daemon is not running; its last status ("),
        "{text}"
    );
    assert!(text.contains("PID 4242) follows\n"), "{text}");
    assert!(
        text.contains("circuit breaker: closed (2 of 5 failed heals within 600 s)\n"),
        "{text}"
    );
    assert!(
        text.contains("paused: db.service until resumed\n"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("127.0.0.1:8000"))
        .unwrap_or_else(|| panic!("{text}"));
    for cell in [
        "api.lab",
        "api.service",
        "left alone (escalated)",
        "backend-down, opened ",
        "2/3 heals per 600 s, 2/2 failures per 60 s, escalated: crash_loop",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row:?}");
    }
    let web = text
        .lines()
        .find(|l| l.starts_with("127.0.0.1:8001"))
        .unwrap();
    assert!(web.contains(" healthy "), "{web}");

    let out = medic(&["--config", config, "status", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false);
    assert_eq!(v["pid"], serde_json::Value::Null);
    assert_eq!(v["current"], false);
    assert_eq!(v["daemon"]["targets"][0]["state"], "left_alone");
    assert_eq!(
        v["daemon"]["targets"][0]["brakes"]["escalated"],
        "crash_loop"
    );
    assert_eq!(v["daemon"]["absorbed"], 340000);

    // another version, a file too large: exit 1 with what to do
    std::fs::write(
        state.join("status.json"),
        STATUS.replace("\"version\": 1", "\"version\": 2"),
    )
    .unwrap();
    let out = medic(&["--config", config, "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("status.json` holds status version 2; this nginx-medic reads version 1 only"),
        "{err}"
    );
    std::fs::write(state.join("status.json"), " ".repeat(2 << 20)).unwrap();
    let out = medic(&["--config", config, "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is larger than 1048576 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
