//! Reads socket and process facts from `/proc` (or a fixture tree laid out like it).
//!
//! Parsing lives in `facts::sockets`; this module only opens files, walks `PID/fd` links and
//! stats unix socket paths. The host's listening sockets come from the kernel over netlink
//! (`adapters::sock_diag`, listeners only), from `/proc/net` when netlink is refused.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::adapters::sock_diag;
use crate::facts::sockets::{
    parse_cmdline, parse_stat, parse_tcp_listeners, parse_unix_listeners, socket_inode,
    unit_cgroup, Owner, Parsed, SocketFacts, SocketFile, TcpSocket, UnixSocket,
};

/// Failures reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// A file that must exist could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file was read but does not have the kernel's layout.
    #[error("cannot parse `{}`: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was expected.
        reason: &'static str,
    },
}

/// A view of a proc filesystem rooted at `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procfs {
    root: PathBuf,
    /// Listening sockets are asked of this process's kernel over netlink first: only for the
    /// host's own `/proc`, whose `net/` is the same network namespace's.
    sock_diag: bool,
}

impl Procfs {
    /// A proc filesystem at `root` (a fixture tree in tests); sockets from its `net/` files.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sock_diag: false,
        }
    }

    /// The host's `/proc`, its listening sockets asked of the kernel over netlink.
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/proc"),
            sock_diag: true,
        }
    }

    /// Listening TCP and unix sockets with the processes holding them.
    ///
    /// `net/tcp` must be readable; `net/tcp6` and `net/unix` may be missing (IPv6 or unix
    /// sockets compiled out). Processes that vanish mid-walk or whose fds cannot be read (other
    /// users' processes when not root) are skipped, so their sockets show fewer or no owners.
    pub fn socket_facts(&self) -> Result<SocketFacts, ProcfsError> {
        self.socket_facts_with(None)
    }

    /// [`Procfs::socket_facts`] after `previous` (a snapshot of this host a moment ago): a
    /// socket with the inode of one seen then, whose holders are all still alive, keeps their
    /// owners; the fds of every process are searched only when a socket is new (a listener
    /// that just went away costs no search at all).
    pub fn socket_facts_reusing(&self, previous: &SocketFacts) -> Result<SocketFacts, ProcfsError> {
        self.socket_facts_with(Some(previous))
    }

    fn socket_facts_with(
        &self,
        previous: Option<&SocketFacts>,
    ) -> Result<SocketFacts, ProcfsError> {
        let tcp = self.tcp_listeners()?;
        let unix = self.unix_listeners()?;
        let skipped_lines = tcp.skipped_lines + unix.skipped_lines;
        let mut tcp = tcp.items;
        let mut unix = unix.items;

        // the owners seen before, of sockets whose every holder is still there
        let alive = |owners: &[Owner]| {
            owners
                .iter()
                .all(|o| self.root.join(o.pid.to_string()).exists())
        };
        let known: HashMap<u64, &[Owner]> = previous
            .into_iter()
            .flat_map(|p| {
                let tcp = p.tcp.iter().map(|s| (s.inode, s.owners.as_slice()));
                tcp.chain(p.unix.iter().map(|s| (s.inode, s.owners.as_slice())))
            })
            .collect();
        let mut kept: HashMap<u64, Vec<Owner>> = HashMap::new();
        for inode in tcp
            .iter()
            .map(|s| s.inode)
            .chain(unix.iter().map(|s| s.inode))
        {
            if let Some(owners) = known.get(&inode).filter(|o| alive(o)) {
                kept.insert(inode, owners.to_vec());
            }
        }
        let mut holders: HashMap<u64, Vec<i32>> = tcp
            .iter()
            .map(|s| s.inode)
            .chain(unix.iter().map(|s| s.inode))
            .filter(|inode| !kept.contains_key(inode))
            .map(|inode| (inode, Vec::new()))
            .collect();
        if !holders.is_empty() {
            self.find_holders(&mut holders)?;
        }

        let mut processes: HashMap<i32, Option<Owner>> = HashMap::new();
        let mut owners_of = |inode: u64| -> Vec<Owner> {
            if let Some(owners) = kept.get(&inode) {
                return owners.clone();
            }
            let pids = holders.get(&inode).map(Vec::as_slice).unwrap_or_default();
            pids.iter()
                .filter_map(|&pid| {
                    processes
                        .entry(pid)
                        .or_insert_with(|| self.process(pid).ok())
                        .clone()
                })
                .collect()
        };
        for s in &mut tcp {
            s.owners = owners_of(s.inode);
        }
        for s in &mut unix {
            s.owners = owners_of(s.inode);
            s.file = socket_file(&s.path);
        }
        Ok(SocketFacts {
            tcp,
            unix,
            skipped_lines,
        })
    }

    /// TCP sockets in LISTEN, IPv4 then IPv6: from netlink, else `net/tcp` and `net/tcp6`.
    fn tcp_listeners(&self) -> Result<Parsed<TcpSocket>, ProcfsError> {
        self.netlink_first("TCP", sock_diag::tcp_listeners, || {
            let mut tcp = parse_tcp_listeners(&read_text(&self.root.join("net/tcp"))?);
            let tcp6 = parse_tcp_listeners(&read_optional(&self.root.join("net/tcp6"))?);
            tcp.items.extend(tcp6.items);
            tcp.skipped_lines += tcp6.skipped_lines;
            Ok(tcp)
        })
    }

    /// Named unix stream sockets in LISTEN: from netlink, else `net/unix`.
    fn unix_listeners(&self) -> Result<Parsed<UnixSocket>, ProcfsError> {
        self.netlink_first("unix", sock_diag::unix_listeners, || {
            Ok(parse_unix_listeners(&read_optional(
                &self.root.join("net/unix"),
            )?))
        })
    }

    /// `ask`s the kernel when this is the host's `/proc`, and `read`s its `net/` files when
    /// it is not or netlink is refused (`what`: the kind of listener, for the log).
    fn netlink_first<T>(
        &self,
        what: &str,
        ask: fn() -> Result<Parsed<T>, sock_diag::SockDiagError>,
        read: impl FnOnce() -> Result<Parsed<T>, ProcfsError>,
    ) -> Result<Parsed<T>, ProcfsError> {
        if self.sock_diag {
            match ask() {
                Ok(found) => return Ok(found),
                Err(e) => {
                    tracing::debug!(error = %crate::error_text::chain(&e), "{what} listeners from /proc/net instead")
                }
            }
        }
        read()
    }

    /// Fills `holders` (keyed by socket inode) with the pids that hold each socket, in pid order.
    fn find_holders(&self, holders: &mut HashMap<u64, Vec<i32>>) -> Result<(), ProcfsError> {
        let entries = fs::read_dir(&self.root).map_err(|source| ProcfsError::Read {
            path: self.root.clone(),
            source,
        })?;
        let mut pids: Vec<i32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            // A process that exits mid-walk, or whose fds we may not read, is simply skipped.
            let Ok(fds) = fs::read_dir(self.root.join(pid.to_string()).join("fd")) else {
                continue;
            };
            for fd in fds.filter_map(Result::ok) {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = target.to_str().and_then(socket_inode) else {
                    continue;
                };
                if let Some(list) = holders.get_mut(&inode) {
                    if list.last() != Some(&pid) {
                        list.push(pid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Pid, parent, name, command line and systemd unit of process `pid`.
    pub fn process(&self, pid: i32) -> Result<Owner, ProcfsError> {
        let dir = self.root.join(pid.to_string());
        let stat_path = dir.join("stat");
        let stat = parse_stat(&read_text(&stat_path)?).ok_or(ProcfsError::Malformed {
            path: stat_path,
            reason: "expected `PID (COMM) STATE PPID ...`",
        })?;
        let cmdline_path = dir.join("cmdline");
        let cmdline = fs::read(&cmdline_path).map_err(|source| ProcfsError::Read {
            path: cmdline_path,
            source,
        })?;
        // A kernel without cgroups has no cgroup file; that only means no unit.
        let (unit, unit_cgroup) = fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|t| unit_cgroup(&t))
            .unzip();
        Ok(Owner {
            pid: stat.pid,
            ppid: stat.ppid,
            comm: stat.comm,
            cmdline: parse_cmdline(&cmdline),
            unit,
            unit_cgroup,
        })
    }

    /// A backend process as the supervision facts need it: command line, executable, working
    /// directory, user, the *names* of its environment variables (never their values), its
    /// unit and its parents. `None` when it is gone or cannot be read.
    pub fn process_facts(
        &self,
        pid: i32,
        seen_at: u64,
    ) -> Option<crate::facts::supervision::ProcessFacts> {
        let owner = self.process(pid).ok()?;
        let dir = self.root.join(pid.to_string());
        let link = |name: &str| {
            fs::read_link(dir.join(name))
                .ok()
                .map(|p| p.display().to_string())
        };
        let uid = fs::metadata(&dir).ok()?.uid();
        let env_names = fs::read(dir.join("environ"))
            .map(|bytes| {
                bytes
                    .split(|b| *b == 0)
                    .filter_map(|kv| {
                        let name = kv.split(|b| *b == b'=').next()?;
                        let name = std::str::from_utf8(name).ok()?;
                        (!name.is_empty()).then(|| name.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut ancestors = Vec::new();
        let mut parent = owner.ppid;
        while parent > 1 && ancestors.len() < 32 {
            ancestors.push(parent);
            parent = fs::read_to_string(self.root.join(parent.to_string()).join("stat"))
                .ok()
                .and_then(|t| parse_stat(&t))
                .map_or(0, |s| s.ppid);
        }
        Some(crate::facts::supervision::ProcessFacts {
            pid,
            exe: link("exe"),
            cmdline: owner.cmdline,
            cwd: link("cwd"),
            uid,
            user: User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name),
            env_names,
            unit: owner.unit,
            ancestors,
            seen_at,
        })
    }

    /// The command line of a process (a PM2 daemon's title names its home).
    pub fn cmdline(&self, pid: i32) -> Vec<String> {
        fs::read(self.root.join(pid.to_string()).join("cmdline"))
            .map(|b| parse_cmdline(&b))
            .unwrap_or_default()
    }

    /// Whether new `::` sockets refuse IPv4 by default (`net.ipv6.bindv6only`); false, the Linux
    /// default, when the setting cannot be read.
    pub fn bindv6only(&self) -> bool {
        fs::read_to_string(self.root.join("sys/net/ipv6/bindv6only"))
            .map(|t| t.trim() == "1")
            .unwrap_or(false)
    }
}

/// Owner, group and mode of a unix socket's file. Abstract names have no file, and relative
/// paths were relative to the binding process's directory, so neither is looked up.
fn socket_file(path: &str) -> Option<SocketFile> {
    if !path.starts_with('/') {
        return None;
    }
    let meta = fs::metadata(path).ok()?;
    let (uid, gid) = (meta.uid(), meta.gid());
    Some(SocketFile {
        uid,
        gid,
        user: User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name),
        group: Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name),
        mode: format!("{:04o}", meta.mode() & 0o7777),
    })
}

fn read_text(path: &Path) -> Result<String, ProcfsError> {
    fs::read_to_string(path).map_err(|source| ProcfsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Like [`read_text`], but a missing file reads as empty.
fn read_optional(path: &Path) -> Result<String, ProcfsError> {
    match fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        other => other.map_err(|source| ProcfsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    const TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/procfs/tree");

    #[test]
    fn fixture_tree_master_and_workers() {
        // Captured from a python listener on 127.0.0.1:19115 and /tmp/procfs-app.sock that
        // forked two children, all three in a scratch cgroup2 group `app.slice/api.service`.
        let procfs = Procfs::new(TREE);
        let facts = procfs.socket_facts().unwrap();
        assert_eq!(facts.skipped_lines, 0);
        assert_eq!(facts.tcp.len(), 7);
        assert_eq!(facts.unix.len(), 4);

        let s: Vec<_> = facts.tcp_listeners_on(19115).collect();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(s[0].inode, 14643);
        let pids: Vec<i32> = s[0].owners.iter().map(|o| o.pid).collect();
        assert_eq!(pids, [12272, 12314, 12315]);
        let main = s[0].main_owner().unwrap();
        assert_eq!((main.pid, main.ppid), (12272, 1));
        assert_eq!(main.comm, "python3");
        assert_eq!(main.unit.as_deref(), Some("api.service"));
        assert_eq!(main.cmdline[1], "-c");

        let u = facts.unix_listener("/tmp/procfs-app.sock").unwrap();
        assert_eq!(u.inode, 14644);
        assert_eq!(u.main_owner().map(|o| o.pid), Some(12272));
        assert_eq!(u.owners.len(), 3);

        // Sockets whose holders were not captured have no owners, and that is not an error.
        let other = facts.tcp_listeners_on(2024).next().unwrap();
        assert!(other.owners.is_empty());
        assert!(facts
            .unix_listener("@procfs-abstract")
            .unwrap()
            .file
            .is_none());
        assert!(!procfs.bindv6only());
    }

    #[test]
    fn missing_tcp_table_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Procfs::new(dir.path()).socket_facts().unwrap_err();
        let want = dir.path().join("net/tcp");
        assert!(matches!(&err, ProcfsError::Read { path, .. } if *path == want));
        assert_eq!(err.to_string(), format!("cannot read `{}`", want.display()));
    }

    #[test]
    fn vanished_and_unreadable_processes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("net")).unwrap();
        fs::copy(format!("{TREE}/net/tcp"), root.join("net/tcp")).unwrap();
        // No tcp6, no unix: both optional.
        // 100: holds the socket but its stat is gone (exited after the fd walk).
        fs::create_dir_all(root.join("100/fd")).unwrap();
        symlink("socket:[14643]", root.join("100/fd/3")).unwrap();
        // 101: no fd directory (exited before the walk, or not ours to read).
        fs::create_dir_all(root.join("101")).unwrap();
        // 102: a live holder with a malformed stat.
        fs::create_dir_all(root.join("102/fd")).unwrap();
        symlink("socket:[14643]", root.join("102/fd/4")).unwrap();
        fs::write(root.join("102/stat"), "garbage").unwrap();
        // 103: a real holder, with the same socket on two fds and no cgroup file.
        fs::create_dir_all(root.join("103/fd")).unwrap();
        symlink("socket:[14643]", root.join("103/fd/3")).unwrap();
        symlink("socket:[14643]", root.join("103/fd/9")).unwrap();
        symlink("pipe:[1]", root.join("103/fd/5")).unwrap();
        fs::write(root.join("103/stat"), "103 (nginx) S 1 103 103 0").unwrap();
        fs::write(root.join("103/cmdline"), b"nginx: master process\0").unwrap();
        fs::create_dir_all(root.join("self")).unwrap();

        let procfs = Procfs::new(root);
        let facts = procfs.socket_facts().unwrap();
        let s = facts.tcp_listeners_on(19115).next().unwrap();
        assert_eq!(
            s.owners,
            [Owner {
                pid: 103,
                ppid: 1,
                comm: "nginx".into(),
                cmdline: vec!["nginx: master process".into()],
                unit: None,
                unit_cgroup: None,
            }]
        );
        assert!(facts.unix.is_empty());

        let err = procfs.process(102).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot parse `{}`: expected `PID (COMM) STATE PPID ...`",
                root.join("102/stat").display()
            )
        );
        assert!(matches!(procfs.process(100), Err(ProcfsError::Read { .. })));
    }

    /// The daemon's targeted snapshot: the owners of a socket seen before are kept while its
    /// holders live; the fds are searched again only for a socket whose holders are gone.
    #[test]
    fn reusing_keeps_the_owners_of_known_sockets_and_searches_only_for_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("net")).unwrap();
        fs::copy(format!("{TREE}/net/tcp"), root.join("net/tcp")).unwrap();
        fs::create_dir_all(root.join("103/fd")).unwrap();
        symlink("socket:[14643]", root.join("103/fd/3")).unwrap();
        fs::write(root.join("103/stat"), "103 (node) S 1 103 103 0").unwrap();
        fs::write(root.join("103/cmdline"), b"node\0web.js\0").unwrap();
        let procfs = Procfs::new(root);
        let pids = |f: &SocketFacts| -> Vec<i32> {
            let s = f.tcp.iter().find(|s| s.inode == 14643).unwrap();
            s.owners.iter().map(|o| o.pid).collect()
        };
        let full = procfs.socket_facts().unwrap();
        assert_eq!(pids(&full), [103]);
        // the fd link gone, the process alive: kept without a search (a search finds none)
        fs::remove_file(root.join("103/fd/3")).unwrap();
        assert!(pids(&procfs.socket_facts().unwrap()).is_empty());
        let reused = procfs.socket_facts_reusing(&full).unwrap();
        assert_eq!(reused, full);
        // the holder gone: searched again
        fs::remove_dir_all(root.join("103")).unwrap();
        assert!(pids(&procfs.socket_facts_reusing(&full).unwrap()).is_empty());
    }

    #[test]
    fn bindv6only_reads_the_sysctl() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = Procfs::new(dir.path());
        assert!(!procfs.bindv6only());
        fs::create_dir_all(dir.path().join("sys/net/ipv6")).unwrap();
        fs::write(dir.path().join("sys/net/ipv6/bindv6only"), "1\n").unwrap();
        assert!(procfs.bindv6only());
    }

    #[test]
    fn live_proc_finds_our_own_listeners() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("medic.sock");
        let _unix = UnixListener::bind(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();

        let procfs = Procfs::system();
        let started = Instant::now();
        let facts = procfs.socket_facts().unwrap();
        let took = started.elapsed();
        println!(
            "socket_facts() took {took:?} for {} tcp and {} unix listeners",
            facts.tcp.len(),
            facts.unix.len()
        );

        let s: Vec<_> = facts.tcp_listeners_on(port).collect();
        assert_eq!(s.len(), 1, "{facts:#?}");
        assert_eq!(s[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let main = s[0].main_owner().unwrap();
        assert_eq!(main.pid, me);
        assert_eq!(main.ppid, nix::unistd::getppid().as_raw());
        assert!(!main.cmdline.is_empty());

        let u = facts.unix_listener(path.to_str().unwrap()).unwrap();
        assert_eq!(u.main_owner().map(|o| o.pid), Some(me));
        let file = u.file.as_ref().unwrap();
        assert_eq!(file.mode, "0660");
        assert_eq!(file.uid, nix::unistd::geteuid().as_raw());
        let name = User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .map(|u| u.name);
        assert_eq!(file.user, name);

        let own = procfs.process(me).unwrap();
        assert_eq!(&own, main);
        assert!(procfs.process(i32::MAX).is_err());
    }

    #[test]
    fn netlink_and_proc_net_read_the_same_listeners() {
        // listeners of each kind of our own, beside whatever else the host has
        let _tcp4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let _tcp6 = TcpListener::bind("[::1]:0").ok(); // a host without IPv6 has none
        let dir = tempfile::tempdir().unwrap();
        let _unix = UnixListener::bind(dir.path().join("medic.sock")).unwrap();
        let sorted = |mut f: SocketFacts| {
            f.tcp.sort_by_key(|s| s.inode);
            f.unix.sort_by_key(|s| s.inode);
            f
        };
        let netlink = Procfs::system();
        let files = Procfs::new("/proc");
        assert!(sock_diag::tcp_listeners().is_ok() && sock_diag::unix_listeners().is_ok());
        // other programs on this host open and close listeners meanwhile: the same twice in a
        // row, of a few tries
        let mut last = None;
        for _ in 0..5 {
            let a = sorted(netlink.socket_facts().unwrap());
            let b = sorted(files.socket_facts().unwrap());
            let again = sorted(netlink.socket_facts().unwrap());
            if a == b && a == again {
                assert!(a.tcp.len() >= 2 && !a.unix.is_empty(), "{a:#?}");
                return;
            }
            last = Some((a, b));
        }
        let (a, b) = last.unwrap();
        assert_eq!(a, b, "netlink (left) and /proc/net (right) disagree");
    }
}
