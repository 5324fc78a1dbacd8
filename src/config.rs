//! `medic.yaml`: the serde types of the file, and the validated `Settings` the rest of the crate sees.
//!
//! Every key is optional; unknown keys are rejected with the file, line and field. This is one of
//! the two places (with `playbook::load`) that read YAML, so swapping `serde_yaml` for a maintained
//! fork stays a one-file change.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    nginx: NginxSection,
    systemd: SystemdSection,
    backends: Vec<BackendSection>,
    playbooks: Vec<PathBuf>,
    templates: Vec<PathBuf>,
    state_dir: PathBuf,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
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
            });
        }
        if self.nginx.unit.is_empty() {
            return Err(err("nginx.unit".into(), "must name a unit".into()));
        }
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_yaml(Path::new("medic.yaml"), text)
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
}
