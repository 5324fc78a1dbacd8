//! Playbooks: one YAML file per cause of a 502/504, loaded, checked and built into plain data.
//!
//! # File format
//!
//! Every mapping rejects unknown keys. `playbooks/README.md` documents the same format for
//! operators.
//!
//! ```yaml
//! id: backend-down          # [a-z0-9-]+; a later playbook dir overrides an earlier one with the same id
//! description: Nothing listens on the upstream and the backend's unit is stopped or failed
//! severity: critical        # critical | warning | info
//! priority: 10              # lower is evaluated first; when several match one target, only the first acts
//! when:                     # {all: [..]}, {any: [..]}, {not: cond}, or a fact test
//!   all:
//!     - { fact: endpoint.listening, is: false }
//!     - { fact: unit.active_state, in: [inactive, failed] }
//! conclusive:               # optional: each must hold, else the finding is "inconclusive" and nothing is done
//!   - { fact: unit.name, exists: true, missing: "no systemd unit is known to serve this upstream" }
//! evidence:                 # handlebars lines, rendered strictly
//!   - "nothing listens on {{endpoint.address}}"
//! actions:                  # ordered; each item has exactly one key, the action kind
//!   - systemd: { unit: "{{unit.name}}", op: restart }      # op: start | restart | reload
//!   - wait_listen: { address: "{{endpoint.address}}", timeout: 15s }
//!   - probe: { url: "{{site.url}}", expect: 200, timeout: 10s }
//! ```
//!
//! Fact tests name a dotted `fact` path into the context (`unit.other_ports.0` indexes a list) and
//! exactly one test: `is: VALUE`, `in: [..]`, `exists: BOOL` (present and not null), `count: N`
//! (list length), `gt: N`, `lt: N`, `not_empty: BOOL`. A path through a missing or null value is
//! absent, and every test but `exists: false` is then false. A `conclusive` item is a condition
//! with a `missing:` text saying what would make the finding conclusive.
//!
//! Actions: `systemd {unit, op}`, `set_bind_host {host}`, `render_site {template}` (a `.hbs` file
//! in the template dirs rendering the whole replacement pass directive), `set_directive {name,
//! value}` (one `proxy_*`/`fastcgi_*`/… directive inside the location), `wait_listen {address,
//! timeout}`, `nginx_test {}`, `nginx_reload {}`, `probe {url, expect, timeout}`,
//! `set_pool_listen {owner, group, mode}` (a PHP-FPM pool's socket ownership; a mode with any
//! bit for other users is refused). Durations are
//! `500ms`, `15s`, `2m` or `1h`. String parameters may contain handlebars; `op`, `expect` and
//! `timeout` are checked when the playbook is loaded.
//!
//! Loading (`load.rs`, the only YAML reader for playbooks) parses each file straight from its text
//! so that errors keep `file:line:col`; `validate.rs` turns the serde types of `schema.rs` into the
//! built [`Playbook`], which is all the rest of the crate sees.

pub mod context;
mod error;
mod load;
mod sample;
mod schema;
mod suggest;
mod validate;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

pub use error::{Location, PlaybookError, PlaybookErrors, Stage};
pub use load::{check, load_dirs};
pub use sample::sample_context;

/// How bad a cause is for the site it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The site is down.
    Critical,
    /// The site is degraded.
    Warning,
    /// Worth knowing, nothing is broken.
    Info,
}

impl Severity {
    /// The name used in playbooks and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dotted path into the context, such as `unit.other_ports.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FactPath(Vec<String>);

impl FactPath {
    /// Splits a dotted path; `None` when a segment is empty or holds other than
    /// `[A-Za-z0-9_-]`.
    pub fn parse(text: &str) -> Option<Self> {
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        let valid = segments.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        valid.then_some(FactPath(segments))
    }

    /// The path's segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for FactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl Serialize for FactPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One test on the value at a fact path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FactTest {
    /// Equal to the value (numbers compare by value).
    Is(Value),
    /// Equal to one of the values.
    In(Vec<Value>),
    /// Present and not null (`true`), or absent or null (`false`).
    Exists(bool),
    /// A list of exactly this length.
    Count(u64),
    /// A number greater than this.
    Gt(f64),
    /// A number less than this.
    Lt(f64),
    /// A list, string or mapping that is (`true`) or is not (`false`) empty.
    NotEmpty(bool),
}

/// A condition over the context.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every condition holds.
    All(Vec<Condition>),
    /// At least one condition holds.
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// A test on one fact.
    Fact {
        /// Where the value is.
        path: FactPath,
        /// What it must satisfy.
        test: FactTest,
    },
}

/// A condition that must hold for a finding to be conclusive, and what to say when it does not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requirement {
    /// The condition.
    pub condition: Condition,
    /// Said when the condition does not hold: what is missing and how to provide it.
    pub missing: String,
}

/// What `systemd` does to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemdOp {
    /// `StartUnit`.
    Start,
    /// `RestartUnit`.
    Restart,
    /// `ReloadUnit`.
    Reload,
}

impl SystemdOp {
    /// All operations, in their playbook spelling.
    pub const NAMES: [&'static str; 3] = ["start", "restart", "reload"];

    /// Parses the playbook spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "start" => Some(SystemdOp::Start),
            "restart" => Some(SystemdOp::Restart),
            "reload" => Some(SystemdOp::Reload),
            _ => None,
        }
    }

    /// The playbook spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemdOp::Start => "start",
            SystemdOp::Restart => "restart",
            SystemdOp::Reload => "reload",
        }
    }
}

impl fmt::Display for SystemdOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `pm2` does to one app (never to the PM2 daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pm2Op {
    /// `pm2 restart NAME`.
    Restart,
    /// `pm2 startOrRestart ECOSYSTEM --only NAME --update-env`, then `pm2 save`: the app
    /// reads its edited ecosystem entry, and the next boot brings back the new one.
    ApplyEcosystem,
}

impl Pm2Op {
    /// All operations, in their playbook spelling.
    pub const NAMES: [&'static str; 2] = ["restart", "apply_ecosystem"];

    /// Parses the playbook spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "restart" => Some(Pm2Op::Restart),
            "apply_ecosystem" => Some(Pm2Op::ApplyEcosystem),
            _ => None,
        }
    }
}

impl fmt::Display for Pm2Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pm2Op::Restart => "restart",
            Pm2Op::ApplyEcosystem => "apply_ecosystem",
        })
    }
}

/// One step of a playbook. String fields are raw handlebars templates, rendered strictly against
/// the target's context when the step is planned.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start, restart or reload a systemd unit.
    Systemd {
        /// Unit name template.
        unit: String,
        /// What to do.
        op: SystemdOp,
    },
    /// Rewrite the backend's bind setting (`unit.bind`) to this host.
    SetBindHost {
        /// Host template; must render to the exact address nginx dials, never a wildcard.
        host: String,
    },
    /// Replace the pass directive with the rendered template.
    RenderSite {
        /// The template's file name in the template dirs.
        template: String,
        /// The template's text, read when the playbooks were loaded.
        source: String,
    },
    /// Insert or replace one directive directly inside the target's location block.
    SetDirective {
        /// Directive name template (`proxy_*`, `fastcgi_*`, … but never a pass directive).
        name: String,
        /// Value template: one to four words separated by single spaces.
        value: String,
    },
    /// Wait until something listens on the address.
    WaitListen {
        /// Address template (`host:port` or `unix:/path`).
        address: String,
        /// How long to wait.
        #[serde(serialize_with = "serialize_duration")]
        timeout: Duration,
    },
    /// `nginx -t`.
    NginxTest,
    /// Reload nginx.
    NginxReload,
    /// Request the URL and expect a status.
    Probe {
        /// URL template.
        url: String,
        /// Expected HTTP status.
        expect: u16,
        /// Request timeout.
        #[serde(serialize_with = "serialize_duration")]
        timeout: Duration,
    },
    /// Set the `listen.owner`, `listen.group` and `listen.mode` of the PHP-FPM pool that
    /// listens on the endpoint (`endpoint.pool`).
    SetPoolListen {
        /// Owner template (a user name).
        owner: String,
        /// Group template (a group name).
        group: String,
        /// Octal mode, checked when loading: never one that lets other users connect.
        mode: String,
    },
    /// Restart one PM2 app, or apply its edited ecosystem entry (`pm2`).
    Pm2 {
        /// App name template (`{{pm2.name}}`).
        app: String,
        op: Pm2Op,
    },
}

impl Action {
    /// The action kind as spelled in playbooks.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Systemd { .. } => "systemd",
            Action::SetBindHost { .. } => "set_bind_host",
            Action::RenderSite { .. } => "render_site",
            Action::SetDirective { .. } => "set_directive",
            Action::WaitListen { .. } => "wait_listen",
            Action::NginxTest => "nginx_test",
            Action::NginxReload => "nginx_reload",
            Action::Probe { .. } => "probe",
            Action::SetPoolListen { .. } => "set_pool_listen",
            Action::Pm2 { .. } => "pm2",
        }
    }
}

/// A loaded, checked playbook: one cause, how to recognise it and how to heal it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Playbook {
    /// Unique id (`[a-z0-9-]+`).
    pub id: String,
    /// One line for humans.
    pub description: String,
    /// How bad the cause is.
    pub severity: Severity,
    /// Lower is evaluated first.
    pub priority: u32,
    /// When the cause is present.
    pub when: Condition,
    /// What must also hold before anything is done.
    pub conclusive: Vec<Requirement>,
    /// Handlebars lines saying why.
    pub evidence: Vec<String>,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// The file it was loaded from.
    pub file: PathBuf,
}

/// The effective playbooks, ordered by priority then id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlaybookSet {
    playbooks: Vec<Playbook>,
}

impl PlaybookSet {
    /// Orders the playbooks by priority, then id.
    pub fn new(mut playbooks: Vec<Playbook>) -> Self {
        playbooks.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        PlaybookSet { playbooks }
    }

    /// The playbooks in evaluation order.
    pub fn iter(&self) -> std::slice::Iter<'_, Playbook> {
        self.playbooks.iter()
    }

    /// The playbooks in evaluation order.
    pub fn as_slice(&self) -> &[Playbook] {
        &self.playbooks
    }

    /// The playbook with this id.
    pub fn get(&self, id: &str) -> Option<&Playbook> {
        self.playbooks.iter().find(|p| p.id == id)
    }

    /// How many playbooks there are.
    pub fn len(&self) -> usize {
        self.playbooks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.playbooks.is_empty()
    }
}

impl<'a> IntoIterator for &'a PlaybookSet {
    type Item = &'a Playbook;
    type IntoIter = std::slice::Iter<'a, Playbook>;

    fn into_iter(self) -> Self::IntoIter {
        self.playbooks.iter()
    }
}

/// Formats a duration the way playbooks spell it (`500ms`, `15s`, `2m`, `1h`).
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 || ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// Parses a playbook duration: a whole number followed by `ms`, `s`, `m` or `h`, above zero.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => number,
        "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        _ => return None,
    };
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*duration))
}

#[cfg(test)]
mod tests;
