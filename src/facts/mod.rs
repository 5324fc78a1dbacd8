//! The facts snapshot: what nginx, the sockets, systemd and the error log say right now.
//!
//! Each source is gathered on its own; one that fails is recorded as `Unavailable` with the
//! reason, so a missing error log is a fact, not an abort.

pub mod error_log;
pub mod gather;
pub mod mapping;
pub mod nginx;
pub mod nginx_test;
pub mod php_fpm;
pub mod socket_access;
pub mod sockets;
pub mod unit_output;
pub mod units;

use serde::Serialize;

/// One source of facts: gathered, or the reason it could not be.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// Seconds since the epoch when gathering started.
    pub taken_at: u64,
    pub nginx: Gathered<nginx::NginxFacts>,
    pub sockets: Gathered<sockets::SocketFacts>,
    pub units: Gathered<Vec<units::UnitFacts>>,
    pub error_log: Gathered<error_log::ErrorLogFacts>,
    /// `nginx -t` on the configuration as it is on disk, before anything is changed.
    pub nginx_test: Gathered<nginx_test::NginxTest>,
    /// Each site's pass targets and the backends behind them.
    pub routes: Vec<mapping::Route>,
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
}

/// File metadata and settings values the target contexts use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskFacts {
    /// The mtime (seconds since the epoch) of every configuration file and of the error log;
    /// a file that cannot be `stat`ed is absent.
    pub mtimes: std::collections::BTreeMap<std::path::PathBuf, i64>,
    /// The value of each `backends:` hint's bind key as its file says now.
    pub hinted_binds: Vec<HintedBind>,
}

/// A `backends:` hint's `bind: {file, key}` and the key's value in the file, when the file
/// reads and sets the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HintedBind {
    pub file: std::path::PathBuf,
    pub key: String,
    pub value: Option<String>,
}

impl DiskFacts {
    /// The mtime of `path`, when it was `stat`ed.
    pub fn mtime(&self, path: &std::path::Path) -> Option<i64> {
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

    /// The PHP-FPM pool that listens on `address` (`unix:/path`).
    pub fn fpm_pool(&self, address: &str) -> Option<&php_fpm::FpmPool> {
        self.fpm_pools
            .iter()
            .find(|p| p.address.as_deref() == Some(address))
    }
}
