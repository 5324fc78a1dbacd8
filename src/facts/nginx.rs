//! The nginx facts: sites, locations, pass targets and upstream pools read from a loaded
//! configuration ([`crate::nginx_conf::Config`]), each with the place it was written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::nginx_conf::{path_key, Arg, Config, Directive, Pos, Span};

/// What the nginx configuration says about where requests go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NginxFacts {
    /// The main configuration file.
    pub conf: PathBuf,
    /// Every file read, in nginx's order (as `nginx -T` lists them).
    pub files: Vec<PathBuf>,
    /// The worker user (`user` directive), if set.
    pub user: Option<String>,
    /// Every `error_log` file at any level, absolute (relative ones joined to the prefix),
    /// without duplicates; `stderr`, `syslog:` and `memory:` targets are left out.
    pub error_logs: Vec<PathBuf>,
    /// The `server` blocks of `http`, in order.
    pub sites: Vec<Site>,
    /// The `upstream` blocks of `http`, in order.
    pub upstreams: Vec<Upstream>,
}

/// Where something is written: file, 1-based line:col and byte span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct At {
    /// The file (one allocation per file, shared by everything written in it: a large
    /// configuration has a hundred thousand places).
    pub file: Arc<Path>,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// One `server` block of `http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// The arguments of every `server_name`; empty when there is none.
    pub server_names: Vec<String>,
    /// The address argument of each `listen` (e.g. `80`, `[::]:80`, `127.0.0.1:8080`).
    pub listen: Vec<String>,
    /// Each `listen` with the parameters that decide how a probe reaches it (`ssl`,
    /// `default_server`, …).
    pub listeners: Vec<super::aim::Listen>,
    /// The `server` block.
    pub at: At,
    /// Every location, nested ones included, in document order.
    pub locations: Vec<Location>,
    /// The argument of every `root` written in the `server` block or inside it (its
    /// locations, nested ones and `if` blocks included), as written, in document order and
    /// without duplicates; one inherited from `http` is not the site's own and is left out.
    pub roots: Vec<String>,
}

/// One `location` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// The location's arguments joined by a space, e.g. `/` or `~ \.php$`.
    pub path: String,
    /// The `location` block.
    pub at: At,
    /// Where it passes requests: its own pass directive, else the first one inside an `if`.
    pub pass: Option<Pass>,
    /// The effective values of the tracked proxy_/fastcgi_ settings, inherited
    /// http → server → location → nested location; a setting written nowhere is absent (nginx
    /// then uses its default, e.g. 60s timeouts and `error timeout` for next_upstream).
    /// Shared with the enclosing block when the location writes none of its own, as most do.
    pub settings: Arc<BTreeMap<String, String>>,
}

/// A `proxy_pass`, `fastcgi_pass`, `uwsgi_pass` or `grpc_pass` directive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// The directive name.
    pub directive: String,
    /// The target argument as nginx sees it (unquoted).
    pub raw: String,
    /// What it points at.
    pub target: Target,
    /// The whole directive.
    pub at: At,
    /// Just the target argument, for rewriting it.
    pub arg: At,
}

/// Where a pass directive or an upstream server points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A host (name, IPv4 or IPv6 without brackets) and port.
    Tcp {
        /// `http`, `https`, `grpc`, `grpcs`… when written.
        scheme: Option<String>,
        /// The host.
        host: String,
        /// The port, the scheme's default when none is written.
        port: u16,
    },
    /// A unix socket.
    Unix {
        /// The socket path.
        path: PathBuf,
    },
    /// An `upstream` block of that name.
    Upstream {
        /// The upstream's name.
        name: String,
    },
    /// Known only at request time (contains a variable) or not understood; never guessed.
    Dynamic {
        /// The target as written.
        raw: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port, .. } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port, .. } => write!(f, "{host}:{port}"),
            Target::Unix { path } => write!(f, "unix:{}", path.display()),
            Target::Upstream { name } => write!(f, "upstream {name}"),
            Target::Dynamic { raw } => f.write_str(raw),
        }
    }
}

/// One `upstream` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    /// Its name.
    pub name: String,
    /// The block.
    pub at: At,
    /// Its `server` lines.
    pub servers: Vec<UpstreamServer>,
}

/// One `server` line of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamServer {
    /// The address (`Tcp` with port 80 by default, or `Unix`).
    pub target: Target,
    /// The parameters after the address (`weight=3`, `backup`…).
    pub params: Vec<String>,
    /// The `server` directive.
    pub at: At,
}

/// The settings whose effective value each location records.
const TRACKED: &[&str] = &[
    "connect_timeout",
    "read_timeout",
    "send_timeout",
    "buffer_size",
    "buffers",
    "busy_buffers_size",
    "next_upstream",
];

const PASSES: &[&str] = &["proxy_pass", "fastcgi_pass", "uwsgi_pass", "grpc_pass"];

fn is_tracked(name: &str) -> bool {
    let rest = name
        .strip_prefix("proxy_")
        .or_else(|| name.strip_prefix("fastcgi_"));
    rest.is_some_and(|r| TRACKED.contains(&r))
}

/// Reads the facts out of a loaded configuration; `prefix` is nginx's prefix (`-p`), against
/// which relative log paths resolve.
pub fn extract(conf: &Config, prefix: &Path) -> NginxFacts {
    let cx = Cx {
        paths: conf
            .files
            .iter()
            .map(|f| Arc::from(f.path.as_path()))
            .collect(),
    };
    let mut facts = NginxFacts {
        conf: conf
            .files
            .first()
            .map(|f| f.path.clone())
            .unwrap_or_default(),
        files: conf.files.iter().map(|f| f.path.clone()).collect(),
        user: conf
            .directives
            .iter()
            .find(|d| d.name == "user")
            .and_then(|d| d.arg(0))
            .map(str::to_string),
        error_logs: Vec::new(),
        sites: Vec::new(),
        upstreams: Vec::new(),
    };
    collect_error_logs(&conf.directives, prefix, &mut facts.error_logs);

    for http in conf.directives.iter().filter(|d| d.name == "http") {
        let upstream_names: BTreeSet<&str> = http
            .children()
            .iter()
            .filter(|d| d.name == "upstream")
            .filter_map(|d| d.arg(0))
            .collect();
        let inherited = settings(&Arc::default(), http.children());
        for d in http.children() {
            match d.name.as_str() {
                "upstream" if d.block.is_some() => facts.upstreams.push(cx.upstream(d)),
                "server" if d.block.is_some() => {
                    facts.sites.push(cx.site(d, &inherited, &upstream_names))
                }
                _ => {}
            }
        }
    }
    facts
}

fn collect_error_logs(directives: &[Directive], prefix: &Path, out: &mut Vec<PathBuf>) {
    let mut seen: HashSet<OsString> = out.iter().map(|p| path_key(p).into_owned()).collect();
    collect_new_error_logs(directives, prefix, &mut seen, out);
}

/// As [`collect_error_logs`], `seen` holding what `out` has (each site may name its own log:
/// a scan of `out` per directive is quadratic).
fn collect_new_error_logs(
    directives: &[Directive],
    prefix: &Path,
    seen: &mut HashSet<OsString>,
    out: &mut Vec<PathBuf>,
) {
    for d in directives {
        if d.name == "error_log" {
            if let Some(target) = d.arg(0) {
                let skip = target == "stderr"
                    || target.starts_with("syslog:")
                    || target.starts_with("memory:");
                let path = prefix.join(target);
                if !skip && seen.insert(path_key(&path).into_owned()) {
                    out.push(path);
                }
            }
        }
        collect_new_error_logs(d.children(), prefix, seen, out);
    }
}

/// The tracked settings of `parent` overridden by those written directly in `children`: the
/// parent's own map when `children` write none.
fn settings(
    parent: &Arc<BTreeMap<String, String>>,
    children: &[Directive],
) -> Arc<BTreeMap<String, String>> {
    let mut own = children.iter().filter(|d| is_tracked(&d.name)).peekable();
    if own.peek().is_none() {
        return Arc::clone(parent);
    }
    let mut out = BTreeMap::clone(parent);
    for d in own {
        out.insert(String::from(d.name.as_str()), joined(&d.args));
    }
    Arc::new(out)
}

/// A word as a `String` (a `CompactString`'s `to_string` goes through the formatter).
fn owned(word: &CompactString) -> String {
    String::from(word.as_str())
}

/// The values of `args` joined by a space.
fn joined(args: &[Arg]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&a.value);
    }
    out
}

/// Every `root` argument in `body` and the blocks inside it, in document order, once each.
fn roots(body: &[Directive]) -> Vec<String> {
    fn walk(body: &[Directive], out: &mut Vec<String>) {
        for d in body {
            if d.name == "root" {
                if let Some(root) = d.arg(0) {
                    if !out.iter().any(|r| r == root) {
                        out.push(root.to_string());
                    }
                }
            }
            walk(d.children(), out);
        }
    }
    let mut out = Vec::new();
    walk(body, &mut out);
    out
}

struct Cx {
    /// The path of each file of the configuration, by index.
    paths: Vec<Arc<Path>>,
}

impl Cx {
    fn path(&self, file: usize) -> Arc<Path> {
        match self.paths.get(file) {
            Some(p) => Arc::clone(p),
            None => Arc::from(Path::new("")),
        }
    }

    fn at(&self, file: usize, pos: Pos, span: Span) -> At {
        At {
            file: self.path(file),
            line: pos.line,
            col: pos.col,
            start: span.start,
            end: span.end,
        }
    }

    fn at_directive(&self, d: &Directive) -> At {
        self.at(d.file, d.pos, d.span)
    }

    fn at_arg(&self, d: &Directive, a: &Arg) -> At {
        self.at(d.file, a.pos, a.span)
    }

    fn upstream(&self, d: &Directive) -> Upstream {
        Upstream {
            name: d.arg(0).unwrap_or_default().to_string(),
            at: self.at_directive(d),
            servers: d
                .children()
                .iter()
                .filter(|s| s.name == "server")
                .map(|s| UpstreamServer {
                    target: parse_address(s.arg(0).unwrap_or_default(), None, 80, &BTreeSet::new()),
                    params: s.args.iter().skip(1).map(|a| owned(&a.value)).collect(),
                    at: self.at_directive(s),
                })
                .collect(),
        }
    }

    fn site(
        &self,
        d: &Directive,
        http: &Arc<BTreeMap<String, String>>,
        upstreams: &BTreeSet<&str>,
    ) -> Site {
        let body = d.children();
        let inherited = settings(http, body);
        let mut locations = Vec::new();
        self.locations(body, &inherited, upstreams, &mut locations);
        Site {
            server_names: body
                .iter()
                .filter(|c| c.name == "server_name")
                .flat_map(|c| c.args.iter().map(|a| owned(&a.value)))
                .collect(),
            listen: body
                .iter()
                .filter(|c| c.name == "listen")
                .filter_map(|c| c.arg(0))
                .map(str::to_string)
                .collect(),
            listeners: body
                .iter()
                .filter(|c| c.name == "listen")
                .filter_map(|c| {
                    let words: Vec<String> = c.args.iter().map(|a| owned(&a.value)).collect();
                    super::aim::Listen::from_args(&words)
                })
                .collect(),
            at: self.at_directive(d),
            locations,
            roots: roots(body),
        }
    }

    fn locations(
        &self,
        body: &[Directive],
        inherited: &Arc<BTreeMap<String, String>>,
        upstreams: &BTreeSet<&str>,
        out: &mut Vec<Location>,
    ) {
        for d in body
            .iter()
            .filter(|d| d.name == "location" && d.block.is_some())
        {
            let children = d.children();
            let settings = settings(inherited, children);
            // the nested locations inherit these settings; most locations have none
            let nested = children
                .iter()
                .any(|c| c.name == "location" && c.block.is_some())
                .then(|| Arc::clone(&settings));
            let pass = children
                .iter()
                .find(|c| PASSES.contains(&c.name.as_str()))
                .or_else(|| find_in_ifs(children))
                .and_then(|p| self.pass(p, upstreams));
            out.push(Location {
                path: joined(&d.args),
                at: self.at_directive(d),
                pass,
                settings,
            });
            if let Some(settings) = nested {
                self.locations(children, &settings, upstreams, out);
            }
        }
    }

    fn pass(&self, d: &Directive, upstreams: &BTreeSet<&str>) -> Option<Pass> {
        let arg = d.args.first()?;
        Some(Pass {
            directive: owned(&d.name),
            raw: owned(&arg.value),
            target: parse_pass(&d.name, &arg.value, upstreams),
            at: self.at_directive(d),
            arg: self.at_arg(d, arg),
        })
    }
}

/// The first pass directive inside the `if` blocks of a location body (depth first).
fn find_in_ifs(body: &[Directive]) -> Option<&Directive> {
    body.iter().filter(|d| d.name == "if").find_map(|d| {
        d.children()
            .iter()
            .find(|c| PASSES.contains(&c.name.as_str()))
            .or_else(|| find_in_ifs(d.children()))
    })
}

/// Interprets the target of a pass directive.
pub fn parse_pass(directive: &str, raw: &str, upstreams: &BTreeSet<&str>) -> Target {
    if raw.contains('$') {
        return Target::Dynamic {
            raw: raw.to_string(),
        };
    }
    let (scheme, rest) = match crate::facts::error_log::split_scheme(raw) {
        Some((s, rest)) => (Some(s.to_ascii_lowercase()), rest),
        None => (None, raw),
    };
    let default_port = match (directive, scheme.as_deref()) {
        ("proxy_pass", Some("http")) => Some(80),
        ("proxy_pass", Some("https")) => Some(443),
        ("grpc_pass", None | Some("grpc")) => Some(80),
        ("grpc_pass", Some("grpcs")) => Some(443),
        ("fastcgi_pass", None) => None,
        ("uwsgi_pass", None | Some("uwsgi") | Some("suwsgi")) => None,
        _ => {
            return Target::Dynamic {
                raw: raw.to_string(),
            }
        }
    };
    if let Some(path) = rest.strip_prefix("unix:") {
        // proxy_pass http://unix:/path:/uri — the path ends at the first `:`
        let path = path.split(':').next().unwrap_or_default();
        if path.is_empty() {
            return Target::Dynamic {
                raw: raw.to_string(),
            };
        }
        return Target::Unix {
            path: PathBuf::from(path),
        };
    }
    // only proxy_pass carries a URI part
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    match default_port {
        Some(port) => parse_address_with(authority, scheme, Some(port), upstreams, raw),
        None => parse_address_with(authority, scheme, None, upstreams, raw),
    }
}

/// Interprets an upstream `server` address: `host[:port]`, `[v6][:port]` or `unix:/path`.
fn parse_address(
    addr: &str,
    scheme: Option<String>,
    default_port: u16,
    upstreams: &BTreeSet<&str>,
) -> Target {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Target::Unix {
            path: PathBuf::from(path),
        };
    }
    parse_address_with(addr, scheme, Some(default_port), upstreams, addr)
}

fn parse_address_with(
    authority: &str,
    scheme: Option<String>,
    default_port: Option<u16>,
    upstreams: &BTreeSet<&str>,
    raw: &str,
) -> Target {
    let dynamic = || Target::Dynamic {
        raw: raw.to_string(),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return dynamic();
        };
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return dynamic(),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return dynamic();
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return dynamic(),
        },
        None if upstreams.contains(&host) => {
            return Target::Upstream {
                name: host.to_string(),
            }
        }
        None => match default_port {
            Some(p) => p,
            None => return dynamic(),
        },
    };
    Target::Tcp {
        scheme,
        host: host.to_string(),
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx_conf::{fixtures, load};

    fn facts(name: &str, main: &str) -> NginxFacts {
        let fs = fixtures::mount(name, "/etc/nginx");
        let conf = load(Path::new("/etc/nginx").join(main).as_path(), &fs).unwrap();
        extract(&conf, Path::new("/usr/share/nginx"))
    }

    fn tcp(scheme: Option<&str>, host: &str, port: u16) -> Target {
        Target::Tcp {
            scheme: scheme.map(str::to_string),
            host: host.into(),
            port,
        }
    }

    fn unix(path: &str) -> Target {
        Target::Unix { path: path.into() }
    }

    fn upstream(name: &str) -> Target {
        Target::Upstream { name: name.into() }
    }

    fn dynamic(raw: &str) -> Target {
        Target::Dynamic { raw: raw.into() }
    }

    /// (location path, pass target) for every location of a site.
    fn passes(site: &Site) -> Vec<(&str, Option<&Target>)> {
        site.locations
            .iter()
            .map(|l| (l.path.as_str(), l.pass.as_ref().map(|p| &p.target)))
            .collect()
    }

    #[test]
    fn multisite() {
        let f = facts("multisite", "nginx.conf");
        assert_eq!(f.conf, Path::new("/etc/nginx/nginx.conf"));
        assert_eq!(
            f.files,
            [
                "/etc/nginx/nginx.conf",
                "/etc/nginx/mime.types",
                "/etc/nginx/upstreams.conf",
                "/etc/nginx/sites-enabled/10-app.conf",
                "/etc/nginx/snippets/proxy-headers.conf",
                "/etc/nginx/sites-enabled/20-static.conf",
                "/etc/nginx/uwsgi_params",
            ]
            .map(PathBuf::from)
        );
        assert_eq!(f.user.as_deref(), Some("www-data"));
        assert_eq!(
            f.error_logs,
            [
                "/usr/share/nginx/error.log",
                "/var/log/nginx/http-error.log",
                "/usr/share/nginx/app-error.log",
            ]
            .map(PathBuf::from)
        );

        assert_eq!(f.sites.len(), 2);
        let app = &f.sites[0];
        assert_eq!(
            app.server_names,
            ["app.example.test", "www.app.example.test"]
        );
        assert_eq!(app.listen, ["80", "[::]:80"]);
        assert_eq!(
            passes(app),
            [
                ("/", Some(&upstream("app_backend"))),
                ("/api/", Some(&tcp(Some("http"), "127.0.0.1", 8000))),
                ("/api/admin/", Some(&tcp(Some("http"), "::1", 8001))),
                ("~ ^/ws/", Some(&unix("/run/ws/ws.sock"))),
                ("/internal/", Some(&unix("/run/app/internal.sock"))),
                ("/dyn/", Some(&dynamic("http://$backend"))),
                ("= /health", None),
            ]
        );
        let static_site = &f.sites[1];
        assert!(static_site.server_names.is_empty());
        assert_eq!(static_site.listen, ["127.0.0.1:8080", "[::1]:8080"]);
        assert_eq!(
            passes(static_site),
            [
                ("/", None),
                ("/grpc", Some(&tcp(Some("grpc"), "127.0.0.1", 50051))),
                ("/legacy", Some(&upstream("legacy"))),
                ("/secure", Some(&tcp(Some("https"), "localhost", 443))),
            ]
        );
    }

    #[test]
    fn settings_inherit_http_server_location_and_nested_location() {
        let f = facts("multisite", "nginx.conf");
        let get = |site: usize, loc: usize| {
            let s = &f.sites[site].locations[loc].settings;
            s.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        // server's proxy_read_timeout 90s overrides http's 30s; location overrides next_upstream
        assert_eq!(
            get(0, 0),
            [
                "proxy_connect_timeout=5s",
                "proxy_next_upstream=error timeout http_502",
                "proxy_read_timeout=90s",
            ]
        );
        // the nested location inherits its parent's buffers and overrides the timeout
        assert_eq!(
            get(0, 2),
            [
                "proxy_buffer_size=16k",
                "proxy_buffers=8 16k",
                "proxy_busy_buffers_size=32k",
                "proxy_connect_timeout=5s",
                "proxy_next_upstream=error timeout",
                "proxy_read_timeout=300s",
            ]
        );
        assert_eq!(
            get(1, 0),
            [
                "proxy_connect_timeout=5s",
                "proxy_next_upstream=error timeout",
                "proxy_read_timeout=30s",
            ]
        );
    }

    #[test]
    fn positions_point_at_the_directive_and_the_argument() {
        let fs = fixtures::mount("multisite", "/etc/nginx");
        let conf = load(Path::new("/etc/nginx/nginx.conf"), &fs).unwrap();
        let f = extract(&conf, Path::new("/etc/nginx"));
        let pass = f.sites[0].locations[1].pass.as_ref().unwrap();
        assert_eq!(
            &*pass.at.file,
            Path::new("/etc/nginx/sites-enabled/10-app.conf")
        );
        assert_eq!((pass.at.line, pass.at.col), (15, 9));
        assert_eq!((pass.arg.line, pass.arg.col), (15, 20));
        let text = &conf.files[3].text;
        assert_eq!(
            &text[pass.at.start..pass.at.end],
            "proxy_pass http://127.0.0.1:8000/v1/;"
        );
        assert_eq!(
            &text[pass.arg.start..pass.arg.end],
            "http://127.0.0.1:8000/v1/"
        );
        // the pass inside `if` belongs to its location
        let ws = &f.sites[0].locations[3];
        assert_eq!(ws.pass.as_ref().unwrap().at.line, 31);
    }

    #[test]
    fn upstreams_with_params() {
        let f = facts("multisite", "nginx.conf");
        type Pool<'a> = (&'a str, Vec<(String, Vec<String>)>);
        let pools: Vec<Pool> = f
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.servers
                        .iter()
                        .map(|s| (s.target.to_string(), s.params.clone()))
                        .collect(),
                )
            })
            .collect();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pools,
            [
                (
                    "app_backend",
                    vec![
                        (
                            "127.0.0.1:8000".into(),
                            v(&["weight=3", "max_fails=2", "fail_timeout=5s"])
                        ),
                        ("127.0.0.1:8001".into(), vec![]),
                        ("[::1]:8002".into(), v(&["backup"])),
                        ("unix:/run/app/app.sock".into(), v(&["down"])),
                    ]
                ),
                (
                    "legacy",
                    vec![("unix:/run/legacy/uwsgi.sock".into(), vec![])]
                ),
            ]
        );
        assert_eq!(f.upstreams[0].servers[0].at.line, 3);
        assert_eq!(
            &*f.upstreams[0].servers[0].at.file,
            Path::new("/etc/nginx/upstreams.conf")
        );
    }

    #[test]
    fn php_fpm_site() {
        let f = facts("php", "nginx.conf");
        assert_eq!(
            f.files,
            [
                "/etc/nginx/nginx.conf",
                "/etc/nginx/sites-enabled/php.example.test",
                "/etc/nginx/snippets/fastcgi-php.conf",
                "/etc/nginx/fastcgi.conf",
                "/etc/nginx/fastcgi_params",
            ]
            .map(PathBuf::from)
        );
        let site = &f.sites[0];
        assert_eq!(site.server_names, ["php.example.test"]);
        assert_eq!(
            passes(site),
            [
                ("/", None),
                ("~ \\.php$", Some(&unix("/run/php/php8.2-fpm.sock"))),
                ("= /fpm-status", Some(&tcp(None, "127.0.0.1", 9000))),
                ("~ /\\.ht", None),
            ]
        );
        let php = &site.locations[1];
        assert_eq!(php.pass.as_ref().unwrap().directive, "fastcgi_pass");
        assert_eq!(
            php.settings.get("fastcgi_read_timeout").map(String::as_str),
            Some("120s")
        );
        assert_eq!(
            php.settings.get("fastcgi_buffers").map(String::as_str),
            Some("16 16k")
        );
        let status = &site.locations[2].settings;
        assert_eq!(
            status.get("fastcgi_read_timeout").map(String::as_str),
            Some("5s")
        );
    }

    #[test]
    fn a_sites_roots_are_its_own_at_server_and_location_level() {
        let mut fs = crate::nginx_conf::MemFs::new();
        fs.insert(
            "/etc/nginx/nginx.conf",
            "http { root /srv/http-wide;\n server { root /srv/shop/public;\n location /media { root /srv/shop/media/; }\n location /x { if ($a) { root /srv/shop/public; } } }\n server { listen 81; } }\n",
        );
        let conf = load(Path::new("/etc/nginx/nginx.conf"), &fs).unwrap();
        let f = extract(&conf, Path::new("/usr/share/nginx"));
        assert_eq!(f.sites[0].roots, ["/srv/shop/public", "/srv/shop/media/"]);
        assert!(f.sites[1].roots.is_empty(), "http's root is not the site's");
    }

    #[test]
    fn debian_stock() {
        let f = facts("debian", "nginx.conf");
        assert_eq!(
            f.files,
            [
                "/etc/nginx/nginx.conf",
                "/etc/nginx/mime.types",
                "/etc/nginx/sites-enabled/default",
            ]
            .map(PathBuf::from)
        );
        assert_eq!(f.user.as_deref(), Some("www-data"));
        assert_eq!(f.error_logs, [PathBuf::from("/var/log/nginx/error.log")]);
        assert!(f.upstreams.is_empty());
        let site = &f.sites[0];
        assert_eq!(site.server_names, ["_"]);
        assert_eq!(site.listen, ["80", "[::]:80"]);
        // the commented-out `root` of the second server is no root
        assert_eq!(site.roots, ["/var/www/html"]);
        assert_eq!(passes(site), [("/", None)]);
        assert_eq!((site.at.line, site.at.col), (21, 1));
    }

    #[test]
    fn split_scheme_is_split_once() {
        for raw in [
            "http://a",
            "a",
            "",
            ":",
            "://",
            "a:/b://c",
            "unix:/x:/y",
            "a::://b",
            "x:/",
            "h://",
            "é://é",
        ] {
            assert_eq!(
                crate::facts::error_log::split_scheme(raw),
                raw.split_once("://"),
                "{raw}"
            );
        }
    }

    #[test]
    fn pass_targets() {
        let ups = BTreeSet::from(["app", "php"]);
        let t = |d: &str, raw: &str| parse_pass(d, raw, &ups);
        assert_eq!(
            t("proxy_pass", "http://127.0.0.1"),
            tcp(Some("http"), "127.0.0.1", 80)
        );
        assert_eq!(
            t("proxy_pass", "https://example.test/x"),
            tcp(Some("https"), "example.test", 443)
        );
        assert_eq!(
            t("proxy_pass", "http://localhost:3000?a=b"),
            tcp(Some("http"), "localhost", 3000)
        );
        assert_eq!(
            t("proxy_pass", "http://[::1]"),
            tcp(Some("http"), "::1", 80)
        );
        assert_eq!(t("proxy_pass", "http://app"), upstream("app"));
        assert_eq!(t("proxy_pass", "http://app/"), upstream("app"));
        assert_eq!(
            t("proxy_pass", "http://app:8080"),
            tcp(Some("http"), "app", 8080)
        );
        assert_eq!(
            t("proxy_pass", "http://unix:/run/a.sock:/x"),
            unix("/run/a.sock")
        );
        assert_eq!(t("proxy_pass", "http://$up"), dynamic("http://$up"));
        assert_eq!(
            t("proxy_pass", "http://127.0.0.1:$port"),
            dynamic("http://127.0.0.1:$port")
        );
        assert_eq!(t("proxy_pass", "127.0.0.1:80"), dynamic("127.0.0.1:80"));
        assert_eq!(t("proxy_pass", "http://h:99999"), dynamic("http://h:99999"));
        assert_eq!(
            t("fastcgi_pass", "unix:/run/php/php8.2-fpm.sock"),
            unix("/run/php/php8.2-fpm.sock")
        );
        assert_eq!(
            t("fastcgi_pass", "127.0.0.1:9000"),
            tcp(None, "127.0.0.1", 9000)
        );
        assert_eq!(t("fastcgi_pass", "php"), upstream("php"));
        assert_eq!(t("fastcgi_pass", "localhost"), dynamic("localhost"));
        assert_eq!(
            t("uwsgi_pass", "uwsgi://[::1]:3031"),
            tcp(Some("uwsgi"), "::1", 3031)
        );
        assert_eq!(
            t("grpc_pass", "grpcs://g.test"),
            tcp(Some("grpcs"), "g.test", 443)
        );
        assert_eq!(
            t("grpc_pass", "localhost:9000"),
            tcp(None, "localhost", 9000)
        );
    }

    #[test]
    fn target_display() {
        assert_eq!(
            tcp(Some("http"), "127.0.0.1", 8000).to_string(),
            "127.0.0.1:8000"
        );
        assert_eq!(tcp(None, "::1", 8000).to_string(), "[::1]:8000");
        assert_eq!(unix("/run/php/x.sock").to_string(), "unix:/run/php/x.sock");
        assert_eq!(upstream("web").to_string(), "upstream web");
        assert_eq!(dynamic("$backend").to_string(), "$backend");
    }

    #[test]
    fn target_serialises_with_a_kind_tag() {
        let json = serde_json::to_string(&tcp(None, "::1", 80)).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"tcp","scheme":null,"host":"::1","port":80}"#
        );
        let json = serde_json::to_string(&unix("/x")).unwrap();
        assert_eq!(json, r#"{"kind":"unix","path":"/x"}"#);
    }
}
