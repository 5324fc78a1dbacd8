//! Binds facts to targets: one JSON context per (route, endpoint), the data a playbook's `when`,
//! `evidence` and `actions` are written against. The paths are documented in `playbooks/README.md`.

use crate::config::{BackendHint, UpstreamAddr};
use crate::facts::error_log::LogClass;
use crate::facts::mapping::{Endpoint, Route};
use crate::facts::nginx::Target as PassTarget;
use crate::facts::units::UnitFacts;
use crate::facts::Facts;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One target: a site's location, the endpoint its pass target dials, and everything known of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `site location -> endpoint`, for people and logs.
    pub label: String,
    pub route: Route,
    pub endpoint: Endpoint,
    /// The context playbooks see.
    pub context: Value,
}

/// Every target of the snapshot, in the order of the routes.
pub fn targets(facts: &Facts, hints: &[BackendHint]) -> Vec<Target> {
    let mut out = Vec::new();
    for route in &facts.routes {
        for endpoint in &route.endpoints {
            let unit = endpoint.unit.as_deref().and_then(|n| facts.unit(n));
            let mut context = json!({
                "site": site_context(route),
                "pass": pass_context(route),
                "endpoint": endpoint_context(endpoint),
                "unit": unit.map_or(Value::Null, |u| unit_context(u, endpoint, hints)),
                "log": log_counts(facts, &endpoint.address),
            });
            add_socket_and_run_facts(&mut context, facts, endpoint, unit);
            out.push(Target {
                label: format!("{} {} -> {}", route.site, route.location, endpoint.address),
                route: route.clone(),
                endpoint: endpoint.clone(),
                context,
            });
        }
    }
    out
}

/// The URL a probe through nginx uses for this site: its first `listen`, made dialable.
pub fn site_url(route: &Route) -> String {
    let listen = route.listen.first().map(String::as_str).unwrap_or("80");
    let addr = listen.split_whitespace().next().unwrap_or("80");
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !addr.ends_with(']') => (h, p),
        _ if addr.chars().all(|c| c.is_ascii_digit()) => ("127.0.0.1", addr),
        _ => (addr, "80"),
    };
    let host = match host {
        "*" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    };
    let path = if route.location.starts_with('/') {
        route.location.as_str()
    } else {
        "/"
    };
    format!("http://{host}:{port}{path}")
}

fn site_context(route: &Route) -> Value {
    json!({
        "name": route.site,
        "listen": route.listen,
        "url": site_url(route),
        "location": route.location,
    })
}

fn pass_context(route: &Route) -> Value {
    let (scheme, uri) = scheme_and_uri(&route.pass.raw);
    let kind = match route.pass.target {
        PassTarget::Unix { .. } => "unix",
        PassTarget::Dynamic { .. } => "dynamic",
        PassTarget::Upstream { .. } => "upstream",
        PassTarget::Tcp { .. } => "tcp",
    };
    json!({
        "directive": route.directive,
        "target": route.target,
        "kind": kind,
        "scheme": scheme,
        "uri": uri,
        "file": route.pass.at.file.display().to_string(),
        "line": route.pass.at.line,
    })
}

/// `http://127.0.0.1:8000/api` → (`http`, `/api`); `127.0.0.1:9000` → (none, ``).
fn scheme_and_uri(raw: &str) -> (Option<String>, String) {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return (None, String::new());
    };
    let uri = if let Some(unix) = rest.strip_prefix("unix:") {
        unix.split_once(':').map_or("", |(_, u)| u)
    } else {
        rest.find('/').map_or("", |i| &rest[i..])
    };
    (Some(scheme.to_string()), uri.to_string())
}

fn endpoint_context(e: &Endpoint) -> Value {
    let (kind, host, port, path) = match UpstreamAddr::parse(&e.address) {
        Some(UpstreamAddr::Tcp { host, port }) => ("tcp", Some(host), Some(port), None),
        Some(UpstreamAddr::Unix { path }) => ("unix", None, None, Some(path.display().to_string())),
        None => ("unknown", None, None, None),
    };
    json!({
        "address": e.address,
        "kind": kind,
        "host": host,
        "port": port,
        "path": path,
        "listening": e.listening,
        "listener": e.listener,
        "host_name": e.host_name,
    })
}

fn unit_context(unit: &UnitFacts, endpoint: &Endpoint, hints: &[BackendHint]) -> Value {
    let port = UpstreamAddr::parse(&endpoint.address).and_then(|a| match a {
        UpstreamAddr::Tcp { port, .. } => Some(port),
        UpstreamAddr::Unix { .. } => None,
    });
    let tcp: Vec<(String, u16)> = endpoint
        .unit_listeners
        .iter()
        .filter_map(|l| match UpstreamAddr::parse(l)? {
            UpstreamAddr::Tcp { host, port } => Some((host, port)),
            UpstreamAddr::Unix { .. } => None,
        })
        .collect();
    let hosts_on_port: Vec<&String> = tcp
        .iter()
        .filter(|(_, p)| Some(*p) == port)
        .map(|(h, _)| h)
        .collect();
    let mut other_ports: Vec<u16> = tcp
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| Some(*p) != port)
        .collect();
    other_ports.sort_unstable();
    other_ports.dedup();
    json!({
        "name": unit.name,
        "active_state": unit.active_state,
        "sub_state": unit.sub_state,
        "result": unit.result,
        "main_pid": unit.main_pid,
        "n_restarts": unit.n_restarts,
        "listeners": endpoint.unit_listeners,
        "hosts_on_endpoint_port": hosts_on_port,
        "other_ports": other_ports,
        "bind": bind_context(unit, endpoint, hints, &hosts_on_port),
    })
}

/// Environment keys that conventionally hold a backend's bind host (Node's `HOST`, …).
const BIND_KEYS: [&str; 8] = [
    "HOST",
    "BIND",
    "BIND_HOST",
    "BIND_ADDRESS",
    "LISTEN_HOST",
    "LISTEN_ADDRESS",
    "APP_HOST",
    "SERVER_HOST",
];

/// Where the unit's bind host is set: a `backends:` hint, or an environment-file key — one the
/// unit's `ExecStart` uses, or a conventional bind key — whose value is the host the unit
/// listens on now. Anything less is not evidence.
fn bind_context(
    unit: &UnitFacts,
    endpoint: &Endpoint,
    hints: &[BackendHint],
    hosts: &[&String],
) -> Value {
    let hinted = hints.iter().find_map(|h| {
        let same =
            h.upstream.to_string() == endpoint.address || h.unit.as_deref() == Some(&unit.name);
        same.then_some(h.bind.as_ref()).flatten()
    });
    if let Some(bind) = hinted {
        let value = std::fs::read_to_string(&bind.file).ok().and_then(|text| {
            crate::facts::mapping::parse_env_file(&text)
                .into_iter()
                .find(|(k, _)| *k == bind.key)
                .map(|(_, v)| v)
        });
        return json!({"file": bind.file, "key": bind.key, "value": value, "from": "hint"});
    }
    let argv: Vec<&String> = unit.exec_start.iter().flat_map(|c| c.argv.iter()).collect();
    let used = |key: &str| {
        BIND_KEYS.contains(&key)
            || argv
                .iter()
                .any(|w| w.contains(&format!("${{{key}}}")) || w.contains(&format!("${key}")))
    };
    unit.environment_files
        .iter()
        .flat_map(|f| f.vars.iter().map(move |(k, v)| (f, k, v)))
        .find(|(_, k, v)| {
            used(k)
                && hosts
                    .iter()
                    .any(|h| *h == *v || h.trim_matches(['[', ']']) == v.as_str())
        })
        .map_or(
            Value::Null,
            |(f, k, v)| json!({"file": f.path, "key": k, "value": v, "from": "environment_file"}),
        )
}

// --- unix sockets and backend processes (socket-missing, socket-permission, crash-loop) -------

/// Adds what the socket and crash-loop playbooks test: `nginx.{user,group}` (the worker
/// identity), `endpoint.{exists,socket,worker_can_connect,pool}` for unix endpoints, and
/// `unit.{restart,exec_main_status,last_run_ms,output,output_from}`.
fn add_socket_and_run_facts(
    context: &mut Value,
    facts: &Facts,
    endpoint: &Endpoint,
    unit: Option<&UnitFacts>,
) {
    let user = facts
        .nginx
        .ok()
        .and_then(|n| n.user.as_deref())
        .and_then(|u| u.split_whitespace().next())
        .unwrap_or("nobody");
    context["nginx"] = json!({
        "user": facts.worker.as_ref().map_or(user, |w| w.user.as_str()),
        "group": facts.worker.as_ref().map(|w| w.group.clone()),
    });
    let path = match UpstreamAddr::parse(&endpoint.address) {
        Some(UpstreamAddr::Unix { path }) => Some(path.display().to_string()),
        _ => None,
    };
    let seen = path.as_deref().and_then(|p| facts.unix_path(p));
    if let Some(e) = context.get_mut("endpoint").and_then(Value::as_object_mut) {
        e.insert("exists".into(), json!(seen.map(|p| p.exists)));
        e.insert(
            "socket".into(),
            seen.and_then(|p| p.file.as_ref()).map_or(Value::Null, |f| {
                json!({
                    "owner": f.user.clone().unwrap_or_else(|| f.uid.to_string()),
                    "group": f.group.clone().unwrap_or_else(|| f.gid.to_string()),
                    "uid": f.uid,
                    "gid": f.gid,
                    "mode": f.mode,
                })
            }),
        );
        e.insert(
            "worker_can_connect".into(),
            json!(seen.and_then(|p| p.worker_can_connect)),
        );
        e.insert(
            "pool".into(),
            facts.fpm_pool(&endpoint.address).map_or(Value::Null, |p| {
                json!({
                    "name": p.name,
                    "file": p.file.display().to_string(),
                    "unit": p.unit,
                    "listen_owner": p.listen_owner,
                    "listen_group": p.listen_group,
                    "listen_mode": p.listen_mode,
                })
            }),
        );
    }
    if let (Some(u), Some(ctx)) = (unit, context.get_mut("unit").and_then(Value::as_object_mut)) {
        let run = &u.run;
        let ended = run.exec_main_code != 0;
        ctx.insert("restart".into(), json!(run.restart));
        ctx.insert(
            "exec_main_status".into(),
            json!(ended.then_some(run.exec_main_status)),
        );
        ctx.insert("last_run_ms".into(), json!(run.last_run_ms()));
        ctx.insert(
            "output".into(),
            json!(run.output.as_ref().map_or(&[][..], |o| o.lines.as_slice())),
        );
        ctx.insert(
            "output_from".into(),
            json!(run.output.as_ref().map(|o| o.source.clone())),
        );
    }
}

/// How many classified error-log lines name this endpoint, by class.
fn log_counts(facts: &Facts, address: &str) -> Value {
    let mut counts: BTreeMap<String, usize> =
        LogClass::ALL.iter().map(|c| (class_name(c), 0)).collect();
    if let Some(log) = facts.error_log.ok() {
        for e in log
            .entries
            .iter()
            .filter(|e| e.upstream_addr.as_deref() == Some(address))
        {
            *counts.entry(class_name(&e.class)).or_default() += 1;
        }
    }
    json!(counts)
}

fn class_name(class: &LogClass) -> String {
    serde_json::to_value(class)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "other".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(listen: &str, location: &str) -> Route {
        Route {
            site: "api.lab".into(),
            listen: vec![listen.into()],
            location: location.into(),
            directive: "proxy_pass".into(),
            target: "127.0.0.1:8000".into(),
            at: "/x:1".into(),
            dynamic: false,
            endpoints: Vec::new(),
            pass: crate::facts::nginx::Pass {
                directive: "proxy_pass".into(),
                raw: "http://127.0.0.1:8000".into(),
                target: PassTarget::Tcp {
                    scheme: Some("http".into()),
                    host: "127.0.0.1".into(),
                    port: 8000,
                },
                at: at(),
                arg: at(),
            },
        }
    }

    fn at() -> crate::facts::nginx::At {
        crate::facts::nginx::At {
            file: "/x".into(),
            line: 1,
            col: 1,
            start: 0,
            end: 0,
        }
    }

    #[test]
    fn site_urls_are_dialable() {
        assert_eq!(
            site_url(&route("127.0.0.1:18000", "/")),
            "http://127.0.0.1:18000/"
        );
        assert_eq!(
            site_url(&route("80 default_server", "/api/")),
            "http://127.0.0.1:80/api/"
        );
        assert_eq!(
            site_url(&route("[::]:8080", "~ \\.php$")),
            "http://[::1]:8080/"
        );
        assert_eq!(site_url(&route("*:81", "/")), "http://127.0.0.1:81/");
    }

    #[test]
    fn splits_scheme_and_uri() {
        assert_eq!(
            scheme_and_uri("http://127.0.0.1:8000/api"),
            (Some("http".into()), "/api".into())
        );
        assert_eq!(
            scheme_and_uri("http://unix:/run/a.sock:/x"),
            (Some("http".into()), "/x".into())
        );
        assert_eq!(scheme_and_uri("127.0.0.1:9000"), (None, String::new()));
    }
}
