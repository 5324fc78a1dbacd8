//! The playbook context of backends systemd does not run: `pm2` (the PM2 app behind the
//! endpoint: state, restarts, listeners, the bind host of its ecosystem file, its last log
//! lines) and `unsupervised` (the process no supervisor runs, with a ready unit file). Both
//! are null when they do not apply. The paths are documented in `playbooks/README.md`.

use crate::config::UpstreamAddr;
use crate::facts::mapping::Endpoint;
use crate::facts::pm2::{self, Pm2App, Pm2Daemon};
use crate::facts::supervision::Supervisor;
use crate::facts::Facts;
use serde_json::{json, Value};

/// How many of the app's own log lines the evidence shows.
const LOG_LINES: usize = 10;
/// The most of a PM2 log file that is read.
const LOG_TAIL: u64 = 64 * 1024;

/// Sets `pm2` and `unsupervised` in a target's context.
pub fn add_backend(context: &mut Value, facts: &Facts, endpoint: &Endpoint) {
    let (host, port) = match UpstreamAddr::parse(&endpoint.address) {
        Some(UpstreamAddr::Tcp { host, port }) => (Some(host), Some(port)),
        _ => (None, None),
    };
    let (pm2, unsupervised) = match facts.supervision_of(&endpoint.address) {
        Some(Supervisor::Pm2 { home, app }) => match facts.pm2_app(home, app) {
            Some((daemon, app)) => (pm2_context(facts, daemon, app, port), Value::Null),
            None => (Value::Null, Value::Null),
        },
        Some(Supervisor::Nobody { process, listening }) => {
            let unit_file =
                crate::engine::unit_file::render(process, &endpoint.address, host.as_deref(), port);
            (
                Value::Null,
                json!({
                    "pid": process.pid,
                    "listening": listening,
                    "command": shell_words(&process.cmdline),
                    "cwd": process.cwd,
                    "user": process.user.clone().unwrap_or_else(|| process.uid.to_string()),
                    "env_names": process.env_names,
                    "seen_at": process.seen_at,
                    "unit_name": crate::engine::unit_file::unit_name(process, port),
                    "unit_file": unit_file,
                }),
            )
        }
        None => (Value::Null, Value::Null),
    };
    context["pm2"] = pm2;
    context["unsupervised"] = unsupervised;
}

/// A command line as a person would type it (words with blanks or quotes single-quoted).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn pm2_context(facts: &Facts, daemon: &Pm2Daemon, app: &Pm2App, port: Option<u16>) -> Value {
    let app_pid = i32::try_from(app.pid).unwrap_or(0);
    let listeners: Vec<(String, u16)> = facts
        .sockets
        .ok()
        .map(|s| {
            s.tcp
                .iter()
                .filter(|t| {
                    app_pid > 0
                        && t.owners
                            .iter()
                            .any(|o| o.pid == app_pid || o.ppid == app_pid)
                })
                .map(|t| (t.addr.to_string(), t.port))
                .collect()
        })
        .unwrap_or_default();
    let hosts_on_port: Vec<&String> = listeners
        .iter()
        .filter(|(_, p)| Some(*p) == port)
        .map(|(h, _)| h)
        .collect();
    let (bind, bind_problem) = ecosystem_bind(app, &hosts_on_port);
    let err = app.err_log.as_deref().map(tail).unwrap_or_default();
    let out = app.out_log.as_deref().map(tail).unwrap_or_default();
    let output = pm2::last_lines(&err, &out, LOG_LINES);
    let output_from = if !err.trim().is_empty() {
        app.err_log.clone()
    } else {
        app.out_log.clone()
    };
    json!({
        "name": app.name,
        "pm_id": app.pm_id,
        "status": app.status,
        "pid": app.pid,
        "restarts": app.restarts,
        "unstable_restarts": app.unstable_restarts,
        "max_restarts": app.max_restarts.unwrap_or(16),
        "autorestart": app.autorestart,
        "exit_code": app.exit_code,
        "crash_loop": app.crash_looping(),
        "cwd": app.cwd,
        "home": daemon.home,
        "binary": daemon.binary,
        "uid": daemon.uid,
        "gid": daemon.gid,
        "daemon_unit": daemon.unit,
        "listeners": listeners.iter().map(|(h, p)| UpstreamAddr::Tcp { host: h.clone(), port: *p }.to_string()).collect::<Vec<_>>(),
        "hosts_on_endpoint_port": hosts_on_port,
        "bind": bind,
        "bind_problem": bind_problem,
        "output": output,
        "output_from": output_from.map(|f| format!("file:{f}")),
    })
}

/// The literal host string of the app's entry in its ecosystem file, when it is the host the
/// app listens on now; else null and why.
fn ecosystem_bind(app: &Pm2App, hosts: &[&String]) -> (Value, Value) {
    let mut problem = Value::Null;
    for file in pm2::ecosystem_candidates(app) {
        let Ok(text) = crate::adapters::fs::read_settings_file(&file) else {
            continue;
        };
        match pm2::find_host_literal(&text, &app.name) {
            Ok(found)
                if hosts
                    .iter()
                    .any(|h| h.trim_matches(['[', ']']) == found.value) =>
            {
                let place = format!("{} of app `{}` in {}", found.key, app.name, file.display());
                return (
                    json!({"file": file, "key": found.key, "value": found.value, "from": "ecosystem", "where": place}),
                    Value::Null,
                );
            }
            Ok(found) => {
                problem = json!(format!(
                    "{} sets {} `{}`, not the host the app listens on",
                    file.display(),
                    found.key,
                    found.value
                ));
            }
            Err(e) => problem = json!(format!("{}: {e}", file.display())),
        }
    }
    (Value::Null, problem)
}

fn tail(path: &str) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)));
    let mut bytes = Vec::new();
    let _ = f.take(LOG_TAIL).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_read_as_typed() {
        let argv = ["uvicorn", "main:app", "--root-path", "/a b"].map(String::from);
        assert_eq!(shell_words(&argv), "uvicorn main:app --root-path '/a b'");
    }
}
