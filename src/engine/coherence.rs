//! One coherent change for the host: the findings' fixes grouped by what they change (a
//! backend's bind, a site's pass target, a unit's state) before the plan is built, so that no
//! fix undoes another. Pure: it reads the targets and what each finding's actions would change,
//! and decides which findings act, which are covered by another's fix, which conflict, and which
//! restarts of one upstream group form one transaction that ends with a reset of the group.
//!
//! The bind rule: every site reaching a backend's port dials a set of addresses (a `localhost`
//! that resolves to both families, an upstream group's servers, a literal). A rebind of the
//! backend to host `h` keeps a site working only when the site dials `h` (nginx fails over to
//! the next address of a name or a group). So the rebind chosen is one to a host that every
//! site reaching that port dials; a pin of one of those sites to the old address is covered by
//! it (the site dials the new address already). When no host is dialled by every site, no
//! rebind heals them all: the rebind is a conflict, reported with both sides, and not done.

use super::context::Target;
use super::evaluate::Finding;
use crate::config::UpstreamAddr;
use crate::facts::nginx::Target as PassTarget;
use std::collections::{BTreeMap, BTreeSet};

/// What one finding's actions change, as far as other sites can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The backend `unit` will listen on `host` (on `port`) only.
    Bind {
        unit: String,
        host: String,
        port: u16,
    },
    /// The pass directive at `route` (`Route::at`) will dial these addresses (`host:port`).
    Pass { route: String, dials: Vec<String> },
    /// `unit` is started or restarted.
    UnitState { unit: String },
}

/// What becomes of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its actions are planned.
    Act,
    /// Another finding's fix (`by`) heals its target too: nothing of its own is planned.
    Covered { by: usize, why: String },
    /// Its fix would break another site, and no fix serves both: nothing is planned.
    Conflict(String),
}

/// Restarts of the servers of one upstream group whose servers were all down, planned as one
/// transaction that resets nginx's failure state of the group (a reload) before its probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReset {
    pub upstream: String,
    /// The findings joined, in plan order; the first one names the transaction.
    pub findings: Vec<usize>,
}

/// The decisions over all findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decisions {
    /// One per finding, same order.
    pub verdicts: Vec<Verdict>,
    pub resets: Vec<GroupReset>,
}

/// Decides over the findings: `changes[i]` is what finding `i` would change when acted on
/// alone (empty for a finding that is not acted on). `may_reload`: nginx may be reloaded
/// (false while `nginx -t` fails on the file on disk).
pub fn decide(
    targets: &[Target],
    findings: &[Finding],
    changes: &[Vec<Change>],
    may_reload: bool,
) -> Decisions {
    let mut verdicts = vec![Verdict::Act; findings.len()];
    decide_binds(targets, findings, changes, &mut verdicts);
    let resets = if may_reload {
        group_resets(targets, findings, changes, &verdicts)
    } else {
        Vec::new()
    };
    for reset in &resets {
        let Some((first, rest)) = reset.findings.split_first() else {
            continue;
        };
        let head = label(findings, *first);
        for i in rest {
            if let Some(v) = verdicts.get_mut(*i) {
                *v = Verdict::Covered {
                    by: *first,
                    why: format!(
                        "restarted in one transaction with {head}, then `{}` is reset by a reload",
                        reset.upstream
                    ),
                };
            }
        }
    }
    Decisions { verdicts, resets }
}

/// `cause on site location -> upstream`, to name a finding in a sentence.
fn label(findings: &[Finding], i: usize) -> String {
    findings.get(i).map_or_else(String::new, |f| {
        format!("{} on {} {} -> {}", f.cause, f.site, f.location, f.upstream)
    })
}

/// One site's pass directive reaching a backend's port: what it dials there now.
#[derive(Debug, Default)]
struct Reach {
    site: String,
    hosts: BTreeSet<String>,
}

fn host_port(address: &str) -> Option<(String, u16)> {
    match UpstreamAddr::parse(address)? {
        UpstreamAddr::Tcp { host, port } => Some((host, port)),
        UpstreamAddr::Unix { .. } => None,
    }
}

/// Every pass directive that reaches `unit` on `port`, with the hosts it dials there.
fn reach(targets: &[Target], unit: &str, port: u16) -> BTreeMap<String, Reach> {
    let mut out: BTreeMap<String, Reach> = BTreeMap::new();
    for t in targets {
        let Some((host, p)) = host_port(&t.endpoint.address) else {
            continue;
        };
        if p != port || t.endpoint.unit.as_deref() != Some(unit) {
            continue;
        }
        let r = out.entry(t.route.at.clone()).or_default();
        r.site = format!("{} {}", t.route.site, t.route.location);
        r.hosts.insert(host);
    }
    out
}

fn decide_binds(
    targets: &[Target],
    findings: &[Finding],
    changes: &[Vec<Change>],
    verdicts: &mut [Verdict],
) {
    // (unit, port) → the findings that rebind it, with the host
    let mut binds: BTreeMap<(String, u16), Vec<(usize, String)>> = BTreeMap::new();
    // route → the findings that point it elsewhere, with the addresses
    let mut pins: BTreeMap<String, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    for (i, list) in changes.iter().enumerate() {
        for change in list {
            match change {
                Change::Bind { unit, host, port } => binds
                    .entry((unit.clone(), *port))
                    .or_default()
                    .push((i, host.clone())),
                Change::Pass { route, dials } => pins
                    .entry(route.clone())
                    .or_default()
                    .push((i, dials.clone())),
                Change::UnitState { .. } => {}
            }
        }
    }
    for ((unit, port), proposed) in &binds {
        let reached = reach(targets, unit, *port);
        let pinned_to = |route: &str, host: &str| {
            pins.get(route).is_some_and(|list| {
                list.iter().any(|(_, dials)| {
                    dials
                        .iter()
                        .any(|d| host_port(d) == Some((host.to_string(), *port)))
                })
            })
        };
        let serves_all = |host: &str| {
            reached
                .iter()
                .all(|(route, r)| r.hosts.contains(host) || pinned_to(route, host))
        };
        let chosen = proposed.iter().find(|(_, host)| serves_all(host));
        match chosen {
            Some((winner, host)) => {
                let because = format!(
                    "{} rebinds {unit} to {}, an address every site reaching it dials",
                    label(findings, *winner),
                    bracketed(host, *port)
                );
                for (i, _) in proposed.iter().filter(|(i, _)| i != winner) {
                    set(
                        verdicts,
                        *i,
                        Verdict::Covered {
                            by: *winner,
                            why: because.clone(),
                        },
                    );
                }
                for route in reached.keys() {
                    for (i, dials) in pins.get(route).into_iter().flatten() {
                        let keeps = dials
                            .iter()
                            .any(|d| host_port(d) == Some((host.clone(), *port)));
                        if !keeps && i != winner {
                            set(
                                verdicts,
                                *i,
                                Verdict::Covered {
                                    by: *winner,
                                    why: because.clone(),
                                },
                            );
                        }
                    }
                }
            }
            None => {
                for (i, host) in proposed {
                    let left: Vec<String> = reached
                        .values()
                        .filter(|r| !r.hosts.contains(host))
                        .map(|r| {
                            let dials: Vec<String> =
                                r.hosts.iter().map(|h| bracketed(h, *port)).collect();
                            format!("`{}` dials {}", r.site, dials.join(", "))
                        })
                        .collect();
                    set(
                        verdicts,
                        *i,
                        Verdict::Conflict(format!(
                            "conflict: rebinding {unit} to {} would serve this site but not {}; no one bind address serves every site reaching {unit}, so nothing is changed (bind the backend to both addresses, or point the sites at one)",
                            bracketed(host, *port),
                            left.join(" and ")
                        )),
                    );
                }
            }
        }
    }
}

fn set(verdicts: &mut [Verdict], i: usize, verdict: Verdict) {
    if let Some(v) = verdicts.get_mut(i) {
        if *v == Verdict::Act {
            *v = verdict;
        }
    }
}

/// `127.0.0.1:8000`, `[::1]:8000`.
fn bracketed(host: &str, port: u16) -> String {
    UpstreamAddr::Tcp {
        host: host.to_string(),
        port,
    }
    .to_string()
}

/// The upstream groups (of several peers) none of whose servers listens, that acting findings
/// restart servers of: those findings form one transaction that ends with a reset of the group.
/// A group with a live server left is not reset: nginx keeps using that server meanwhile.
fn group_resets(
    targets: &[Target],
    findings: &[Finding],
    changes: &[Vec<Change>],
    verdicts: &[Verdict],
) -> Vec<GroupReset> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        if !f.conclusive || verdicts.get(i) != Some(&Verdict::Act) {
            continue;
        }
        let restarts = changes
            .get(i)
            .is_some_and(|c| c.iter().any(|c| matches!(c, Change::UnitState { .. })));
        let Some(target) = targets.get(f.target) else {
            continue;
        };
        // nginx keeps failure state only for a group of several peers (a single peer is
        // always tried): an `upstream` block, or a name resolving to several addresses.
        let endpoints = &target.route.endpoints;
        let all_down = endpoints.len() >= 2 && endpoints.iter().all(|e| !e.listening);
        if restarts && all_down {
            groups.entry(group_of(target)).or_default().push(i);
        }
        for (unit, port) in changes
            .get(i)
            .into_iter()
            .flatten()
            .filter_map(|c| match c {
                Change::Bind { unit, port, .. } => Some((unit.as_str(), *port)),
                _ => None,
            })
        {
            for t in targets
                .iter()
                .filter(|t| moves_between_peers(t, unit, port))
            {
                let findings = groups.entry(group_of(t)).or_default();
                if !findings.contains(&i) {
                    findings.push(i);
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|(upstream, findings)| GroupReset { upstream, findings })
        .collect()
}

/// The group name nginx keeps failure state under: the `upstream` block, or the pass target.
fn group_of(target: &Target) -> String {
    match &target.route.pass.target {
        PassTarget::Upstream { name } => name.clone(),
        _ => target.route.target.clone(),
    }
}

/// Whether rebinding `unit` on `port` moves it between the peers of `target`'s group (several
/// peers on that port, one of which does not listen now): nginx has likely marked that peer
/// failed, and keeps it so for `fail_timeout` unless a reload resets the group.
fn moves_between_peers(target: &Target, unit: &str, port: u16) -> bool {
    let on_port = |address: &str| {
        address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.port() == port)
    };
    let peers: Vec<_> = target
        .route
        .endpoints
        .iter()
        .filter(|e| on_port(&e.address))
        .collect();
    peers.len() >= 2
        && peers.iter().any(|e| !e.listening)
        && peers.iter().any(|e| e.unit.as_deref() == Some(unit))
}

#[cfg(test)]
mod tests {
    //! The coherence rule over captured facts: two sites reach one backend (`web.service` on
    //! port 8011), each dialling it one of five ways, and the backend binds 127.0.0.1, ::1 or
    //! both. Facts are built as the gatherer builds them (nginx's configuration parsed, the
    //! listening sockets, the unit), then diagnosed and planned with the shipped playbooks; the
    //! plan's changes are applied to a model of the host, and every site must answer, or the
    //! plan must change nothing and name the conflict with both sides.

    use crate::engine::context::targets;
    use crate::engine::evaluate::evaluate;
    use crate::engine::plan::{plan, Plan, PlannedAction};
    use crate::facts::mapping::{routes, MappingInput};
    use crate::facts::sockets::{Owner, SocketFacts, TcpSocket};
    use crate::facts::units::{EnvironmentFile, UnitFacts};
    use crate::facts::{Facts, Gathered};
    use crate::nginx_conf::{load, MemFs};
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    const PORT: u16 = 8011;
    const ENV_FILE: &str = "/etc/web.env";

    /// How a site dials the backend.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Dial {
        /// `localhost`, which this host resolves to 127.0.0.1 only.
        LocalhostV4,
        /// `localhost`, which this host resolves to 127.0.0.1 and ::1 (Debian's hosts file).
        LocalhostBoth,
        V4,
        V6,
        /// An `upstream` group with `server 127.0.0.1:PORT`.
        Group,
    }

    const DIALS: [Dial; 5] = [
        Dial::LocalhostV4,
        Dial::LocalhostBoth,
        Dial::V4,
        Dial::V6,
        Dial::Group,
    ];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Bind {
        V4,
        V6,
        Both,
    }

    impl Bind {
        fn hosts(self) -> Vec<&'static str> {
            match self {
                Bind::V4 => vec!["127.0.0.1"],
                Bind::V6 => vec!["::1"],
                Bind::Both => vec!["127.0.0.1", "::1"],
            }
        }
    }

    fn pass(dial: Dial) -> String {
        match dial {
            Dial::LocalhostV4 | Dial::LocalhostBoth => format!("http://localhost:{PORT}"),
            Dial::V4 => format!("http://127.0.0.1:{PORT}"),
            Dial::V6 => format!("http://[::1]:{PORT}"),
            Dial::Group => "http://grp".into(),
        }
    }

    fn site_file(name: &str) -> PathBuf {
        PathBuf::from(format!("/etc/nginx/sites/{name}.conf"))
    }

    /// The files of the host: nginx's configuration and the backend's env file.
    fn files(dials: [Dial; 2], bind: Bind) -> MemFs {
        let mut fs = MemFs::new();
        fs.insert(
            "/etc/nginx/nginx.conf",
            "events {}\nhttp {\n    include sites/*.conf;\n}\n",
        );
        if dials.contains(&Dial::Group) {
            fs.insert(
                "/etc/nginx/sites/0-group.conf",
                format!("upstream grp {{\n    server 127.0.0.1:{PORT};\n}}\n"),
            );
        }
        for (i, (name, dial)) in ["a", "b"].iter().zip(dials).enumerate() {
            fs.insert(
                site_file(name),
                format!(
                    "server {{\n    listen 127.0.0.1:{};\n    server_name {name}.test;\n\n    location / {{\n        proxy_pass {};\n    }}\n}}\n",
                    8001 + i,
                    pass(dial)
                ),
            );
        }
        let host = match bind {
            Bind::V4 => "127.0.0.1",
            Bind::V6 => "::1",
            Bind::Both => "localhost",
        };
        fs.insert(ENV_FILE, format!("HOST={host}\nPORT={PORT}\n"));
        fs
    }

    fn unit(fs: &MemFs) -> UnitFacts {
        let vars = crate::facts::mapping::parse_env_file(&fs.files[Path::new(ENV_FILE)])
            .into_iter()
            .collect();
        UnitFacts {
            name: "web.service".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            result: Some("success".into()),
            main_pid: 4242,
            n_restarts: Some(0),
            exec_start: vec![crate::facts::units::ExecCommand {
                path: "/usr/bin/node".into(),
                argv: vec!["/usr/bin/node".into(), "/srv/web/web.js".into()],
                ignore_failure: false,
            }],
            fragment_path: None,
            environment_files: vec![EnvironmentFile {
                path: ENV_FILE.into(),
                optional: false,
                vars,
                error: None,
            }],
            environment: Vec::new(),
            control_group: Some("/system.slice/web.service".into()),
            working_directory: None,
            active_enter_timestamp: 1,
            run: Default::default(),
        }
    }

    fn sockets(bind: Bind) -> SocketFacts {
        SocketFacts {
            tcp: bind
                .hosts()
                .iter()
                .enumerate()
                .map(|(i, host)| TcpSocket {
                    addr: host.parse().unwrap(),
                    port: PORT,
                    inode: 10 + i as u64,
                    owners: vec![Owner {
                        pid: 4242,
                        ppid: 1,
                        comm: "node".into(),
                        cmdline: Vec::new(),
                        unit: Some("web.service".into()),
                        unit_cgroup: Some("/system.slice/web.service".into()),
                    }],
                })
                .collect(),
            unix: Vec::new(),
            skipped_lines: 0,
        }
    }

    fn facts(dials: [Dial; 2], bind: Bind, fs: &MemFs) -> Facts {
        let conf = load(Path::new("/etc/nginx/nginx.conf"), fs).unwrap();
        let nginx = crate::facts::nginx::extract(&conf, Path::new("/etc/nginx"));
        let sockets = sockets(bind);
        let units = vec![unit(fs)];
        let unit_env: BTreeMap<String, BTreeMap<String, String>> =
            [("web.service".to_string(), units[0].env())].into();
        let both = dials.contains(&Dial::LocalhostBoth);
        let resolve = |host: &str| -> Vec<IpAddr> {
            match host {
                "localhost" if both => vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                "localhost" => vec!["127.0.0.1".parse().unwrap()],
                _ => Vec::new(),
            }
        };
        let (declared, remembered) = (BTreeMap::new(), BTreeMap::new());
        let input = MappingInput {
            sockets: &sockets,
            units: &units,
            unit_env: &unit_env,
            hints: &[],
            bindv6only: false,
            declared: &declared,
            remembered: &remembered,
            last_good: &crate::facts::last_good::LastGood::empty(),
        };
        let routes = routes(&nginx, &input, &resolve);
        Facts {
            taken_at: 1,
            nginx: Gathered::Ok { data: nginx },
            sockets: Gathered::Ok { data: sockets },
            units: Gathered::Ok { data: units },
            error_log: Gathered::Unavailable {
                reason: "not read in this test".into(),
            },
            nginx_test: Gathered::Ok {
                data: crate::facts::nginx_test::NginxTest {
                    ok: true,
                    problems: Vec::new(),
                    output: String::new(),
                },
            },
            routes: routes.into_iter().map(std::sync::Arc::new).collect(),
            worker: None,
            disk: Default::default(),
            pm2: Vec::new(),
            supervision: Vec::new(),
            backend_probes: Vec::new(),
            reproductions: Vec::new(),
            rolled_back_edits: Vec::new(),
            verified_edits: Vec::new(),
            last_good: crate::facts::Gathered::Ok {
                data: crate::facts::last_good::LastGood::empty(),
            },
            unix_paths: Vec::new(),
            fpm_pools: Vec::new(),
        }
    }

    fn planned(dials: [Dial; 2], bind: Bind) -> (Facts, Plan) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let playbooks =
            crate::playbook::load_dirs(&[root.join("playbooks")], &[root.join("templates")])
                .unwrap_or_else(|e| panic!("{e}"));
        let fs = files(dials, bind);
        let facts = facts(dials, bind, &fs);
        let targets = targets(&facts, &[], std::time::Duration::from_secs(5));
        let findings = evaluate(&playbooks, &targets);
        let read = |path: &Path| {
            fs.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let plan = plan(1, &playbooks, &targets, findings, &read);
        (facts, plan)
    }

    /// The host after the plan: the backend's listen hosts, and what each site dials.
    struct Host {
        listens: BTreeSet<String>,
        dials: BTreeMap<String, BTreeSet<String>>,
    }

    impl Host {
        fn before(facts: &Facts, bind: Bind) -> Host {
            let mut dials: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for route in &facts.routes {
                for e in &route.endpoints {
                    let (host, _) = super::host_port(&e.address).unwrap();
                    dials.entry(route.site.clone()).or_default().insert(host);
                }
            }
            Host {
                listens: bind.hosts().iter().map(|h| h.to_string()).collect(),
                dials,
            }
        }

        fn after(mut self, plan: &Plan) -> Host {
            for step in &plan.actions {
                match &step.action {
                    PlannedAction::SetBindHost { host, .. } => {
                        self.listens = [host.clone()].into();
                    }
                    PlannedAction::RenderSite { directive, edit } => {
                        let site = edit
                            .path
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .map(|s| format!("{s}.test"))
                            .unwrap();
                        let dials: BTreeSet<String> = crate::engine::plan::pass_dials(directive)
                            .iter()
                            .map(|d| super::host_port(d).unwrap().0)
                            .collect();
                        assert!(!dials.is_empty(), "a pin to a literal: {directive}");
                        self.dials.insert(site, dials);
                    }
                    _ => {}
                }
            }
            self
        }

        /// The sites that answer: nginx fails over to the next address of a name or a group,
        /// so one listening address is enough.
        fn answering(&self) -> BTreeSet<String> {
            self.dials
                .iter()
                .filter(|(_, d)| d.iter().any(|h| self.listens.contains(h)))
                .map(|(s, _)| s.clone())
                .collect()
        }
    }

    fn changes(plan: &Plan) -> bool {
        plan.actions.iter().any(|s| s.action.edit().is_some())
    }

    fn conflicts(plan: &Plan) -> Vec<&String> {
        plan.findings
            .iter()
            .flat_map(|f| &f.missing)
            .filter(|m| m.starts_with("conflict:"))
            .collect()
    }

    #[test]
    fn every_pair_of_sites_and_bind_ends_with_every_site_answering_or_a_named_conflict() {
        let mut seen = 0;
        for (i, a) in DIALS.iter().enumerate() {
            for b in &DIALS[i..] {
                // one host resolves `localhost` one way
                if [*a, *b] == [Dial::LocalhostV4, Dial::LocalhostBoth] {
                    continue;
                }
                for bind in [Bind::V4, Bind::V6, Bind::Both] {
                    seen += 1;
                    let case = format!("sites dial {a:?} and {b:?}, backend binds {bind:?}");
                    let (facts, plan) = planned([*a, *b], bind);
                    let before = Host::before(&facts, bind);
                    let answering_before = before.answering();
                    let all: BTreeSet<String> = before.dials.keys().cloned().collect();
                    let common: BTreeSet<String> = before
                        .dials
                        .values()
                        .fold(None::<BTreeSet<String>>, |acc, d| {
                            Some(match acc {
                                None => d.clone(),
                                Some(acc) => acc.intersection(d).cloned().collect(),
                            })
                        })
                        .unwrap_or_default();
                    let after = before.after(&plan);
                    let answering = after.answering();
                    let conflicts = conflicts(&plan);
                    if conflicts.is_empty() {
                        assert_eq!(answering, all, "{case}: every site answers\n{plan:#?}");
                    } else {
                        assert!(
                            !changes(&plan),
                            "{case}: a conflict changes nothing\n{plan:#?}"
                        );
                        assert!(
                            common.is_empty(),
                            "{case}: a conflict only when no address serves every site"
                        );
                        for c in &conflicts {
                            assert!(
                                c.contains("a.test") || c.contains("b.test"),
                                "{case}: the other side is named: {c}"
                            );
                        }
                        assert_eq!(
                            answering, answering_before,
                            "{case}: nothing changed, nothing broke"
                        );
                    }
                    assert!(
                        answering_before.is_subset(&answering),
                        "{case}: no site that answered stops answering"
                    );
                    let edits: Vec<_> = plan
                        .actions
                        .iter()
                        .filter_map(|s| s.action.edit().map(|e| e.path.clone()))
                        .collect();
                    let unique: BTreeSet<_> = edits.iter().collect();
                    assert_eq!(edits.len(), unique.len(), "{case}: one edit per file");
                    if bind == Bind::Both {
                        assert!(plan.actions.is_empty(), "{case}: nothing to do\n{plan:#?}");
                    }
                }
            }
        }
        assert_eq!(seen, 42);
    }

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|s| {
                serde_json::to_value(&s.action).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// Failure 1 of issue 11, with either hosts file: one site dials `localhost`, the other
    /// lists 127.0.0.1 in a group, the backend listens on ::1. One fix: the rebind to
    /// 127.0.0.1; the pin of the `localhost` site is covered by it; the group is reset (the
    /// backend moves between its peers); the neighbour is probed.
    #[test]
    fn a_pin_and_a_rebind_of_one_backend_become_the_rebind_every_site_dials() {
        for localhost in [Dial::LocalhostV4, Dial::LocalhostBoth] {
            let (_, plan) = planned([localhost, Dial::Group], Bind::V6);
            // with `localhost` → both families the rebind moves the backend between that
            // name's peers: nginx marked the 127.0.0.1 one failed, and a reload resets it
            let reset: &[&str] = match localhost {
                Dial::LocalhostBoth => &["nginx_test", "nginx_reload"],
                _ => &[],
            };
            let want: Vec<&str> = ["set_bind_host", "systemd", "wait_listen"]
                .iter()
                .chain(reset)
                .chain(&["probe", "probe_site"])
                .copied()
                .collect();
            assert_eq!(kinds(&plan), want, "{localhost:?}: {plan:#?}");
            let PlannedAction::SetBindHost { host, .. } = &plan.actions[0].action else {
                unreachable!()
            };
            assert_eq!(host, "127.0.0.1");
            let pin = plan
                .findings
                .iter()
                .find(|f| f.cause == "localhost-family")
                .expect("the pin is still reported");
            assert!(
                pin.covered_by
                    .as_deref()
                    .is_some_and(|c| c.contains("rebinds web.service to 127.0.0.1:8011")),
                "{pin:#?}"
            );
            let PlannedAction::ProbeSite { url, .. } = &plan.actions[want.len() - 1].action else {
                unreachable!()
            };
            assert_eq!(url, "http://127.0.0.1:8001/", "the localhost site (a.test)");
        }
    }

    /// No one address serves a site dialling 127.0.0.1 and one dialling [::1]: the rebind
    /// one of them asks for is a conflict naming the other, and nothing is planned.
    #[test]
    fn literal_sites_of_both_families_are_a_conflict_with_both_sides() {
        let (_, plan) = planned([Dial::V4, Dial::V6], Bind::V4);
        assert!(plan.actions.is_empty(), "{plan:#?}");
        let conflict = conflicts(&plan);
        assert_eq!(conflict.len(), 1, "{plan:#?}");
        assert!(
            conflict[0].contains("rebinding web.service to [::1]:8011")
                && conflict[0].contains("`a.test /` dials 127.0.0.1:8011"),
            "{}",
            conflict[0]
        );
        let f = plan.findings.iter().find(|f| !f.conclusive).unwrap();
        assert_eq!(
            (f.site.as_str(), f.cause.as_str()),
            ("b.test", "bind-mismatch")
        );
    }
}
