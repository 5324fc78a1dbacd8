//! `nginx-medic explain`: a report for a person at a terminal. For each site location it walks
//! the classic triage — is the backend running, does nginx dial where it listens, what do the
//! logs say — then names the cause, the planned fix and the commands to check it by hand.
//! Coloured on a terminal (never when `NO_COLOR` is set); plain otherwise.
//!
//! The report is plain data ([`Explain`]) built from a diagnosis and its plan, and rendered by a
//! pure function, so its text is pinned with snapshots over captured `explain --json` fixtures.

use super::diagnose::diagnose;
use super::Exit;
use crate::config::{Bus, Settings};
use crate::engine::plan::Plan;
use crate::facts::error_log::LogClass;
use crate::facts::Facts;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report's data as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Everything the report says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    /// Findings about nginx as a whole (`nginx -t` fails).
    pub global: Vec<Cause>,
    /// One section per site location.
    pub sites: Vec<SiteReport>,
}

/// One site location and what stands behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteReport {
    pub site: String,
    pub location: String,
    /// `proxy_pass 127.0.0.1:8000`.
    pub pass: String,
    /// `file:line` of the pass directive.
    pub at: String,
    pub url: String,
    pub endpoints: Vec<EndpointReport>,
    /// Error-log lines about these endpoints, by class.
    pub log: Vec<LogCount>,
    pub cause: Option<Cause>,
    /// The planned actions, one line each.
    pub fix: Vec<String>,
    /// Why the fix is not done (paused, `heal: false`), with the way out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// What a person would run to check.
    pub commands: Vec<String>,
}

/// One address nginx dials, and the backend behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub address: String,
    pub host_name: Option<String>,
    pub listening: bool,
    pub listener: Option<String>,
    pub unit: Option<String>,
    /// `active (running)`.
    pub state: Option<String>,
    pub pid: Option<u32>,
    /// When the unit became active, UTC.
    pub since: Option<String>,
    /// Where the unit listens.
    pub unit_listens: Vec<String>,
    /// Who runs the backend when systemd does not: `PM2 app api (id 0): online, 0 restart(s)`,
    /// or `not supervised: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<String>,
    /// A ready unit for a listener no supervisor runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_file: Option<String>,
}

/// How many lines of one class, and the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogCount {
    pub class: String,
    pub count: usize,
    pub last: String,
}

/// A named cause with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub id: String,
    pub severity: String,
    pub description: String,
    pub evidence: Vec<String>,
    pub missing: Vec<String>,
    pub also_matched: Vec<String>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<Exit> {
    let d = diagnose(settings).await?;
    let plan = d.plan();
    let (facts, targets) = (d.facts, d.targets);
    let pauses = crate::daemon::pause::load_for_hold(&settings.state_dir);
    let intent = Intent {
        pauses: &pauses,
        now: crate::daemon::pause::unix_now(),
    };
    let report = build(settings, &facts, &targets, &plan, &intent);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", render_explain(&report, color));
    }
    Ok(if plan.findings.is_empty() {
        Exit::Ok
    } else {
        Exit::Findings
    })
}

/// What holds targets back: the pause state as read (an error as its text), at `now`.
pub struct Intent<'a> {
    pub pauses: &'a Result<crate::daemon::pause::PauseState, String>,
    pub now: u64,
}

/// Builds the report from the facts, the targets, the plan (its findings included) and what
/// the administrator asked to leave alone.
pub fn build(
    settings: &Settings,
    facts: &Facts,
    targets: &[crate::engine::context::Target],
    plan: &Plan,
    intent: &Intent<'_>,
) -> Explain {
    let cause_of = |f: &crate::engine::evaluate::Finding| Cause {
        id: f.cause.clone(),
        severity: f.severity.to_string(),
        description: f.description.clone(),
        evidence: f.evidence.clone(),
        missing: f.missing.clone(),
        also_matched: f.also_matched.clone(),
    };
    let global = plan
        .findings
        .iter()
        .filter(|f| f.target == crate::engine::preflight::GLOBAL_TARGET)
        .map(cause_of)
        .collect();
    let systemctl = match settings.bus {
        Bus::User => "systemctl --user",
        Bus::System => "systemctl",
    };
    let error_log = facts.error_log.ok().map(|l| l.path.display().to_string());
    let mut nginx_t = settings.nginx.binary.display().to_string();
    if let Some(prefix) = &settings.nginx.prefix {
        nginx_t.push_str(&format!(" -p {}", prefix.display()));
    }
    nginx_t.push_str(&format!(" -c {} -t", settings.nginx.conf.display()));
    let mut sites: Vec<SiteReport> = Vec::new();
    for route in &facts.routes {
        let indices: Vec<usize> = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.route.pass.at == route.pass.at)
            .map(|(i, _)| i)
            .collect();
        let finding = plan
            .findings
            .iter()
            .enumerate()
            .find(|(_, f)| indices.contains(&f.target));
        let endpoints: Vec<EndpointReport> = route
            .endpoints
            .iter()
            .map(|e| {
                let unit = e.unit.as_deref().and_then(|n| facts.unit(n));
                EndpointReport {
                    address: e.address.clone(),
                    host_name: e.host_name.clone(),
                    listening: e.listening,
                    listener: e.listener.clone(),
                    unit: e.unit.clone(),
                    state: unit.map(|u| format!("{} ({})", u.active_state, u.sub_state)),
                    pid: unit.map(|u| u.main_pid).filter(|p| *p != 0),
                    since: unit
                        .filter(|u| u.active_enter_timestamp > 0 && u.is_up())
                        .map(|u| utc(u.active_enter_timestamp / 1_000_000)),
                    unit_listens: e.unit_listeners.clone(),
                    supervisor: supervisor_line(targets, &e.address),
                    unit_file: targets
                        .iter()
                        .find(|t| t.endpoint.address == e.address)
                        .and_then(|t| t.context.unsupervised.as_ref())
                        .map(|u| u.unit_file.clone()),
                }
            })
            .collect();
        let mut commands = Vec::new();
        for e in &endpoints {
            if let Some(unit) = &e.unit {
                let line = format!("{systemctl} status {unit}");
                if !commands.contains(&line) {
                    commands.push(line);
                }
            }
            let line = match e.address.rsplit_once(':') {
                _ if e.address.starts_with("unix:") => "ss -lxp".to_string(),
                Some((_, port)) => format!("ss -ltnp 'sport = :{port}'"),
                None => continue,
            };
            if !commands.contains(&line) {
                commands.push(line);
            }
        }
        let url = crate::engine::context::site_url(route);
        commands.push(curl_line(&url, &route.aim));
        commands.push(nginx_t.clone());
        if let Some(log) = &error_log {
            commands.push(format!("tail -n 20 {log}"));
        }
        sites.push(SiteReport {
            site: route.site.clone(),
            location: route.location.clone(),
            pass: format!("{} {}", route.directive, route.target),
            at: route.at.clone(),
            url,
            log: log_counts(facts, route),
            cause: finding.map(|(_, f)| cause_of(f)),
            fix: finding.map_or_else(Vec::new, |(i, _)| {
                plan.actions
                    .iter()
                    .filter(|s| s.finding == i)
                    .map(|s| crate::pipeline::describe_action(&s.action))
                    .collect()
            }),
            held: finding.and_then(|(i, f)| {
                crate::daemon::pause::hold_of_actions(
                    intent.pauses,
                    &settings.backends,
                    f.unit.as_deref(),
                    &f.upstream,
                    plan.actions
                        .iter()
                        .filter(|s| s.finding == i)
                        .map(|s| &s.action),
                    intent.now,
                )
                .map(|(_, h)| h.describe())
            }),
            endpoints,
            commands,
        });
    }
    Explain { global, sites }
}

/// Step 1's line for a backend systemd does not run, from the target's `pm2` or
/// `unsupervised` context.
fn supervisor_line(targets: &[crate::engine::context::Target], address: &str) -> Option<String> {
    let context = &targets
        .iter()
        .find(|t| t.endpoint.address == address)?
        .context;
    if let Some(pm2) = &context.pm2 {
        return Some(format!(
            "PM2 app {} (id {}): {}, {} restart(s){}",
            pm2.name,
            pm2.pm_id,
            pm2.status,
            pm2.restarts,
            Some(pm2.pid)
                .filter(|p| *p > 0)
                .map(|p| format!(", PID {p}"))
                .unwrap_or_default()
        ));
    }
    let u = context.unsupervised.as_ref()?;
    let now = if u.listening { "runs" } else { "was last seen" };
    Some(format!(
        "not supervised: PID {} {now} as {} in {}: {} (no systemd unit, no PM2 app: nothing restarts it)",
        u.pid,
        u.user,
        u.cwd.as_deref().unwrap_or("?"),
        u.command,
    ))
}

fn log_counts(facts: &Facts, route: &crate::facts::mapping::Route) -> Vec<LogCount> {
    let Some(log) = facts.error_log.ok() else {
        return Vec::new();
    };
    let group = match &route.pass.target {
        crate::facts::nginx::Target::Upstream { name } => Some(format!("://{name}")),
        _ => None,
    };
    let mut out: Vec<LogCount> = Vec::new();
    for class in LogClass::ALL.iter().filter(|c| **c != LogClass::Other) {
        let lines: Vec<_> = log
            .entries
            .iter()
            .filter(|e| e.class == *class)
            .filter(|e| {
                let mine = e
                    .upstream_addr
                    .as_ref()
                    .is_some_and(|a| route.endpoints.iter().any(|p| &p.address == a));
                let of_group = group.as_ref().is_some_and(|g| {
                    e.upstream
                        .as_deref()
                        .is_some_and(|u| u.contains(&format!("{g}/")) || u.ends_with(g.as_str()))
                });
                mine || of_group
            })
            .collect();
        if let Some(last) = lines.last() {
            let class_name = serde_json::to_value(class)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default();
            let request = last
                .request
                .as_deref()
                .map(|r| format!(", \"{r}\""))
                .unwrap_or_default();
            out.push(LogCount {
                class: class_name,
                count: lines.len(),
                last: format!("{} [{}] {}{request}", last.time, last.level, last.message),
            });
        }
    }
    out
}

pub use crate::daemon::pause::utc;

struct Paint(bool);

impl Paint {
    fn code(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.code("1", t)
    }
    fn good(&self, t: &str) -> String {
        self.code("32", t)
    }
    fn bad(&self, t: &str) -> String {
        self.code("31", t)
    }
    fn warn(&self, t: &str) -> String {
        self.code("33", t)
    }
    fn dim(&self, t: &str) -> String {
        self.code("2", t)
    }
}

/// The report as text; ANSI colours when `color`.
pub fn render_explain(report: &Explain, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    for cause in &report.global {
        out.push_str(&format!(
            "{} {}\n",
            p.bad("✗ nginx itself:"),
            p.bold(&format!("{} ({})", cause.id, cause.severity))
        ));
        render_cause(&p, cause, &mut out);
        out.push_str("  Check it yourself:\n");
        out.push_str(&format!("     {}\n\n", p.dim("$ nginx -t")));
    }
    for s in &report.sites {
        let mark = match &s.cause {
            None => p.good("✓"),
            Some(c) if c.severity == "critical" => p.bad("✗"),
            Some(_) => p.warn("!"),
        };
        out.push_str(&format!(
            "{mark} {} {}\n",
            p.bold(&format!("{} location {}", s.site, s.location)),
            p.dim(&format!("→ {} ({})", s.pass, s.at))
        ));
        out.push_str("  1. Is the backend running?\n");
        if s.endpoints.is_empty() {
            out.push_str(&format!(
                "     {}\n",
                p.warn(
                    "no address to dial: the target does not resolve, or is built from variables"
                )
            ));
        }
        let mut units_seen: Vec<&str> = Vec::new();
        for e in &s.endpoints {
            match (&e.unit, &e.state) {
                (Some(unit), _) if units_seen.contains(&unit.as_str()) => {}
                (Some(unit), Some(state)) => {
                    units_seen.push(unit);
                    let up = state.starts_with("active");
                    let pid = e
                        .pid
                        .map_or_else(|| "no PID".to_string(), |p| format!("PID {p}"));
                    let since = e
                        .since
                        .as_deref()
                        .map(|s| format!(", since {s}"))
                        .unwrap_or_default();
                    let text = format!("{unit}: {state}, {pid}{since}");
                    out.push_str(&format!(
                        "     {}\n",
                        if up { p.good(&text) } else { p.bad(&text) }
                    ));
                }
                (Some(unit), None) => out.push_str(&format!("     {unit}: state unknown\n")),
                (None, _) => out.push_str(&format!(
                    "     {}\n",
                    p.warn(&format!("{}: no systemd unit known", e.address))
                )),
            }
        }
        for e in &s.endpoints {
            if let Some(line) = &e.supervisor {
                out.push_str(&format!("     {}\n", p.warn(line)));
            }
            if let (Some(file), true) = (&e.unit_file, e.listening) {
                out.push_str(&format!(
                    "     a unit for it (`nginx-medic unit-for {}`):\n",
                    e.address
                ));
                for line in file.lines() {
                    out.push_str(&format!("       {line}\n"));
                }
            }
        }
        out.push_str("  2. Does nginx dial where it listens?\n");
        for e in &s.endpoints {
            let name = e
                .host_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let (there, verdict) = match &e.listener {
                Some(l) if e.listening => (l.clone(), p.good("ok")),
                _ => ("nothing".to_string(), p.bad("nothing listens there")),
            };
            out.push_str(&format!(
                "     nginx dials      {}{name}  →  {there}: {verdict}\n",
                e.address
            ));
            if e.unit.is_some() {
                let listens = if e.unit_listens.is_empty() {
                    "nowhere".to_string()
                } else {
                    e.unit_listens.join(", ")
                };
                out.push_str(&format!("     backend listens  {listens}\n"));
            }
        }
        out.push_str("  3. What do the logs say?\n");
        if s.log.is_empty() {
            out.push_str(&format!(
                "     {}\n",
                p.dim("nothing about these upstreams")
            ));
        }
        for l in &s.log {
            out.push_str(&format!("     {} × {}\n", l.count, p.bold(&l.class)));
            out.push_str(&format!("       {}\n", p.dim(&format!("last: {}", l.last))));
        }
        match &s.cause {
            None => out.push_str(&format!(
                "  {} {}\n",
                p.bold("Cause:"),
                p.good("none, healthy")
            )),
            Some(cause) => {
                out.push_str(&format!(
                    "  {} {}\n",
                    p.bold("Cause:"),
                    p.bold(&format!("{} ({})", cause.id, cause.severity))
                ));
                render_cause(&p, cause, &mut out);
                out.push_str("  Planned fix:\n");
                if let Some(held) = &s.held {
                    out.push_str(&format!("     {}\n", p.warn(held)));
                }
                if s.fix.is_empty() {
                    let why = if cause.missing.is_empty() {
                        "none: reported only"
                    } else {
                        "none until the above is resolved"
                    };
                    out.push_str(&format!("     {}\n", p.dim(why)));
                }
                for (i, step) in s.fix.iter().enumerate() {
                    out.push_str(&format!("     {}. {step}\n", i + 1));
                }
            }
        }
        out.push_str("  Check it yourself:\n");
        for c in &s.commands {
            out.push_str(&format!("     {}\n", p.dim(&format!("$ {c}"))));
        }
        out.push('\n');
    }
    if report.sites.is_empty() && report.global.is_empty() {
        out.push_str("no site passes requests to an upstream\n");
    }
    out
}

fn render_cause(p: &Paint, cause: &Cause, out: &mut String) {
    out.push_str(&format!("     {}\n", cause.description));
    for e in &cause.evidence {
        out.push_str(&super::table::bullet("     ", e));
    }
    for m in &cause.missing {
        out.push_str(&format!("     {} {m}\n", p.warn("not acting:")));
    }
    if !cause.also_matched.is_empty() {
        out.push_str(&format!(
            "     {}\n",
            p.dim(&format!("also matched: {}", cause.also_matched.join(", ")))
        ));
    }
}

/// The `curl` that asks what the site's probe asks: to nginx's listen address, as the site's
/// name (`--connect-to` keeps the name for `Host` and SNI), without checking a TLS certificate.
fn curl_line(url: &str, aim: &crate::facts::aim::Aim) -> String {
    let insecure = if url.starts_with("https://") { "k" } else { "" };
    let dial = aim.base.split_once("://").map_or("", |(_, d)| d);
    let name = aim.host.as_deref().map(|h| match h.rsplit_once(':') {
        Some((n, _)) if !h.ends_with(']') => n,
        _ => h,
    });
    match name {
        Some(name) if !name.starts_with('[') && !dial.starts_with(&format!("{name}:")) => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
            let path = rest.find('/').map_or("/", |i| rest.get(i..).unwrap_or("/"));
            let port = dial.rsplit_once(':').map_or("", |(_, p)| p);
            format!("curl -sv{insecure} --connect-to {name}:{port}:{dial} {scheme}://{name}:{port}{path}")
        }
        _ => format!("curl -sv{insecure} {url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curl_line_asks_as_the_site_name() {
        let aim = |base: &str, host: Option<&str>| crate::facts::aim::Aim {
            base: base.into(),
            host: host.map(str::to_string),
            not_aimed: None,
        };
        assert_eq!(
            curl_line(
                "https://127.0.0.1:8443/api/",
                &aim("https://127.0.0.1:8443", Some("tls.lab:8443"))
            ),
            "curl -svk --connect-to tls.lab:8443:127.0.0.1:8443 https://tls.lab:8443/api/"
        );
        assert_eq!(
            curl_line(
                "http://127.0.0.1:80/",
                &aim("http://127.0.0.1:80", Some("app.lab"))
            ),
            "curl -sv --connect-to app.lab:80:127.0.0.1:80 http://app.lab:80/"
        );
        assert_eq!(
            curl_line(
                "http://127.0.0.1:8080/",
                &aim("http://127.0.0.1:8080", Some("127.0.0.1:8080"))
            ),
            "curl -sv http://127.0.0.1:8080/"
        );
        assert_eq!(
            curl_line(
                "http://[::1]:8080/",
                &aim("http://[::1]:8080", Some("[::1]:8080"))
            ),
            "curl -sv http://[::1]:8080/"
        );
    }

    fn fixture(name: &str) -> Explain {
        let path = format!(
            "{}/tests/fixtures/explain/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_684_057), "2026-11-26 09:07:37 UTC");
    }

    #[test]
    fn colour_only_when_asked() {
        let report = fixture("backend-down");
        assert!(!render_explain(&report, false).contains('\x1b'));
        assert!(render_explain(&report, true).contains("\x1b[31m"));
    }

    #[test]
    fn a_held_fix_says_why_and_how_to_lift_it() {
        let mut report = fixture("backend-down");
        let held = "paused until 2026-12-01 10:42:00 UTC; nothing is done (nginx-medic resume api.service)";
        for site in &mut report.sites {
            if site.cause.is_some() {
                site.held = Some(held.into());
            }
        }
        let text = render_explain(&report, false);
        assert!(
            text.contains(&format!("  Planned fix:\n     {held}\n     1. ")),
            "{text}"
        );
    }

    macro_rules! snapshot {
        ($($name:ident => $file:literal),* $(,)?) => {$(
            #[test]
            fn $name() {
                insta::assert_snapshot!(render_explain(&fixture($file), false));
            }
        )*};
    }

    snapshot! {
        explain_backend_down => "backend-down",
        explain_bind_mismatch => "bind-mismatch",
        explain_wrong_port => "wrong-port",
        explain_too_big_header => "too-big-header",
        explain_upstream_timeout => "upstream-timeout",
        explain_localhost_family => "localhost-family",
        explain_upstream_marked_down => "upstream-marked-down",
        explain_host_not_found => "host-not-found",
        explain_socket_missing => "socket-missing",
        explain_socket_permission => "socket-permission",
        explain_crash_loop => "crash-loop",
    }
}
