//! Gathers a `Facts` snapshot from the adapters: nginx's configuration, /proc, systemd, the log.

use super::mapping::{self, Dialled, MappingInput};
use super::socket_access::{self, PathPerm, UnixPathFacts, WorkerIdentity};
use super::sockets::SocketFile;
use super::units::UnitOutput;
use super::{error_log, nginx, php_fpm, unit_output, Facts, Gathered};
use crate::adapters::nginx::NginxBinary;
use crate::adapters::procfs::Procfs;
use crate::adapters::systemd::Systemd;
use crate::adapters::unit_log;
use crate::config::Settings;
use crate::facts::units::UnitFacts;
use crate::nginx_conf;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

/// How much of the error log's end is read and classified.
pub const ERROR_LOG_WINDOW: u64 = 1 << 20;

/// Reads every source and maps each route to its backend.
pub async fn gather(settings: &Settings, procfs: &Procfs) -> Facts {
    let taken_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let binary = nginx_binary(settings);
    let nginx = Gathered::from_result(read_nginx(&binary));
    let nginx_test = Gathered::from_result(
        binary
            .test()
            .map(|t| super::nginx_test::NginxTest::from_output(t.ok, &t.output)),
    );
    let sockets = Gathered::from_result(procfs.socket_facts());
    let error_log = match error_log_path(settings, nginx.ok()) {
        Some(path) => Gathered::from_result(error_log::read_error_log(&path, ERROR_LOG_WINDOW)),
        None => Gathered::Unavailable {
            reason: "the configuration names no error_log; set `nginx.error_log`".into(),
        },
    };
    let mut units = gather_units(settings, nginx.ok(), sockets.ok()).await;
    if let Gathered::Ok { data } = &mut units {
        let user_bus = settings.bus == crate::config::Bus::User;
        data.iter_mut().for_each(|u| add_unit_output(u, user_bus));
    }
    let fpm_pools = fpm_pools(units.ok().map_or(&[][..], Vec::as_slice));
    let routes = match (nginx.ok(), sockets.ok()) {
        (Some(n), Some(s)) => {
            let unit_list = units.ok().map_or(&[][..], Vec::as_slice);
            let unit_env = unit_environments(unit_list);
            let declared: BTreeMap<String, String> = fpm_pools
                .iter()
                .filter_map(|p| Some((p.address.clone()?, p.unit.clone())))
                .collect();
            let input = MappingInput {
                sockets: s,
                units: unit_list,
                unit_env: &unit_env,
                hints: &settings.backends,
                bindv6only: procfs.bindv6only(),
                declared: &declared,
            };
            mapping::routes(n, &input, &resolve)
        }
        _ => Vec::new(),
    };
    let worker = nginx.ok().and_then(|n| worker_identity(n.user.as_deref()));
    let unix_paths = nginx.ok().map_or_else(Vec::new, |n| {
        let mut paths: Vec<String> = all_dialled(n)
            .into_iter()
            .filter_map(|d| match d {
                Dialled::Unix { path } => Some(path),
                Dialled::Tcp { .. } => None,
            })
            .collect();
        paths.sort();
        paths.dedup();
        paths
            .iter()
            .map(|p| unix_path_facts(p, worker.as_ref()))
            .collect()
    });
    Facts {
        taken_at,
        nginx,
        sockets,
        units,
        error_log,
        nginx_test,
        routes,
        worker,
        unix_paths,
        fpm_pools,
    }
}

// --- unix sockets and backend processes -------------------------------------------------------

/// The pools of every unit started as a PHP-FPM master (`--fpm-config FILE`).
fn fpm_pools(units: &[UnitFacts]) -> Vec<php_fpm::FpmPool> {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    let expand = |pattern: &str| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map(|paths| paths.flatten().collect())
            .unwrap_or_default();
        files.sort();
        files
    };
    units
        .iter()
        .filter_map(|u| {
            let argv: Vec<String> = u.exec_start.iter().flat_map(|c| c.argv.clone()).collect();
            Some((u, php_fpm::fpm_config_arg(&argv)?))
        })
        .flat_map(|(u, conf)| php_fpm::pools(&u.name, &conf, &read, &expand))
        .collect()
}

/// Who nginx's workers run as: the `user` directive (`user NAME [GROUP]`, default `nobody`),
/// looked up as nginx does (the group named like the user, else the user's primary group, plus
/// the user's supplementary groups).
fn worker_identity(directive: Option<&str>) -> Option<WorkerIdentity> {
    use nix::unistd::{getgrouplist, Group, User};
    let mut words = directive.unwrap_or("nobody").split_whitespace();
    let name = words.next().unwrap_or("nobody");
    let user = User::from_name(name).ok().flatten()?;
    let group = words
        .next()
        .and_then(|g| Group::from_name(g).ok().flatten())
        .or_else(|| Group::from_name(name).ok().flatten())
        .or_else(|| Group::from_gid(user.gid).ok().flatten());
    let (group_name, gid) = match group {
        Some(g) => (g.name, g.gid),
        None => (user.gid.to_string(), user.gid),
    };
    let mut groups: Vec<u32> = std::ffi::CString::new(name)
        .ok()
        .and_then(|c| getgrouplist(&c, gid).ok())
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    groups.push(gid.as_raw());
    groups.sort_unstable();
    groups.dedup();
    Some(WorkerIdentity {
        user: user.name,
        group: group_name,
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
        groups,
    })
}

/// `stat`s a unix socket path and every directory above it.
fn unix_path_facts(path: &str, worker: Option<&WorkerIdentity>) -> UnixPathFacts {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let perm = |m: &std::fs::Metadata| PathPerm {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
    };
    let meta = std::fs::metadata(path).ok();
    let dirs: Option<Vec<PathPerm>> = std::path::Path::new(path)
        .ancestors()
        .skip(1)
        .map(|d| std::fs::metadata(d).ok().map(|m| perm(&m)))
        .collect();
    let worker_can_connect = match (worker, &meta, dirs) {
        (Some(w), Some(m), Some(dirs)) => Some(socket_access::can_connect(w, &dirs, &perm(m))),
        _ => None,
    };
    UnixPathFacts {
        path: path.to_string(),
        exists: meta.is_some() || std::fs::symlink_metadata(path).is_ok(),
        is_socket: meta.as_ref().is_some_and(|m| m.file_type().is_socket()),
        file: meta.as_ref().map(|m| SocketFile {
            uid: m.uid(),
            gid: m.gid(),
            user: nix::unistd::User::from_uid(m.uid().into())
                .ok()
                .flatten()
                .map(|u| u.name),
            group: nix::unistd::Group::from_gid(m.gid().into())
                .ok()
                .flatten()
                .map(|g| g.name),
            mode: format!("{:04o}", m.mode() & 0o7777),
        }),
        worker_can_connect,
    }
}

/// Whether a unit is not running well (failed, restarting, restarted by systemd, or its last
/// main process ended badly), so that its own last words are worth reading. A unit that is
/// merely stopped is not: a host has many, and reading each one's journal is slow.
fn troubled(unit: &UnitFacts) -> bool {
    let ended_badly = unit.run.exec_main_code != 0
        && !(unit.run.exec_main_code == 1 && unit.run.exec_main_status == 0);
    unit.active_state == "failed"
        || unit.sub_state == "auto-restart"
        || unit.n_restarts.unwrap_or(0) > 0
        || ended_badly
}

/// The last lines a troubled service wrote: from the file its unit appends to, else its journal.
fn add_unit_output(unit: &mut UnitFacts, user_bus: bool) {
    if !unit.name.ends_with(".service") || !troubled(unit) {
        return;
    }
    let texts: Vec<String> = unit
        .fragment_path
        .iter()
        .chain(unit.run.drop_in_paths.iter())
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let to_file = |kind: &str| matches!(kind, "append" | "file" | "truncate");
    let file = if to_file(&unit.run.standard_output) {
        unit_output::output_file(&texts, "StandardOutput")
    } else if to_file(&unit.run.standard_error) {
        unit_output::output_file(&texts, "StandardError")
    } else {
        None
    };
    unit.run.output =
        match file {
            Some(path) => unit_log::file_tail(&path).ok().map(|text| UnitOutput {
                source: format!("file:{}", path.display()),
                lines: unit_output::last_lines(&text, unit_output::OUTPUT_LINES),
            }),
            None => unit_log::journal_tail(&unit.name, user_bus, unit_output::OUTPUT_LINES).map(
                |text| UnitOutput {
                    source: "journal".into(),
                    lines: unit_output::last_lines(&text, unit_output::OUTPUT_LINES),
                },
            ),
        };
}

/// The nginx binary, configuration and prefix from the settings.
pub fn nginx_binary(settings: &Settings) -> NginxBinary {
    NginxBinary {
        binary: settings.nginx.binary.clone(),
        conf: settings.nginx.conf.clone(),
        prefix: settings.nginx.prefix.clone(),
    }
}

fn read_nginx(binary: &NginxBinary) -> Result<nginx::NginxFacts, nginx_conf::ConfError> {
    let config = nginx_conf::load(&binary.conf, &nginx_conf::RealFs)?;
    Ok(nginx::extract(&config, &binary.effective_prefix()))
}

/// The error log to read: `nginx.error_log` when set, else the first file the config names.
pub fn error_log_path(settings: &Settings, nginx: Option<&nginx::NginxFacts>) -> Option<PathBuf> {
    settings
        .nginx
        .error_log
        .clone()
        .or_else(|| nginx?.error_logs.first().cloned())
}

/// Resolves a host name as nginx would (getaddrinfo), without ports.
fn resolve(host: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

/// The units worth reading: nginx's, the hinted ones, the owners of upstream sockets, and — only
/// when some upstream has no known unit — every service, to search their command lines.
async fn gather_units(
    settings: &Settings,
    nginx: Option<&nginx::NginxFacts>,
    sockets: Option<&super::sockets::SocketFacts>,
) -> Gathered<Vec<UnitFacts>> {
    let systemd = match Systemd::connect(settings.bus).await {
        Ok(s) => s,
        Err(e) => {
            return Gathered::Unavailable {
                reason: e.to_string(),
            }
        }
    };
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(settings.nginx.unit.clone());
    names.extend(settings.backends.iter().filter_map(|b| b.unit.clone()));
    let mut unowned = false;
    if let (Some(n), Some(s)) = (nginx, sockets) {
        for d in all_dialled(n) {
            match owner_unit(s, &d) {
                Some(unit) => {
                    names.insert(unit);
                }
                None => unowned = true,
            }
        }
    }
    if unowned {
        match systemd.service_names().await {
            Ok(all) => names.extend(all),
            Err(e) => tracing::warn!(error = %e, "cannot list services to map upstreams"),
        }
    }
    let names: Vec<String> = names.into_iter().collect();
    let mut units = systemd.units(&names).await;
    units.retain(|u| u.load_state == "loaded" || u.name == settings.nginx.unit);
    Gathered::Ok { data: units }
}

fn all_dialled(nginx: &nginx::NginxFacts) -> Vec<Dialled> {
    nginx
        .sites
        .iter()
        .flat_map(|s| s.locations.iter())
        .filter_map(|l| l.pass.as_ref())
        .flat_map(|p| mapping::dialled(nginx, &p.target))
        .collect()
}

fn owner_unit(sockets: &super::sockets::SocketFacts, dialled: &Dialled) -> Option<String> {
    let owner = match dialled {
        Dialled::Tcp { port, .. } => sockets.tcp_listeners_on(*port).find_map(|s| s.main_owner()),
        Dialled::Unix { path } => sockets.unix_listener(path).and_then(|s| s.main_owner()),
    };
    owner?.unit.clone()
}

/// Each unit's environment, keyed by unit name.
fn unit_environments(units: &[UnitFacts]) -> BTreeMap<String, BTreeMap<String, String>> {
    units.iter().map(|u| (u.name.clone(), u.env())).collect()
}
