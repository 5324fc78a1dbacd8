//! Where a probe through nginx must go to reach one `server` block: the listen address to dial,
//! plain HTTP or TLS, and the `Host` (and TLS server name) that nginx's server selection maps to
//! that block — or why no probe can be aimed at it.
//!
//! nginx picks a server in two steps (`ngx_http_find_virtual_server`): the address and port the
//! connection arrived on choose the servers that listen there (an explicit address hides the
//! wildcard servers of its port), then the `Host` name picks one of them: an exact name first
//! (the first server that lists it), then wildcards, then regular expressions, and else the
//! address's default server (the one marked `default_server`, or the first listed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::nginx::Site;

/// One `listen` directive of a server, with the parameters that decide how to probe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    /// The address argument as written (`80`, `[::]:443`, `127.0.0.1:8080`, `unix:/p`).
    pub address: String,
    /// `ssl`: the port speaks TLS.
    pub ssl: bool,
    /// `default_server` (or the old `default`).
    pub default_server: bool,
    /// `http2` on a port without `ssl`: HTTP/2 without TLS only.
    pub http2: bool,
    /// `proxy_protocol`: every connection must start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// `quic`: a UDP port for HTTP/3.
    pub quic: bool,
}

impl Listen {
    /// Reads the words of one `listen` directive.
    pub fn from_args(args: &[String]) -> Option<Self> {
        let (address, params) = args.split_first()?;
        let has = |name: &str| params.iter().any(|p| p == name);
        Some(Listen {
            address: address.clone(),
            ssl: has("ssl"),
            default_server: has("default_server") || has("default"),
            http2: has("http2"),
            proxy_protocol: has("proxy_protocol"),
            quic: has("quic"),
        })
    }

    /// The socket address nginx binds for it: a wildcard (`0.0.0.0`, `::`) or a literal address.
    fn bind(&self) -> Result<(IpAddr, u16), String> {
        let a = self.address.as_str();
        if a.starts_with("unix:") {
            return Err(format!(
                "`listen {a}` is a unix socket; probes dial TCP only"
            ));
        }
        let port = |p: &str| p.parse::<u16>().map_err(|_| "its port is not a number");
        let parsed: Result<(IpAddr, u16), &str> = if let Some(rest) = a.strip_prefix('[') {
            match rest.split_once(']') {
                Some((ip, after)) => {
                    let ip = ip.parse::<Ipv6Addr>().map_err(|_| "not an ipv6 address");
                    let p = match after.strip_prefix(':') {
                        Some(p) => port(p),
                        None if after.is_empty() => Ok(80),
                        None => Err("unexpected text after `]`"),
                    };
                    ip.and_then(|ip| Ok((IpAddr::V6(ip), p?)))
                }
                None => Err("`[` without `]`"),
            }
        } else if a.bytes().all(|b| b.is_ascii_digit()) {
            port(a).map(|p| (IpAddr::V4(Ipv4Addr::UNSPECIFIED), p))
        } else {
            let (host, p) = match a.rsplit_once(':') {
                Some((h, p)) => (h, port(p)),
                None => (a, Ok(80)),
            };
            match host {
                "*" => p.map(|p| (IpAddr::V4(Ipv4Addr::UNSPECIFIED), p)),
                h => match h.parse::<Ipv4Addr>() {
                    Ok(ip) => p.map(|p| (IpAddr::V4(ip), p)),
                    Err(_) => Err("a host name"),
                },
            }
        };
        parsed.map_err(|why| format!("`listen {a}`: {why}; probes dial a literal address"))
    }
}

/// How a probe reaches one server block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aim {
    /// `http://127.0.0.1:8080` or `https://[::1]:443`: the listen address made dialable, with
    /// the scheme the port speaks, without a path.
    pub base: String,
    /// The `Host` header (and, for TLS, the server name sent in the handshake) that nginx maps
    /// to this block; `None` when no probe can be aimed at it.
    pub host: Option<String>,
    /// Why a probe would reach another block, or could not be made at all.
    pub not_aimed: Option<String>,
}

impl Aim {
    /// The `Host` a probe of `url` sends: this site's name when `url` is on the site's own
    /// listen address (`base`), nothing for any other URL (it names its own host). Refused, with
    /// the reason, when `url` is on the site's address but no probe can reach its block.
    pub fn host_for(&self, url: &str) -> Result<Option<String>, String> {
        let on_site = url
            .strip_prefix(self.base.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
        if !on_site {
            return Ok(None);
        }
        match (&self.host, &self.not_aimed) {
            (Some(host), _) => Ok(Some(host.clone())),
            (None, reason) => Err(format!(
                "the probe `{url}` cannot be aimed at the site's server block: {}",
                reason.as_deref().unwrap_or("no `Host` reaches it")
            )),
        }
    }

    fn not_aimed(base: String, reason: String) -> Self {
        Aim {
            base,
            host: None,
            not_aimed: Some(reason),
        }
    }
}

/// A name nginx compares exactly with the `Host` header (`.example.org` also names
/// `example.org`); wildcards, regular expressions, `_` and `""` are not.
fn literal_name(name: &str) -> Option<String> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name != "_"
        && !name.starts_with('~')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid.then(|| name.to_ascii_lowercase())
}

/// The address a probe dials for a bind: loopback for a wildcard.
fn dial(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn authority(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// The `listen`s of a server; one without any listens on `*:80`.
fn effective(site: &Site) -> Vec<Listen> {
    if site.listeners.is_empty() {
        vec![Listen {
            address: "80".into(),
            ssl: false,
            default_server: false,
            http2: false,
            proxy_protocol: false,
            quic: false,
        }]
    } else {
        site.listeners.clone()
    }
}

/// The URL a probe through nginx uses for a location of the block `aim` reaches: the listen
/// address the aim dials, then the location's path (`/` for a regex or named location). Its
/// `Host` is `aim.host`.
pub fn probe_url(aim: &Aim, location: &str) -> String {
    let path = if location.starts_with('/') {
        location
    } else {
        "/"
    };
    format!("{}{path}", aim.base)
}

/// The aim for `sites[index]`: its first `listen` a probe can use and that reaches it.
pub fn aim(sites: &[Site], index: usize) -> Aim {
    let all: Vec<Vec<Listen>> = sites.iter().map(effective).collect();
    aim_in(sites, &Binds::of(&all), index)
}

/// Every site's aim, in the order of `sites`.
pub fn aims(sites: &[Site]) -> Vec<Aim> {
    let all: Vec<Vec<Listen>> = sites.iter().map(effective).collect();
    let binds = Binds::of(&all);
    (0..sites.len()).map(|i| aim_in(sites, &binds, i)).collect()
}

/// Every server's listens, and by each bound address the servers listening there, keyed once:
/// with thousands of servers, parsing every listen for each one is quadratic.
struct Binds<'a> {
    all: &'a [Vec<Listen>],
    /// For each (address, port): the servers in order, each with its first (non-QUIC) listen
    /// there.
    on: std::collections::HashMap<(IpAddr, u16), Vec<(usize, &'a Listen)>>,
}

impl<'a> Binds<'a> {
    fn of(all: &'a [Vec<Listen>]) -> Self {
        let mut on: std::collections::HashMap<(IpAddr, u16), Vec<(usize, &Listen)>> =
            std::collections::HashMap::new();
        for (i, listens) in all.iter().enumerate() {
            for l in listens.iter().filter(|l| !l.quic) {
                let Ok(bind) = l.bind() else { continue };
                let servers = on.entry(bind).or_default();
                if servers.last().map(|(last, _)| *last) != Some(i) {
                    servers.push((i, l));
                }
            }
        }
        Binds { all, on }
    }

    /// The servers listening on (`ip`, `port`), each with its listen there.
    fn on(&self, ip: IpAddr, port: u16) -> &[(usize, &'a Listen)] {
        self.on.get(&(ip, port)).map_or(&[], Vec::as_slice)
    }
}

fn aim_in(sites: &[Site], binds: &Binds<'_>, index: usize) -> Aim {
    let (Some(site), Some(listens)) = (sites.get(index), binds.all.get(index)) else {
        return Aim::not_aimed("http://127.0.0.1:80".into(), "no such server".into());
    };
    let mut first_miss: Option<Aim> = None;
    for listen in listens {
        let aim = aim_at(sites, binds, site, index, listen);
        if aim.host.is_some() {
            return aim;
        }
        first_miss.get_or_insert(aim);
    }
    first_miss.unwrap_or_else(|| Aim::not_aimed("http://127.0.0.1:80".into(), "no `listen`".into()))
}

fn aim_at(sites: &[Site], binds: &Binds<'_>, site: &Site, index: usize, listen: &Listen) -> Aim {
    let scheme = if listen.ssl { "https" } else { "http" };
    let (ip, port) = match listen.bind() {
        Ok(bind) => bind,
        Err(reason) => return Aim::not_aimed(format!("{scheme}://127.0.0.1:80"), reason),
    };
    let dialled = dial(ip);
    let at = authority(dialled, port);
    let base = format!("{scheme}://{at}");
    let refuse = |why: String| Aim::not_aimed(base.clone(), why);
    if listen.quic {
        return refuse(format!("`listen {}` is a QUIC (UDP) port", listen.address));
    }
    if listen.proxy_protocol {
        return refuse(format!(
            "`listen {}` expects a PROXY protocol header first",
            listen.address
        ));
    }
    if listen.http2 && !listen.ssl {
        return refuse(format!(
            "`listen {}` speaks HTTP/2 without TLS only",
            listen.address
        ));
    }
    // the servers a connection to (dialled, port) can reach: those listening on that exact
    // address, else those on the wildcard of its family; each with its listen there
    let on = |want: IpAddr| binds.on(want, port);
    let wildcard = match dialled {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let explicit = on(dialled);
    let competing = if explicit.is_empty() {
        on(wildcard)
    } else {
        explicit
    };
    if !competing.iter().any(|(i, _)| *i == index) {
        return refuse(format!(
            "a connection to {at} reaches the servers that listen on that address itself, not this one"
        ));
    }
    let default_port = if listen.ssl { 443 } else { 80 };
    let with_port = |name: &str| {
        if port == default_port {
            name.to_string()
        } else {
            format!("{name}:{port}")
        }
    };
    let names_of = |i: usize| sites.get(i).map_or(&[][..], |s| s.server_names.as_slice());
    if let Some(name) = site.server_names.iter().find_map(|n| literal_name(n)) {
        // nginx keeps the first server of an address that names it
        let first = competing.iter().find(|(i, _)| {
            names_of(*i)
                .iter()
                .any(|n| literal_name(n).as_deref() == Some(&name))
        });
        return match first {
            Some((i, _)) if *i == index => Aim {
                base,
                host: Some(with_port(&name)),
                not_aimed: None,
            },
            _ => refuse(format!(
                "an earlier server on {at} also names `{name}`; nginx answers from that one"
            )),
        };
    }
    // no literal name: only the address's default server can be reached, by its address
    let default = competing
        .iter()
        .find(|(_, l)| l.default_server)
        .or_else(|| competing.first())
        .map(|(i, _)| *i);
    let names = if site.server_names.is_empty() {
        "no `server_name`".to_string()
    } else {
        format!("`server_name {}`", site.server_names.join(" "))
    };
    if default != Some(index) {
        return refuse(format!(
            "{names} gives no literal name to send as `Host`, and the server is not the \
             default_server of {at}"
        ));
    }
    let ip_text = dialled.to_string();
    let claimed = competing.iter().any(|(i, _)| {
        *i != index
            && names_of(*i)
                .iter()
                .any(|n| n.starts_with('~') || literal_name(n).as_deref() == Some(&ip_text))
    });
    let host = match dialled {
        IpAddr::V6(v6) => with_port(&format!("[{v6}]")),
        IpAddr::V4(v4) => with_port(&v4.to_string()),
    };
    if claimed {
        return refuse(format!(
            "{names}: another server on {at} has a regular-expression name (or the address \
             itself as its name) that may claim `Host: {host}`"
        ));
    }
    Aim {
        base,
        host: Some(host),
        not_aimed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx_conf::{load, MemFs};

    /// The aims of the servers of `http { SERVERS }`.
    fn aims_of(servers: &str) -> Vec<Aim> {
        let mut fs = MemFs::new();
        fs.insert("/n/nginx.conf", format!("http {{\n{servers}\n}}\n"));
        let conf = load(std::path::Path::new("/n/nginx.conf"), &fs).unwrap();
        let facts = crate::facts::nginx::extract(&conf, std::path::Path::new("/n"));
        aims(&facts.sites)
    }

    fn host(aim: &Aim) -> Option<&str> {
        aim.host.as_deref()
    }

    #[test]
    fn listen_addresses_read_as_nginx_binds_them() {
        let bind = |a: &str| Listen::from_args(&[a.to_string()]).unwrap().bind();
        let v4 = |a: [u8; 4], p| Ok((IpAddr::V4(Ipv4Addr::from(a)), p));
        assert_eq!(bind("8080"), v4([0, 0, 0, 0], 8080));
        assert_eq!(bind("*:81"), v4([0, 0, 0, 0], 81));
        assert_eq!(bind("127.0.0.2"), v4([127, 0, 0, 2], 80));
        assert_eq!(bind("[::1]"), Ok((IpAddr::V6(Ipv6Addr::LOCALHOST), 80)));
        assert_eq!(
            bind("[::]:443"),
            Ok((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 443))
        );
        assert_eq!(
            bind("127.0.0.1:http"),
            Err(
                "`listen 127.0.0.1:http`: its port is not a number; probes dial a literal address"
                    .into()
            )
        );
        assert!(bind("[::1]x").unwrap_err().contains("after `]`"));
        assert!(bind("[::1").unwrap_err().contains("without `]`"));
    }

    #[test]
    fn a_literal_server_name_is_the_host() {
        let a = aims_of(
            "server { listen 8080; server_name first.lab; }
             server { listen 8080; server_name *.wild.lab www.second.lab; }
             server { listen 127.0.0.1:80; server_name .dot.lab; }",
        );
        assert_eq!(a[0].base, "http://127.0.0.1:8080");
        assert_eq!(host(&a[0]), Some("first.lab:8080"));
        assert_eq!(
            host(&a[1]),
            Some("www.second.lab:8080"),
            "the first literal name"
        );
        assert_eq!(host(&a[2]), Some("dot.lab"), "port 80 is not repeated");
    }

    #[test]
    fn a_catch_all_is_aimed_only_when_it_is_the_default_server() {
        let a = aims_of(
            "server { listen 8080; server_name named.lab; }
             server { listen 8080 default_server; server_name _; }
             server { listen 8081; server_name ~^api\\.; }
             server { listen 8081; server_name _; }",
        );
        assert_eq!(host(&a[1]), Some("127.0.0.1:8080"), "the marked default");
        assert_eq!(
            host(&a[2]),
            Some("127.0.0.1:8081"),
            "the first is the default"
        );
        assert_eq!(host(&a[3]), None);
        let why = a[3].not_aimed.as_deref().unwrap();
        assert!(
            why.contains("`server_name _` gives no literal name")
                && why.contains("not the default_server of 127.0.0.1:8081"),
            "{why}"
        );
    }

    #[test]
    fn a_default_server_beside_a_regex_name_is_not_aimed() {
        let a = aims_of(
            "server { listen 8080; }
             server { listen 8080; server_name ~.; }",
        );
        assert_eq!(host(&a[0]), None);
        assert!(a[0]
            .not_aimed
            .as_deref()
            .unwrap()
            .contains("regular-expression"));
    }

    #[test]
    fn the_first_server_to_name_a_host_wins() {
        let a = aims_of(
            "server { listen 8080; server_name dup.lab; }
             server { listen 8080; server_name dup.lab; }",
        );
        assert_eq!(host(&a[0]), Some("dup.lab:8080"));
        assert_eq!(host(&a[1]), None);
        assert!(a[1]
            .not_aimed
            .as_deref()
            .unwrap()
            .contains("an earlier server"));
    }

    #[test]
    fn tls_ports_are_probed_over_tls() {
        let a = aims_of(
            "server { listen 443 ssl; server_name tls.lab; }
             server { listen [::]:8443 ssl default_server; server_name _; }
             server { listen 127.0.0.1:8444 ssl http2; server_name h2.lab; }",
        );
        assert_eq!(a[0].base, "https://127.0.0.1:443");
        assert_eq!(host(&a[0]), Some("tls.lab"));
        assert_eq!(a[1].base, "https://[::1]:8443");
        assert_eq!(host(&a[1]), Some("[::1]:8443"));
        assert_eq!(
            host(&a[2]),
            Some("h2.lab:8444"),
            "h2 over TLS also speaks HTTP/1.1"
        );
    }

    #[test]
    fn ports_a_probe_cannot_speak_are_not_aimed_and_the_next_listen_is_tried() {
        let a = aims_of(
            "server { listen 8080 proxy_protocol; server_name p.lab; }
             server { listen 8443 quic; listen 8443 ssl; server_name q.lab; }
             server { listen unix:/run/n.sock; server_name u.lab; }
             server { listen 8082 http2; server_name h2c.lab; }
             server { listen localhost:8083; server_name n.lab; }",
        );
        assert!(a[0]
            .not_aimed
            .as_deref()
            .unwrap()
            .contains("PROXY protocol"));
        assert_eq!(
            (a[1].base.as_str(), host(&a[1])),
            ("https://127.0.0.1:8443", Some("q.lab:8443"))
        );
        assert!(a[2].not_aimed.as_deref().unwrap().contains("unix socket"));
        assert!(a[3]
            .not_aimed
            .as_deref()
            .unwrap()
            .contains("HTTP/2 without TLS"));
        assert!(a[4]
            .not_aimed
            .as_deref()
            .unwrap()
            .contains("literal address"));
    }

    #[test]
    fn an_explicit_address_hides_the_wildcard_servers_of_its_port() {
        let a = aims_of(
            "server { listen 8080; server_name wild.lab; }
             server { listen 127.0.0.1:8080; server_name exact.lab; }
             server { server_name implicit.lab; }",
        );
        assert_eq!(host(&a[0]), None, "127.0.0.1:8080 only reaches exact.lab");
        assert_eq!(host(&a[1]), Some("exact.lab:8080"));
        assert_eq!(
            (a[2].base.as_str(), host(&a[2])),
            ("http://127.0.0.1:80", Some("implicit.lab"))
        );
    }

    #[test]
    fn a_url_on_the_sites_address_carries_its_host() {
        let a = aims_of(
            "server { listen 8080; server_name app.lab; }
             server { listen 8080; server_name _; }",
        );
        assert_eq!(
            a[0].host_for("http://127.0.0.1:8080/x?y"),
            Ok(Some("app.lab:8080".into()))
        );
        assert_eq!(a[0].host_for("http://127.0.0.1:9000/"), Ok(None));
        assert_eq!(a[0].host_for("http://127.0.0.1:80801/"), Ok(None));
        let err = a[1].host_for("http://127.0.0.1:8080/").unwrap_err();
        assert!(
            err.starts_with("the probe `http://127.0.0.1:8080/` cannot be aimed"),
            "{err}"
        );
    }
}
