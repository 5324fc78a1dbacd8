//! Gathers the backends systemd does not run: the PM2 daemons (from their `pm2-USER.service`
//! units, or a God daemon above a listener) with `pm2 jlist`, and the listeners no supervisor
//! runs, with the last one seen on each address (the daemon's memory in
//! `STATE_DIR/last-processes.json`).

use super::mapping::Route;
use super::pm2::{self, Pm2Daemon};
use super::sockets::SocketFacts;
use super::supervision::{self, ProcessFacts, Supervision, Supervisor};
use super::units::UnitFacts;
use super::Gathered;
use crate::adapters::pm2::{Pm2, Pm2Target};
use crate::adapters::procfs::Procfs;
use crate::config::UpstreamAddr;
use crate::state_file::{StateFile, StateFileError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file in the state dir where the daemon keeps the last process seen on each address.
pub const LAST_PROCESSES: &str = "last-processes.json";

/// How the memory is kept in `state_dir`: versioned, capped, written 0600.
const FILE: StateFile = StateFile {
    name: LAST_PROCESSES,
    what: "last-processes",
    version: 1,
    max_bytes: 4 << 20,
    help: "remove it; the daemon writes it again at its next look",
};

/// The file's contents.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LastProcesses {
    version: u32,
    /// Address → the last process seen listening there.
    processes: BTreeMap<String, ProcessFacts>,
}

/// The remembered processes, address → process (empty when there is no file).
pub fn read_last_processes(
    state_dir: &Path,
) -> Result<BTreeMap<String, ProcessFacts>, StateFileError> {
    Ok(FILE
        .load::<LastProcesses>(state_dir)?
        .map(|f| f.processes)
        .unwrap_or_default())
}

/// Writes the remembered processes (atomically, mode 0600: they hold command lines).
pub fn write_last_processes(
    state_dir: &Path,
    processes: &BTreeMap<String, ProcessFacts>,
) -> Result<(), StateFileError> {
    let file = LastProcesses {
        version: FILE.version,
        processes: processes.clone(),
    };
    FILE.save(state_dir, &file)
}

/// Remembers the process no supervisor runs on each address that listens now, and forgets
/// addresses no longer dialled (the daemon calls it after each look; the file is written only
/// when it changes).
/// A damaged file is replaced by what is seen now.
pub fn remember_processes(state_dir: &Path, facts: &super::Facts) -> Result<(), StateFileError> {
    let old = read_last_processes(state_dir).unwrap_or_default();
    let dialled: BTreeSet<&str> = facts
        .routes
        .iter()
        .flat_map(|r| r.endpoints.iter())
        .map(|e| e.address.as_str())
        .collect();
    let mut new: BTreeMap<String, ProcessFacts> = old
        .iter()
        .filter(|(a, _)| dialled.contains(a.as_str()))
        .map(|(a, p)| (a.clone(), p.clone()))
        .collect();
    for s in &facts.supervision {
        match &s.by {
            Supervisor::Nobody {
                process,
                listening: true,
            } => {
                let same = new
                    .get(&s.address)
                    .is_some_and(|p| p.pid == process.pid && p.cmdline == process.cmdline);
                if !same {
                    new.insert(s.address.clone(), process.clone());
                }
            }
            // a unit or a PM2 app serves it now: the hand-started process is history
            Supervisor::Pm2 { .. } => {
                new.remove(&s.address);
            }
            Supervisor::Nobody { .. } => {}
        }
    }
    for e in facts.routes.iter().flat_map(|r| r.endpoints.iter()) {
        if e.listening && e.unit.is_some() && facts.supervision_of(&e.address).is_none() {
            new.remove(&e.address);
        }
    }
    if new == old {
        return Ok(());
    }
    write_last_processes(state_dir, &new)
}

/// The PM2 daemons and who supervises each dialled address that systemd does not run.
pub fn backends(
    units: &[UnitFacts],
    routes: &[Route],
    sockets: Option<&SocketFacts>,
    procfs: &Procfs,
    runner: &dyn Pm2,
    remembered: &BTreeMap<String, ProcessFacts>,
    now: u64,
) -> (Vec<Pm2Daemon>, Vec<Supervision>) {
    let mut seen: BTreeMap<i32, Option<ProcessFacts>> = BTreeMap::new();
    let mut process = |pid: i32| {
        seen.entry(pid)
            .or_insert_with(|| procfs.process_facts(pid, now))
            .clone()
    };
    // PM2 daemons: their units, and any God daemon above a listener
    let mut homes: BTreeMap<PathBuf, (Option<String>, PathBuf)> = units
        .iter()
        .filter_map(|u| {
            let (home, binary) = pm2::daemon_of_unit(u)?;
            Some((home, (Some(u.name.clone()), binary)))
        })
        .collect();
    let listeners: Vec<ProcessFacts> = routes
        .iter()
        .flat_map(|r| r.endpoints.iter())
        .filter_map(|e| e.pid)
        .chain(
            sockets
                .into_iter()
                .flat_map(|s| s.tcp.iter().filter_map(|t| t.main_owner().map(|o| o.pid))),
        )
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .filter_map(&mut process)
        .collect();
    for p in &listeners {
        for &a in &p.ancestors {
            if let Some(home) = pm2::home_of_title(&procfs.cmdline(a)) {
                if let (false, Some(binary)) = (homes.contains_key(&home), pm2_on_path()) {
                    homes.insert(home, (None, binary));
                }
            }
        }
    }
    let daemons: Vec<Pm2Daemon> = homes
        .into_iter()
        .map(|(home, (unit, binary))| {
            let (uid, gid) = std::fs::metadata(&home).map_or((0, 0), |m| (m.uid(), m.gid()));
            let target = Pm2Target {
                binary: binary.clone(),
                home: home.clone(),
                uid,
                gid,
            };
            let apps = match runner.jlist(&target) {
                Ok(text) => Gathered::from_result(pm2::parse_jlist(&text)),
                Err(e) => Gathered::Unavailable {
                    reason: crate::error_text::chain(&e),
                },
            };
            Pm2Daemon {
                unit,
                home,
                binary,
                uid,
                gid,
                apps,
            }
        })
        .collect();

    let mut out: Vec<Supervision> = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for e in routes.iter().flat_map(|r| r.endpoints.iter()) {
        if !done.insert(e.address.as_str()) {
            continue;
        }
        let port = match UpstreamAddr::parse(&e.address) {
            Some(UpstreamAddr::Tcp { port, .. }) => Some(port),
            _ => None,
        };
        let owner = e
            .pid
            .and_then(|pid| listeners.iter().find(|p| p.pid == pid));
        // a listener on the port's other addresses (a wrong bind host) tells the app too
        let same_port = port.into_iter().flat_map(|port| {
            sockets
                .into_iter()
                .flat_map(move |s| s.tcp_listeners_on(port))
                .filter_map(|s| s.main_owner())
                .filter_map(|o| listeners.iter().find(|p| p.pid == o.pid))
        });
        let by_process = owner
            .into_iter()
            .chain(same_port)
            .find_map(|p| supervision::pm2_app_of(&daemons, p.pid, &p.ancestors));
        let app = by_process.or_else(|| {
            (!e.listening)
                .then(|| port.and_then(|p| supervision::pm2_app_for_port(&daemons, p)))
                .flatten()
        });
        let by = match (app, owner) {
            (Some((d, a)), _) => Some(Supervisor::Pm2 {
                home: d.home.clone(),
                app: a.name.clone(),
            }),
            (None, Some(p)) if supervision::unsupervised_unit(p.unit.as_deref()) => {
                Some(Supervisor::Nobody {
                    process: p.clone(),
                    listening: true,
                })
            }
            (None, Some(_)) => None,
            (None, None) if !e.listening && !known_unit(units, e.unit.as_deref()) => {
                remembered.get(&e.address).map(|p| Supervisor::Nobody {
                    process: p.clone(),
                    listening: false,
                })
            }
            (None, None) => None,
        };
        if let Some(by) = by {
            out.push(Supervision {
                address: e.address.clone(),
                by,
            });
        }
    }
    (daemons, out)
}

/// Whether the endpoint's unit is one the manager knows (a hint may name a unit that is gone).
fn known_unit(units: &[UnitFacts], unit: Option<&str>) -> bool {
    unit.is_some_and(|n| units.iter().any(|u| u.name == n))
}

/// `pm2` on the usual paths, for a God daemon that no unit names.
fn pm2_on_path() -> Option<PathBuf> {
    ["/usr/local/bin/pm2", "/usr/bin/pm2", "/opt/pm2/bin/pm2"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}
