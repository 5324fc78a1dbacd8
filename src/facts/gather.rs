//! Gathers a `Facts` snapshot from the adapters: nginx's configuration, /proc, systemd, the log.

use super::mapping::{self, Dialled, MappingInput};
use super::{error_log, nginx, Facts, Gathered};
use crate::adapters::nginx::NginxBinary;
use crate::adapters::procfs::Procfs;
use crate::adapters::systemd::Systemd;
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
    let units = gather_units(settings, nginx.ok(), sockets.ok()).await;
    let routes = match (nginx.ok(), sockets.ok()) {
        (Some(n), Some(s)) => {
            let unit_list = units.ok().map_or(&[][..], Vec::as_slice);
            let unit_env = unit_environments(unit_list);
            let input = MappingInput {
                sockets: s,
                units: unit_list,
                unit_env: &unit_env,
                hints: &settings.backends,
                bindv6only: procfs.bindv6only(),
            };
            mapping::routes(n, &input, &resolve)
        }
        _ => Vec::new(),
    };
    Facts {
        taken_at,
        nginx,
        sockets,
        units,
        error_log,
        nginx_test,
        routes,
    }
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
    let mut units = Vec::with_capacity(names.len());
    for name in &names {
        match systemd.unit(name).await {
            Ok(unit) if unit.load_state == "loaded" || *name == settings.nginx.unit => {
                units.push(unit)
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(unit = %name, error = %e, "unit facts unavailable"),
        }
    }
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
