//! Listening sockets straight from the kernel over netlink (`NETLINK_SOCK_DIAG`): the kernel
//! sends only the sockets in LISTEN, where `/proc/net/tcp*` lists every connection (a busy
//! host's thousands of TIME_WAIT entries) and is filtered after reading.
//!
//! The messages are built and read here by hand, only the fields the socket facts need
//! (`linux/netlink.h`, `linux/inet_diag.h`, `linux/unix_diag.h`); the socket is nix's. The same
//! facts as `facts::sockets`' `/proc/net` parsers: address, port or path, and inode; owners
//! are left empty for `adapters::procfs` to fill in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;

use crate::facts::sockets::{Parsed, TcpSocket, UnixSocket};

/// Failures asking the kernel for its listening sockets.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    /// The netlink socket could not be opened, written or read (a sandbox without
    /// `AF_NETLINK`, a kernel without sock_diag).
    #[error("cannot {what} the kernel's socket-diagnostics netlink socket")]
    Io {
        /// What was being done: `open`, `query`, `read`.
        what: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The kernel answered the query with an error (a family its sock_diag lacks).
    #[error("the kernel refused the listening-socket query")]
    Refused {
        /// The kernel's reason.
        #[source]
        source: nix::Error,
    },
    /// The answer does not have the kernel's layout, or the dump kept being interrupted.
    #[error("the kernel's listening-socket answer cannot be read: {reason}")]
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// The kernel's mark on a dump whose table changed while it was being sent.
const NLM_F_DUMP_INTR: u16 = 0x10;
const AF_UNIX: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u8 = 10;
const SOCK_STREAM: u8 = 1;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UNIX_DIAG_NAME: u16 = 0;
/// `struct inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, expires,
/// rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
const UNIX_DIAG_MSG_LEN: usize = 16;
/// The sequence number of every request: each query has a socket of its own.
const SEQ: u32 = 1;
/// How often a dump interrupted by a changing table is asked again.
const DUMP_ATTEMPTS: usize = 3;

/// TCP sockets in LISTEN, IPv4 then IPv6 (as `/proc/net/tcp` then `tcp6`).
pub fn tcp_listeners() -> Result<Parsed<TcpSocket>, SockDiagError> {
    let mut out = dump(&inet_request(AF_INET), inet_listener)?;
    let v6 = dump(&inet_request(AF_INET6), inet_listener)?;
    out.items.extend(v6.items);
    out.skipped_lines += v6.skipped_lines;
    Ok(out)
}

/// Named unix stream sockets in LISTEN, with their path (an abstract name as `/proc/net/unix`
/// shows it: `@`, and each NUL byte as `@`).
pub fn unix_listeners() -> Result<Parsed<UnixSocket>, SockDiagError> {
    dump(&unix_request(), unix_listener)
}

/// A netlink header for a dump request with `payload` after it.
fn request(payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&SEQ.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.extend_from_slice(payload);
    out
}

/// `struct inet_diag_req_v2` for TCP sockets of `family` in LISTEN, any address.
fn inet_request(family: u8) -> Vec<u8> {
    let mut payload = vec![family, IPPROTO_TCP, 0, 0];
    payload.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    payload.extend_from_slice(&[0; 48]); // the socket id: zero matches every socket
    request(&payload)
}

/// `struct unix_diag_req` for unix sockets in LISTEN, with their names.
fn unix_request() -> Vec<u8> {
    let mut payload = vec![AF_UNIX, 0, 0, 0];
    payload.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    payload.extend_from_slice(&0u32.to_ne_bytes()); // inode: any
    payload.extend_from_slice(&UDIAG_SHOW_NAME.to_ne_bytes());
    payload.extend_from_slice(&[0xff; 8]); // cookie: none (`INET_DIAG_NOCOOKIE`)
    request(&payload)
}

/// One entry of a dump: `None` when malformed, `Some(None)` when well-formed but not kept.
type Entry<T> = fn(&[u8]) -> Option<Option<T>>;

/// Sends `request` on a new socket and reads the whole dump, again when the kernel marks it
/// interrupted.
fn dump<T>(request: &[u8], entry: Entry<T>) -> Result<Parsed<T>, SockDiagError> {
    for _ in 0..DUMP_ATTEMPTS {
        let fd = open()?;
        send(fd.as_raw_fd(), request, MsgFlags::empty()).map_err(|source| SockDiagError::Io {
            what: "query",
            source,
        })?;
        let mut out = Parsed::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut interrupted = false;
        loop {
            // MSG_TRUNC: the datagram's whole length, to know when the buffer was too small
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC).map_err(|source| {
                SockDiagError::Io {
                    what: "read",
                    source,
                }
            })?;
            let read = buf.get(..n).ok_or(SockDiagError::Malformed {
                reason: "a message longer than the buffer",
            })?;
            let answer = messages(read, entry, &mut out)?;
            interrupted |= answer.interrupted;
            if answer.done {
                break;
            }
        }
        if !interrupted {
            return Ok(out);
        }
    }
    Err(SockDiagError::Malformed {
        reason: "the dump was interrupted at every attempt",
    })
}

/// A netlink socket for sock_diag, its reads bounded to a second (the kernel answers a dump
/// at once; a read never waits for anything else).
fn open() -> Result<OwnedFd, SockDiagError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(|source| SockDiagError::Io {
        what: "open",
        source,
    })?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(1, 0)).map_err(|source| {
        SockDiagError::Io {
            what: "open",
            source,
        }
    })?;
    Ok(fd)
}

/// What one datagram of a dump said.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    /// The dump's end was in it.
    done: bool,
    /// The kernel marked a message of it as taken from a changing table.
    interrupted: bool,
}

/// Reads the netlink messages of one datagram into `out`.
fn messages<T>(
    mut bytes: &[u8],
    entry: Entry<T>,
    out: &mut Parsed<T>,
) -> Result<Answer, SockDiagError> {
    let malformed = |reason| SockDiagError::Malformed { reason };
    let mut answer = Answer::default();
    while !bytes.is_empty() {
        let len = u32_at(bytes, 0).ok_or(malformed("a truncated message header"))? as usize;
        let kind = u16_at(bytes, 4).ok_or(malformed("a truncated message header"))?;
        let flags = u16_at(bytes, 6).ok_or(malformed("a truncated message header"))?;
        let seq = u32_at(bytes, 8).ok_or(malformed("a truncated message header"))?;
        let payload = bytes
            .get(NLMSG_HDRLEN..len)
            .ok_or(malformed("a message longer than its datagram"))?;
        if seq != SEQ {
            return Err(malformed("a message of another request"));
        }
        answer.interrupted |= flags & NLM_F_DUMP_INTR != 0;
        match kind {
            NLMSG_DONE => {
                answer.done = true;
                return Ok(answer);
            }
            NLMSG_ERROR => {
                let code = i32_at(payload, 0).ok_or(malformed("a truncated error message"))?;
                return Err(SockDiagError::Refused {
                    source: nix::Error::from_raw(code.saturating_neg()),
                });
            }
            SOCK_DIAG_BY_FAMILY => match entry(payload) {
                Some(Some(item)) => out.items.push(item),
                Some(None) => {}
                None => out.skipped_lines += 1,
            },
            _ => {} // NLMSG_NOOP and the like
        }
        bytes = bytes.get(align(len)..).unwrap_or_default();
    }
    Ok(answer)
}

/// A TCP socket in LISTEN from a `struct inet_diag_msg`.
fn inet_listener(msg: &[u8]) -> Option<Option<TcpSocket>> {
    if msg.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = *msg.first()?;
    if *msg.get(1)? != TCP_LISTEN {
        return Some(None);
    }
    // the id: source port and destination port (network order), then the two addresses
    let port = u16::from_be_bytes(msg.get(4..6)?.try_into().ok()?);
    let src = msg.get(8..24)?;
    let addr = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(src.get(..4)?).ok()?)),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?)),
        _ => return None,
    };
    Some(Some(TcpSocket {
        addr,
        port,
        inode: u64::from(u32_at(msg, 68)?),
        owners: Vec::new(),
    }))
}

/// A named unix stream socket in LISTEN from a `struct unix_diag_msg` and its attributes.
fn unix_listener(msg: &[u8]) -> Option<Option<UnixSocket>> {
    if msg.len() < UNIX_DIAG_MSG_LEN || *msg.first()? != AF_UNIX {
        return None;
    }
    let inode = u64::from(u32_at(msg, 4)?);
    if *msg.get(1)? != SOCK_STREAM || *msg.get(2)? != TCP_LISTEN {
        return Some(None);
    }
    let mut attrs = msg.get(UNIX_DIAG_MSG_LEN..)?;
    let mut name = None;
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)?;
        let value = attrs.get(4..len)?;
        if kind == UNIX_DIAG_NAME {
            name = Some(value);
        }
        attrs = attrs.get(align(len)..).unwrap_or_default();
    }
    let Some(path) = name.and_then(proc_style_path) else {
        return Some(None); // unnamed
    };
    Some(Some(UnixSocket {
        path,
        inode,
        file: None,
        owners: Vec::new(),
    }))
}

/// A socket's name as `/proc/net/unix` prints it: a path without its closing NUL; an
/// abstract name as `@` and its bytes, each NUL as `@`. `None` for an empty name.
fn proc_style_path(name: &[u8]) -> Option<String> {
    let (prefix, bytes) = match name.split_first()? {
        (0, rest) => ("@", rest),
        _ => ("", name.strip_suffix(&[0]).unwrap_or(name)),
    };
    let shown: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == 0 { b'@' } else { b })
        .collect();
    Some(format!("{prefix}{}", String::from_utf8_lossy(&shown)))
}

/// Netlink messages and attributes start on 4-byte boundaries.
fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A netlink message of `kind` around `payload`, as the kernel sends it (x86-64, little
    /// endian).
    fn message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&SEQ.to_le_bytes());
        out.extend_from_slice(&4242u32.to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(align(out.len()), 0);
        out
    }

    /// Captured from a 6.18 kernel (x86-64): the `inet_diag_msg` of a listener on
    /// 0.0.0.0:2024, inode 1241, with the attributes the kernel sends unasked.
    const INET4: &str = "02 0a 00 00 07 e8 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 23 10 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 80 00 00 00 00 00 00 00 d9 04 00 00 05 00 08 00 00 00 00 00
        08 00 0f 00 00 00 00 00 0c 00 15 00 01 00 00 00 00 00 00 00 06 00 16 00 52 00 00 00";
    /// Captured: a listener on [::1]:8080, inode 9589593.
    const INET6: &str = "0a 0a 00 00 1f 90 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 61 2d 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 80 00 00 00 00 00 00 00 59 53 92 00 05 00 08 00 00 00 00 00
        05 00 0b 00 01 00 00 00 08 00 0f 00 00 00 00 00 0c 00 15 00 01 00 00 00 00 00 00 00
        06 00 16 00 12 00 00 00";
    /// Captured: `unix_diag_msg` of `/tmp/x.sock` (inode 9589396) in LISTEN, then of the
    /// abstract `\0abs\0x` (inode 9589397), each with a name and a shutdown attribute.
    const UNIX_PATH: &str = "01 01 0a 00 94 52 92 00 5f 2d 00 00 00 00 00 00 10 00 00 00
        2f 74 6d 70 2f 78 2e 73 6f 63 6b 00 05 00 06 00 00 00 00 00";
    const UNIX_ABSTRACT: &str = "01 01 0a 00 95 52 92 00 60 2d 00 00 00 00 00 00 0a 00 00 00
        00 61 62 73 00 78 00 00 05 00 06 00 00 00 00 00";

    #[test]
    fn requests_have_the_kernel_layout() {
        let r = inet_request(AF_INET6);
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u32_at(&r, 0), Some(72));
        assert_eq!(u16_at(&r, 4), Some(20));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(&r[16..20], &[10, 6, 0, 0]);
        assert_eq!(u32_at(&r, 20), Some(1 << 10));
        let u = unix_request();
        assert_eq!(u.len(), 16 + 24);
        assert_eq!(&u[16..20], &[1, 0, 0, 0]);
        assert_eq!(u32_at(&u, 28), Some(1)); // UDIAG_SHOW_NAME
    }

    #[test]
    fn a_dump_of_tcp_listeners_is_read_to_its_end() {
        let mut bytes = message(SOCK_DIAG_BY_FAMILY, 2, &hex(INET4));
        bytes.extend(message(SOCK_DIAG_BY_FAMILY, 2, &hex(INET6)));
        bytes.extend(message(SOCK_DIAG_BY_FAMILY, 2, &[2, 10, 0])); // too short
        bytes.extend(message(NLMSG_DONE, 2, &[0; 4]));
        let mut out = Parsed::default();
        let answer = messages(&bytes, inet_listener, &mut out).unwrap();
        assert_eq!(
            answer,
            Answer {
                done: true,
                interrupted: false
            }
        );
        let seen: Vec<_> = out
            .items
            .iter()
            .map(|s| (s.socket_addr(), s.inode))
            .collect();
        assert_eq!(
            seen,
            [
                ("0.0.0.0:2024".parse().unwrap(), 1241),
                ("[::1]:8080".parse().unwrap(), 9589593)
            ]
        );
        assert_eq!(out.skipped_lines, 1);
    }

    #[test]
    fn a_socket_not_listening_is_left_out() {
        let mut established = hex(INET4);
        established[1] = 1;
        assert_eq!(inet_listener(&established), Some(None));
    }

    #[test]
    fn unix_listeners_are_named_as_proc_shows_them() {
        let mut bytes = message(SOCK_DIAG_BY_FAMILY, 2, &hex(UNIX_PATH));
        bytes.extend(message(SOCK_DIAG_BY_FAMILY, 2, &hex(UNIX_ABSTRACT)));
        let mut out = Parsed::default();
        let answer = messages(&bytes, unix_listener, &mut out).unwrap();
        assert!(!answer.done, "no NLMSG_DONE yet: the next datagram is read");
        let seen: Vec<_> = out
            .items
            .iter()
            .map(|s| (s.path.as_str(), s.inode))
            .collect();
        assert_eq!(seen, [("/tmp/x.sock", 9589396), ("@abs@x", 9589397)]);
        let mut unnamed = hex(UNIX_PATH);
        unnamed.truncate(UNIX_DIAG_MSG_LEN);
        assert_eq!(unix_listener(&unnamed), Some(None));
        let mut datagram = hex(UNIX_PATH);
        datagram[1] = 2;
        assert_eq!(unix_listener(&datagram), Some(None));
    }

    #[test]
    fn an_error_answer_is_a_refusal_and_an_interrupted_dump_is_seen() {
        let bytes = message(NLMSG_ERROR, 0, &(-2i32).to_le_bytes());
        let err = messages(&bytes, inet_listener, &mut Parsed::default()).unwrap_err();
        assert!(matches!(err, SockDiagError::Refused { source } if source == nix::Error::ENOENT));
        let bytes = message(SOCK_DIAG_BY_FAMILY, 2 | NLM_F_DUMP_INTR, &hex(INET4));
        let answer = messages(&bytes, inet_listener, &mut Parsed::default()).unwrap();
        assert!(answer.interrupted);
        let mut bad = message(NLMSG_DONE, 2, &[0; 4]);
        bad[0] = 200; // longer than the datagram
        assert!(messages(&bad, inet_listener, &mut Parsed::default()).is_err());
    }

    #[test]
    fn the_kernel_answers_with_this_hosts_listeners() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listeners = tcp_listeners().unwrap();
        assert!(listeners
            .items
            .iter()
            .any(|s| s.port == port && s.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
