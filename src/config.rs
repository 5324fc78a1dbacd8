//! `medic.yaml`: the serde types of the file, and the validated `Settings` the rest of the crate sees.
//!
//! Every key is optional; unknown keys are rejected with the file, line and field. This is one of
//! the two places (with `playbook::load`) that read YAML, so swapping `serde_yaml` for a maintained
//! fork stays a one-file change.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/nginx-medic/medic.yaml";

/// A configuration that could not be read or does not validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: `{field}`: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        reason: String,
    },
    #[error("{path}: `{field}`: {reason}")]
    Value {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// How nginx is told to reload its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadMethod {
    /// `ReloadUnit(unit)` over D-Bus.
    Systemd,
    /// `nginx [-p PREFIX] -c CONF -s reload`.
    Signal,
}

/// Which systemd manager to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bus {
    /// The system manager (production).
    System,
    /// The caller's user manager (tests, rootless use).
    User,
}

/// The format of medic.yaml this version reads (its `version:` key).
pub const CONFIG_FORMAT: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    /// The format of the file: [`CONFIG_FORMAT`]. A file without it (written before the key
    /// existed) is read as format 1.
    version: u32,
    nginx: NginxSection,
    systemd: SystemdSection,
    backends: Vec<BackendSection>,
    playbooks: Vec<PathBuf>,
    templates: Vec<PathBuf>,
    state_dir: PathBuf,
    daemon: DaemonSection,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            version: CONFIG_FORMAT,
            nginx: NginxSection::default(),
            systemd: SystemdSection::default(),
            backends: Vec::new(),
            playbooks: vec![
                "/usr/share/nginx-medic/playbooks".into(),
                "/etc/nginx-medic/playbooks".into(),
            ],
            templates: vec![
                "/usr/share/nginx-medic/templates".into(),
                "/etc/nginx-medic/templates".into(),
            ],
            state_dir: "/var/lib/nginx-medic".into(),
            daemon: DaemonSection::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NginxSection {
    binary: PathBuf,
    conf: PathBuf,
    prefix: Option<PathBuf>,
    error_log: Option<PathBuf>,
    reload: ReloadMethod,
    unit: String,
}

impl Default for NginxSection {
    fn default() -> Self {
        Self {
            binary: "/usr/sbin/nginx".into(),
            conf: "/etc/nginx/nginx.conf".into(),
            prefix: None,
            error_log: None,
            reload: ReloadMethod::Systemd,
            unit: "nginx.service".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SystemdSection {
    bus: Bus,
}

impl Default for SystemdSection {
    fn default() -> Self {
        Self { bus: Bus::System }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSection {
    upstream: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    bind: Option<BindSection>,
    /// `false`: diagnosed and reported, never healed (by the daemon or by `apply`).
    #[serde(default = "yes")]
    heal: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindSection {
    file: PathBuf,
    key: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// The file these settings came from (`None` when every default applies).
    pub source: Option<PathBuf>,
    pub nginx: NginxSettings,
    pub bus: Bus,
    pub backends: Vec<BackendHint>,
    pub playbooks: Vec<PathBuf>,
    pub templates: Vec<PathBuf>,
    pub state_dir: PathBuf,
    /// How `nginx-medic run` behaves.
    pub daemon: DaemonSettings,
}

/// How to reach and drive nginx.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NginxSettings {
    pub binary: PathBuf,
    pub conf: PathBuf,
    pub prefix: Option<PathBuf>,
    pub error_log: Option<PathBuf>,
    pub reload: ReloadMethod,
    pub unit: String,
}

/// An address nginx dials: `host:port` or a unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum UpstreamAddr {
    Tcp { host: String, port: u16 },
    Unix { path: PathBuf },
}

impl UpstreamAddr {
    /// Parses `127.0.0.1:8000`, `[::1]:8000`, `localhost:3000` or `unix:/run/x.sock`.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(path) = text.strip_prefix("unix:") {
            return path
                .starts_with('/')
                .then(|| Self::Unix { path: path.into() });
        }
        let (host, port) = text.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port.parse().ok()?;
        (!host.is_empty() && !host.contains(['/', ' '])).then(|| Self::Tcp {
            host: host.into(),
            port,
        })
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What the administrator told us about one backend.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackendHint {
    pub upstream: UpstreamAddr,
    pub unit: Option<String>,
    pub bind: Option<BindLocation>,
    /// Whether nginx-medic may heal this backend (default `true`); `false` keeps it to
    /// diagnosis and reports.
    pub heal: bool,
}

/// Where a backend's bind host is set: a `KEY=value` line in a file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BindLocation {
    pub file: PathBuf,
    pub key: String,
}

impl Settings {
    /// Reads `path`; a missing file at the default location means "all defaults".
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_yaml(&path, &text),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                ConfigFile::default().validate(None)
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and validates the text of a configuration file.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
                ConfigError::Invalid {
                    path: path.into(),
                    line,
                    column,
                    field,
                    reason: strip_location(&inner.to_string()),
                }
            })?
        };
        file.validate(Some(path))
    }
}

/// serde_yaml puts the field path in front of its messages and " at line L column C" after
/// them; both are printed separately, so they are cut from the reason.
fn strip_location(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

impl ConfigFile {
    fn validate(self, source: Option<&Path>) -> Result<Settings, ConfigError> {
        let err = |field: String, reason: String| ConfigError::Value {
            path: source.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf),
            field,
            reason,
        };
        if self.version != CONFIG_FORMAT {
            return Err(err(
                "version".into(),
                format!(
                    "format {} is not one this nginx-medic reads (it reads {CONFIG_FORMAT})\nhelp: a newer nginx-medic wrote it; use that version, or set `version: {CONFIG_FORMAT}` and the keys this one knows",
                    self.version
                ),
            ));
        }
        let mut backends = Vec::with_capacity(self.backends.len());
        for (i, b) in self.backends.into_iter().enumerate() {
            let upstream = UpstreamAddr::parse(&b.upstream).ok_or_else(|| {
                err(
                    format!("backends[{i}].upstream"),
                    format!("`{}` is not `host:port` or `unix:/path`", b.upstream),
                )
            })?;
            if let Some(bind) = &b.bind {
                if !bind.file.is_absolute() {
                    return Err(err(
                        format!("backends[{i}].bind.file"),
                        format!("`{}` must be an absolute path", bind.file.display()),
                    ));
                }
                if bind.key.is_empty()
                    || !bind
                        .key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(err(
                        format!("backends[{i}].bind.key"),
                        format!("`{}` is not a variable name", bind.key),
                    ));
                }
            }
            backends.push(BackendHint {
                upstream,
                unit: b.unit,
                bind: b.bind.map(|b| BindLocation {
                    file: b.file,
                    key: b.key,
                }),
                heal: b.heal,
            });
        }
        if self.nginx.unit.is_empty() {
            return Err(err("nginx.unit".into(), "must name a unit".into()));
        }
        let daemon = self.daemon.validate(&self.state_dir, &err)?;
        Ok(Settings {
            source: source.map(Path::to_path_buf),
            nginx: NginxSettings {
                binary: self.nginx.binary,
                conf: self.nginx.conf,
                prefix: self.nginx.prefix,
                error_log: self.nginx.error_log,
                reload: self.nginx.reload,
                unit: self.nginx.unit,
            },
            bus: self.systemd.bus,
            backends,
            playbooks: self.playbooks,
            templates: self.templates,
            state_dir: self.state_dir,
            daemon,
        })
    }
}

// --- the `daemon:` section ----------------------------------------------------------------------

/// What `nginx-medic run` does with a conclusive finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonMode {
    /// Log and report the plan, change nothing (the default: a fresh install never acts).
    Observe,
    /// Run the plan.
    Apply,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DaemonSection {
    mode: DaemonMode,
    #[serde(deserialize_with = "duration")]
    probe_interval: Duration,
    #[serde(deserialize_with = "duration")]
    debounce: Duration,
    #[serde(deserialize_with = "duration")]
    full_pass_interval: Duration,
    #[serde(deserialize_with = "duration")]
    start_failure_window: Duration,
    rate_limit: RateLimitSection,
    crash_loop: CrashLoopSection,
    circuit_breaker: CircuitBreakerSection,
    hooks: Vec<HookSection>,
    metrics: Option<String>,
    lock_file: Option<PathBuf>,
}

impl Default for DaemonSection {
    fn default() -> Self {
        Self {
            mode: DaemonMode::Observe,
            probe_interval: Duration::from_secs(5),
            debounce: Duration::from_millis(300),
            full_pass_interval: DEFAULT_FULL_PASS_INTERVAL,
            start_failure_window: Duration::from_secs(5),
            rate_limit: RateLimitSection::default(),
            crash_loop: CrashLoopSection::default(),
            circuit_breaker: CircuitBreakerSection::default(),
            hooks: Vec::new(),
            metrics: Some(DEFAULT_METRICS.into()),
            lock_file: None,
        }
    }
}

/// How often the daemon takes a full snapshot and evaluates every target, also while all is
/// healthy, unless `daemon.full_pass_interval` says otherwise.
pub const DEFAULT_FULL_PASS_INTERVAL: Duration = Duration::from_secs(300);

/// Where the Prometheus endpoint listens unless `daemon.metrics` says otherwise.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9187";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RateLimitSection {
    max_actions: u32,
    #[serde(deserialize_with = "duration")]
    per: Duration,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            max_actions: 3,
            per: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CrashLoopSection {
    max_failures: u32,
    #[serde(deserialize_with = "duration")]
    within: Duration,
    max_unit_restarts: u32,
}

impl Default for CrashLoopSection {
    fn default() -> Self {
        Self {
            max_failures: 2,
            within: Duration::from_secs(300),
            max_unit_restarts: 3,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CircuitBreakerSection {
    max_failures: u32,
    #[serde(deserialize_with = "duration")]
    per: Duration,
}

impl Default for CircuitBreakerSection {
    fn default() -> Self {
        Self {
            max_failures: 5,
            per: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HookSection {
    #[serde(default)]
    exec: Option<Vec<String>>,
    #[serde(default)]
    webhook: Option<String>,
}

/// Reads a duration written as in playbooks: `500ms`, `5s`, `10m`, `1h`.
fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::playbook::parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration; write a whole number above zero with `ms`, `s`, `m` or `h`, e.g. `5s`"
        ))
    })
}

/// The validated `daemon:` section.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DaemonSettings {
    pub mode: DaemonMode,
    /// How often each site is probed through nginx, the safety net under the event triggers.
    pub probe_interval: Duration,
    /// How long a burst of triggers is gathered into one incident.
    pub debounce: Duration,
    /// How often a full snapshot is taken and every target evaluated, whatever the triggers
    /// (what no trigger reports, such as a file changed by hand, is seen within it). Incidents
    /// and brakes carry over.
    pub full_pass_interval: Duration,
    /// A main process that exits by itself with a failing status this soon after it started
    /// failed at its start (`start-failure`): a restart alone does not heal it.
    pub start_failure_window: Duration,
    /// Per target: at most `max_actions` remediations in any window of `per`.
    pub rate_limit: RateLimit,
    pub crash_loop: CrashLoop,
    pub circuit_breaker: CircuitBreaker,
    pub hooks: Vec<Hook>,
    /// The loopback address of the Prometheus endpoint, `None` when disabled.
    pub metrics: Option<std::net::SocketAddr>,
    /// The lock that keeps a second instance from running.
    pub lock_file: PathBuf,
}

/// At most `max_actions` remediations of one target in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    pub max_actions: u32,
    pub per: Duration,
}

/// When a target counts as crash-looping: `max_failures` failed heals or relapses (the fault is
/// back within `within` of a heal), or its unit's `NRestarts` climbing by `max_unit_restarts`
/// within `within`. A crash-looping target is escalated once and left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CrashLoop {
    pub max_failures: u32,
    pub within: Duration,
    pub max_unit_restarts: u32,
}

/// Global: `max_failures` failed heals over all targets within `per` open the breaker, and
/// nothing is acted on until the window holds fewer again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CircuitBreaker {
    pub max_failures: u32,
    pub per: Duration,
}

/// A notification hook: gets a JSON document for every heal, failed heal and escalation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// A program run with this argv (no shell), the document on its stdin.
    Exec(Vec<String>),
    /// A plain-HTTP POST of the document to a loopback URL.
    Webhook(String),
}

impl DaemonSection {
    fn validate(
        self,
        state_dir: &Path,
        err: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<DaemonSettings, ConfigError> {
        let at_least_one = |field: &str, n: u32| {
            if n == 0 {
                Err(err(field.into(), "must be at least 1".into()))
            } else {
                Ok(())
            }
        };
        at_least_one("daemon.rate_limit.max_actions", self.rate_limit.max_actions)?;
        at_least_one(
            "daemon.crash_loop.max_failures",
            self.crash_loop.max_failures,
        )?;
        at_least_one(
            "daemon.crash_loop.max_unit_restarts",
            self.crash_loop.max_unit_restarts,
        )?;
        at_least_one(
            "daemon.circuit_breaker.max_failures",
            self.circuit_breaker.max_failures,
        )?;
        if self.full_pass_interval < Duration::from_secs(1) {
            return Err(err(
                "daemon.full_pass_interval".into(),
                "must be at least 1s (a full snapshot reads the whole host)".into(),
            ));
        }
        let mut hooks = Vec::with_capacity(self.hooks.len());
        for (i, hook) in self.hooks.into_iter().enumerate() {
            let field = format!("daemon.hooks[{i}]");
            hooks.push(match (hook.exec, hook.webhook) {
                (Some(argv), None) => {
                    match argv.first() {
                        Some(program) if Path::new(program).is_absolute() => {}
                        Some(program) => {
                            return Err(err(
                                format!("{field}.exec"),
                                format!("`{program}` must be an absolute path (no shell, no PATH search)"),
                            ))
                        }
                        None => {
                            return Err(err(
                                format!("{field}.exec"),
                                "must name a program: `exec: [/path/to/program, arg, ...]`".into(),
                            ))
                        }
                    }
                    Hook::Exec(argv)
                }
                (None, Some(url)) => {
                    let parsed = crate::adapters::probe::HttpUrl::parse(&url)
                        .map_err(|e| err(format!("{field}.webhook"), e.to_string()))?;
                    if !is_loopback_host(&parsed.host) {
                        return Err(err(
                            format!("{field}.webhook"),
                            format!("`{url}` is not a loopback URL; webhooks go over plain HTTP, so only `127.0.0.1`, `[::1]` or `localhost` are allowed\nhelp: run a relay on this host"),
                        ));
                    }
                    Hook::Webhook(url)
                }
                _ => {
                    return Err(err(
                        field,
                        "a hook is exactly one of `exec: [argv...]` or `webhook: URL`".into(),
                    ))
                }
            });
        }
        let metrics = match self.metrics {
            None => None,
            Some(text) => {
                let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                    err(
                        "daemon.metrics".into(),
                        format!("`{text}` is not `ip:port`, e.g. `{DEFAULT_METRICS}`"),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(err(
                        "daemon.metrics".into(),
                        format!("`{text}` is not a loopback address; the endpoint has no authentication\nhelp: use `127.0.0.1:PORT` or `[::1]:PORT`, or `null` to turn it off"),
                    ));
                }
                Some(addr)
            }
        };
        let lock_file = self
            .lock_file
            .unwrap_or_else(|| state_dir.join("daemon.lock"));
        if !lock_file.is_absolute() {
            return Err(err(
                "daemon.lock_file".into(),
                format!("`{}` must be an absolute path", lock_file.display()),
            ));
        }
        Ok(DaemonSettings {
            mode: self.mode,
            probe_interval: self.probe_interval,
            debounce: self.debounce,
            full_pass_interval: self.full_pass_interval,
            start_failure_window: self.start_failure_window,
            rate_limit: RateLimit {
                max_actions: self.rate_limit.max_actions,
                per: self.rate_limit.per,
            },
            crash_loop: CrashLoop {
                max_failures: self.crash_loop.max_failures,
                within: self.crash_loop.within,
                max_unit_restarts: self.crash_loop.max_unit_restarts,
            },
            circuit_breaker: CircuitBreaker {
                max_failures: self.circuit_breaker.max_failures,
                per: self.circuit_breaker.per,
            },
            hooks,
            metrics,
            lock_file,
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_yaml(Path::new("medic.yaml"), text)
    }

    #[test]
    fn the_format_version_defaults_to_1_and_a_newer_one_is_refused() {
        assert!(
            parse("nginx:\n  unit: nginx.service\n").is_ok(),
            "no version: format 1"
        );
        assert!(parse("version: 1\n").is_ok());
        let e = parse("version: 2\n").unwrap_err().to_string();
        assert!(
            e.contains("`version`: format 2 is not one this nginx-medic reads"),
            "{e}"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.nginx.binary, PathBuf::from("/usr/sbin/nginx"));
        assert_eq!(s.nginx.reload, ReloadMethod::Systemd);
        assert_eq!(s.bus, Bus::System);
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/nginx-medic"));
    }

    #[test]
    fn full_example_parses() {
        let s = parse(
            "nginx:\n  binary: /usr/sbin/nginx\n  conf: /etc/nginx/nginx.conf\n  prefix: null\n  error_log: null\n  reload: signal\n  unit: nginx.service\nsystemd:\n  bus: user\nbackends:\n  - upstream: 127.0.0.1:8000\n    unit: api.service\n    bind: { file: /etc/default/api, key: HOST }\n  - upstream: unix:/run/php/php8.2-fpm.sock\nplaybooks: [/p]\ntemplates: [/t]\nstate_dir: /s\n",
        )
        .unwrap();
        assert_eq!(s.nginx.reload, ReloadMethod::Signal);
        assert_eq!(s.bus, Bus::User);
        assert_eq!(s.backends[0].upstream.to_string(), "127.0.0.1:8000");
        assert_eq!(
            s.backends[1].upstream.to_string(),
            "unix:/run/php/php8.2-fpm.sock"
        );
        assert_eq!(s.backends[0].bind.as_ref().unwrap().key, "HOST");
        assert!(s.backends[0].heal, "heal defaults to true");
    }

    #[test]
    fn heal_false_is_read_per_backend() {
        let s = parse(
            "backends:\n  - upstream: 127.0.0.1:8000\n    unit: api.service\n    heal: false\n  - upstream: 127.0.0.1:3000\n    heal: true\n",
        )
        .unwrap();
        assert!(!s.backends[0].heal);
        assert!(s.backends[1].heal);
        let e = parse("backends:\n  - upstream: 127.0.0.1:8000\n    heal: never\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("medic.yaml:3:11: `backends[0].heal`: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let e = parse("nginx:\n  binary: /x\n  reloads: signal\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("medic.yaml:3:3: `nginx.reloads`: unknown field `reloads`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_enum_value_names_field() {
        let e = parse("systemd:\n  bus: session\n").unwrap_err().to_string();
        assert!(
            e.contains("medic.yaml:2:") && e.contains("`systemd.bus`"),
            "{e}"
        );
    }

    #[test]
    fn bad_upstream_is_rejected() {
        let e = parse("backends:\n  - upstream: nonsense\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "medic.yaml: `backends[0].upstream`: `nonsense` is not `host:port` or `unix:/path`"
        );
    }

    #[test]
    fn upstream_addresses_parse() {
        assert_eq!(
            UpstreamAddr::parse("[::1]:3000"),
            Some(UpstreamAddr::Tcp {
                host: "::1".into(),
                port: 3000
            })
        );
        assert_eq!(
            UpstreamAddr::parse("[::1]:3000").unwrap().to_string(),
            "[::1]:3000"
        );
        assert_eq!(UpstreamAddr::parse("unix:relative"), None);
        assert_eq!(UpstreamAddr::parse("host:99999"), None);
    }

    #[test]
    fn daemon_defaults_observe_and_limits() {
        let s = parse("").unwrap();
        let d = &s.daemon;
        assert_eq!(d.mode, DaemonMode::Observe);
        assert_eq!(d.probe_interval, Duration::from_secs(5));
        assert_eq!(d.start_failure_window, Duration::from_secs(5));
        assert_eq!(d.full_pass_interval, Duration::from_secs(300));
        assert_eq!(
            d.rate_limit,
            RateLimit {
                max_actions: 3,
                per: Duration::from_secs(600)
            }
        );
        assert_eq!(d.metrics, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(
            d.lock_file,
            PathBuf::from("/var/lib/nginx-medic/daemon.lock")
        );
        assert!(d.hooks.is_empty());
    }

    #[test]
    fn daemon_section_parses() {
        let s = parse(
            "state_dir: /s\ndaemon:\n  mode: apply\n  probe_interval: 500ms\n  debounce: 100ms\n  full_pass_interval: 1m\n  rate_limit: { max_actions: 2, per: 1m }\n  crash_loop: { max_failures: 3, within: 30s, max_unit_restarts: 4 }\n  circuit_breaker: { max_failures: 9, per: 1h }\n  hooks:\n    - exec: [/bin/sh, -c, 'cat > /tmp/x']\n    - webhook: http://127.0.0.1:9000/medic\n  metrics: null\n  lock_file: /run/medic.lock\n",
        )
        .unwrap();
        let d = s.daemon;
        assert_eq!(d.mode, DaemonMode::Apply);
        assert_eq!(d.probe_interval, Duration::from_millis(500));
        assert_eq!(d.debounce, Duration::from_millis(100));
        assert_eq!(d.full_pass_interval, Duration::from_secs(60));
        assert_eq!(d.rate_limit.per, Duration::from_secs(60));
        assert_eq!(d.crash_loop.max_unit_restarts, 4);
        assert_eq!(d.circuit_breaker.per, Duration::from_secs(3600));
        assert_eq!(
            d.hooks,
            vec![
                Hook::Exec(vec!["/bin/sh".into(), "-c".into(), "cat > /tmp/x".into()]),
                Hook::Webhook("http://127.0.0.1:9000/medic".into())
            ]
        );
        assert_eq!(d.metrics, None);
        assert_eq!(d.lock_file, PathBuf::from("/run/medic.lock"));
    }

    #[test]
    fn daemon_errors_name_line_and_field() {
        let e = parse("daemon:\n  mode: heal\n").unwrap_err().to_string();
        assert!(
            e.starts_with("medic.yaml:2:9: `daemon.mode`: unknown variant `heal`"),
            "{e}"
        );
        let e = parse("daemon:\n  rate_limit:\n    per: 10 minutes\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "medic.yaml:3:5: `daemon.rate_limit.per`: `10 minutes` is not a duration"
            ),
            "{e}"
        );
        let e = parse("daemon:\n  probe_intervall: 1s\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`daemon.probe_intervall`: unknown field"), "{e}");
    }

    #[test]
    fn daemon_values_are_checked() {
        let e = parse("daemon:\n  metrics: 0.0.0.0:9187\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("medic.yaml: `daemon.metrics`: `0.0.0.0:9187` is not a loopback address"),
            "{e}"
        );
        let e = parse("daemon:\n  hooks:\n    - webhook: http://example.com/x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`daemon.hooks[0].webhook`"), "{e}");
        let e = parse("daemon:\n  hooks:\n    - exec: [notify-send]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an absolute path"), "{e}");
        let e = parse("daemon:\n  hooks:\n    - {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one of"), "{e}");
        let e = parse("daemon:\n  rate_limit: { max_actions: 0 }\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "medic.yaml: `daemon.rate_limit.max_actions`: must be at least 1"
        );
        let e = parse("daemon:\n  full_pass_interval: 500ms\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`daemon.full_pass_interval`: must be at least 1s"),
            "{e}"
        );
    }
}
