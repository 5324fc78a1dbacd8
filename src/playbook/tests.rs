//! The shipped playbooks (`playbooks/`, `templates/`): loaded, then evaluated against contexts
//! for match, no match and inconclusive, with their templates rendered.

use serde_json::{json, Value};

use super::*;
use crate::engine::conditions::{evaluate, unmet};
use crate::engine::render::{
    render, render_evidence, validate_bind_host, validate_nginx_directive, without_nulls,
    RenderContext,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeds() -> PlaybookSet {
    match load_dirs(&[root().join("playbooks")], &[root().join("templates")]) {
        Ok(set) => set,
        Err(errors) => panic!("{errors}"),
    }
}

/// A target whose backend unit is stopped: the context the engine builds, as in the brief.
fn stopped() -> Value {
    json!({
        "site": {"name": "api.lab", "listen": ["127.0.0.1:18000"], "url": "http://127.0.0.1:18000/", "location": "/"},
        "pass": {"directive": "proxy_pass", "target": "127.0.0.1:18010", "kind": "tcp", "scheme": "http",
                 "uri": "", "file": "/etc/nginx/sites-enabled/api.conf", "line": 4},
        "endpoint": {"address": "127.0.0.1:18010", "kind": "tcp", "host": "127.0.0.1", "port": 18010,
                     "path": null, "listening": false, "listener": null},
        "unit": {"name": "api.service", "active_state": "inactive", "sub_state": "dead", "result": "success",
                 "main_pid": 0, "n_restarts": 0, "listeners": [], "hosts_on_endpoint_port": [],
                 "other_ports": [], "bind": null},
        "log": {"connection_refused": 2, "no_such_file": 0, "permission_denied": 0, "timed_out": 0,
                "prematurely_closed": 0, "reset_by_peer": 0, "too_big_header": 0, "invalid_header": 0,
                "no_live_upstreams": 0, "host_not_found": 0, "other": 0}
    })
}

fn running(listeners: &[&str], hosts: &[&str], other_ports: &[u16]) -> Value {
    let mut ctx = stopped();
    ctx["unit"]["active_state"] = json!("active");
    ctx["unit"]["sub_state"] = json!("running");
    ctx["unit"]["main_pid"] = json!(4242);
    ctx["unit"]["listeners"] = json!(listeners);
    ctx["unit"]["hosts_on_endpoint_port"] = json!(hosts);
    ctx["unit"]["other_ports"] = json!(other_ports);
    // each other port answers a direct request as an application (facts::direct)
    ctx["unit"]["viable_ports"] = json!(other_ports);
    ctx["unit"]["candidates"] =
        json!(other_ports
        .iter()
        .map(|p| json!({"port": p, "address": format!("127.0.0.1:{p}"), "path": "/", "status": 200,
                        "viable": true, "why": "answers 200 at /", "named_by": "a port of api.service"}))
        .collect::<Vec<_>>());
    ctx
}

fn bind_mismatch() -> Value {
    let mut ctx = running(&["127.0.0.2:18010"], &["127.0.0.2"], &[]);
    ctx["unit"]["bind"] = json!({"file": "/etc/default/api", "key": "HOST", "value": "127.0.0.2", "from": "hint", "where": "HOST in /etc/default/api"});
    ctx
}

/// Every playbook whose `when` holds, in evaluation order, with its unmet requirements.
fn matches(set: &PlaybookSet, ctx: &Value) -> Vec<(String, Vec<String>)> {
    set.iter()
        .filter(|p| evaluate(&p.when, ctx))
        .map(|p| (p.id.clone(), unmet(&p.conclusive, ctx)))
        .collect()
}

fn conclusive(id: &str) -> Vec<(String, Vec<String>)> {
    vec![(id.to_string(), vec![])]
}

fn rendered_evidence(playbook: &Playbook, ctx: &Value) -> Vec<String> {
    playbook
        .evidence
        .iter()
        .map(|line| render(line, ctx).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

#[test]
fn seed_playbooks_load_in_priority_order() {
    let set = seeds();
    let ids: Vec<(&str, u32)> = set.iter().map(|p| (p.id.as_str(), p.priority)).collect();
    assert_eq!(
        ids,
        [
            ("pm2-crash-loop", 4),
            ("crash-loop", 5),
            ("start-failure", 6),
            ("socket-missing", 7),
            ("socket-permission", 8),
            ("pm2-app-down", 9),
            ("unsupervised-down", 9),
            ("backend-down", 10),
            ("localhost-family", 15),
            ("pm2-bind-mismatch", 19),
            ("bind-mismatch", 20),
            ("wrong-port", 30),
            ("too-big-header", 40),
            ("upstream-timeout", 50),
            ("upstream-marked-down", 60),
        ]
    );
    assert!(check(&[root().join("playbooks")], &[root().join("templates")]).is_empty());
}

#[test]
fn backend_down_matches_a_stopped_unit() {
    let set = seeds();
    let ctx = stopped();
    assert_eq!(matches(&set, &ctx), conclusive("backend-down"));
    let mut failed = stopped();
    failed["unit"]["active_state"] = json!("failed");
    failed["unit"]["result"] = json!("exit-code");
    assert_eq!(matches(&set, &failed), conclusive("backend-down"));

    let playbook = set.get("backend-down").unwrap();
    assert_eq!(
        rendered_evidence(playbook, &failed),
        [
            "nothing listens on 127.0.0.1:18010",
            "api.service is failed (exit-code)"
        ]
    );
    assert_eq!(
        playbook.actions,
        [
            Action::Systemd {
                unit: "{{unit.name}}".to_string(),
                op: SystemdOp::Restart
            },
            Action::WaitListen {
                address: "{{endpoint.address}}".to_string(),
                timeout: Duration::from_secs(15)
            },
            Action::Probe {
                url: "{{site.url}}".to_string(),
                expect: 200,
                timeout: Duration::from_secs(10)
            },
        ]
    );
}

#[test]
fn backend_down_without_a_unit_is_inconclusive() {
    let set = seeds();
    let mut ctx = stopped();
    ctx["unit"] = Value::Null;
    assert_eq!(
        matches(&set, &ctx),
        vec![(
            "backend-down".to_string(),
            vec![
                "no systemd unit is known to serve this upstream; add a `backends:` hint"
                    .to_string()
            ]
        )]
    );
    let playbook = set.get("backend-down").unwrap();
    assert_eq!(
        render_evidence(
            &playbook.evidence,
            &RenderContext::of(without_nulls(ctx.clone()))
        ),
        ["nothing listens on 127.0.0.1:18010"]
    );
}

#[test]
fn nothing_matches_when_the_upstream_listens() {
    let set = seeds();
    let mut ctx = stopped();
    ctx["endpoint"]["listening"] = json!(true);
    assert!(matches(&set, &ctx).is_empty());
    let mut ctx = bind_mismatch();
    ctx["endpoint"]["listening"] = json!(true);
    assert!(matches(&set, &ctx).is_empty());
}

#[test]
fn nothing_matches_a_running_unit_with_no_sockets() {
    // Active but listening nowhere (still starting, or the wrong unit): no playbook claims it.
    assert!(matches(&seeds(), &running(&[], &[], &[])).is_empty());
}

#[test]
fn bind_mismatch_binds_the_exact_address_nginx_dials() {
    let set = seeds();
    let ctx = bind_mismatch();
    assert_eq!(matches(&set, &ctx), conclusive("bind-mismatch"));
    let playbook = set.get("bind-mismatch").unwrap();
    assert_eq!(
        rendered_evidence(playbook, &ctx),
        [
            "nothing listens on 127.0.0.1:18010",
            "api.service listens on port 18010 of 127.0.0.2 instead",
            "its bind host 127.0.0.2 is set by HOST in /etc/default/api",
        ]
    );
    let Some(Action::SetBindHost { host }) = playbook.actions.first() else {
        panic!("{:?}", playbook.actions);
    };
    let host = render(host, &ctx).unwrap();
    assert_eq!(host, "127.0.0.1");
    assert_eq!(validate_bind_host(&host), Ok(()));
    let kinds: Vec<&str> = playbook.actions.iter().map(Action::kind).collect();
    assert_eq!(kinds, ["set_bind_host", "systemd", "wait_listen", "probe"]);
}

#[test]
fn bind_mismatch_without_a_bind_setting_is_inconclusive() {
    let set = seeds();
    let mut ctx = bind_mismatch();
    ctx["unit"]["bind"] = Value::Null;
    let found = matches(&set, &ctx);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "bind-mismatch");
    assert!(found[0].1[0].contains("`bind:` hint"), "{found:?}");
}

#[test]
fn wrong_port_rewrites_the_pass_target() {
    let set = seeds();
    let ctx = running(&["127.0.0.1:18011"], &[], &[18011]);
    assert_eq!(matches(&set, &ctx), conclusive("wrong-port"));
    let playbook = set.get("wrong-port").unwrap();
    assert_eq!(
        rendered_evidence(playbook, &ctx),
        [
            "nothing listens on 127.0.0.1:18010",
            "api.service listens on port 18011, not 18010",
            "requested directly: 127.0.0.1:18011 (answers 200 at /)",
            "named by: 127.0.0.1:18011 (a port of api.service)",
            "proxy_pass 127.0.0.1:18010 at /etc/nginx/sites-enabled/api.conf:4",
        ]
    );
    let Some(Action::RenderSite { template, source }) = playbook.actions.first() else {
        panic!("{:?}", playbook.actions);
    };
    assert_eq!(template, "pass-target.hbs");
    let out = render(source, &ctx).unwrap();
    assert_eq!(
        validate_nginx_directive(&out, "proxy_pass"),
        Ok("proxy_pass http://127.0.0.1:18011;".to_string())
    );
    let kinds: Vec<&str> = playbook.actions.iter().map(Action::kind).collect();
    assert_eq!(
        kinds,
        ["render_site", "nginx_test", "nginx_reload", "probe"]
    );
}

#[test]
fn wrong_port_keeps_the_uri_and_drops_the_scheme_for_fastcgi() {
    let set = seeds();
    let Some(Action::RenderSite { source, .. }) = set.get("wrong-port").unwrap().actions.first()
    else {
        panic!("no render_site");
    };
    let mut ctx = running(&["127.0.0.1:18011"], &[], &[18011]);
    ctx["pass"]["uri"] = json!("/api/");
    assert_eq!(
        render(source, &ctx).unwrap().trim(),
        "proxy_pass http://127.0.0.1:18011/api/;"
    );
    ctx["pass"]["uri"] = json!("");
    ctx["pass"]["directive"] = json!("fastcgi_pass");
    ctx["pass"]["scheme"] = Value::Null;
    let out = render(source, &ctx).unwrap();
    assert_eq!(
        validate_nginx_directive(&out, "fastcgi_pass"),
        Ok("fastcgi_pass 127.0.0.1:18011;".to_string())
    );
}

#[test]
fn wrong_port_with_several_candidates_is_inconclusive() {
    let set = seeds();
    let ctx = running(
        &["127.0.0.1:18011", "127.0.0.1:18012"],
        &[],
        &[18011, 18012],
    );
    let found = matches(&set, &ctx);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "wrong-port");
    assert_eq!(found[0].1.len(), 1);
}

#[test]
fn wrong_port_refuses_a_metrics_endpoint_and_one_that_does_not_answer() {
    let set = seeds();
    let mut ctx = running(&["127.0.0.1:18011", "127.0.0.1:9100"], &[], &[9100, 18011]);
    ctx["unit"]["candidates"] = json!([
        {"port": 9100, "address": "127.0.0.1:9100", "path": "/", "status": 200, "viable": false,
         "why": "its answer is a metrics endpoint (`# HELP` / `# TYPE`)"},
        {"port": 18011, "address": "127.0.0.1:18011", "path": "/", "status": 200, "viable": true,
         "why": "answers 200 at /"}
    ]);
    ctx["unit"]["viable_ports"] = json!([18011]);
    assert_eq!(matches(&set, &ctx), conclusive("wrong-port"));
    let Some(Action::RenderSite { source, .. }) = set.get("wrong-port").unwrap().actions.first()
    else {
        panic!("no render_site");
    };
    assert_eq!(
        render(source, &ctx).unwrap().trim(),
        "proxy_pass http://127.0.0.1:18011;"
    );
    ctx["unit"]["viable_ports"] = json!([]);
    let found = matches(&set, &ctx);
    assert_eq!(
        (found[0].0.as_str(), found[0].1.len()),
        ("wrong-port", 1),
        "refused: {found:?}"
    );
}

#[test]
fn wrong_port_stays_out_when_the_right_port_is_used_on_another_host() {
    // Listening on the right port of another host and on another port too: the port is right, so
    // only bind-mismatch claims it.
    let set = seeds();
    let mut ctx = bind_mismatch();
    ctx["unit"]["other_ports"] = json!([9100]);
    let ids: Vec<String> = matches(&set, &ctx).into_iter().map(|m| m.0).collect();
    assert_eq!(ids, ["bind-mismatch"]);
}

#[test]
fn unix_socket_targets_do_not_match_tcp_playbooks() {
    let set = seeds();
    let mut ctx = running(&["127.0.0.1:18011"], &["127.0.0.2"], &[18011]);
    ctx["endpoint"] = json!({"address": "unix:/run/api.sock", "kind": "unix", "host": null,
                             "port": null, "path": "/run/api.sock", "listening": false, "listener": null});
    ctx["unit"]["bind"] = json!({"file": "/etc/default/api", "key": "HOST", "value": "127.0.0.2", "from": "hint", "where": "HOST in /etc/default/api"});
    assert!(matches(&set, &ctx).is_empty());
}

#[test]
fn later_dir_overrides_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("playbooks/backend-down.yaml"))
        .unwrap()
        .replace("priority: 10", "priority: 99");
    std::fs::write(dir.path().join("mine.yml"), text).unwrap();
    let set = load_dirs(
        &[
            root().join("playbooks"),
            dir.path().to_path_buf(),
            root().join("no-such-dir"),
        ],
        &[root().join("templates")],
    )
    .unwrap();
    assert_eq!(set.len(), seeds().len());
    let playbook = set.get("backend-down").unwrap();
    assert_eq!(playbook.priority, 99);
    assert_eq!(playbook.file, dir.path().join("mine.yml"));
    assert_eq!(set.as_slice().last().unwrap().id, "backend-down");
}

#[test]
fn playbooks_serialize_with_readable_durations() {
    let set = seeds();
    let value = serde_json::to_value(set.get("backend-down").unwrap()).unwrap();
    assert_eq!(
        value["actions"][1],
        json!({"wait_listen": {"address": "{{endpoint.address}}", "timeout": "15s"}})
    );
    assert_eq!(
        value["when"]["all"][0],
        json!({"fact": {"path": "endpoint.listening", "test": {"is": false}}})
    );
    assert_eq!(value["severity"], json!("critical"));
}

#[test]
fn durations_parse_and_format() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    for bad in [
        "",
        "15",
        "s",
        "0s",
        "1.5s",
        "-1s",
        "15 s",
        "15sec",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    for d in ["500ms", "15s", "2m", "1h", "1500ms"] {
        assert_eq!(format_duration(parse_duration(d).unwrap()), d);
    }
}

// --- unix sockets and backend processes: socket-missing, socket-permission, crash-loop ---------

/// php.lab's `fastcgi_pass unix:/run/php/www.sock` with php-fpm listening and a readable socket.
fn php() -> Value {
    let mut ctx = running(&["unix:/run/php/www.sock"], &[], &[]);
    ctx["site"]["name"] = json!("php.lab");
    ctx["pass"] = json!({"directive": "fastcgi_pass", "target": "unix:/run/php/www.sock", "kind": "unix",
        "scheme": null, "uri": "", "file": "/etc/nginx/sites-enabled/php.conf", "line": 6});
    ctx["endpoint"] = json!({"address": "unix:/run/php/www.sock", "kind": "unix", "host": null, "port": null,
        "path": "/run/php/www.sock", "listening": true, "listener": "unix:/run/php/www.sock",
        "exists": true, "worker_can_connect": true,
        "socket": {"owner": "www-data", "group": "www-data", "uid": 33, "gid": 33, "mode": "0660"},
        "pool": {"name": "www", "file": "/etc/php/8.2/fpm/pool.d/www.conf", "unit": "php8.2-fpm.service",
                 "listen_owner": "www-data", "listen_group": "www-data", "listen_mode": "0660"}});
    ctx["unit"]["name"] = json!("php8.2-fpm.service");
    ctx["nginx"] = json!({"user": "www-data", "group": "www-data"});
    ctx
}

#[test]
fn socket_missing_starts_the_pool_before_backend_down_would() {
    let set = seeds();
    let mut ctx = php();
    ctx["endpoint"]["listening"] = json!(false);
    ctx["endpoint"]["exists"] = json!(false);
    ctx["endpoint"]["socket"] = Value::Null;
    ctx["unit"]["active_state"] = json!("inactive");
    ctx["unit"]["sub_state"] = json!("dead");
    ctx["log"]["no_such_file"] = json!(3);
    let found = matches(&set, &ctx);
    assert_eq!(found.first(), conclusive("socket-missing").first());
    assert_eq!(found.get(1).map(|f| f.0.as_str()), Some("backend-down"));
    let playbook = set.get("socket-missing").unwrap();
    assert_eq!(
        rendered_evidence(playbook, &ctx),
        [
            "fastcgi_pass at /etc/nginx/sites-enabled/php.conf:6 dials unix:/run/php/www.sock, and no file exists at /run/php/www.sock",
            "php8.2-fpm.service is inactive (success); its pool `www` in /etc/php/8.2/fpm/pool.d/www.conf listens there",
            "3 `No such file or directory` line(s) for it in the error log",
        ]
    );
    let kinds: Vec<&str> = playbook.actions.iter().map(Action::kind).collect();
    assert_eq!(kinds, ["systemd", "wait_listen", "probe"]);
}

#[test]
fn socket_permission_needs_the_log_line_and_a_known_pool() {
    let set = seeds();
    let mut ctx = php();
    assert!(matches(&set, &ctx).is_empty(), "a healthy pool");
    ctx["endpoint"]["worker_can_connect"] = json!(false);
    ctx["endpoint"]["socket"] =
        json!({"owner": "root", "group": "root", "uid": 0, "gid": 0, "mode": "0600"});
    assert!(
        matches(&set, &ctx).is_empty(),
        "no `Permission denied` in the log yet: nginx has not failed on it"
    );
    ctx["log"]["permission_denied"] = json!(2);
    assert_eq!(matches(&set, &ctx), conclusive("socket-permission"));
    let playbook = set.get("socket-permission").unwrap();
    assert_eq!(
        rendered_evidence(playbook, &ctx)[0],
        "nginx's workers run as www-data:www-data; /run/php/www.sock is root:root mode 0600, so they may not connect"
    );
    let Some(Action::SetPoolListen { owner, group, mode }) = playbook.actions.first() else {
        panic!("{:?}", playbook.actions);
    };
    assert_eq!(
        (
            render(owner, &ctx).unwrap(),
            render(group, &ctx).unwrap(),
            mode.as_str()
        ),
        ("www-data".to_string(), "www-data".to_string(), "0660")
    );
    ctx["endpoint"]["pool"] = Value::Null;
    let found = matches(&set, &ctx);
    assert_eq!(found.len(), 1);
    assert!(found[0].1[0].starts_with("no PHP-FPM pool"), "{found:?}");
}

#[test]
fn world_writable_socket_modes_are_refused_when_loading() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("playbooks/socket-permission.yaml"))
        .unwrap()
        .replace("mode: \"0660\"", "mode: \"0666\"");
    std::fs::write(dir.path().join("socket-permission.yaml"), text).unwrap();
    let errors = check(&[dir.path().to_path_buf()], &[root().join("templates")]);
    let text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("set_pool_listen.mode: mode `0666` lets every local user connect"),
        "{text}"
    );
}

#[test]
fn crash_loop_is_reported_and_never_restarted() {
    let set = seeds();
    let mut ctx = stopped();
    ctx["unit"]["active_state"] = json!("failed");
    ctx["unit"]["sub_state"] = json!("failed");
    ctx["unit"]["result"] = json!("exit-code");
    ctx["unit"]["n_restarts"] = json!(4);
    ctx["unit"]["restart"] = json!("on-failure");
    ctx["unit"]["exec_main_status"] = json!(3);
    ctx["unit"]["last_run_ms"] = json!(231);
    ctx["unit"]["output"] = json!([
        "ModuleNotFoundError: No module named 'x'",
        "Reason: Worker failed to boot."
    ]);
    ctx["unit"]["output_from"] = json!("file:/var/log/api.log");
    let found = matches(&set, &ctx);
    assert_eq!(found.first(), conclusive("crash-loop").first());
    assert_eq!(found.get(1).map(|f| f.0.as_str()), Some("backend-down"));
    let playbook = set.get("crash-loop").unwrap();
    assert!(playbook.actions.is_empty());
    let evidence = rendered_evidence(playbook, &ctx);
    assert_eq!(
        evidence[3],
        "its last output (file:/var/log/api.log):\n    ModuleNotFoundError: No module named 'x'\n    Reason: Worker failed to boot."
    );
    // A unit that failed once, later than its start, and was never restarted by systemd is
    // backend-down's.
    ctx["unit"]["n_restarts"] = json!(0);
    ctx["unit"]["start_failed"] = json!(false);
    assert_eq!(matches(&set, &ctx), conclusive("backend-down"));
    // Restarting right now counts too.
    ctx["unit"]["active_state"] = json!("activating");
    ctx["unit"]["sub_state"] = json!("auto-restart");
    assert_eq!(
        matches(&set, &ctx).first(),
        conclusive("crash-loop").first()
    );
}

/// A unit with no `Restart=` whose main process exited with status 3 half a second after it
/// started, as `systemctl show` and the engine report it.
fn failed_at_start() -> Value {
    let mut ctx = stopped();
    ctx["unit"]["active_state"] = json!("failed");
    ctx["unit"]["sub_state"] = json!("failed");
    ctx["unit"]["result"] = json!("exit-code");
    ctx["unit"]["restart"] = json!("no");
    ctx["unit"]["exec_main_code"] = json!("exited");
    ctx["unit"]["exec_main_status"] = json!(3);
    ctx["unit"]["last_run_ms"] = json!(512);
    ctx["unit"]["start_failed"] = json!(true);
    ctx["unit"]["output"] = json!([
        "api: starting",
        "api: cannot read /etc/api/secret.key: no such file; giving up"
    ]);
    ctx["unit"]["output_from"] = json!("journal");
    ctx
}

#[test]
fn a_start_failure_is_named_with_its_last_output_and_not_restarted() {
    let set = seeds();
    let ctx = failed_at_start();
    let found = matches(&set, &ctx);
    assert_eq!(found.first(), conclusive("start-failure").first());
    assert_eq!(found.get(1).map(|f| f.0.as_str()), Some("backend-down"));
    let playbook = set.get("start-failure").unwrap();
    assert!(playbook.actions.is_empty(), "report only");
    let evidence = rendered_evidence(playbook, &ctx);
    assert_eq!(
        evidence[1],
        "api.service is failed (result exit-code): its main process exited by itself with status 3 after 512 ms"
    );
    assert_eq!(
        evidence[2],
        "its last output (journal):\n    api: starting\n    api: cannot read /etc/api/secret.key: no such file; giving up"
    );
    // Restarted by systemd already: the crash loop is named first.
    let mut looping = ctx.clone();
    looping["unit"]["n_restarts"] = json!(2);
    looping["unit"]["restart"] = json!("on-failure");
    assert_eq!(
        matches(&set, &looping).first(),
        conclusive("crash-loop").first()
    );
}

#[test]
fn killed_or_long_running_backends_stay_backend_down() {
    let set = seeds();
    // killed by a signal (SIGKILL), or ran longer than the window: `start_failed` is false
    let mut ctx = failed_at_start();
    ctx["unit"]["exec_main_code"] = json!("killed");
    ctx["unit"]["exec_main_status"] = json!(9);
    ctx["unit"]["result"] = json!("signal");
    ctx["unit"]["start_failed"] = json!(false);
    assert_eq!(matches(&set, &ctx), conclusive("backend-down"));
    let mut ctx = failed_at_start();
    ctx["unit"]["last_run_ms"] = json!(3_600_000);
    ctx["unit"]["start_failed"] = json!(false);
    assert_eq!(matches(&set, &ctx), conclusive("backend-down"));
    // a stopped unit has no start failure at all
    assert_eq!(matches(&set, &stopped()), conclusive("backend-down"));
}

// ----- nginx-side causes: too-big-header, upstream-timeout, localhost-family, upstream-marked-down -----

/// A healthy, listening target with the nginx-side facts, nothing recent in the log.
fn answering() -> Value {
    let mut ctx = sample_context();
    ctx["endpoint"]["listening"] = json!(true);
    ctx["endpoint"]["host_name"] = Value::Null;
    ctx["pass"]["kind"] = json!("tcp");
    ctx["route"]["pinnable"] = json!([]);
    ctx["route"]["upstream"] = Value::Null;
    for class in ["timed_out", "too_big_header"] {
        ctx["recent"]["counts"][class] = json!(0);
    }
    ctx
}

#[test]
fn a_quiet_answering_target_matches_nothing() {
    assert!(matches(&seeds(), &answering()).is_empty());
}

#[test]
fn too_big_header_raises_the_buffers_of_that_location() {
    let set = seeds();
    let mut ctx = answering();
    ctx["recent"]["counts"]["too_big_header"] = json!(3);
    assert_eq!(matches(&set, &ctx), conclusive("too-big-header"));
    let playbook = set.get("too-big-header").unwrap();
    assert_eq!(
        rendered_evidence(playbook, &ctx),
        [
            "3 × \"upstream sent too big header\" from 127.0.0.1:18010 in the last 15m (last at 2026/11/26 09:07:37: GET / HTTP/1.1)",
            "proxy_buffer_size is 4k (nginx's default) and proxy_buffers 8 4k in location / at /etc/nginx/sites-enabled/api.conf:3",
            "nginx-medic's own request http://127.0.0.1:18000/?nginx-medic-probe=5f0c9d2e4b7a41e8a3c6f1d08e2b9c47: it got 502, and nginx logged \"upstream sent too big header while reading response header from upstream\" from 127.0.0.1:18010 for it",
            "127.0.0.1:18010/ requested directly: a header block of 9000 bytes",
            "1 earlier raise(s) of this file rolled back: stepping up",
            "raise to proxy_buffer_size 16k, proxy_buffers 4 16k (cap 64k)",
        ]
    );
    let kinds: Vec<&str> = playbook.actions.iter().map(Action::kind).collect();
    assert_eq!(
        kinds,
        [
            "set_directive",
            "set_directive",
            "nginx_test",
            "nginx_reload",
            "probe"
        ]
    );
    let probe = playbook.actions.last().unwrap();
    assert!(
        format!("{probe:?}").contains("{{reproduction.url}}")
            && format!("{probe:?}").contains("{{site.url}}")
            && !format!("{probe:?}").contains("recent"),
        "the check after the raise is nginx-medic's own request, never a logged client URL: {probe:?}"
    );
    ctx["location"]["raise"] = Value::Null;
    assert_eq!(
        matches(&set, &ctx)[0].1.len(),
        1,
        "at the cap: inconclusive"
    );
}

/// Issue 13: a too-big header in the log alone never plans the raise. It is conclusive only when
/// nginx-medic's own request reproduced the same cause for the same upstream, or the backend's
/// header block, measured directly, is bigger than the buffer.
#[test]
fn too_big_header_acts_only_on_a_reproduction() {
    let set = seeds();
    let mut logged = answering();
    logged["recent"]["counts"]["too_big_header"] = json!(3);
    let unmet_of = |ctx: &Value| {
        let found = matches(&set, ctx);
        assert_eq!(found[0].0, "too-big-header");
        found[0].1.clone()
    };
    let not_reproduced = |unmet: Vec<String>| {
        assert_eq!(unmet.len(), 1, "{unmet:?}");
        assert!(
            unmet[0]
                .starts_with("the logged failure did not reproduce with nginx-medic's own request"),
            "{unmet:?}"
        );
    };
    // reproduced through nginx, the block at the backend fits (the doubling path): conclusive
    let mut reproduced = logged.clone();
    reproduced["location"]["measured"]["overflows"] = json!(false);
    assert_eq!(unmet_of(&reproduced), Vec::<String>::new());
    // measured bigger than the buffer at the backend, no request through nginx: conclusive
    let mut measured = logged.clone();
    measured["reproduction"] = Value::Null;
    assert_eq!(unmet_of(&measured), Vec::<String>::new());
    // not reproduced (nginx answered, no line of its own) and the block fits: inconclusive
    let mut past = reproduced.clone();
    past["reproduction"]["reproduced"]["too_big_header"] = json!(false);
    past["reproduction"]["status"] = json!(200);
    not_reproduced(unmet_of(&past));
    // another cause for the request (a timeout), not the logged one: inconclusive
    let mut other = past.clone();
    other["reproduction"]["reproduced"]["timed_out"] = json!(true);
    not_reproduced(unmet_of(&other));
    // FastCGI (never measured), not tried at all: inconclusive
    let mut fastcgi = logged.clone();
    fastcgi["location"]["measured"] = Value::Null;
    fastcgi["reproduction"] = Value::Null;
    not_reproduced(unmet_of(&fastcgi));
    // FastCGI reproduced through nginx: conclusive
    let mut fastcgi_seen = logged;
    fastcgi_seen["location"]["measured"] = Value::Null;
    assert_eq!(unmet_of(&fastcgi_seen), Vec::<String>::new());
}

#[test]
fn upstream_timeout_is_reported_with_the_request_and_not_healed() {
    let set = seeds();
    let mut ctx = answering();
    ctx["recent"]["counts"]["timed_out"] = json!(1);
    assert_eq!(matches(&set, &ctx), conclusive("upstream-timeout"));
    let playbook = set.get("upstream-timeout").unwrap();
    let evidence = rendered_evidence(playbook, &ctx);
    assert_eq!(
        evidence[1],
        "last at 2026/11/26 09:07:37: GET /slow?seconds=8 HTTP/1.1 (reading response header from upstream)"
    );
    assert!(evidence[3].starts_with("504, not 502"));
    assert!(
        playbook.actions.is_empty(),
        "raising a timeout is an opt-in"
    );
}

#[test]
fn localhost_family_pins_the_literal_address_before_bind_mismatch() {
    let set = seeds();
    let mut ctx = bind_mismatch();
    for key in ["location", "route", "recent"] {
        ctx[key] = sample_context()[key].clone();
    }
    ctx["endpoint"]["host_name"] = json!("localhost");
    ctx["unit"]["hosts_on_endpoint_port"] = json!(["::1"]);
    let found = matches(&set, &ctx);
    assert_eq!(found[0], ("localhost-family".to_string(), vec![]));
    assert_eq!(found[1].0, "bind-mismatch", "also matched, never acts");
    let source = std::fs::read_to_string(root().join("templates/pass-literal.hbs")).unwrap();
    let directive = validate_nginx_directive(&render(&source, &ctx).unwrap(), "proxy_pass");
    assert_eq!(directive, Ok("proxy_pass http://[::1]:18010;".to_string()));
    ctx["route"]["pinnable"] = json!(["[::1]:18010", "127.0.0.2:18010"]);
    assert_eq!(
        matches(&set, &ctx)[0].1.len(),
        1,
        "two candidates: inconclusive"
    );
}

#[test]
fn upstream_marked_down_is_reported_once_per_group() {
    let set = seeds();
    let mut ctx = answering();
    ctx["pass"]["kind"] = json!("upstream");
    ctx["route"]["upstream"] = json!("web_backend");
    ctx["route"]["all_listening"] = json!(true);
    ctx["route"]["no_live_upstreams"] = json!(2);
    assert_eq!(matches(&set, &ctx), conclusive("upstream-marked-down"));
    assert!(set.get("upstream-marked-down").unwrap().actions.is_empty());
    ctx["route"]["endpoint_index"] = json!(1);
    assert!(matches(&set, &ctx).is_empty());
}

/// `TimeoutStopSec=` of a systemd unit file, in seconds (`330`, `330s`, `5min 30s`, `6min`).
fn timeout_stop_sec(unit: &str) -> u64 {
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .expect("the unit sets TimeoutStopSec=");
    let mut seconds = 0;
    for word in value.split_whitespace() {
        let digits = word
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(word.len());
        let (n, unit) = word.split_at(digits);
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("`{value}`: a number first"));
        seconds += n * match unit {
            "" | "s" | "sec" => 1,
            "m" | "min" => 60,
            _ => panic!("`{value}`: unit `{unit}` is not one this test reads"),
        };
    }
    seconds
}

#[test]
fn the_unit_waits_for_the_longest_shipped_transaction_to_stop() {
    // SIGTERM lets the transaction in flight finish (its steps, then a rollback of all of them
    // when the last one fails): systemd must not SIGKILL the service before that.
    use crate::apply::execute::transaction_bound;
    let set = seeds();
    let (longest, bound) = set
        .iter()
        .map(|p| (p.id.clone(), transaction_bound(&p.actions)))
        .max_by_key(|(_, bound)| *bound)
        .unwrap();
    let unit = std::fs::read_to_string(root().join("packaging/nginx-medic.service")).unwrap();
    let stop = timeout_stop_sec(&unit);
    assert!(
        stop >= bound.as_secs_f64().ceil() as u64,
        "TimeoutStopSec={stop}s is shorter than the longest transaction, `{longest}`: {bound:?}"
    );
    assert_eq!(timeout_stop_sec("TimeoutStopSec=5min 30s\n"), 330);
    assert_eq!(timeout_stop_sec("[Service]\nTimeoutStopSec=90\n"), 90);
}
