//! The facts snapshot: what nginx, the sockets, systemd and the error log say right now.
//!
//! Each source is gathered on its own; one that fails is recorded as `Unavailable` with the
//! reason, so a missing error log is a fact, not an abort.

pub mod aim;
pub mod attempts;
pub mod direct;
pub mod error_log;
pub mod gather;
pub mod gather_backends;
pub mod last_good;
pub mod log_scan;
pub mod mapping;
pub mod nginx;
pub mod nginx_test;
pub mod php_fpm;
pub mod pm2;
pub mod reproduce;
pub mod socket_access;
pub mod sockets;
pub mod supervision;
pub mod unit_output;
pub mod units;

use serde::{Deserialize, Serialize};

/// One source of facts: gathered, or the reason it could not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Gathered<T> {
    Ok { data: T },
    Unavailable { reason: String },
}

impl<T> Gathered<T> {
    /// The data, when it was gathered.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Self::Ok { data } => Some(data),
            Self::Unavailable { .. } => None,
        }
    }

    /// Wraps a result, keeping the error's text as the reason.
    pub fn from_result<E: std::fmt::Display>(result: Result<T, E>) -> Self {
        match result {
            Ok(data) => Self::Ok { data },
            Err(e) => Self::Unavailable {
                reason: e.to_string(),
            },
        }
    }
}

/// Everything nginx-medic knows about the host at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Seconds since the epoch when gathering started.
    pub taken_at: u64,
    pub nginx: Gathered<nginx::NginxFacts>,
    pub sockets: Gathered<sockets::SocketFacts>,
    pub units: Gathered<Vec<units::UnitFacts>>,
    pub error_log: Gathered<error_log::ErrorLogFacts>,
    /// `nginx -t` on the configuration as it is on disk, before anything is changed.
    pub nginx_test: Gathered<nginx_test::NginxTest>,
    /// Each site's pass targets and the backends behind them (shared with the targets built
    /// on them, not copied: a route is about 1 KB, and a configuration has thousands).
    pub routes: Vec<std::sync::Arc<mapping::Route>>,
    // --- unix sockets and backend processes (socket-missing, socket-permission, crash-loop) ---
    /// Who nginx's workers run as, when the user database knows the `user` directive's user.
    pub worker: Option<socket_access::WorkerIdentity>,
    /// Every unix socket path nginx dials, as the workers see it.
    pub unix_paths: Vec<socket_access::UnixPathFacts>,
    /// The pools of every PHP-FPM master unit (started with `--fpm-config FILE`).
    pub fpm_pools: Vec<php_fpm::FpmPool>,
    /// What diagnosis needs from the disk beyond the sources above, read here so that
    /// `pipeline::diagnose` reads nothing.
    pub disk: DiskFacts,
    // --- backends systemd does not run (PM2 apps, processes started by hand) ---
    /// The PM2 daemons found (their units, or a God daemon above a listener) and their apps.
    pub pm2: Vec<pm2::Pm2Daemon>,
    /// Who runs each dialled address's backend when it is not a systemd service.
    pub supervision: Vec<supervision::Supervision>,
    // --- backends requested directly (wrong-port candidates, too-big-header measurements) ---
    /// Each direct request made before planning and its answer (`facts::direct`).
    pub backend_probes: Vec<direct::BackendProbe>,
    /// Each site whose error log shows a failure nginx-medic would edit nginx's files for,
    /// requested again through nginx with a token, and the log lines that request caused
    /// (`facts::reproduce`): a log line alone never justifies an edit.
    pub reproductions: Vec<reproduce::Reproduction>,
    /// The `set_directive` edits of each site file that were rolled back from its current bytes
    /// (`facts::attempts`): a raise that did not heal is stepped over, never repeated.
    pub rolled_back_edits: Vec<attempts::RolledBackEdits>,
    /// The site files whose current bytes nginx-medic wrote in a committed transaction.
    pub verified_edits: Vec<String>,
    /// The addresses each site location dialled the last time a probe through nginx answered
    /// (the daemon's memory, `facts::last_good`); a damaged file is `Unavailable`, never fatal.
    pub last_good: Gathered<last_good::LastGood>,
}

/// File metadata and settings values the target contexts use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskFacts {
    /// The mtime (to the nanosecond) of every configuration file and of the error log; a file
    /// that cannot be `stat`ed is absent.
    pub mtimes: std::collections::BTreeMap<std::path::PathBuf, std::time::SystemTime>,
    /// The value of each `backends:` hint's bind key as its file says now.
    pub hinted_binds: Vec<HintedBind>,
    /// The text of each PM2 app's ecosystem file candidate that reads (`pm2::ecosystem_candidates`).
    pub ecosystem_files: std::collections::BTreeMap<std::path::PathBuf, String>,
    /// The last bytes of each PM2 app's `out`/`err` log that opens, by the path PM2 reports.
    pub pm2_log_tails: std::collections::BTreeMap<String, String>,
}

/// A `backends:` hint's `bind: {file, key}` and the key's value in the file, when the file
/// reads and sets the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintedBind {
    pub file: std::path::PathBuf,
    pub key: String,
    pub value: Option<String>,
}

impl DiskFacts {
    /// The mtime of `path`, when it was `stat`ed.
    pub fn mtime(&self, path: &std::path::Path) -> Option<std::time::SystemTime> {
        self.mtimes.get(path).copied()
    }

    /// The value of `key` in `file`, as gathered for a hint.
    pub fn hinted_bind(&self, file: &std::path::Path, key: &str) -> Option<&str> {
        self.hinted_binds
            .iter()
            .find(|b| b.file == file && b.key == key)
            .and_then(|b| b.value.as_deref())
    }
}

impl Facts {
    /// The unit facts for `name`, when gathered.
    pub fn unit(&self, name: &str) -> Option<&units::UnitFacts> {
        self.units.ok()?.iter().find(|u| u.name == name)
    }

    /// What the workers see at a unix socket path.
    pub fn unix_path(&self, path: &str) -> Option<&socket_access::UnixPathFacts> {
        self.unix_paths.iter().find(|p| p.path == path)
    }

    /// Who runs the backend of `address` when systemd does not: a PM2 app, or nobody.
    pub fn supervision_of(&self, address: &str) -> Option<&supervision::Supervisor> {
        self.supervision
            .iter()
            .find(|s| s.address == address)
            .map(|s| &s.by)
    }

    /// The PM2 app `name` of the daemon with `home`, with its daemon.
    pub fn pm2_app(
        &self,
        home: &std::path::Path,
        name: &str,
    ) -> Option<(&pm2::Pm2Daemon, &pm2::Pm2App)> {
        let daemon = self.pm2.iter().find(|d| d.home == home)?;
        let app = daemon.apps.ok()?.iter().find(|a| a.name == name)?;
        Some((daemon, app))
    }

    /// The PHP-FPM pool that listens on `address` (`unix:/path`).
    pub fn fpm_pool(&self, address: &str) -> Option<&php_fpm::FpmPool> {
        self.fpm_pools
            .iter()
            .find(|p| p.address.as_deref() == Some(address))
    }
}
