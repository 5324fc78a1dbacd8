//! The context a playbook's `when`, `evidence` and `actions` are written against, one per
//! target: a typed struct that serializes to the JSON documented in `playbooks/README.md`.
//! `engine::context` builds it from the facts; [`TargetContext::sample`] fills every field for
//! `playbooks check`, so a new fact is known to the checks as soon as it is a field here.
//!
//! A `None` serializes as `null`, which conditions and templates treat as absent.

use crate::facts::error_log::LogClass;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything known of one target: `site location -> endpoint`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetContext {
    pub site: SiteContext,
    pub pass: PassContext,
    pub endpoint: EndpointContext,
    /// The systemd unit behind the endpoint, when one is known.
    pub unit: Option<UnitContext>,
    /// The worker identity (socket-permission).
    pub nginx: WorkerContext,
    /// How many classified error-log lines name this endpoint, by class (every class).
    pub log: BTreeMap<LogClass, usize>,
    // ----- nginx-side causes -----
    /// The location block that holds the pass directive.
    pub location: Option<LocationContext>,
    pub route: RouteContext,
    /// The error-log lines recent enough to be a symptom rather than history.
    pub recent: RecentContext,
    /// nginx-medic's own request through nginx to the site, sent because the log shows a
    /// failure only the log shows, and what nginx logged for it (`facts::reproduce`).
    pub reproduction: Option<ReproductionContext>,
    // ----- backends systemd does not run (engine/backend_context.rs) -----
    /// The PM2 app behind the endpoint.
    pub pm2: Option<Pm2Context>,
    /// The process no supervisor runs behind the endpoint, with a ready unit file.
    pub unsupervised: Option<UnsupervisedContext>,
}

/// `site.*`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteContext {
    pub name: String,
    pub listen: Vec<String>,
    /// The URL a probe through nginx uses for this site.
    pub url: String,
    /// The `Host` a probe sends to reach this block (`facts::aim`).
    pub host: Option<String>,
    /// Why a probe would reach another block, or could not be made at all.
    pub not_aimed: Option<String>,
    pub location: String,
}

/// `pass.*`: the pass directive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassContext {
    pub directive: String,
    pub target: String,
    /// `unix`, `dynamic`, `upstream` or `tcp`.
    pub kind: &'static str,
    pub scheme: Option<String>,
    pub uri: String,
    pub file: String,
    pub line: usize,
}

/// `endpoint.*`: the address the pass target dials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointContext {
    pub address: String,
    /// `tcp`, `unix` or `unknown`.
    pub kind: &'static str,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub listening: bool,
    pub listener: Option<String>,
    pub host_name: Option<String>,
    // unix sockets (socket-missing, socket-permission)
    pub exists: Option<bool>,
    pub socket: Option<SocketContext>,
    pub worker_can_connect: Option<bool>,
    pub pool: Option<PoolContext>,
}

/// `endpoint.socket.*`: the socket file's owner and mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocketContext {
    pub owner: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: String,
}

/// `endpoint.pool.*`: the PHP-FPM pool that listens on the socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolContext {
    pub name: String,
    pub file: String,
    pub unit: String,
    pub listen_owner: Option<String>,
    pub listen_group: Option<String>,
    pub listen_mode: Option<String>,
}

/// `unit.*`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitContext {
    pub name: String,
    pub active_state: String,
    pub sub_state: String,
    pub result: Option<String>,
    pub main_pid: u32,
    pub n_restarts: Option<u32>,
    pub listeners: Vec<String>,
    pub hosts_on_endpoint_port: Vec<String>,
    pub other_ports: Vec<u16>,
    /// The ports no site dials, each requested directly (wrong-port, `facts::direct`).
    pub candidates: Vec<CandidateContext>,
    /// The candidates that answered as an application.
    pub viable_ports: Vec<u16>,
    pub bind: Option<BindContext>,
    // how the main process last ran (crash-loop)
    pub restart: String,
    pub exec_main_status: Option<i32>,
    pub last_run_ms: Option<u64>,
    /// `exited`, `killed` or `dumped`.
    pub exec_main_code: Option<&'static str>,
    pub start_failed: bool,
    pub output: Vec<String>,
    pub output_from: Option<String>,
}

/// `unit.candidates[]`: a port a typo'd pass target may have meant, requested directly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateContext {
    pub port: u16,
    pub address: String,
    pub path: String,
    pub status: Option<u16>,
    pub viable: bool,
    /// Why it may (`answers 200 at /`) or may not be dialled.
    pub why: String,
    /// Which evidence names this port (`the last good configuration, shop.service`).
    pub named_by: String,
}

/// `unit.bind.*` and `pm2.bind.*`: where the backend's bind host is set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindContext {
    pub file: String,
    pub key: String,
    pub value: Option<String>,
    /// `hint`, `environment_file`, `exec_start` or `ecosystem`.
    pub from: &'static str,
    #[serde(rename = "where")]
    pub place: String,
    /// For `from: exec_start` only.
    #[serde(flatten)]
    pub exec_start: Option<ExecStartBind>,
}

/// The `ExecStart` a drop-in repeats with only the host changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecStartBind {
    pub argv: Vec<String>,
    /// The word of `argv` that holds the host.
    pub index: usize,
    pub ignore_failure: bool,
    pub port: u16,
}

/// `nginx.*`: who nginx's workers run as.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerContext {
    pub user: String,
    pub group: Option<String>,
}

/// `location.*`: the location's effective buffer and timeout settings, with a capped raise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationContext {
    pub path: String,
    pub file: String,
    pub line: usize,
    /// `proxy` for `proxy_pass`, `fastcgi` for `fastcgi_pass`, ….
    pub prefix: String,
    pub buffer_size: String,
    pub buffer_size_set: bool,
    pub buffers: String,
    pub busy_buffers_size: Option<String>,
    pub read_timeout: String,
    pub read_timeout_set: bool,
    pub raise: Option<RaiseContext>,
    /// How many earlier raises of this file were rolled back (`facts::attempts`).
    pub rolled_back: Option<u32>,
    /// The backend's header block, requested directly at the site's probe path.
    pub measured: Option<MeasuredContext>,
}

/// `location.measured.*`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredContext {
    pub address: String,
    pub path: String,
    pub status: Option<u16>,
    pub header_bytes: u64,
    /// The block needs more than the cap: reported, never raised.
    pub above_cap: bool,
    /// The block is bigger than `location.buffer_size`: the failure, measured at the backend.
    pub overflows: bool,
}

/// `reproduction.*`: nginx-medic's own request through nginx to the site's probe URL, with a
/// random token, and the error-log lines whose request field holds exactly that request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReproductionContext {
    /// The URL requested, with its token (`?nginx-medic-probe=…`).
    pub url: String,
    /// nginx's answer, when one came.
    pub status: Option<u16>,
    /// For each class but `other`: whether a line the request caused names this endpoint with
    /// that class.
    pub reproduced: BTreeMap<LogClass, bool>,
    /// What came of it, in words (for the evidence).
    pub outcome: String,
}

/// `location.raise.*`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaiseContext {
    pub buffer_size: String,
    pub buffers: String,
    pub cap: String,
    /// `measurement` or `doubling` (`, stepped up after a rollback`), when direct evidence
    /// sized the raise; null for the plain doubling of the nginx-side facts.
    pub from: Option<&'static str>,
}

/// `pm2.*`: the PM2 app behind the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pm2Context {
    pub name: String,
    pub pm_id: u32,
    pub status: String,
    pub pid: u32,
    pub restarts: u32,
    pub unstable_restarts: u32,
    pub max_restarts: u32,
    pub autorestart: bool,
    pub exit_code: Option<i64>,
    pub crash_loop: bool,
    pub cwd: Option<String>,
    /// `PM2_HOME`.
    pub home: String,
    /// The `pm2` executable.
    pub binary: String,
    pub uid: u32,
    pub gid: u32,
    pub daemon_unit: Option<String>,
    pub listeners: Vec<String>,
    pub hosts_on_endpoint_port: Vec<String>,
    /// The literal host of the app's ecosystem entry (`from: ecosystem`).
    pub bind: Option<BindContext>,
    /// Why no bind is known.
    pub bind_problem: Option<String>,
    pub output: Vec<String>,
    pub output_from: Option<String>,
}

/// `unsupervised.*`: the process no supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnsupervisedContext {
    pub pid: i32,
    pub listening: bool,
    /// Its command line as a person would type it.
    pub command: String,
    pub cwd: Option<String>,
    pub user: String,
    pub env_names: Vec<String>,
    pub seen_at: u64,
    pub unit_name: String,
    pub unit_file: String,
}

/// `route.*`: the route's sibling endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteContext {
    pub endpoint_index: usize,
    pub addresses: Vec<String>,
    pub listening_addresses: Vec<String>,
    pub all_listening: bool,
    pub upstream: Option<String>,
    pub no_live_upstreams: usize,
    pub pinnable: Vec<String>,
}

/// `recent.*`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentContext {
    pub window: String,
    /// Every class but `other`.
    pub counts: BTreeMap<LogClass, usize>,
    /// The last line of each class but `other` (boxed: most are `None`, and a map of 15
    /// inline lines cost about 4 KB per target at 10,000 servers).
    pub last: BTreeMap<LogClass, Option<Box<LastLine>>>,
}

/// `recent.last.CLASS.*`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastLine {
    pub time: String,
    pub level: String,
    pub message: String,
    pub phase: Option<String>,
    pub request: Option<String>,
    pub client: Option<String>,
    pub upstream: Option<String>,
    /// The URL that replays the logged `GET`/`HEAD` through the site.
    pub url: Option<String>,
}

/// The classes `recent.*` describes: every class but `other`.
pub fn recent_classes() -> impl Iterator<Item = LogClass> {
    LogClass::ALL.into_iter().filter(|c| *c != LogClass::Other)
}

/// The top-level members of [`TargetContext::json`], in the order of the struct's fields.
pub const SECTIONS: [&str; 12] = [
    "site",
    "pass",
    "endpoint",
    "unit",
    "nginx",
    "log",
    "location",
    "route",
    "recent",
    "reproduction",
    "pm2",
    "unsupervised",
];

impl TargetContext {
    /// The JSON playbooks see: what `when` conditions look up and templates render.
    pub fn json(&self) -> serde_json::Value {
        // a struct of strings, numbers and maps keyed by unit variants: it always serializes
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// One member of [`TargetContext::json`] (one of [`SECTIONS`]), alone: most conditions
    /// read one or two sections, and the whole context is the larger part of a target's cost.
    /// `null` for an absent section or a name that is none.
    pub fn section_json(&self, name: &str) -> serde_json::Value {
        use serde_json::to_value;
        let value = match name {
            "site" => to_value(&self.site),
            "pass" => to_value(&self.pass),
            "endpoint" => to_value(&self.endpoint),
            "unit" => to_value(&self.unit),
            "nginx" => to_value(&self.nginx),
            "log" => to_value(&self.log),
            "location" => to_value(&self.location),
            "route" => to_value(&self.route),
            "recent" => to_value(&self.recent),
            "reproduction" => to_value(&self.reproduction),
            "pm2" => to_value(&self.pm2),
            "unsupervised" => to_value(&self.unsupervised),
            _ => return serde_json::Value::Null,
        };
        value.unwrap_or(serde_json::Value::Null)
    }

    /// A context with every field filled in (unit and bind present, one other port, even
    /// `endpoint.path`, which a TCP endpoint leaves null), so that strict rendering and
    /// fact-path checks can see every path. It is not a consistent situation; it is a map of the
    /// paths. `endpoint.listener` stays null: its shape is the engine's to define.
    pub fn sample() -> TargetContext {
        let s = |text: &str| text.to_string();
        let counts =
            |set: &[(LogClass, usize)], classes: &[LogClass]| -> BTreeMap<LogClass, usize> {
                classes
                    .iter()
                    .map(|c| (*c, set.iter().find(|(k, _)| k == c).map_or(0, |(_, n)| *n)))
                    .collect()
            };
        let recent: Vec<LogClass> = recent_classes().collect();
        let last_line = |message: &str, request: &str, path: &str| LastLine {
            time: s("2026/11/26 09:07:37"),
            level: s("error"),
            message: s(message),
            phase: Some(s("reading response header from upstream")),
            request: Some(s(request)),
            client: Some(s("127.0.0.1")),
            upstream: Some(format!("http://127.0.0.1:18010{path}")),
            url: Some(format!("http://127.0.0.1:18000{path}")),
        };
        let mut last: BTreeMap<LogClass, Option<Box<LastLine>>> =
            recent.iter().map(|c| (*c, None)).collect();
        last.insert(
            LogClass::TimedOut,
            Some(Box::new(last_line(
                "upstream timed out (110: Connection timed out) while reading response header from upstream",
                "GET /slow?seconds=8 HTTP/1.1",
                "/slow?seconds=8",
            ))),
        );
        last.insert(
            LogClass::TooBigHeader,
            Some(Box::new(last_line(
                "upstream sent too big header while reading response header from upstream",
                "GET / HTTP/1.1",
                "/",
            ))),
        );
        TargetContext {
            site: SiteContext {
                name: s("api.lab"),
                listen: vec![s("127.0.0.1:18000")],
                url: s("http://127.0.0.1:18000/"),
                host: Some(s("api.lab:18000")),
                not_aimed: Some(s("`server_name _` gives no literal name to send as `Host`, and the server is not the default_server of 127.0.0.1:18000")),
                location: s("/"),
            },
            pass: PassContext {
                directive: s("proxy_pass"),
                target: s("127.0.0.1:18010"),
                kind: "tcp",
                scheme: Some(s("http")),
                uri: s(""),
                file: s("/etc/nginx/sites-enabled/api.conf"),
                line: 4,
            },
            endpoint: EndpointContext {
                address: s("127.0.0.1:18010"),
                kind: "tcp",
                host: Some(s("127.0.0.1")),
                port: Some(18010),
                path: Some(s("/run/api/api.sock")),
                listening: false,
                listener: None,
                host_name: Some(s("localhost")),
                exists: Some(false),
                socket: Some(SocketContext {
                    owner: s("root"),
                    group: s("root"),
                    uid: 0,
                    gid: 0,
                    mode: s("0600"),
                }),
                worker_can_connect: Some(false),
                pool: Some(PoolContext {
                    name: s("www"),
                    file: s("/etc/php/8.2/fpm/pool.d/www.conf"),
                    unit: s("php8.2-fpm.service"),
                    listen_owner: Some(s("root")),
                    listen_group: Some(s("root")),
                    listen_mode: Some(s("0600")),
                }),
            },
            unit: Some(UnitContext {
                name: s("api.service"),
                active_state: s("active"),
                sub_state: s("running"),
                result: Some(s("success")),
                main_pid: 4242,
                n_restarts: Some(0),
                listeners: vec![s("127.0.0.2:18010")],
                hosts_on_endpoint_port: vec![s("127.0.0.2")],
                other_ports: vec![18011],
                candidates: vec![CandidateContext {
                    port: 18011,
                    address: s("127.0.0.1:18011"),
                    path: s("/"),
                    status: Some(200),
                    viable: true,
                    why: s("answers 200 at /"),
                    named_by: s("the last good configuration, api.service"),
                }],
                viable_ports: vec![18011],
                bind: Some(BindContext {
                    file: s("/etc/default/api"),
                    key: s("HOST"),
                    value: Some(s("127.0.0.2")),
                    from: "hint",
                    place: s("HOST in /etc/default/api"),
                    exec_start: None,
                }),
                restart: s("on-failure"),
                exec_main_status: Some(3),
                last_run_ms: Some(640),
                exec_main_code: Some("exited"),
                start_failed: true,
                output: vec![s("[ERROR] Reason: Worker failed to boot.")],
                output_from: Some(s("file:/var/log/api.log")),
            }),
            nginx: WorkerContext {
                user: s("www-data"),
                group: Some(s("www-data")),
            },
            log: counts(&[(LogClass::ConnectionRefused, 2)], &LogClass::ALL),
            location: Some(LocationContext {
                path: s("/"),
                file: s("/etc/nginx/sites-enabled/api.conf"),
                line: 3,
                prefix: s("proxy"),
                buffer_size: s("4k"),
                buffer_size_set: false,
                buffers: s("8 4k"),
                busy_buffers_size: Some(s("8k")),
                read_timeout: s("60s"),
                read_timeout_set: false,
                raise: Some(RaiseContext {
                    buffer_size: s("16k"),
                    buffers: s("4 16k"),
                    cap: s("64k"),
                    from: Some("measurement"),
                }),
                rolled_back: Some(1),
                measured: Some(MeasuredContext {
                    address: s("127.0.0.1:18010"),
                    path: s("/"),
                    status: Some(200),
                    header_bytes: 9000,
                    above_cap: false,
                    overflows: true,
                }),
            }),
            route: RouteContext {
                endpoint_index: 0,
                addresses: vec![s("127.0.0.1:18010"), s("[::1]:18010")],
                listening_addresses: vec![s("[::1]:18010")],
                all_listening: false,
                upstream: Some(s("web_backend")),
                no_live_upstreams: 0,
                pinnable: vec![s("[::1]:18010")],
            },
            recent: RecentContext {
                window: s("15m"),
                counts: counts(
                    &[(LogClass::TimedOut, 1), (LogClass::TooBigHeader, 1)],
                    &recent,
                ),
                last,
            },
            reproduction: Some(ReproductionContext {
                url: s("http://127.0.0.1:18000/?nginx-medic-probe=5f0c9d2e4b7a41e8a3c6f1d08e2b9c47"),
                status: Some(502),
                reproduced: recent
                    .iter()
                    .map(|c| (*c, *c == LogClass::TooBigHeader))
                    .collect(),
                outcome: s("it got 502, and nginx logged \"upstream sent too big header while reading response header from upstream\" from 127.0.0.1:18010 for it"),
            }),
            pm2: Some(Pm2Context {
                name: s("api"),
                pm_id: 0,
                status: s("stopped"),
                pid: 0,
                restarts: 2,
                unstable_restarts: 0,
                max_restarts: 16,
                autorestart: true,
                exit_code: Some(1),
                crash_loop: false,
                cwd: Some(s("/srv/api")),
                home: s("/root/.pm2"),
                binary: s("/usr/lib/node_modules/pm2/bin/pm2"),
                uid: 0,
                gid: 0,
                daemon_unit: Some(s("pm2-root.service")),
                listeners: vec![s("127.0.0.2:3000")],
                hosts_on_endpoint_port: vec![s("127.0.0.2")],
                bind: Some(BindContext {
                    file: s("/srv/api/ecosystem.config.js"),
                    key: s("HOST"),
                    value: Some(s("127.0.0.2")),
                    from: "ecosystem",
                    place: s("HOST of app `api` in /srv/api/ecosystem.config.js"),
                    exec_start: None,
                }),
                bind_problem: Some(s("/srv/api/ecosystem.config.js: its `HOST` is computed, not a literal string: edit it by hand")),
                output: vec![s("Error: listen EADDRINUSE")],
                output_from: Some(s("file:/root/.pm2/logs/api-error.log")),
            }),
            unsupervised: Some(UnsupervisedContext {
                pid: 4242,
                listening: false,
                command: s("/srv/venv/bin/python3 /srv/venv/bin/uvicorn main:app --port 8000"),
                cwd: Some(s("/srv/app")),
                user: s("deploy"),
                env_names: vec![s("DATABASE_URL")],
                seen_at: 1_764_590_000,
                unit_name: s("uvicorn-8000.service"),
                unit_file: s("[Service]\nExecStart=/srv/venv/bin/uvicorn main:app\n"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn each_section_alone_is_the_member_of_the_whole_context() {
        let ctx = TargetContext::sample();
        let Value::Object(whole) = ctx.json() else {
            panic!("the context is an object");
        };
        let names: Vec<&str> = whole.keys().map(String::as_str).collect();
        let mut sections = SECTIONS.to_vec();
        sections.sort_unstable();
        assert_eq!(
            names, sections,
            "SECTIONS names every member, and only those"
        );
        for name in SECTIONS {
            assert_eq!(ctx.section_json(name), whole[name], "{name}");
        }
        assert_eq!(ctx.section_json("nope"), Value::Null);
    }

    fn null_paths(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Null => out.push(path.to_string()),
            Value::Object(map) => {
                for (k, v) in map {
                    null_paths(v, &format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_sample_fills_every_field_but_the_listener_and_some_last_lines() {
        let mut nulls = Vec::new();
        null_paths(&TargetContext::sample().json(), "", &mut nulls);
        let mut expected = vec![".endpoint.listener".to_string()];
        expected.extend(
            recent_classes()
                .filter(|c| !matches!(c, LogClass::TimedOut | LogClass::TooBigHeader))
                .map(|c| format!(".recent.last.{}", serde_json::json!(c).as_str().unwrap())),
        );
        nulls.sort();
        expected.sort();
        assert_eq!(
            nulls, expected,
            "a new optional fact is filled in the sample"
        );
    }

    #[test]
    fn class_maps_serialize_with_the_log_class_names() {
        let json = TargetContext::sample().json();
        assert_eq!(json["log"]["connection_refused"], 2);
        assert_eq!(json["log"]["other"], 0);
        assert!(json["recent"]["counts"].get("other").is_none());
        assert_eq!(json["unit"]["bind"]["where"], "HOST in /etc/default/api");
        assert!(json["unit"]["bind"].get("argv").is_none());
    }
}
