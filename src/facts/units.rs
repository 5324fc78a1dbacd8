//! systemd unit facts: the state of the units that serve nginx's upstreams, and nginx's own.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One unit as the manager reports it over D-Bus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitFacts {
    pub name: String,
    /// `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, …
    pub active_state: String,
    pub sub_state: String,
    /// The service's last result (`success`, `exit-code`, `signal`, …); `None` for non-services.
    pub result: Option<String>,
    /// 0 when the service has no main process.
    pub main_pid: u32,
    pub n_restarts: Option<u32>,
    pub exec_start: Vec<ExecCommand>,
    pub fragment_path: Option<String>,
    /// `EnvironmentFile=` entries (a leading `-` in the unit is reported as `optional`).
    pub environment_files: Vec<EnvironmentFile>,
    /// `Environment=` assignments, `KEY=value`.
    pub environment: Vec<String>,
    /// The unit's cgroup (`/system.slice/api.service`) while it has processes.
    pub control_group: Option<String>,
    /// The service's `WorkingDirectory=` as the manager reports it, without the `!` it adds
    /// for a `-` (missing is ok) prefix: an absolute path, or `~` for the user's home.
    pub working_directory: Option<String>,
    /// When the unit last entered `active`, in microseconds since the epoch (0: never).
    pub active_enter_timestamp: u64,
    /// How the main process last ran and ended, and where its output goes.
    pub run: RunFacts,
}

/// How a service's main process last ran and ended, and where its output goes: what tells a
/// crash loop from a stopped backend, and where the backend said why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFacts {
    /// `ExecMainCode`: 1 exited, 2 killed, 3 dumped core (0: no process has ended yet).
    pub exec_main_code: i32,
    /// `ExecMainStatus`: the exit status, or the signal number when killed.
    pub exec_main_status: i32,
    /// When the last main process started and ended, in microseconds since the epoch (0: never).
    pub exec_main_start_timestamp: u64,
    pub exec_main_exit_timestamp: u64,
    /// `Restart=` (`no`, `on-failure`, `always`, …).
    pub restart: String,
    /// `StandardOutput=`/`StandardError=` kinds as the manager reports them (`journal`,
    /// `append`, `file`, `inherit`, …); the file path is not on the bus in systemd 252.
    pub standard_output: String,
    pub standard_error: String,
    /// The unit's drop-in files, which may set `StandardOutput=` too.
    pub drop_in_paths: Vec<String>,
    /// The last lines the backend wrote, read only for units that are not running well.
    pub output: Option<UnitOutput>,
}

/// The last lines of a backend's own output, and where they were read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitOutput {
    /// `file:/path` or `journal`.
    pub source: String,
    pub lines: Vec<String>,
}

impl RunFacts {
    /// How long the last main process ran, in milliseconds, when it has ended.
    pub fn last_run_ms(&self) -> Option<u64> {
        (self.exec_main_exit_timestamp > 0
            && self.exec_main_exit_timestamp >= self.exec_main_start_timestamp
            && self.exec_main_start_timestamp > 0)
            .then(|| (self.exec_main_exit_timestamp - self.exec_main_start_timestamp) / 1000)
    }
}

/// One `ExecStart=` command line, unexpanded (`${HOST}` stays as written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCommand {
    pub path: String,
    pub argv: Vec<String>,
    /// Written with a `-` prefix: a failing exit status is not a failure.
    pub ignore_failure: bool,
}

/// One `EnvironmentFile=` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentFile {
    pub path: String,
    pub optional: bool,
    /// The `KEY=value` assignments read from the file (empty when unreadable).
    pub vars: BTreeMap<String, String>,
    /// Why the file could not be read, when it exists but could not (refused: a FIFO, a
    /// device, a file bigger than a settings file holds, a redirected symlink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl UnitFacts {
    /// The unit's environment as its processes see it: environment files, then `Environment=`.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .environment_files
            .iter()
            .flat_map(|f| f.vars.clone())
            .collect();
        env.extend(self.environment.iter().filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        }));
        env
    }

    /// True while the unit runs or is on its way up.
    pub fn is_up(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading"
        )
    }
}
