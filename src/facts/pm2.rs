//! PM2 facts: the PM2 daemons that run backends (found through their `pm2-USER.service`
//! units), the apps each one runs as `pm2 jlist` reports them, and which app serves a dialled
//! address. Pure: the adapter runs `pm2`, this module reads its output.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One PM2 daemon ("God daemon") and its apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pm2Daemon {
    /// The systemd unit that runs it (`pm2-root.service`), when one does.
    pub unit: Option<String>,
    /// `PM2_HOME`: its socket, dump file and logs (`/root/.pm2`).
    pub home: PathBuf,
    /// The `pm2` executable its unit runs.
    pub binary: PathBuf,
    /// The owner of `PM2_HOME`: `pm2` commands run as this user.
    pub uid: u32,
    pub gid: u32,
    /// The apps, or why they could not be listed.
    pub apps: super::Gathered<Vec<Pm2App>>,
}

/// One app as `pm2 jlist` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pm2App {
    pub name: String,
    pub pm_id: u32,
    /// 0 while it has no process.
    pub pid: u32,
    /// `online`, `stopped`, `errored`, `launching`, `waiting restart`, `stopping`, …
    pub status: String,
    /// How many times PM2 restarted it (`restart_time`).
    pub restarts: u32,
    /// Restarts that came sooner than `min_uptime` after a start.
    pub unstable_restarts: u32,
    /// `max_restarts` when the app sets it (PM2's default is 16).
    pub max_restarts: Option<u32>,
    pub autorestart: bool,
    pub exit_code: Option<i64>,
    pub cwd: Option<String>,
    /// The script PM2 runs (`pm_exec_path`).
    pub script: Option<String>,
    pub args: Vec<String>,
    /// Its environment as PM2 passes it (values kept: `HOST`, `PORT` choose the bind).
    pub env: BTreeMap<String, String>,
    pub out_log: Option<String>,
    pub err_log: Option<String>,
}

impl Pm2App {
    /// PM2 gave up on it, or it fails again right after every start: another restart would
    /// only add a turn to the loop (PM2's own `max_restarts` decides, not nginx-medic). A loop
    /// needs a restart: PM2 counts an exit sooner than `min_uptime` as unstable even when it
    /// does not restart the app (`autorestart: false`), and one quick death is not a loop.
    pub fn crash_looping(&self) -> bool {
        let down = !matches!(self.status.as_str(), "online" | "stopped" | "stopping");
        let failed_again = self.unstable_restarts > 0 && self.status != "online";
        self.restarts > 0 && (failed_again || down)
    }

    /// Whether the app's environment or arguments name `port`: then it may serve it.
    pub fn mentions_port(&self, port: u16) -> bool {
        let port = port.to_string();
        self.env
            .iter()
            .any(|(k, v)| (k == "PORT" || k.ends_with("_PORT")) && *v == port)
            || self.args.iter().any(|a| {
                a == &port
                    || a.rsplit_once(['=', ':'])
                        .is_some_and(|(_, p)| p == port.as_str())
            })
    }
}

/// What went wrong reading `pm2 jlist`.
#[derive(Debug, thiserror::Error)]
pub enum JlistError {
    #[error("`pm2 jlist` printed no JSON list")]
    NoList,
    #[error("cannot read `pm2 jlist` output")]
    Json {
        #[source]
        source: serde_json::Error,
    },
}

// The output of another program: unknown keys are its own business, so no deny_unknown_fields.
#[derive(Deserialize)]
struct RawApp {
    name: String,
    pm_id: u32,
    #[serde(default)]
    pid: u32,
    pm2_env: RawEnv,
}

#[derive(Deserialize)]
struct RawEnv {
    #[serde(default)]
    status: String,
    #[serde(default)]
    restart_time: u32,
    #[serde(default)]
    unstable_restarts: u32,
    max_restarts: Option<u32>,
    #[serde(default = "yes")]
    autorestart: bool,
    exit_code: Option<i64>,
    pm_cwd: Option<String>,
    pm_exec_path: Option<String>,
    #[serde(default)]
    args: Args,
    #[serde(default)]
    env: BTreeMap<String, serde_json::Value>,
    pm_out_log_path: Option<String>,
    pm_err_log_path: Option<String>,
}

fn yes() -> bool {
    true
}

/// `args` is a list, a string or absent, depending on how the app was started.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Args {
    List(Vec<String>),
    One(String),
    #[default]
    None,
}

/// Reads `pm2 jlist` output (the JSON list may follow warning lines).
pub fn parse_jlist(text: &str) -> Result<Vec<Pm2App>, JlistError> {
    let start = text
        .lines()
        .scan(0usize, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| line.trim_start().starts_with('['))
        .map(|(at, _)| at)
        .ok_or(JlistError::NoList)?;
    let raw: Vec<RawApp> = serde_json::from_str(text.get(start..).unwrap_or_default())
        .map_err(|source| JlistError::Json { source })?;
    Ok(raw
        .into_iter()
        .map(|a| {
            let e = a.pm2_env;
            Pm2App {
                name: a.name,
                pm_id: a.pm_id,
                pid: a.pid,
                status: e.status,
                restarts: e.restart_time,
                unstable_restarts: e.unstable_restarts,
                max_restarts: e.max_restarts,
                autorestart: e.autorestart,
                exit_code: e.exit_code,
                cwd: e.pm_cwd,
                script: e.pm_exec_path,
                args: match e.args {
                    Args::List(l) => l,
                    Args::One(s) => s.split_whitespace().map(str::to_string).collect(),
                    Args::None => Vec::new(),
                },
                env: e
                    .env
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::String(s) => Some((k, s)),
                        serde_json::Value::Number(n) => Some((k, n.to_string())),
                        _ => None,
                    })
                    .collect(),
                out_log: e.pm_out_log_path,
                err_log: e.pm_err_log_path,
            }
        })
        .collect())
}

/// The PM2 home a unit made by `pm2 startup` runs its daemon with: `PM2_HOME=` of its
/// environment, when its `ExecStart` runs `pm2`.
pub fn daemon_of_unit(unit: &super::units::UnitFacts) -> Option<(PathBuf, PathBuf)> {
    let command = unit.exec_start.first()?;
    let runs_pm2 = Path::new(&command.path)
        .file_name()
        .is_some_and(|n| n == "pm2")
        || command.argv.iter().take(2).any(|w| w.ends_with("/pm2"));
    if !runs_pm2 {
        return None;
    }
    let home = unit.env().get("PM2_HOME").cloned()?;
    let binary = command
        .argv
        .iter()
        .take(2)
        .find(|w| w.ends_with("/pm2"))
        .cloned()
        .unwrap_or_else(|| command.path.clone());
    Some((PathBuf::from(home), PathBuf::from(binary)))
}

/// The PM2 home a God daemon's process title names: `PM2 v5.3.0: God Daemon (/root/.pm2)`.
pub fn home_of_title(cmdline: &[String]) -> Option<PathBuf> {
    let title = cmdline.join(" ");
    let rest = title.strip_prefix("PM2 v")?;
    let (_, home) = rest.split_once("God Daemon (")?;
    Some(PathBuf::from(home.strip_suffix(')')?))
}

/// The file an app's ecosystem is read from: `ecosystem.config.js` (or `.cjs`, `.json`) in the
/// app's working directory, then beside its script.
pub fn ecosystem_candidates(app: &Pm2App) -> Vec<PathBuf> {
    const NAMES: [&str; 4] = [
        "ecosystem.config.js",
        "ecosystem.config.cjs",
        "ecosystem.json",
        "ecosystem.config.json",
    ];
    let mut dirs: Vec<PathBuf> = app.cwd.iter().map(PathBuf::from).collect();
    if let Some(dir) = app.script.as_deref().and_then(|s| Path::new(s).parent()) {
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs.iter()
        .flat_map(|d| NAMES.iter().map(move |n| d.join(n)))
        .collect()
}

/// Where an ecosystem file sets an app's bind host: the byte span of a literal string value
/// of the host key inside that app's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLiteral {
    /// The key as written (`HOST`).
    pub key: String,
    pub value: String,
    /// Byte span of the value between its quotes.
    pub start: usize,
    pub end: usize,
}

/// Why an ecosystem file's bind host is not edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcosystemError {
    #[error("no app named `{0}` is written in it")]
    NoApp(String),
    #[error("the app's entry sets no host key (HOST, BIND, …) to a string")]
    NoHost,
    #[error("its `{0}` is computed, not a literal string: edit it by hand")]
    Computed(String),
    #[error("its app entry is set more than once (`{0}` twice): edit it by hand")]
    Ambiguous(String),
}

/// Keys that hold a Node app's bind host.
const HOST_KEYS: [&str; 5] = ["HOST", "BIND", "BIND_HOST", "LISTEN_HOST", "HOSTNAME"];

/// Finds the literal host string of app `name` in an ecosystem file's text (JavaScript or
/// JSON). Only `KEY: 'value'` / `"KEY": "value"` with a plain string literal counts; a template
/// string, a variable, a call or concatenation is computed and never edited.
pub fn find_host_literal(text: &str, name: &str) -> Result<HostLiteral, EcosystemError> {
    let entry = app_entry(text, name)?;
    let body = text.get(entry.0..entry.1).unwrap_or_default();
    let mut found: Option<HostLiteral> = None;
    for key in HOST_KEYS {
        for (at, _) in key_positions(body, key) {
            let after = body.get(at..).unwrap_or_default();
            let value_at = at + after.len() - after.trim_start().len();
            let value = body.get(value_at..).unwrap_or_default();
            let Some(quote) = value.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                return Err(EcosystemError::Computed(key.to_string()));
            };
            let inner = value.get(1..).unwrap_or_default();
            let Some(close) = inner.find(quote) else {
                return Err(EcosystemError::Computed(key.to_string()));
            };
            let literal = inner.get(..close).unwrap_or_default();
            let tail = inner.get(close + 1..).unwrap_or_default().trim_start();
            let plain = !literal.contains('\\')
                && literal
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
                && (tail.is_empty() || tail.starts_with([',', '}', '\n']));
            if !plain {
                return Err(EcosystemError::Computed(key.to_string()));
            }
            if found.is_some() {
                return Err(EcosystemError::Ambiguous(key.to_string()));
            }
            let start = entry.0 + value_at + 1;
            found = Some(HostLiteral {
                key: key.to_string(),
                value: literal.to_string(),
                start,
                end: start + literal.len(),
            });
        }
    }
    found.ok_or(EcosystemError::NoHost)
}

/// The byte span of the `{ … }` object that holds `name: 'NAME'` (or `"name": "NAME"`).
fn app_entry(text: &str, name: &str) -> Result<(usize, usize), EcosystemError> {
    let mut entries = Vec::new();
    for (at, _) in key_positions(text, "name") {
        let rest = text.get(at..).unwrap_or_default().trim_start();
        let named = [format!("'{name}'"), format!("\"{name}\"")]
            .iter()
            .any(|q| rest.starts_with(q.as_str()));
        if !named {
            continue;
        }
        let open = text
            .get(..at)
            .and_then(|before| before.rfind('{'))
            .ok_or_else(|| EcosystemError::NoApp(name.to_string()))?;
        let close = matching_brace(text, open).ok_or_else(|| EcosystemError::NoApp(name.into()))?;
        entries.push((open, close));
    }
    match entries.as_slice() {
        [] => Err(EcosystemError::NoApp(name.to_string())),
        [one] => Ok(*one),
        _ => Err(EcosystemError::Ambiguous("name".into())),
    }
}

/// Positions just after `KEY:` (the key bare or quoted, as a whole word), and the key's start.
fn key_positions<'t>(text: &'t str, key: &'t str) -> impl Iterator<Item = (usize, usize)> + 't {
    text.match_indices(key).filter_map(move |(i, _)| {
        let before = text.get(..i)?.chars().next_back();
        let quoted = matches!(before, Some('\'' | '"'));
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            return None;
        }
        let mut end = i + key.len();
        if quoted {
            if text.get(end..end + 1)? != text.get(i - 1..i)? {
                return None;
            }
            end += 1;
        } else if text
            .get(end..)?
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return None;
        }
        let rest = text.get(end..)?;
        let colon = rest.len() - rest.trim_start().len();
        (rest.trim_start().starts_with(':')).then_some((end + colon + 1, i))
    })
}

/// The index of the `}` closing the `{` at `open`, skipping strings and comments.
fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    let mut quote: Option<u8> = None;
    while let Some(&b) = bytes.get(i) {
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' | b'`' => quote = Some(b),
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    while bytes.get(i).is_some_and(|c| *c != b'\n') {
                        i += 1;
                    }
                }
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// The last `lines` lines of an app's own logs (error log first: that is where a crash is told).
pub fn last_lines(err: &str, out: &str, lines: usize) -> Vec<String> {
    let tail = |t: &str| -> Vec<String> {
        let all: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        all.iter()
            .skip(all.len().saturating_sub(lines))
            .map(|l| l.to_string())
            .collect()
    };
    let mut got = tail(err);
    if got.is_empty() {
        got = tail(out);
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    const JLIST: &str = include_str!("../../tests/fixtures/pm2/jlist.json");

    #[test]
    fn reads_jlist_as_pm2_prints_it() {
        let apps = parse_jlist(JLIST).unwrap();
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["api", "web", "crashy"]);
        let crashy = &apps[2];
        assert_eq!(crashy.status, "errored");
        assert_eq!(crashy.restarts, 2);
        assert_eq!(crashy.max_restarts, Some(3));
        assert!(crashy.crash_looping());
        assert!(!apps[0].crash_looping(), "stopped, never restarted");
        assert!(!apps[1].crash_looping(), "online");
        let killed_once = Pm2App {
            status: "stopped".into(),
            restarts: 0,
            unstable_restarts: 1,
            ..apps[0].clone()
        };
        assert!(
            !killed_once.crash_looping(),
            "one exit sooner than min_uptime, never restarted"
        );
        assert_eq!(apps[1].env.get("PORT").map(String::as_str), Some("18411"));
        assert!(apps[1].mentions_port(18411));
        assert!(!apps[1].mentions_port(18410));
        assert!(apps[1]
            .err_log
            .as_deref()
            .unwrap()
            .ends_with("web-error.log"));
    }

    #[test]
    fn warnings_before_the_list_are_skipped() {
        let text = format!(">>>> In-memory PM2 is out-of-date\n{JLIST}");
        assert_eq!(parse_jlist(&text).unwrap().len(), 3);
        assert!(matches!(parse_jlist("oops"), Err(JlistError::NoList)));
    }

    #[test]
    fn a_god_daemon_title_names_its_home() {
        let title = vec!["PM2 v7.0.4: God Daemon (/root/.pm2)".to_string()];
        assert_eq!(home_of_title(&title), Some(PathBuf::from("/root/.pm2")));
        assert_eq!(home_of_title(&["node".into()]), None);
    }

    const ECOSYSTEM: &str = "module.exports = {\n  apps: [\n    {\n      name: 'api',\n      script: './api.js',\n      env: { HOST: '127.0.0.2', PORT: 3000 },\n    },\n    {\n      name: \"web\",\n      env: { \"HOST\": process.env.WEB_HOST || '127.0.0.1' },\n    },\n    { name: 'tpl', env: { HOST: `127.0.0.${n}` } },\n  ],\n};\n";

    #[test]
    fn only_a_literal_host_string_is_found() {
        let found = find_host_literal(ECOSYSTEM, "api").unwrap();
        assert_eq!(found.key, "HOST");
        assert_eq!(found.value, "127.0.0.2");
        assert_eq!(&ECOSYSTEM[found.start..found.end], "127.0.0.2");
        assert_eq!(
            find_host_literal(ECOSYSTEM, "web"),
            Err(EcosystemError::Computed("HOST".into()))
        );
        assert_eq!(
            find_host_literal(ECOSYSTEM, "tpl"),
            Err(EcosystemError::Computed("HOST".into()))
        );
        assert_eq!(
            find_host_literal(ECOSYSTEM, "nope"),
            Err(EcosystemError::NoApp("nope".into()))
        );
        let concatenated = "{ name: 'a', env: { HOST: '127.0.0.' + '2' } }";
        assert_eq!(
            find_host_literal(concatenated, "a"),
            Err(EcosystemError::Computed("HOST".into()))
        );
        assert_eq!(
            find_host_literal("{ name: 'a', env: { PORT: '1' } }", "a"),
            Err(EcosystemError::NoHost)
        );
    }

    #[test]
    fn the_error_log_speaks_first() {
        assert_eq!(last_lines("a\nb\nc\n", "x\n", 2), ["b", "c"]);
        assert_eq!(last_lines("", "x\ny\n", 5), ["x", "y"]);
    }
}
