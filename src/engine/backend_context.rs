//! The playbook context of backends systemd does not run: `pm2` (the PM2 app behind the
//! endpoint: state, restarts, listeners, the bind host of its ecosystem file, its last log
//! lines) and `unsupervised` (the process no supervisor runs, with a ready unit file). Both
//! are null when they do not apply. The paths are documented in `playbooks/README.md`.

use crate::config::UpstreamAddr;
use crate::facts::mapping::Endpoint;
use crate::facts::pm2::{self, Pm2App, Pm2Daemon};
use crate::facts::supervision::Supervisor;
use crate::facts::{DiskFacts, Facts};
use crate::playbook::context::{BindContext, Pm2Context, TargetContext, UnsupervisedContext};

/// How many of the app's own log lines the evidence shows.
const LOG_LINES: usize = 10;

/// Sets `pm2` and `unsupervised` in a target's context.
pub fn add_backend(context: &mut TargetContext, facts: &Facts, endpoint: &Endpoint) {
    let (host, port) = match UpstreamAddr::parse(&endpoint.address) {
        Some(UpstreamAddr::Tcp { host, port }) => (Some(host), Some(port)),
        _ => (None, None),
    };
    let (pm2, unsupervised) = match facts.supervision_of(&endpoint.address) {
        Some(Supervisor::Pm2 { home, app }) => (
            facts
                .pm2_app(home, app)
                .map(|(daemon, app)| pm2_context(facts, daemon, app, port)),
            None,
        ),
        Some(Supervisor::Nobody { process, listening }) => {
            let unit_file =
                crate::engine::unit_file::render(process, &endpoint.address, host.as_deref(), port);
            (
                None,
                Some(UnsupervisedContext {
                    pid: process.pid,
                    listening: *listening,
                    command: shell_words(&process.cmdline),
                    cwd: process.cwd.clone(),
                    user: process
                        .user
                        .clone()
                        .unwrap_or_else(|| process.uid.to_string()),
                    env_names: process.env_names.clone(),
                    seen_at: process.seen_at,
                    unit_name: crate::engine::unit_file::unit_name(process, port),
                    unit_file,
                }),
            )
        }
        None => (None, None),
    };
    context.pm2 = pm2;
    context.unsupervised = unsupervised;
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

fn pm2_context(facts: &Facts, daemon: &Pm2Daemon, app: &Pm2App, port: Option<u16>) -> Pm2Context {
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
    let (bind, bind_problem) = ecosystem_bind(&facts.disk, app, &hosts_on_port);
    let tail = |log: &Option<String>| {
        log.as_ref()
            .and_then(|l| facts.disk.pm2_log_tails.get(l))
            .map_or("", String::as_str)
    };
    let (err, out) = (tail(&app.err_log), tail(&app.out_log));
    let output = pm2::last_lines(err, out, LOG_LINES);
    let output_from = if !err.trim().is_empty() {
        app.err_log.clone()
    } else {
        app.out_log.clone()
    };
    Pm2Context {
        name: app.name.clone(),
        pm_id: app.pm_id,
        status: app.status.clone(),
        pid: app.pid,
        restarts: app.restarts,
        unstable_restarts: app.unstable_restarts,
        max_restarts: app.max_restarts.unwrap_or(16),
        autorestart: app.autorestart,
        exit_code: app.exit_code,
        crash_loop: app.crash_looping(),
        cwd: app.cwd.clone(),
        home: daemon.home.display().to_string(),
        binary: daemon.binary.display().to_string(),
        uid: daemon.uid,
        gid: daemon.gid,
        daemon_unit: daemon.unit.clone(),
        listeners: listeners
            .iter()
            .map(|(h, p)| {
                UpstreamAddr::Tcp {
                    host: h.clone(),
                    port: *p,
                }
                .to_string()
            })
            .collect(),
        hosts_on_endpoint_port: hosts_on_port.into_iter().cloned().collect(),
        bind,
        bind_problem,
        output,
        output_from: output_from.map(|f| format!("file:{f}")),
    }
}

/// The literal host string of the app's entry in its ecosystem file, when it is the host the
/// app listens on now; else none and why.
fn ecosystem_bind(
    disk: &DiskFacts,
    app: &Pm2App,
    hosts: &[&String],
) -> (Option<BindContext>, Option<String>) {
    let mut problem = None;
    for file in pm2::ecosystem_candidates(app) {
        let Some(text) = disk.ecosystem_files.get(&file) else {
            continue;
        };
        match pm2::find_host_literal(text, &app.name) {
            Ok(found)
                if hosts
                    .iter()
                    .any(|h| h.trim_matches(['[', ']']) == found.value) =>
            {
                let place = format!("{} of app `{}` in {}", found.key, app.name, file.display());
                return (
                    Some(BindContext {
                        file: file.display().to_string(),
                        key: found.key,
                        value: Some(found.value),
                        from: "ecosystem",
                        place,
                        exec_start: None,
                    }),
                    None,
                );
            }
            Ok(found) => {
                problem = Some(format!(
                    "{} sets {} `{}`, not the host the app listens on",
                    file.display(),
                    found.key,
                    found.value
                ));
            }
            Err(e) => problem = Some(format!("{}: {e}", file.display())),
        }
    }
    (None, problem)
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
