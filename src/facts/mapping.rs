//! Which backend serves each pass target: the endpoint nginx dials, the socket that accepts it,
//! and the unit and process behind that socket (from the socket owner, the configured hints, or
//! the unit's command line and environment). Pure: every input is already gathered.

use crate::config::{BackendHint, UpstreamAddr};
use crate::facts::nginx::{NginxFacts, Pass, Target};
use crate::facts::sockets::{accepts, SocketFacts};
use crate::facts::units::UnitFacts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One location's pass target and the backends behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The first `server_name`, or `_` when the server has none.
    pub site: String,
    pub listen: Vec<String>,
    pub location: String,
    /// `proxy_pass`, `fastcgi_pass`, …
    pub directive: String,
    /// The target as written, normalised (`127.0.0.1:8000`, `unix:/run/x.sock`, `upstream web`).
    pub target: String,
    /// Where the pass directive stands, `file:line`.
    pub at: String,
    /// A target built from variables: nginx decides at run time, so it is never guessed.
    pub dynamic: bool,
    pub endpoints: Vec<Endpoint>,
    /// The pass directive itself, with its byte span for an exact rewrite.
    pub pass: Pass,
    /// Where a probe through nginx reaches this site's server block (dial address, TLS,
    /// `Host`), or why it cannot.
    pub aim: crate::facts::aim::Aim,
}

/// One address nginx dials for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `127.0.0.1:8000`, `[::1]:8000` or `unix:/path`.
    pub address: String,
    /// The name the configuration used, when it was not a literal address (`localhost`).
    pub host_name: Option<String>,
    pub listening: bool,
    /// The bound socket that accepts connections to `address` (`0.0.0.0:8000`).
    pub listener: Option<String>,
    pub pid: Option<i32>,
    pub unit: Option<String>,
    pub unit_from: Option<UnitSource>,
    /// Every socket the unit listens on, to compare with `address`.
    pub unit_listeners: Vec<String>,
    /// For an endpoint nothing listens on and no unit was known for: the evidence of the
    /// backend it was meant to reach, in rank order (a `backends:` hint, the last good
    /// configuration, the site's identity), each with the ports it names. The unit is the
    /// first one's; every port named is requested directly before planning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meant: Vec<Meant>,
}

/// One piece of evidence of the backend a typo'd port was meant to reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meant {
    pub from: UnitSource,
    pub unit: String,
    /// The TCP ports it names, none of them dialled by a site.
    pub ports: Vec<u16>,
    /// For [`UnitSource::SiteRoot`]: the unit's working directory and the site's root inside
    /// it, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<RootMatch>,
}

/// A site's `root` lying inside a unit's `WorkingDirectory` (see [`root_in_working_directory`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMatch {
    pub working_directory: String,
    pub root: String,
}

/// How the unit of an endpoint was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitSource {
    /// The unit (cgroup) of the process that owns the listening socket.
    SocketOwner,
    /// A `backends:` entry of the configuration.
    Hint,
    /// The unit's `ExecStart` or environment names the port or socket path.
    UnitCommandLine,
    /// A configuration file of the unit declares the address (a PHP-FPM pool's `listen`).
    UnitConfig,
    /// The unit owned the address's listening socket when the daemon last looked.
    LastOwner,
    /// The only service listening on the port, on another address than the dialled one.
    SamePortOwner,
    /// The service named like the site (its file, its `server_name`) that listens on a port no
    /// site dials: the backend of a typo'd port.
    SiteIdentity,
    /// The service whose `WorkingDirectory` holds one of the site's `root`s (the root is that
    /// directory or lies inside it) and that listens on a port no site dials: the backend of a
    /// typo'd port, by the files the site serves.
    SiteRoot,
    /// The unit of a `backends:` hint for the endpoint's host whose port no site dials while
    /// the unit listens there: the backend a typo'd port was meant to reach.
    UndialledHint,
    /// The unit listening now on the port this location dialled the last time a probe through
    /// nginx answered (the daemon's memory), a port no site dials now.
    LastGood,
}

/// Everything the mapping needs besides nginx's facts.
pub struct MappingInput<'a> {
    pub sockets: &'a SocketFacts,
    pub units: &'a [UnitFacts],
    /// Each unit's environment: `Environment=` plus its `EnvironmentFile=` contents.
    pub unit_env: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub hints: &'a [BackendHint],
    pub bindv6only: bool,
    /// Addresses declared in units' own configuration files (`unix:/path`, `host:port`,
    /// `*:port`), each with its unit.
    pub declared: &'a BTreeMap<String, String>,
    /// The unit that owned each address's listening socket when last seen (the daemon's
    /// memory), so a backend that just stopped is still known by its socket's last owner.
    pub remembered: &'a BTreeMap<String, String>,
    /// The addresses each location dialled the last time a probe through nginx answered.
    pub last_good: &'a crate::facts::last_good::LastGood,
}

/// The address a target names before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialled {
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

/// The upstream groups of a configuration by name, built once: expanding a pass target that
/// names a group does not scan every group (a configuration has thousands).
pub struct Groups<'a> {
    by_name: BTreeMap<&'a str, Vec<&'a crate::facts::nginx::Upstream>>,
}

impl<'a> Groups<'a> {
    pub fn of(nginx: &'a NginxFacts) -> Self {
        let mut by_name: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for u in &nginx.upstreams {
            by_name.entry(u.name.as_str()).or_default().push(u);
        }
        Groups { by_name }
    }

    /// The addresses nginx dials for `target` (upstream groups expanded), before name
    /// resolution.
    pub fn dialled(&self, target: &Target) -> Vec<Dialled> {
        match target {
            Target::Tcp { host, port, .. } => vec![Dialled::Tcp {
                host: host.clone(),
                port: *port,
            }],
            Target::Unix { path } => vec![Dialled::Unix {
                path: path.display().to_string(),
            }],
            Target::Upstream { name } => self
                .by_name
                .get(name.as_str())
                .into_iter()
                .flatten()
                .flat_map(|u| u.servers.iter())
                .flat_map(|s| self.dialled(&s.target))
                .collect(),
            Target::Dynamic { .. } => Vec::new(),
        }
    }
}

/// Builds every route of every site.
pub fn routes(
    nginx: &NginxFacts,
    input: &MappingInput<'_>,
    resolve: &dyn Fn(&str) -> Vec<IpAddr>,
) -> Vec<Route> {
    let mut routes = Vec::new();
    let groups = Groups::of(nginx);
    let dialled_ports = dialled_ports(nginx, &groups);
    let aims = crate::facts::aim::aims(&nginx.sites);
    for (site, aim) in nginx.sites.iter().zip(aims) {
        for location in &site.locations {
            let Some(pass) = &location.pass else { continue };
            let mut endpoints: Vec<Endpoint> = groups
                .dialled(&pass.target)
                .into_iter()
                .flat_map(|d| endpoints_of(&d, input, resolve))
                .collect();
            let site_name = site
                .server_names
                .first()
                .cloned()
                .unwrap_or_else(|| "_".into());
            let key = crate::facts::last_good::LocationKey {
                site: site_name.clone(),
                listen: site.listen.join("; "),
                location: location.path.clone(),
                file: pass.at.file.to_path_buf(),
            };
            let remembered = input.last_good.addresses(&key).unwrap_or_default();
            for e in endpoints
                .iter_mut()
                .filter(|e| e.unit.is_none() && !e.listening)
            {
                let identity = Identity {
                    names: site_names(site, &pass.at.file),
                    roots: &site.roots,
                };
                let meant = meant(input, &dialled_ports, &e.address, remembered, &identity);
                if let Some(first) = meant.first() {
                    set_unit(e, first.unit.clone(), first.from, input);
                }
                e.meant = meant;
            }
            routes.push(Route {
                site: site_name,
                listen: site.listen.clone(),
                location: location.path.clone(),
                directive: pass.directive.clone(),
                target: pass.target.to_string(),
                at: format!("{}:{}", pass.at.file.display(), pass.at.line),
                dynamic: matches!(pass.target, Target::Dynamic { .. }),
                endpoints,
                pass: pass.clone(),
                aim: aim.clone(),
            });
        }
    }
    routes
}

/// Every address any pass target of the configuration dials (upstream groups expanded).
pub fn all_dialled<'n>(
    nginx: &'n NginxFacts,
    groups: &'n Groups<'_>,
) -> impl Iterator<Item = Dialled> + 'n {
    nginx
        .sites
        .iter()
        .flat_map(|s| s.locations.iter())
        .filter_map(|l| l.pass.as_ref())
        .flat_map(|p| groups.dialled(&p.target))
}

/// Every TCP port any pass target of the configuration dials.
fn dialled_ports(nginx: &NginxFacts, groups: &Groups<'_>) -> std::collections::BTreeSet<u16> {
    all_dialled(nginx, groups)
        .filter_map(|d| match d {
            Dialled::Tcp { port, .. } => Some(port),
            Dialled::Unix { .. } => None,
        })
        .collect()
}

/// The names a site goes by, lower case: its file's name without extension
/// (`sites-enabled/api`, `conf.d/api.conf` → `api`) and the first label of each literal
/// `server_name` (`api.example.org` → `api`).
fn site_names(site: &crate::facts::nginx::Site, file: &std::path::Path) -> Vec<String> {
    let stem = file.file_stem().map(|s| s.to_string_lossy().to_lowercase());
    let labels = site
        .server_names
        .iter()
        .filter(|n| !n.starts_with(['~', '*', '.']) && n.as_str() != "_")
        .filter_map(|n| n.split('.').next())
        .map(str::to_lowercase);
    let mut names: Vec<String> = stem
        .into_iter()
        .chain(labels)
        .filter(|n| !n.is_empty() && n != "default")
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What a site is known by, to find the service it was meant to reach: its names
/// ([`site_names`]) and the `root`s it serves files from.
struct Identity<'s> {
    names: Vec<String>,
    roots: &'s [String],
}

/// A path as identity evidence: absolute and compared by components (`//`, `/./` and a
/// trailing `/` do not count), never `/` or empty. A relative path (nginx joins it to its
/// prefix), one with `..` (a symlink decides where it leads), a variable (`$document_root`)
/// or `~` (a user's home) is no evidence: `None`.
fn identity_path(raw: &str) -> Option<std::path::PathBuf> {
    use std::path::{Component, Path, PathBuf};
    if raw.contains('$') || !raw.starts_with('/') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(raw).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (out != Path::new("/")).then_some(out)
}

/// The rule of [`UnitSource::SiteRoot`]: a site's `root` names the application of a unit
/// whose `WorkingDirectory` is that root or an ancestor of it (`/srv/shop` holds
/// `/srv/shop/public`), both absolute and compared by whole components (`/srv/shop` does not
/// hold `/srv/shopping`); neither may be `/` or empty ([`identity_path`]). Only this way
/// round: a working directory inside a root (`/var/www` → `/var/www/api`) would let a broad
/// document root claim every application below it.
pub fn root_in_working_directory(root: &str, working_directory: &str) -> bool {
    match (identity_path(root), identity_path(working_directory)) {
        (Some(root), Some(dir)) => root.starts_with(dir),
        _ => false,
    }
}

/// The evidence of the backend a typo'd port at `address` was meant to reach, in rank order:
/// a `backends:` hint whose port no site dials while its unit listens there, the address the
/// location dialled the last time a probe answered (`remembered`: same host, a unit listens on
/// its port now, no site dials it), the services matching the site's identity (named like it,
/// or working in a directory that holds its root). Each source names a unit and the ports it
/// stands for: a hint's and an identity's unit all of its undialled ports, the last good
/// configuration its one port. Several services matching the identity are each listed
/// (`engine::evidence` refuses a port only they name).
fn meant(
    input: &MappingInput<'_>,
    dialled_ports: &std::collections::BTreeSet<u16>,
    address: &str,
    remembered: &[String],
    identity: &Identity<'_>,
) -> Vec<Meant> {
    let undialled_ports = |unit: &str| -> Vec<u16> {
        let cgroup = input
            .units
            .iter()
            .find(|u| u.name == unit)
            .and_then(|u| u.control_group.as_deref());
        let mut ports: Vec<u16> = listeners_of_unit(input.sockets, unit, cgroup)
            .iter()
            .filter_map(|l| match UpstreamAddr::parse(l)? {
                UpstreamAddr::Tcp { port, .. } => Some(port),
                UpstreamAddr::Unix { .. } => None,
            })
            .filter(|p| !dialled_ports.contains(p))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    };
    let mut out = Vec::new();
    if let Some(unit) = undialled_hint(input, dialled_ports, address) {
        let ports = undialled_ports(&unit);
        out.push(Meant {
            from: UnitSource::UndialledHint,
            unit,
            ports,
            root: None,
        });
    }
    if let Some((unit, port)) =
        last_good_candidate(input.sockets, dialled_ports, address, remembered)
    {
        out.push(Meant {
            from: UnitSource::LastGood,
            unit,
            ports: vec![port],
            root: None,
        });
    }
    for (unit, from, root) in identity_matches(input, dialled_ports, identity) {
        let ports = undialled_ports(&unit);
        out.push(Meant {
            from,
            unit,
            ports,
            root,
        });
    }
    out
}

/// The remembered address of a location that is a candidate for its typo'd port at `address`:
/// on the same host, a port no site dials now, on which one unit's process listens now (that
/// unit, and the port). An address of another host, a dialled port, a port nothing or no unit
/// listens on, or several remembered candidates: `None`, never a guess.
fn last_good_candidate(
    sockets: &SocketFacts,
    dialled_ports: &std::collections::BTreeSet<u16>,
    address: &str,
    remembered: &[String],
) -> Option<(String, u16)> {
    let Some(UpstreamAddr::Tcp { host, .. }) = UpstreamAddr::parse(address) else {
        return None;
    };
    let mut found: Vec<(String, u16)> = remembered
        .iter()
        .filter_map(|a| match UpstreamAddr::parse(a)? {
            UpstreamAddr::Tcp { host: h, port } if h == host => Some(port),
            _ => None,
        })
        .filter(|port| !dialled_ports.contains(port))
        .filter_map(|port| {
            let unit = the_one_unit(sockets.tcp_listeners_on(port), |u| u.ends_with(".service"))?;
            Some((unit, port))
        })
        .collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The services that listen on a TCP port no pass target dials and match the site's identity:
/// named like the site ([`UnitSource::SiteIdentity`]), else working in a directory that holds
/// one of its roots ([`UnitSource::SiteRoot`], with the pair that matched). Each service once,
/// by name; none: empty, never a guess.
fn identity_matches(
    input: &MappingInput<'_>,
    dialled_ports: &std::collections::BTreeSet<u16>,
    identity: &Identity<'_>,
) -> Vec<(String, UnitSource, Option<RootMatch>)> {
    let mut units: Vec<&str> = input
        .sockets
        .tcp
        .iter()
        .filter(|s| !dialled_ports.contains(&s.port))
        .filter_map(|s| s.main_owner()?.unit.as_deref())
        .filter(|u| u.ends_with(".service"))
        .collect();
    units.sort_unstable();
    units.dedup();
    units
        .into_iter()
        .filter_map(|unit| {
            let stem = unit.strip_suffix(".service")?.to_lowercase();
            if identity.names.contains(&stem) {
                return Some((unit.to_string(), UnitSource::SiteIdentity, None));
            }
            let dir = input
                .units
                .iter()
                .find(|u| u.name == unit)?
                .working_directory
                .as_deref()?;
            let root = identity
                .roots
                .iter()
                .find(|r| root_in_working_directory(r, dir))?;
            Some((
                unit.to_string(),
                UnitSource::SiteRoot,
                Some(RootMatch {
                    working_directory: dir.to_string(),
                    root: root.clone(),
                }),
            ))
        })
        .collect()
}

/// The one unit named by a `backends:` hint for `address`'s host whose port no pass target
/// dials and on which that unit listens now: the backend a typo'd port was meant to reach. A
/// hint without a unit, for another host, for a dialled port or for a port its unit does not
/// listen on is no evidence; two such hints: `None`, never a guess.
fn undialled_hint(
    input: &MappingInput<'_>,
    dialled_ports: &std::collections::BTreeSet<u16>,
    address: &str,
) -> Option<String> {
    let Some(UpstreamAddr::Tcp { host, .. }) = UpstreamAddr::parse(address) else {
        return None;
    };
    let mut units: Vec<&String> = input
        .hints
        .iter()
        .filter_map(|h| match &h.upstream {
            UpstreamAddr::Tcp { host: h_host, port } if *h_host == host => {
                Some((h.unit.as_ref()?, *port))
            }
            _ => None,
        })
        .filter(|(_, port)| !dialled_ports.contains(port))
        .filter(|(unit, port)| {
            input
                .sockets
                .tcp_listeners_on(*port)
                .any(|s| s.main_owner().and_then(|o| o.unit.as_deref()) == Some(unit.as_str()))
        })
        .map(|(unit, _)| unit)
        .collect();
    units.sort();
    units.dedup();
    match units.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// The one unit owning these sockets that passes `keep`; `None` for none or several.
fn the_one_unit<'s>(
    sockets: impl Iterator<Item = &'s crate::facts::sockets::TcpSocket>,
    keep: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut units: Vec<String> = sockets
        .filter_map(|s| s.main_owner()?.unit.clone())
        .filter(|u| keep(u))
        .collect();
    units.sort();
    units.dedup();
    match units.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

fn endpoints_of(
    dialled: &Dialled,
    input: &MappingInput<'_>,
    resolve: &dyn Fn(&str) -> Vec<IpAddr>,
) -> Vec<Endpoint> {
    match dialled {
        Dialled::Unix { path } => vec![unix_endpoint(path, input)],
        Dialled::Tcp { host, port } => {
            let (ips, host_name) = match host.parse::<IpAddr>() {
                Ok(ip) => (vec![ip], None),
                Err(_) => (resolve(host), Some(host.clone())),
            };
            ips.into_iter()
                .map(|ip| tcp_endpoint(ip, *port, host_name.clone(), input))
                .collect()
        }
    }
}

fn tcp_endpoint(
    ip: IpAddr,
    port: u16,
    host_name: Option<String>,
    input: &MappingInput<'_>,
) -> Endpoint {
    let address = UpstreamAddr::Tcp {
        host: ip.to_string(),
        port,
    }
    .to_string();
    let listener = input
        .sockets
        .tcp_listeners_on(port)
        .filter(|s| s.addr == ip || accepts(s.addr, ip, input.bindv6only))
        .min_by_key(|s| s.addr != ip);
    let bound = listener.map(|s| {
        UpstreamAddr::Tcp {
            host: s.addr.to_string(),
            port,
        }
        .to_string()
    });
    let mentions = |unit: &UnitFacts| mentions_port(unit, input.unit_env.get(&unit.name), port);
    let mut endpoint = endpoint(
        address,
        host_name,
        bound,
        listener.and_then(|s| s.main_owner()),
        input,
        &mentions,
    );
    if endpoint.unit.is_none() && listener.is_none() {
        if let Some(unit) = only_unit_on_port(input.sockets, port) {
            set_unit(&mut endpoint, unit, UnitSource::SamePortOwner, input);
        }
    }
    endpoint
}

/// The one service that listens on `port` (on addresses other than the dialled one, since
/// none accepts it): the backend bound to the wrong host, even when its settings cannot be
/// read. Two services, or none: `None`, never a guess.
fn only_unit_on_port(sockets: &SocketFacts, port: u16) -> Option<String> {
    the_one_unit(sockets.tcp_listeners_on(port), |u| u.ends_with(".service"))
}

fn unix_endpoint(path: &str, input: &MappingInput<'_>) -> Endpoint {
    let listener = input.sockets.unix_listener(path);
    let bound = listener.map(|s| format!("unix:{}", s.path));
    let mentions = |unit: &UnitFacts| mentions_path(unit, input.unit_env.get(&unit.name), path);
    let owner = listener.and_then(|s| s.main_owner());
    endpoint(format!("unix:{path}"), None, bound, owner, input, &mentions)
}

/// An endpoint with the socket that accepts it (`listener`, as `host:port` or `unix:path`), its
/// owning process, and the unit behind it.
fn endpoint(
    address: String,
    host_name: Option<String>,
    listener: Option<String>,
    owner: Option<&crate::facts::sockets::Owner>,
    input: &MappingInput<'_>,
    mentions: &dyn Fn(&UnitFacts) -> bool,
) -> Endpoint {
    let mut endpoint = Endpoint {
        address,
        host_name,
        listening: listener.is_some(),
        listener,
        pid: owner.map(|o| o.pid),
        unit: None,
        unit_from: None,
        unit_listeners: Vec::new(),
        meant: Vec::new(),
    };
    attribute_unit(
        &mut endpoint,
        owner.and_then(|o| o.unit.clone()),
        input,
        mentions,
    );
    endpoint
}

/// Fills in the unit: socket owner first, then a hint, then a unit whose command line names it.
fn attribute_unit(
    endpoint: &mut Endpoint,
    owner_unit: Option<String>,
    input: &MappingInput<'_>,
    mentions: &dyn Fn(&UnitFacts) -> bool,
) {
    let hinted = || {
        input.hints.iter().find_map(|h| {
            let same = h.upstream.to_string() == endpoint.address
                || endpoint
                    .host_name
                    .as_ref()
                    .is_some_and(|name| match &h.upstream {
                        UpstreamAddr::Tcp { host, port } => {
                            host == name && endpoint.address.ends_with(&format!(":{port}"))
                        }
                        UpstreamAddr::Unix { .. } => false,
                    });
            if same {
                h.unit.clone()
            } else {
                None
            }
        })
    };
    let found = owner_unit
        .filter(|u| u.ends_with(".service"))
        .map(|u| (u, UnitSource::SocketOwner))
        .or_else(|| hinted().map(|u| (u, UnitSource::Hint)))
        .or_else(|| {
            input
                .remembered
                .get(&endpoint.address)
                .map(|u| (u.clone(), UnitSource::LastOwner))
        })
        .or_else(|| {
            let port = endpoint.address.rsplit_once(':').map(|(_, p)| p);
            let any_host = port.map(|p| format!("*:{p}"));
            input
                .declared
                .get(&endpoint.address)
                .or_else(|| any_host.and_then(|a| input.declared.get(&a)))
                .map(|u| (u.clone(), UnitSource::UnitConfig))
        })
        .or_else(|| {
            let mut matching = input.units.iter().filter(|u| mentions(u));
            match (matching.next(), matching.next()) {
                (Some(unit), None) => Some((unit.name.clone(), UnitSource::UnitCommandLine)),
                _ => None, // none, or ambiguous: never guessed
            }
        });
    if let Some((unit, from)) = found {
        set_unit(endpoint, unit, from, input);
    }
}

fn set_unit(endpoint: &mut Endpoint, unit: String, from: UnitSource, input: &MappingInput<'_>) {
    let cgroup = input
        .units
        .iter()
        .find(|u| u.name == unit)
        .and_then(|u| u.control_group.as_deref());
    endpoint.unit_listeners = listeners_of_unit(input.sockets, &unit, cgroup);
    endpoint.unit = Some(unit);
    endpoint.unit_from = Some(from);
}

/// Every socket whose owning process belongs to `unit` — matched by cgroup when the manager
/// reported one (unit names repeat across managers), else by name.
pub fn listeners_of_unit(sockets: &SocketFacts, unit: &str, cgroup: Option<&str>) -> Vec<String> {
    let of_unit = |owner: Option<&crate::facts::sockets::Owner>| match (owner, cgroup) {
        (Some(o), Some(cg)) => o.unit_cgroup.as_deref() == Some(cg),
        (Some(o), None) => o.unit.as_deref() == Some(unit),
        (None, _) => false,
    };
    let tcp = sockets
        .tcp
        .iter()
        .filter(|s| of_unit(s.main_owner()))
        .map(|s| {
            UpstreamAddr::Tcp {
                host: s.addr.to_string(),
                port: s.port,
            }
            .to_string()
        });
    let unix = sockets
        .unix
        .iter()
        .filter(|s| of_unit(s.main_owner()))
        .map(|s| format!("unix:{}", s.path));
    let mut all: Vec<String> = tcp.chain(unix).collect();
    all.sort();
    all.dedup();
    all
}

/// The unit's `ExecStart` words with `${VAR}` and `$VAR` expanded from its environment.
pub fn expanded_argv(unit: &UnitFacts, env: Option<&BTreeMap<String, String>>) -> Vec<String> {
    let empty = BTreeMap::new();
    let env = env.unwrap_or(&empty);
    unit.exec_start
        .iter()
        .flat_map(|c| c.argv.iter())
        .map(|word| expand(word, env))
        .collect()
}

fn expand(word: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match env.get(name) {
            Some(value) if !name.is_empty() => out.push_str(value),
            _ => out.push_str(&rest[i..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Whether the unit's command line or environment names `port` as the one it listens on.
fn mentions_port(unit: &UnitFacts, env: Option<&BTreeMap<String, String>>, port: u16) -> bool {
    let port = port.to_string();
    let argv = expanded_argv(unit, env);
    let in_argv = argv.iter().enumerate().any(|(i, word)| {
        let after_flag = i > 0
            && matches!(
                argv.get(i - 1).map(String::as_str),
                Some("--port" | "-p" | "--listen" | "--bind" | "-b")
            );
        (after_flag && word == &port)
            || word.strip_prefix("--port=") == Some(port.as_str())
            || word.rsplit_once(':').is_some_and(|(_, p)| p == port)
    });
    let in_env = env.is_some_and(|env| {
        env.iter()
            .any(|(k, v)| k.ends_with("PORT") && v.trim() == port)
    });
    in_argv || in_env
}

/// Whether the unit's command line or environment names the socket `path`.
fn mentions_path(unit: &UnitFacts, env: Option<&BTreeMap<String, String>>, path: &str) -> bool {
    let named = |w: &str| {
        w == path || w.ends_with(&format!("unix:{path}")) || w.ends_with(&format!("={path}"))
    };
    expanded_argv(unit, env).iter().any(|w| named(w))
        || env.is_some_and(|env| env.values().any(|v| named(v.trim())))
}

/// Parses `KEY=value` lines as systemd's `EnvironmentFile=` does (comments, quotes, `export`).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.trim().to_string(), unquoted.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::units::ExecCommand;

    fn unit(argv: &[&str]) -> UnitFacts {
        UnitFacts {
            name: "api.service".into(),
            load_state: "loaded".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            result: Some("success".into()),
            main_pid: 0,
            n_restarts: Some(0),
            exec_start: vec![ExecCommand {
                path: argv[0].into(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ignore_failure: false,
            }],
            fragment_path: None,
            environment_files: Vec::new(),
            environment: Vec::new(),
            control_group: None,
            working_directory: None,
            active_enter_timestamp: 0,
            run: Default::default(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn listening(sockets: &[(&str, u16, &str)]) -> SocketFacts {
        SocketFacts {
            tcp: sockets
                .iter()
                .enumerate()
                .map(|(i, (addr, port, unit))| crate::facts::sockets::TcpSocket {
                    addr: addr.parse().unwrap(),
                    port: *port,
                    inode: i as u64,
                    owners: vec![crate::facts::sockets::Owner {
                        pid: 100 + i as i32,
                        ppid: 1,
                        comm: "x".into(),
                        cmdline: Vec::new(),
                        unit: Some(unit.to_string()),
                        unit_cgroup: None,
                    }],
                })
                .collect(),
            unix: Vec::new(),
            skipped_lines: 0,
        }
    }

    #[test]
    fn a_hint_for_a_port_no_site_dials_names_the_backend_of_a_typod_port() {
        let sockets = listening(&[
            ("127.0.0.1", 18021, "shop.service"),
            ("127.0.0.1", 18010, "api.service"),
        ]);
        let hint = |addr: &str, unit: Option<&str>| BackendHint {
            upstream: UpstreamAddr::parse(addr).unwrap(),
            unit: unit.map(String::from),
            bind: None,
            heal: true,
        };
        let (env, none): (
            BTreeMap<String, BTreeMap<String, String>>,
            BTreeMap<String, String>,
        ) = (BTreeMap::new(), BTreeMap::new());
        let memory = crate::facts::last_good::LastGood::empty();
        let input = |hints: &'static [BackendHint]| MappingInput {
            sockets: &sockets,
            units: &[],
            unit_env: &env,
            hints,
            bindv6only: false,
            declared: &none,
            remembered: &none,
            last_good: &memory,
        };
        let dialled: std::collections::BTreeSet<u16> = [18010, 18022].into();
        let hints: &'static [BackendHint] =
            Box::leak(vec![hint("127.0.0.1:18021", Some("shop.service"))].into_boxed_slice());
        assert_eq!(
            undialled_hint(&input(hints), &dialled, "127.0.0.1:18022").as_deref(),
            Some("shop.service")
        );
        assert_eq!(
            undialled_hint(&input(hints), &dialled, "[::1]:18022"),
            None,
            "a hint for another host"
        );
        let dialled_too: std::collections::BTreeSet<u16> = [18010, 18021, 18022].into();
        assert_eq!(
            undialled_hint(&input(hints), &dialled_too, "127.0.0.1:18022"),
            None,
            "another site dials it"
        );
        let not_listening: &'static [BackendHint] =
            Box::leak(vec![hint("127.0.0.1:18030", Some("shop.service"))].into_boxed_slice());
        assert_eq!(
            undialled_hint(&input(not_listening), &dialled, "127.0.0.1:18022"),
            None
        );
        let wrong_unit: &'static [BackendHint] =
            Box::leak(vec![hint("127.0.0.1:18021", Some("web.service"))].into_boxed_slice());
        assert_eq!(
            undialled_hint(&input(wrong_unit), &dialled, "127.0.0.1:18022"),
            None
        );
        let no_unit: &'static [BackendHint] =
            Box::leak(vec![hint("127.0.0.1:18021", None)].into_boxed_slice());
        assert_eq!(
            undialled_hint(&input(no_unit), &dialled, "127.0.0.1:18022"),
            None
        );
    }

    #[test]
    fn the_last_good_address_is_a_candidate_only_on_the_same_host_listened_and_undialled() {
        let sockets = listening(&[
            ("127.0.0.1", 18016, "storefront.service"),
            ("127.0.0.1", 18010, "api.service"),
            ("127.0.0.1", 18030, "session-4.scope"),
        ]);
        let dialled: std::collections::BTreeSet<u16> = [18010, 18018].into();
        let good = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let found = |remembered: &[String], at: &str, dialled| {
            last_good_candidate(&sockets, dialled, at, remembered)
        };
        assert_eq!(
            found(&good(&["127.0.0.1:18016"]), "127.0.0.1:18018", &dialled),
            Some(("storefront.service".to_string(), 18016))
        );
        assert_eq!(
            found(&good(&["[::1]:18016"]), "127.0.0.1:18018", &dialled),
            None,
            "another host"
        );
        assert_eq!(
            found(&good(&["127.0.0.1:18017"]), "127.0.0.1:18018", &dialled),
            None,
            "nothing listens there now"
        );
        assert_eq!(
            found(&good(&["127.0.0.1:18010"]), "127.0.0.1:18018", &dialled),
            None,
            "another site dials it"
        );
        assert_eq!(
            found(&good(&["127.0.0.1:18030"]), "127.0.0.1:18018", &dialled),
            None,
            "no service listens there"
        );
        assert_eq!(
            found(&good(&["unix:/run/x.sock"]), "127.0.0.1:18018", &dialled),
            None
        );
        let dialled_too: std::collections::BTreeSet<u16> = [18010, 18016, 18018].into();
        assert_eq!(
            found(&good(&["127.0.0.1:18016"]), "127.0.0.1:18018", &dialled_too),
            None,
            "a site dials it now"
        );
        // an upstream group's two remembered servers both listened on: never a guess
        let two = listening(&[
            ("127.0.0.1", 18016, "a.service"),
            ("127.0.0.1", 18017, "b.service"),
        ]);
        assert_eq!(
            last_good_candidate(
                &two,
                &dialled,
                "127.0.0.1:18018",
                &good(&["127.0.0.1:18016", "127.0.0.1:18017"])
            ),
            None
        );
    }

    #[test]
    fn the_evidence_of_a_typod_port_ranks_hint_then_last_good_then_identity() {
        let sockets = listening(&[
            ("127.0.0.1", 18016, "storefront.service"),
            ("127.0.0.1", 18017, "storefront.service"),
            ("127.0.0.1", 18021, "cart.service"),
            ("127.0.0.1", 18022, "shop.service"),
            ("127.0.0.1", 18010, "api.service"),
        ]);
        let (env, none): (
            BTreeMap<String, BTreeMap<String, String>>,
            BTreeMap<String, String>,
        ) = (BTreeMap::new(), BTreeMap::new());
        let hints = vec![BackendHint {
            upstream: UpstreamAddr::parse("127.0.0.1:18021").unwrap(),
            unit: Some("cart.service".into()),
            bind: None,
            heal: true,
        }];
        let memory = crate::facts::last_good::LastGood::empty();
        let input = |hints| MappingInput {
            sockets: &sockets,
            units: &[],
            unit_env: &env,
            hints,
            bindv6only: false,
            declared: &none,
            remembered: &none,
            last_good: &memory,
        };
        let dialled: std::collections::BTreeSet<u16> = [18010, 18018].into();
        let remembered = vec!["127.0.0.1:18016".to_string()];
        let shop = Identity {
            names: vec!["shop".to_string()],
            roots: &[],
        };
        let nobody = Identity {
            names: Vec::new(),
            roots: &[],
        };
        let sources = |m: Vec<Meant>| {
            m.into_iter()
                .map(|m| (m.from, m.unit, m.ports))
                .collect::<Vec<_>>()
        };
        // every source, in rank order: the unit is the hint's, every port is listed
        let all = meant(
            &input(&hints),
            &dialled,
            "127.0.0.1:18018",
            &remembered,
            &shop,
        );
        assert_eq!(
            sources(all),
            vec![
                (
                    UnitSource::UndialledHint,
                    "cart.service".into(),
                    vec![18021]
                ),
                (
                    UnitSource::LastGood,
                    "storefront.service".into(),
                    vec![18016]
                ),
                (UnitSource::SiteIdentity, "shop.service".into(), vec![18022]),
            ]
        );
        // no hint and no unit named like the site: the last good configuration alone, its
        // one port (not the unit's other one)
        let alone = meant(
            &input(&[]),
            &dialled,
            "127.0.0.1:18018",
            &remembered,
            &nobody,
        );
        assert_eq!(
            sources(alone),
            vec![(
                UnitSource::LastGood,
                "storefront.service".into(),
                vec![18016]
            )]
        );
        assert!(meant(&input(&[]), &dialled, "127.0.0.1:18018", &[], &nobody).is_empty());
    }

    #[test]
    fn a_typod_port_is_attributed_from_the_last_good_configuration() {
        let sockets = listening(&[("127.0.0.1", 18016, "storefront.service")]);
        let (env, none): (
            BTreeMap<String, BTreeMap<String, String>>,
            BTreeMap<String, String>,
        ) = (BTreeMap::new(), BTreeMap::new());
        let file = std::path::PathBuf::from("/etc/nginx/sites-enabled/shop.conf");
        let mut memory = crate::facts::last_good::LastGood::empty();
        let key = crate::facts::last_good::LocationKey {
            site: "shop.lab".into(),
            listen: "127.0.0.1:18007".into(),
            location: "/".into(),
            file: file.clone(),
        };
        memory.answered(&key, &["127.0.0.1:18016".to_string()].into(), 1);
        let at = crate::facts::nginx::At {
            file: file.as_path().into(),
            line: 5,
            col: 9,
            start: 0,
            end: 0,
        };
        let nginx = NginxFacts {
            sites: vec![crate::facts::nginx::Site {
                server_names: vec!["shop.lab".into()],
                listen: vec!["127.0.0.1:18007".into()],
                listeners: Vec::new(),
                at: at.clone(),
                roots: Vec::new(),
                locations: vec![crate::facts::nginx::Location {
                    path: "/".into(),
                    at: at.clone(),
                    pass: Some(Pass {
                        directive: "proxy_pass".into(),
                        raw: "http://127.0.0.1:18018".into(),
                        target: Target::Tcp {
                            host: "127.0.0.1".into(),
                            port: 18018,
                            scheme: Some("http".into()),
                        },
                        at: at.clone(),
                        arg: at,
                    }),
                    settings: Default::default(),
                }],
            }],
            conf: "/etc/nginx/nginx.conf".into(),
            files: Vec::new(),
            user: None,
            error_logs: Vec::new(),
            upstreams: Vec::new(),
        };
        let input = MappingInput {
            sockets: &sockets,
            units: &[],
            unit_env: &env,
            hints: &[],
            bindv6only: false,
            declared: &none,
            remembered: &none,
            last_good: &memory,
        };
        let routes = routes(&nginx, &input, &|_| Vec::new());
        let e = &routes[0].endpoints[0];
        assert_eq!(e.unit.as_deref(), Some("storefront.service"));
        assert_eq!(e.unit_from, Some(UnitSource::LastGood));
        let dialled: std::collections::BTreeSet<u16> = [18018].into();
        assert_eq!(
            crate::facts::direct::candidate_ports(e, &dialled),
            vec![18016]
        );
        // another location of the same site remembers nothing
        let forgotten = crate::facts::last_good::LastGood::empty();
        let input = MappingInput {
            last_good: &forgotten,
            ..input
        };
        let routes = super::routes(&nginx, &input, &|_| Vec::new());
        assert_eq!(routes[0].endpoints[0].unit, None);
    }

    #[test]
    fn the_only_service_on_the_port_is_the_backend_of_another_host() {
        let one = listening(&[
            ("127.0.0.2", 8007, "app.service"),
            ("127.0.0.1", 9000, "x.service"),
        ]);
        assert_eq!(
            only_unit_on_port(&one, 8007).as_deref(),
            Some("app.service")
        );
        assert_eq!(only_unit_on_port(&one, 8008), None);
        let two = listening(&[
            ("127.0.0.2", 8007, "a.service"),
            ("10.0.0.2", 8007, "b.service"),
        ]);
        assert_eq!(only_unit_on_port(&two, 8007), None, "two: never a guess");
        let scope = listening(&[("127.0.0.2", 8007, "session-1.scope")]);
        assert_eq!(only_unit_on_port(&scope, 8007), None, "services only");
    }

    /// `identity_matches` over these sockets and units (`(name, WorkingDirectory)`), for a
    /// site known by `names` and `roots`: each match as `(unit, source)`.
    fn matched(
        sockets: &SocketFacts,
        units: &[(&str, &str)],
        dialled: &[u16],
        names: &[&str],
        roots: &[&str],
    ) -> Vec<(String, UnitSource)> {
        let units: Vec<UnitFacts> = units
            .iter()
            .map(|(name, dir)| UnitFacts {
                name: name.to_string(),
                working_directory: Some(dir.to_string()),
                ..UnitFacts::default()
            })
            .collect();
        let (env, none) = (BTreeMap::new(), BTreeMap::new());
        let memory = crate::facts::last_good::LastGood::empty();
        let input = MappingInput {
            sockets,
            units: &units,
            unit_env: &env,
            hints: &[],
            bindv6only: false,
            declared: &none,
            remembered: &none,
            last_good: &memory,
        };
        let roots: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
        let identity = Identity {
            names: names.iter().map(|n| n.to_string()).collect(),
            roots: &roots,
        };
        let dialled: std::collections::BTreeSet<u16> = dialled.iter().copied().collect();
        identity_matches(&input, &dialled, &identity)
            .into_iter()
            .map(|(unit, from, _)| (unit, from))
            .collect()
    }

    #[test]
    fn a_typod_port_finds_the_service_named_like_the_site_on_an_undialled_port() {
        let sockets = listening(&[
            ("127.0.0.1", 8000, "api.service"),
            ("127.0.0.1", 8001, "web.service"),
            ("127.0.0.1", 9187, "nginx-medic.service"),
        ]);
        let api = vec![("api.service".to_string(), UnitSource::SiteIdentity)];
        assert_eq!(matched(&sockets, &[], &[8010, 8001], &["api"], &[]), api);
        // a port another site dials is never taken
        assert!(matched(&sockets, &[], &[8010, 8000, 8001], &["api"], &[]).is_empty());
        // a unit that is not named like the site is never taken
        assert!(matched(&sockets, &[], &[8010], &["shop"], &[]).is_empty());
        // two services named like the site: both, for the evidence to refuse
        let two = listening(&[
            ("127.0.0.1", 8000, "api.service"),
            ("127.0.0.1", 8002, "API.service"),
        ]);
        assert_eq!(matched(&two, &[], &[8010], &["api"], &[]).len(), 2);
    }

    #[test]
    fn a_root_matches_a_working_directory_that_is_it_or_holds_it() {
        let holds = root_in_working_directory;
        assert!(holds("/srv/shop/public", "/srv/shop"));
        assert!(holds("/srv/shop", "/srv/shop"));
        assert!(
            holds("/srv/shop/", "/srv//shop/."),
            "compared by components"
        );
        assert!(holds("/srv/./shop/static/", "/srv/shop/"));
        assert!(
            !holds("/srv/shopping", "/srv/shop"),
            "whole components only"
        );
        assert!(
            !holds("/srv/shop", "/srv/shop/public"),
            "only the root inside"
        );
        assert!(!holds("/srv/shop", "/"), "never `/`");
        assert!(!holds("/", "/"));
        assert!(!holds("", "/srv"), "never empty");
        assert!(!holds("/srv/shop", ""));
        assert!(
            !holds("html", "/usr/share/nginx"),
            "a relative root is nginx's prefix"
        );
        assert!(!holds("/srv/shop/public", "~"), "a home is not known here");
        assert!(
            !holds("/srv/other/../shop", "/srv/shop"),
            "`..` is no evidence"
        );
        assert!(
            !holds("/srv/$host/public", "/srv"),
            "a variable is no evidence"
        );
    }

    #[test]
    fn a_typod_port_finds_the_service_working_where_the_site_serves_from() {
        let sockets = listening(&[
            ("127.0.0.1", 18016, "storefront.service"),
            ("127.0.0.1", 18017, "storefront.service"),
            ("127.0.0.1", 18020, "cart.service"),
            ("127.0.0.1", 18010, "api.service"),
        ]);
        let units = [
            ("storefront.service", "/srv/shop"),
            ("cart.service", "/srv/cart"),
            ("api.service", "/srv/shop"),
        ];
        let storefront = vec![("storefront.service".to_string(), UnitSource::SiteRoot)];
        // api.service works there too, but on a port a site dials
        assert_eq!(
            matched(
                &sockets,
                &units,
                &[18010, 18018],
                &["shop"],
                &["/srv/shop/public/"]
            ),
            storefront
        );
        // a location-level root counts as much as the server's
        assert_eq!(
            matched(
                &sockets,
                &units,
                &[18010, 18018],
                &[],
                &["html", "/srv/shop/media"]
            ),
            storefront
        );
        assert!(matched(&sockets, &units, &[18010, 18018], &[], &["/srv/shopping"]).is_empty());
        assert!(matched(&sockets, &units, &[18010, 18018], &[], &[]).is_empty());
        // a unit named like the site and another working where it serves from: both
        let both = matched(&sockets, &units, &[18010, 18018], &["cart"], &["/srv/shop"]);
        assert_eq!(
            both,
            vec![
                ("cart.service".to_string(), UnitSource::SiteIdentity),
                ("storefront.service".to_string(), UnitSource::SiteRoot),
            ]
        );
        // two services working in a directory that holds the root: both
        let shared = [
            ("storefront.service", "/srv"),
            ("cart.service", "/srv/shop"),
        ];
        assert_eq!(
            matched(
                &sockets,
                &shared,
                &[18010, 18018],
                &[],
                &["/srv/shop/public"]
            )
            .len(),
            2
        );
        // a working directory of `/` matches nothing
        let everywhere = [("storefront.service", "/")];
        assert!(matched(&sockets, &everywhere, &[18010], &[], &["/srv/shop"]).is_empty());
    }

    #[test]
    fn a_site_goes_by_its_file_name_and_its_server_names() {
        let site = crate::facts::nginx::Site {
            server_names: vec!["API.example.org".into(), "~^re".into(), "_".into()],
            listen: Vec::new(),
            listeners: Vec::new(),
            at: crate::facts::nginx::At {
                file: std::path::Path::new("/etc/nginx/sites-enabled/shop").into(),
                line: 1,
                col: 1,
                start: 0,
                end: 0,
            },
            locations: Vec::new(),
            roots: Vec::new(),
        };
        assert_eq!(
            site_names(&site, std::path::Path::new("/etc/nginx/sites-enabled/shop")),
            vec!["api".to_string(), "shop".to_string()]
        );
        assert_eq!(
            site_names(
                &site,
                std::path::Path::new("/etc/nginx/conf.d/default.conf")
            ),
            vec!["api".to_string()]
        );
    }

    #[test]
    fn expands_braced_and_bare_variables() {
        let e = env(&[("HOST", "127.0.0.1"), ("PORT", "8000")]);
        assert_eq!(expand("${HOST}:$PORT", &e), "127.0.0.1:8000");
        assert_eq!(expand("$MISSING/x", &e), "$MISSING/x");
        assert_eq!(expand("${open", &e), "${open");
    }

    #[test]
    fn finds_ports_in_uvicorn_gunicorn_and_env() {
        let uvicorn = unit(&[
            "/v/uvicorn",
            "app:app",
            "--host",
            "${HOST}",
            "--port",
            "${PORT}",
        ]);
        let e = env(&[("HOST", "127.0.0.1"), ("PORT", "8000")]);
        assert!(mentions_port(&uvicorn, Some(&e), 8000));
        assert!(!mentions_port(&uvicorn, Some(&e), 8001));
        let gunicorn = unit(&["/v/gunicorn", "--bind", "127.0.0.1:9000", "app.wsgi"]);
        assert!(mentions_port(&gunicorn, None, 9000));
        let node = unit(&["/usr/bin/node", "/srv/web.js"]);
        assert!(mentions_port(&node, Some(&env(&[("PORT", "3000")])), 3000));
        assert!(!mentions_port(&node, None, 3000));
    }

    #[test]
    fn finds_socket_paths() {
        let g = unit(&["/v/gunicorn", "--bind", "unix:/run/app.sock", "app.wsgi"]);
        assert!(mentions_path(&g, None, "/run/app.sock"));
        assert!(!mentions_path(&g, None, "/run/other.sock"));
    }

    #[test]
    fn env_files_parse_like_systemd() {
        let parsed =
            parse_env_file("# c\nHOST=127.0.0.1\nexport PORT=\"8000\"\n\nNAME='x y'\nbad line\n");
        assert_eq!(
            parsed,
            vec![
                ("HOST".into(), "127.0.0.1".into()),
                ("PORT".into(), "8000".into()),
                ("NAME".into(), "x y".into())
            ]
        );
    }
}
