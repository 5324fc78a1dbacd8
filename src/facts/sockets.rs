//! Listening sockets and the processes that own them: fact types and the pure parsers for
//! `/proc/net/{tcp,tcp6,unix}`, `/proc/PID/{stat,cmdline,cgroup}`.
//!
//! Nothing here touches the filesystem; `adapters::procfs` reads the files and feeds the text in.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Every listening TCP and unix stream socket on the host, with the processes holding them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SocketFacts {
    /// Listening TCP sockets from `/proc/net/tcp` and `/proc/net/tcp6`.
    pub tcp: Vec<TcpSocket>,
    /// Listening, named unix stream sockets from `/proc/net/unix`.
    pub unix: Vec<UnixSocket>,
    /// Lines of the `/proc/net` tables that could not be parsed and were left out.
    pub skipped_lines: usize,
}

/// A TCP socket in the LISTEN state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct TcpSocket {
    /// The exact bound address; v4-mapped v6 addresses (`::ffff:127.0.0.1`) stay v6.
    pub addr: IpAddr,
    /// The bound port.
    pub port: u16,
    /// The socket inode, as in `socket:[INODE]` fd links.
    pub inode: u64,
    /// Processes holding the socket open (a master and its workers all appear).
    pub owners: Vec<Owner>,
}

/// A named unix stream socket that accepts connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct UnixSocket {
    /// The bound path; abstract sockets keep the kernel's `@name` spelling.
    pub path: String,
    /// The socket inode, as in `socket:[INODE]` fd links.
    pub inode: u64,
    /// Ownership and mode of the socket file; `None` for abstract sockets or a missing file.
    pub file: Option<SocketFile>,
    /// Processes holding the socket open.
    pub owners: Vec<Owner>,
}

/// Ownership and permissions of a unix socket's file, which decide who may connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SocketFile {
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name, when the user database knows the uid.
    pub user: Option<String>,
    /// Group name, when the group database knows the gid.
    pub group: Option<String>,
    /// Permission bits in octal, four digits (`"0660"`).
    pub mode: String,
}

/// A process that holds a socket open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Owner {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Short command name from `/proc/PID/stat`.
    pub comm: String,
    /// Command line arguments; empty for kernel threads and zombies.
    pub cmdline: Vec<String>,
    /// The systemd unit the process runs in, from its cgroup.
    pub unit: Option<String>,
    /// The unit's cgroup path (`/system.slice/api.service`): unlike the name, unique across
    /// managers, so a user manager's `api.service` is not mistaken for the system's.
    pub unit_cgroup: Option<String>,
}

impl TcpSocket {
    /// The owner whose parent is not itself an owner (the master, not a worker); lowest pid on ties.
    pub fn main_owner(&self) -> Option<&Owner> {
        main_owner(&self.owners)
    }

    /// The bound address and port together.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

impl UnixSocket {
    /// The owner whose parent is not itself an owner (the master, not a worker); lowest pid on ties.
    pub fn main_owner(&self) -> Option<&Owner> {
        main_owner(&self.owners)
    }
}

impl SocketFacts {
    /// The TCP listeners bound to `port`, on any address.
    pub fn tcp_listeners_on(&self, port: u16) -> impl Iterator<Item = &TcpSocket> {
        self.tcp.iter().filter(move |s| s.port == port)
    }

    /// The TCP listeners that would accept a connection dialled to `dialled` on this host.
    ///
    /// `v6only` is whether `::` listeners refuse IPv4 (see [`accepts`]).
    pub fn tcp_accepting(
        &self,
        dialled: SocketAddr,
        v6only: bool,
    ) -> impl Iterator<Item = &TcpSocket> {
        self.tcp_listeners_on(dialled.port())
            .filter(move |s| accepts(s.addr, dialled.ip(), v6only))
    }

    /// The listening unix socket bound to exactly `path`.
    pub fn unix_listener(&self, path: &str) -> Option<&UnixSocket> {
        self.unix.iter().find(|s| s.path == path)
    }
}

fn main_owner(owners: &[Owner]) -> Option<&Owner> {
    let pids: HashSet<i32> = owners.iter().map(|o| o.pid).collect();
    owners
        .iter()
        .filter(|o| o.ppid == o.pid || !pids.contains(&o.ppid))
        .min_by_key(|o| o.pid)
        // Owners that are all each other's parents cannot happen; still answer something.
        .or_else(|| owners.iter().min_by_key(|o| o.pid))
}

/// Whether a listener bound to `bound` accepts a connection dialled to `dialled` on the same host.
///
/// `0.0.0.0` accepts any IPv4; `::` accepts any IPv6, and IPv4 too unless `v6only` (Linux
/// defaults to dual-stack, `net.ipv6.bindv6only=0`, but nginx sets `ipv6only=on` on its own
/// `[::]` listeners). v4-mapped addresses (`::ffff:a.b.c.d`) count as the IPv4 address they
/// carry, and dialling an unspecified address reaches loopback, as Linux does.
pub fn accepts(bound: IpAddr, dialled: IpAddr, v6only: bool) -> bool {
    let dialled = match dialled.to_canonical() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    match (bound, dialled) {
        (IpAddr::V6(b), IpAddr::V4(_)) if b.is_unspecified() => !v6only,
        (IpAddr::V6(b), IpAddr::V6(_)) if b.is_unspecified() => true,
        _ => match (bound.to_canonical(), dialled) {
            (IpAddr::V4(b), IpAddr::V4(_)) if b.is_unspecified() => true,
            (b, d) => b == d,
        },
    }
}

/// What a table parser found: the entries it kept and how many lines it could not parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    /// The entries kept.
    pub items: Vec<T>,
    /// Lines that were malformed and skipped.
    pub skipped_lines: usize,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            skipped_lines: 0,
        }
    }
}

const TCP_LISTEN: u8 = 0x0A;
const UNIX_ACCEPTCON: u32 = 0x0001_0000;
const UNIX_STREAM: u16 = 1;
const UNIX_UNCONNECTED: u8 = 1;

/// Parses `/proc/net/tcp` or `/proc/net/tcp6` text, keeping only sockets in LISTEN (`0A`).
///
/// The family is read from each address's width. Owners are left empty.
pub fn parse_tcp_listeners(text: &str) -> Parsed<TcpSocket> {
    let mut out = Parsed::default();
    for line in table_lines(text) {
        match parse_tcp_line(line) {
            Some(Some(s)) => out.items.push(s),
            Some(None) => {}
            None => out.skipped_lines += 1,
        }
    }
    out
}

/// `None` when malformed, `Some(None)` when well-formed but not listening.
fn parse_tcp_line(line: &str) -> Option<Option<TcpSocket>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (sl, local, state, inode) = match fields.as_slice() {
        [sl, local, _remote, state, _txrx, _trwhen, _retr, _uid, _timeout, inode, ..] => {
            (*sl, *local, *state, *inode)
        }
        _ => return None,
    };
    sl.strip_suffix(':')?.parse::<u64>().ok()?;
    if u8::from_str_radix(state, 16).ok()? != TCP_LISTEN {
        return Some(None);
    }
    let (addr, port) = local.split_once(':')?;
    Some(Some(TcpSocket {
        addr: decode_proc_addr(addr)?,
        port: u16::from_str_radix(port, 16).ok()?,
        inode: inode.parse().ok()?,
        owners: Vec::new(),
    }))
}

/// Decodes the kernel's hex address: 32-bit words printed in host byte order.
fn decode_proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let chunk = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(chunk, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, dst) in bytes.chunks_exact_mut(4).enumerate() {
                dst.copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Parses `/proc/net/unix` text, keeping named stream sockets that accept connections.
///
/// Unnamed sockets, datagram and seqpacket sockets (which nginx cannot connect to) and connected
/// sockets are left out without counting as malformed. Owners and file facts are left empty.
pub fn parse_unix_listeners(text: &str) -> Parsed<UnixSocket> {
    let mut out = Parsed::default();
    for line in table_lines(text) {
        match parse_unix_line(line) {
            Some(Some(s)) => out.items.push(s),
            Some(None) => {}
            None => out.skipped_lines += 1,
        }
    }
    out
}

fn parse_unix_line(line: &str) -> Option<Option<UnixSocket>> {
    // Num: RefCount Protocol Flags Type St Inode [Path]; the path may hold spaces.
    let (fields, rest) = split_fields(line, 7)?;
    let (num, flags, kind, state, inode) = match fields.as_slice() {
        [num, _refs, _proto, flags, kind, state, inode] => (*num, *flags, *kind, *state, *inode),
        _ => return None,
    };
    num.strip_suffix(':')?;
    let flags = u32::from_str_radix(flags, 16).ok()?;
    let kind = u16::from_str_radix(kind, 16).ok()?;
    let state = u8::from_str_radix(state, 16).ok()?;
    let inode = inode.parse().ok()?;
    let path = rest.strip_prefix(' ').unwrap_or(rest);
    let listening = flags & UNIX_ACCEPTCON != 0 && state == UNIX_UNCONNECTED;
    if !listening || kind != UNIX_STREAM || path.is_empty() {
        return Some(None);
    }
    Some(Some(UnixSocket {
        path: path.to_owned(),
        inode,
        file: None,
        owners: Vec::new(),
    }))
}

/// Lines after the header, without blank ones.
fn table_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().skip(1).filter(|l| !l.trim().is_empty())
}

/// Splits off `n` whitespace-separated fields and returns them with the untouched remainder.
fn split_fields(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line;
    for _ in 0..n {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        if end == 0 {
            return None;
        }
        let (field, after) = trimmed.split_at(end);
        fields.push(field);
        rest = after;
    }
    Some((fields, rest))
}

/// Suffixes of the systemd unit types whose cgroups hold processes.
const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// The systemd unit a process runs in, from the text of `/proc/PID/cgroup`.
///
/// Prefers the cgroup2 `0::` line, else the v1 `name=systemd` line; the unit is the deepest
/// path component that names a unit, so a user manager's service
/// (`…/user@1000.service/app.slice/web.service`) wins over the manager itself. Malformed lines
/// are ignored.
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    unit_cgroup(text).map(|(unit, _)| unit)
}

/// The unit a process runs in and the unit's cgroup path, from the text of `/proc/PID/cgroup`
/// (the same choice of line and component as [`unit_from_cgroup`]).
pub fn unit_cgroup(text: &str) -> Option<(String, String)> {
    let mut unified = None;
    let mut named = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if controllers.split(',').any(|c| c == "name=systemd") {
            named = Some(path);
        }
    }
    unified
        .and_then(unit_in_path)
        .or_else(|| named.and_then(unit_in_path))
}

fn unit_in_path(path: &str) -> Option<(String, String)> {
    let is_unit = |c: &str| {
        UNIT_SUFFIXES
            .iter()
            .any(|s| c.len() > s.len() && c.ends_with(s))
    };
    let unit = path.rsplit('/').find(|c| is_unit(c))?;
    let end = path.rfind(&format!("/{unit}"))? + unit.len() + 1;
    Some((unit.to_owned(), path.get(..end)?.to_owned()))
}

/// What `/proc/PID/stat` says about a process that matters here.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Short command name (between the parentheses; it may itself hold spaces and parentheses).
    pub comm: String,
    /// Parent process id.
    pub ppid: i32,
}

/// Parses `/proc/PID/stat`: `PID (COMM) STATE PPID …`; `None` when malformed.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut after = text.get(close + 1..)?.split_whitespace();
    let _state = after.next()?;
    let ppid = after.next()?.parse().ok()?;
    Some(ProcStat { pid, comm, ppid })
}

/// Splits `/proc/PID/cmdline` (NUL-separated, NUL-terminated) into arguments.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Parses a `/proc/PID/fd/N` link target `socket:[INODE]` into the inode.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/procfs");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn summary(p: &Parsed<TcpSocket>) -> Vec<(String, u16, u64)> {
        p.items
            .iter()
            .map(|s| (s.addr.to_string(), s.port, s.inode))
            .collect()
    }

    #[test]
    fn tcp_v4_keeps_only_listeners_with_exact_address() {
        // Captured with http.server on 127.0.0.1:19110 and 0.0.0.0:19112, one established
        // connection each way, and a host listener on 0.0.0.0:2024.
        let p = parse_tcp_listeners(&fixture("tcp"));
        assert_eq!(
            summary(&p),
            vec![
                ("127.0.0.1".into(), 19110, 12823),
                ("0.0.0.0".into(), 2024, 1678),
                ("0.0.0.0".into(), 19112, 13828),
            ]
        );
        assert_eq!(p.skipped_lines, 0);
        assert!(p.items.iter().all(|s| s.addr.is_ipv4()));
    }

    #[test]
    fn tcp_v6_keeps_v4_mapped_as_v6() {
        // Captured with listeners on [::ffff:127.0.0.1]:19114, [::]:19113, [::1]:19111.
        let p = parse_tcp_listeners(&fixture("tcp6"));
        assert_eq!(
            summary(&p),
            vec![
                ("::ffff:127.0.0.1".into(), 19114, 13825),
                ("::".into(), 19113, 12820),
                ("::1".into(), 19111, 13831),
            ]
        );
        assert!(p.items.iter().all(|s| s.addr.is_ipv6()));
        assert_eq!(p.skipped_lines, 0);
    }

    #[test]
    fn tcp_time_wait_line_with_fewer_fields_is_not_malformed() {
        let p = parse_tcp_listeners(&fixture("tree/net/tcp"));
        assert_eq!(p.items.len(), 4);
        assert_eq!(p.skipped_lines, 0);
        assert!(p.items.iter().any(|s| s.port == 19115 && s.inode == 14643));
    }

    #[test]
    fn tcp_malformed_lines_are_counted_not_fatal() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:4AA6 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12823 1\n\
            1: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
            2: 0100007:4AA6 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
            3: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
            4: 0100007F:4AA6 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x 1\n\
            5: 0100007F:4AA6 00000000:0000 QQ 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
            truncated line\n\
            \n\
            6: 0100007F:4AA6 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 99 1\n";
        let p = parse_tcp_listeners(text);
        assert_eq!(
            p.items.iter().map(|s| s.inode).collect::<Vec<_>>(),
            [12823, 99]
        );
        assert_eq!(p.skipped_lines, 6);
        assert_eq!(parse_tcp_listeners("").items.len(), 0);
        assert_eq!(parse_tcp_listeners("ünïcödé\n€€€€: x").skipped_lines, 1);
    }

    #[test]
    fn unix_keeps_named_stream_listeners() {
        // Captured with listeners on a path, a path with a space, an abstract name, plus an
        // accepted connection, a bound datagram socket and a seqpacket listener.
        let p = parse_unix_listeners(&fixture("unix"));
        let got: Vec<(&str, u64)> = p.items.iter().map(|s| (s.path.as_str(), s.inode)).collect();
        assert_eq!(
            got,
            vec![
                ("/tmp/procfs-x.sock", 14532),
                ("/tmp/procfs with space.sock", 14534),
                ("@procfs-abstract", 14533),
            ]
        );
        assert_eq!(p.skipped_lines, 0);
    }

    #[test]
    fn unix_malformed_lines_are_counted() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 5 /ok.sock\n\
            0000000000000000: 00000002 00000000 0001000G 0001 01 6 /bad-flags.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01\n\
            0000000000000000 00000002 00000000 00010000 0001 01 7 /no-colon.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 -1 /neg.sock\n";
        let p = parse_unix_listeners(text);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].path, "/ok.sock");
        assert_eq!(p.skipped_lines, 4);
    }

    #[test]
    fn cgroup_units_from_real_captures() {
        assert_eq!(
            unit_from_cgroup(&fixture("cgroup-lab-service")).as_deref(),
            Some("api.service")
        );
        assert_eq!(
            unit_from_cgroup(&fixture("cgroup-user-manager")).as_deref(),
            Some("web.service")
        );
        assert_eq!(
            unit_from_cgroup(&fixture("cgroup-scope")).as_deref(),
            Some("run-r1234.scope")
        );
        assert_eq!(unit_from_cgroup(&fixture("cgroup-root")), None);
    }

    #[test]
    fn cgroup_units_from_brief_examples() {
        let cases = [
            (
                "0::/medic-lab-1a2b/app.slice/api.service\n",
                Some("api.service"),
            ),
            ("0::/system.slice/nginx.service\n", Some("nginx.service")),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/web.service\n",
                Some("web.service"),
            ),
            // Delegated sub-cgroup below the service.
            (
                "0::/system.slice/docker.service/payload\n",
                Some("docker.service"),
            ),
            ("0::/system.slice/var-lib.mount\n", Some("var-lib.mount")),
            ("0::/system.slice/php-fpm.socket\n", Some("php-fpm.socket")),
            (
                "0::/user.slice/user-1000.slice/session-3.scope\n",
                Some("session-3.scope"),
            ),
            // Slices hold no processes of their own and are not units here.
            ("0::/system.slice\n", None),
            ("0::/\n", None),
            ("0::/.service\n", None),
            ("", None),
            ("garbage\n::\n0:\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(unit_from_cgroup(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn cgroup_prefers_unified_then_name_systemd() {
        let hybrid = "12:pids:/system.slice/other.service\n\
            1:name=systemd:/system.slice/legacy.service\n\
            0::/system.slice/nginx.service\n";
        assert_eq!(unit_from_cgroup(hybrid).as_deref(), Some("nginx.service"));
        let legacy = "12:pids:/system.slice/other.service\n\
            1:name=systemd:/system.slice/nginx.service\n\
            0::/\n";
        assert_eq!(unit_from_cgroup(legacy).as_deref(), Some("nginx.service"));
        let legacy_no_v2 = "3:cpu,cpuacct:/x.service\n1:name=systemd:/system.slice/a.service\n";
        assert_eq!(unit_from_cgroup(legacy_no_v2).as_deref(), Some("a.service"));
        // A path holding ':' survives the split.
        assert_eq!(
            unit_from_cgroup("0::/odd:dir/app.service\n").as_deref(),
            Some("app.service")
        );
    }

    #[test]
    fn accepts_exact_and_wildcards() {
        let t = |b: &str, d: &str, v6only: bool| accepts(ip(b), ip(d), v6only);
        // Exact.
        assert!(t("127.0.0.1", "127.0.0.1", false));
        assert!(t("::1", "::1", false));
        assert!(t("10.1.2.3", "10.1.2.3", true));
        assert!(!t("127.0.0.1", "127.0.0.2", false));
        assert!(!t("127.0.0.1", "10.1.2.3", false));
        // Families do not mix on specific addresses.
        assert!(!t("127.0.0.1", "::1", false));
        assert!(!t("::1", "127.0.0.1", false));
        // 0.0.0.0 takes any v4, no v6.
        assert!(t("0.0.0.0", "127.0.0.1", false));
        assert!(t("0.0.0.0", "192.168.5.5", true));
        assert!(!t("0.0.0.0", "::1", false));
        // :: takes any v6, and v4 only when dual-stack.
        assert!(t("::", "::1", true));
        assert!(t("::", "fe80::1", false));
        assert!(t("::", "127.0.0.1", false));
        assert!(!t("::", "127.0.0.1", true));
        // A specific v6 address does not take wildcards' traffic.
        assert!(!t("::1", "::2", false));
    }

    #[test]
    fn accepts_v4_mapped_both_ways() {
        let t = |b: &str, d: &str, v6only: bool| accepts(ip(b), ip(d), v6only);
        // Dialled mapped address is plain v4 on the wire.
        assert!(t("127.0.0.1", "::ffff:127.0.0.1", false));
        assert!(t("0.0.0.0", "::ffff:10.0.0.1", true));
        assert!(t("::", "::ffff:127.0.0.1", false));
        assert!(!t("::", "::ffff:127.0.0.1", true));
        assert!(!t("::1", "::ffff:127.0.0.1", false));
        // A listener bound to a mapped address takes the v4 address it carries.
        assert!(t("::ffff:127.0.0.1", "127.0.0.1", false));
        assert!(t("::ffff:127.0.0.1", "::ffff:127.0.0.1", false));
        assert!(!t("::ffff:127.0.0.1", "127.0.0.2", false));
        assert!(!t("::ffff:127.0.0.1", "::1", false));
        assert!(t("::ffff:0.0.0.0", "127.0.0.9", false));
    }

    #[test]
    fn accepts_dialled_unspecified_reaches_loopback() {
        let t = |b: &str, d: &str, v6only: bool| accepts(ip(b), ip(d), v6only);
        assert!(t("127.0.0.1", "0.0.0.0", false));
        assert!(t("0.0.0.0", "0.0.0.0", false));
        assert!(!t("10.0.0.1", "0.0.0.0", false));
        assert!(t("::1", "::", false));
        assert!(t("::", "::", true));
        assert!(t("::", "0.0.0.0", false));
        assert!(!t("::1", "0.0.0.0", false));
    }

    fn owner(pid: i32, ppid: i32) -> Owner {
        Owner {
            pid,
            ppid,
            comm: "nginx".into(),
            cmdline: vec![],
            unit: None,
            unit_cgroup: None,
        }
    }

    fn tcp(addr: &str, port: u16, owners: Vec<Owner>) -> TcpSocket {
        TcpSocket {
            addr: ip(addr),
            port,
            inode: 1,
            owners,
        }
    }

    #[test]
    fn main_owner_is_the_master() {
        // Workers listed first, master in the middle.
        let s = tcp(
            "0.0.0.0",
            80,
            vec![owner(12, 10), owner(10, 1), owner(11, 10)],
        );
        assert_eq!(s.main_owner().map(|o| o.pid), Some(10));
        // Two unrelated holders: lowest pid.
        let s = tcp("0.0.0.0", 80, vec![owner(30, 1), owner(20, 5)]);
        assert_eq!(s.main_owner().map(|o| o.pid), Some(20));
        // A cycle cannot happen, but still answers.
        let s = tcp("0.0.0.0", 80, vec![owner(30, 20), owner(20, 30)]);
        assert_eq!(s.main_owner().map(|o| o.pid), Some(20));
        assert_eq!(tcp("0.0.0.0", 80, vec![]).main_owner(), None);
        let u = UnixSocket {
            path: "/run/php/fpm.sock".into(),
            inode: 2,
            file: None,
            owners: vec![owner(101, 100), owner(100, 1)],
        };
        assert_eq!(u.main_owner().map(|o| o.pid), Some(100));
    }

    #[test]
    fn facts_lookups() {
        let facts = SocketFacts {
            tcp: vec![
                tcp("127.0.0.1", 8000, vec![]),
                tcp("::", 8000, vec![]),
                tcp("0.0.0.0", 9000, vec![]),
            ],
            unix: vec![UnixSocket {
                path: "/run/app.sock".into(),
                inode: 3,
                file: None,
                owners: vec![],
            }],
            skipped_lines: 0,
        };
        assert_eq!(facts.tcp_listeners_on(8000).count(), 2);
        assert_eq!(facts.tcp_listeners_on(1).count(), 0);
        let dial: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(facts.tcp_accepting(dial, false).count(), 2);
        assert_eq!(facts.tcp_accepting(dial, true).count(), 1);
        let dial: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(facts.tcp_accepting(dial, false).count(), 0);
        assert_eq!(
            facts.unix_listener("/run/app.sock").map(|s| s.inode),
            Some(3)
        );
        assert!(facts.unix_listener("/run/app.sock2").is_none());
    }

    #[test]
    fn facts_serialise_snake_case() {
        let s = TcpSocket {
            addr: ip("::ffff:127.0.0.1"),
            port: 80,
            inode: 7,
            owners: vec![owner(1, 0)],
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["addr"], "::ffff:127.0.0.1");
        assert_eq!(v["owners"][0]["ppid"], 0);
    }

    #[test]
    fn stat_cmdline_and_fd_links() {
        let st = parse_stat(&fixture("tree/12314/stat")).unwrap();
        assert_eq!(
            st,
            ProcStat {
                pid: 12314,
                comm: "python3".into(),
                ppid: 12272
            }
        );
        let odd = parse_stat("42 (a) b (c)) S 7 1 1").unwrap();
        assert_eq!((odd.comm.as_str(), odd.ppid), ("a) b (c)", 7));
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("x (y) S 1"), None);
        assert_eq!(parse_stat("1 (y) S"), None);

        let args = parse_cmdline(&std::fs::read(format!("{FIXTURES}/tree/12272/cmdline")).unwrap());
        assert_eq!(args.len(), 3);
        assert_eq!(args[0], "/root/.pyenv/versions/3.11.7/bin/python3");
        assert_eq!(args[1], "-c");
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);

        assert_eq!(socket_inode("socket:[14643]"), Some(14643));
        assert_eq!(socket_inode("pipe:[14624]"), None);
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn unit_cgroup_keeps_the_path_up_to_the_unit() {
        assert_eq!(
            unit_cgroup("0::/nginx-medic-lab-1a/app.slice/api.service\n"),
            Some((
                "api.service".into(),
                "/nginx-medic-lab-1a/app.slice/api.service".into()
            ))
        );
        assert_eq!(
            unit_cgroup("0::/system.slice/php8.2-fpm.service/pool\n"),
            Some((
                "php8.2-fpm.service".into(),
                "/system.slice/php8.2-fpm.service".into()
            ))
        );
        assert_eq!(unit_cgroup("0::/\n"), None);
    }
}
