//! Who keeps each dialled backend running when systemd does not: a PM2 app (its process
//! descends from the PM2 daemon), or nobody (a process started by hand, from a shell, tmux or
//! `nohup`). Pure: the processes and PM2 apps are already gathered.

use super::pm2::{Pm2App, Pm2Daemon};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A backend process as /proc shows it, without its environment's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessFacts {
    pub pid: i32,
    /// `/proc/PID/exe`, for a command line whose first word is not a path.
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub user: Option<String>,
    /// The names of its environment variables; their values are never read into facts.
    pub env_names: Vec<String>,
    /// The systemd unit of its cgroup, when any (a login session's `.scope` is not a supervisor).
    pub unit: Option<String>,
    /// Its parents, nearest first (pids), up to PID 1.
    pub ancestors: Vec<i32>,
    /// Seconds since the epoch when it was seen listening.
    pub seen_at: u64,
}

/// Who runs the backend of one dialled address, when it is not a systemd service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supervision {
    pub address: String,
    #[serde(flatten)]
    pub by: Supervisor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "supervisor", rename_all = "snake_case")]
pub enum Supervisor {
    /// A PM2 app of the daemon with this home.
    Pm2 { home: PathBuf, app: String },
    /// No supervisor: the process listens now, or (`listening: false`) was the last seen on
    /// the address and is gone.
    Nobody {
        process: ProcessFacts,
        listening: bool,
    },
}

/// Whether a process in this unit runs under no supervisor: no unit, or a login session's or
/// terminal's scope (`session-3.scope`, `tmux-spawn-….scope`), which nothing restarts.
pub fn unsupervised_unit(unit: Option<&str>) -> bool {
    unit.map_or(true, |u| u.ends_with(".scope") && u != "init.scope")
}

/// The PM2 app whose process is `pid` or one of its ancestors.
pub fn pm2_app_of<'d>(
    daemons: &'d [Pm2Daemon],
    pid: i32,
    ancestors: &[i32],
) -> Option<(&'d Pm2Daemon, &'d Pm2App)> {
    daemons.iter().find_map(|d| {
        let apps = d.apps.ok()?;
        let app = apps.iter().find(|a| {
            let Ok(app_pid) = i32::try_from(a.pid) else {
                return false;
            };
            app_pid > 0 && (app_pid == pid || ancestors.contains(&app_pid))
        })?;
        Some((d, app))
    })
}

/// The one PM2 app without a listener now whose environment or arguments name `port`.
pub fn pm2_app_for_port(daemons: &[Pm2Daemon], port: u16) -> Option<(&Pm2Daemon, &Pm2App)> {
    let found: Vec<(&Pm2Daemon, &Pm2App)> = daemons
        .iter()
        .filter_map(|d| Some((d, d.apps.ok()?)))
        .flat_map(|(d, apps)| apps.iter().map(move |a| (d, a)))
        .filter(|(_, a)| a.mentions_port(port))
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The `Environment=` names worth listing in a unit file: the shell's own bookkeeping is left
/// out.
pub fn env_names_worth_listing(names: &[String]) -> Vec<&str> {
    const SHELL: [&str; 12] = [
        "_",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "TERM",
        "SHELL",
        "LS_COLORS",
        "HOME",
        "USER",
        "LOGNAME",
        "MAIL",
        "PATH",
    ];
    names
        .iter()
        .map(String::as_str)
        .filter(|n| !SHELL.contains(n) && !n.starts_with("SSH_") && !n.starts_with("XDG_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Gathered;

    fn daemon(apps: Vec<Pm2App>) -> Pm2Daemon {
        Pm2Daemon {
            unit: Some("pm2-root.service".into()),
            home: "/root/.pm2".into(),
            binary: "/usr/bin/pm2".into(),
            uid: 0,
            gid: 0,
            apps: Gathered::Ok { data: apps },
        }
    }

    fn app(name: &str, pid: u32, port: &str) -> Pm2App {
        Pm2App {
            name: name.into(),
            pm_id: 0,
            pid,
            status: if pid > 0 { "online" } else { "stopped" }.into(),
            restarts: 0,
            unstable_restarts: 0,
            max_restarts: None,
            autorestart: true,
            exit_code: None,
            cwd: None,
            script: None,
            args: Vec::new(),
            env: [("PORT".to_string(), port.to_string())].into(),
            out_log: None,
            err_log: None,
        }
    }

    #[test]
    fn a_listener_belongs_to_the_app_it_descends_from() {
        let d = [daemon(vec![
            app("api", 100, "3000"),
            app("web", 200, "3001"),
        ])];
        assert_eq!(
            pm2_app_of(&d, 200, &[1]).map(|(_, a)| a.name.as_str()),
            Some("web")
        );
        assert_eq!(
            pm2_app_of(&d, 300, &[100, 1]).map(|(_, a)| a.name.as_str()),
            Some("api"),
            "npm start → node"
        );
        assert!(pm2_app_of(&d, 400, &[1]).is_none());
    }

    #[test]
    fn a_stopped_app_is_found_by_its_port() {
        let d = [daemon(vec![app("api", 0, "3000"), app("web", 200, "3001")])];
        assert_eq!(
            pm2_app_for_port(&d, 3000).map(|(_, a)| a.name.as_str()),
            Some("api")
        );
        assert!(pm2_app_for_port(&d, 3002).is_none());
    }

    #[test]
    fn sessions_supervise_nothing() {
        assert!(unsupervised_unit(None));
        assert!(unsupervised_unit(Some("session-3.scope")));
        assert!(!unsupervised_unit(Some("api.service")));
        assert!(!unsupervised_unit(Some("init.scope")));
    }
}
