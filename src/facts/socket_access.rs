//! Whether nginx's workers may connect to a unix socket: the worker identity (the `user`
//! directive, looked up in the user and group databases) against the socket file's owner and
//! mode and the search permission of every directory above it.
//!
//! The permission arithmetic is pure; `gather` does the lookups and `stat`s.

use serde::{Deserialize, Serialize};

/// Who nginx's workers run as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerIdentity {
    /// The user name (`user` directive; nginx's default is `nobody`).
    pub user: String,
    /// The group name: the directive's second word, else the group named like the user (as
    /// nginx does), else the user's primary group.
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group id the workers hold (primary and supplementary, as `initgroups` gives them).
    pub groups: Vec<u32>,
}

/// Owner, group and permission bits of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPerm {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A unix socket path nginx dials, as its workers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnixPathFacts {
    /// The path (without `unix:`).
    pub path: String,
    /// Whether anything exists at the path.
    pub exists: bool,
    /// Whether it is a socket.
    pub is_socket: bool,
    /// Owner and mode of the file.
    pub file: Option<crate::facts::sockets::SocketFile>,
    /// Whether the worker identity may connect (write on the socket, search on every
    /// directory); `None` when the identity or a directory could not be read.
    pub worker_can_connect: Option<bool>,
}

const READ: u32 = 4;
const WRITE: u32 = 2;
const SEARCH: u32 = 1;

/// Whether `who` has every permission in `want` (`4` read, `2` write, `1` search/execute) on a
/// path, by the owner, then group, then other bits, as the kernel checks them. Root may do
/// anything (`CAP_DAC_OVERRIDE`; search on a directory needs no bit either).
pub fn may(who: &WorkerIdentity, perm: &PathPerm, want: u32) -> bool {
    if who.uid == 0 {
        return true;
    }
    let bits = if perm.uid == who.uid {
        (perm.mode >> 6) & 7
    } else if perm.gid == who.gid || who.groups.contains(&perm.gid) {
        (perm.mode >> 3) & 7
    } else {
        perm.mode & 7
    };
    bits & want == want
}

/// Whether `who` may `connect()` to the socket: search on each directory from `/` down, and
/// write on the socket itself.
pub fn can_connect(who: &WorkerIdentity, dirs: &[PathPerm], socket: &PathPerm) -> bool {
    dirs.iter().all(|d| may(who, d, SEARCH)) && may(who, socket, WRITE)
}

/// Whether the mode lets anybody at all write (connect): `0666`, `0777`, `0622`, … A fix never
/// sets such a mode.
pub fn world_writable(mode: u32) -> bool {
    mode & WRITE != 0
}

/// Parses an octal mode as written in configuration files (`0660`, `660`).
pub fn parse_mode(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || text.len() > 4 {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

/// Whether `who` may read the file (used for evidence only).
pub fn may_read(who: &WorkerIdentity, perm: &PathPerm) -> bool {
    may(who, perm, READ)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn www() -> WorkerIdentity {
        WorkerIdentity {
            user: "www-data".into(),
            group: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33, 1001],
        }
    }

    fn perm(uid: u32, gid: u32, mode: u32) -> PathPerm {
        PathPerm { uid, gid, mode }
    }

    const OPEN_DIRS: [PathPerm; 3] = [
        PathPerm {
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
        PathPerm {
            uid: 0,
            gid: 0,
            mode: 0o711,
        },
        PathPerm {
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
    ];

    #[test]
    fn owner_group_and_other_bits_decide_in_that_order() {
        let who = www();
        assert!(can_connect(&who, &OPEN_DIRS, &perm(33, 33, 0o660)));
        assert!(can_connect(&who, &OPEN_DIRS, &perm(0, 33, 0o660)));
        assert!(
            can_connect(&who, &OPEN_DIRS, &perm(0, 1001, 0o660)),
            "supplementary group"
        );
        assert!(!can_connect(&who, &OPEN_DIRS, &perm(0, 0, 0o600)));
        assert!(!can_connect(&who, &OPEN_DIRS, &perm(0, 0, 0o660)));
        // the owner's bits apply to the owner even when the group's would allow more
        assert!(!can_connect(&who, &OPEN_DIRS, &perm(33, 33, 0o460)));
        assert!(can_connect(&who, &OPEN_DIRS, &perm(0, 0, 0o666)));
    }

    #[test]
    fn every_directory_must_be_searchable() {
        let who = www();
        let closed = [OPEN_DIRS[0], perm(0, 0, 0o700), OPEN_DIRS[2]];
        assert!(!can_connect(&who, &closed, &perm(33, 33, 0o660)));
        let group_dir = [OPEN_DIRS[0], perm(0, 33, 0o710)];
        assert!(can_connect(&who, &group_dir, &perm(33, 33, 0o660)));
    }

    #[test]
    fn root_may_connect_anywhere() {
        let root = WorkerIdentity {
            user: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        assert!(can_connect(&root, &[perm(1, 1, 0o700)], &perm(1, 1, 0o600)));
    }

    #[test]
    fn modes_parse_and_world_writable_ones_are_recognised() {
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("660"), Some(0o660));
        assert_eq!(parse_mode("0o660"), None);
        assert_eq!(parse_mode("999"), None);
        assert_eq!(parse_mode("17777"), None);
        assert!(world_writable(0o666) && world_writable(0o777) && world_writable(0o662));
        assert!(!world_writable(0o660) && !world_writable(0o664));
        assert!(may_read(&www(), &perm(0, 0, 0o644)));
    }
}
