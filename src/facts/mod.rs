//! The facts snapshot: what nginx, the sockets, systemd and the error log say right now.
//!
//! Each source is gathered on its own; one that fails is recorded as `Unavailable` with the
//! reason, so a missing error log is a fact, not an abort.

pub mod error_log;
pub mod gather;
pub mod mapping;
pub mod nginx;
pub mod nginx_test;
pub mod sockets;
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
}

impl Facts {
    /// The unit facts for `name`, when gathered.
    pub fn unit(&self, name: &str) -> Option<&units::UnitFacts> {
        self.units.ok()?.iter().find(|u| u.name == name)
    }
}
