//! Error-log facts: reads nginx's error.log (the tail, or everything since an offset) and
//! classifies each line by the upstream failure it reports.
//!
//! The classifier works on nginx's own message texts (see `CLASS_TABLE`); everything else on a
//! line is parsed from the fixed anatomy nginx writes:
//!
//! ```text
//! YYYY/MM/DD HH:MM:SS [level] PID#TID: *CONN <message> (<errno>: <strerror>) while <phase>,
//!     client: C, server: S, request: "R", subrequest: "SR", upstream: "U", host: "H", referrer: "F"
//! ```
//!
//! nginx writes the request line, Host and Referer headers into the quoted values without
//! escaping, so a value may hold `"` or even `", host: "`. The trailing pairs are therefore parsed
//! with the order nginx writes them in and a small backtracking search, not by splitting on `", `.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What an error-log line says went wrong between nginx and its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LogClass {
    /// `(111: Connection refused)` while talking to an upstream: nothing listens there.
    ConnectionRefused,
    /// `(2: No such file or directory)` while connecting: the unix socket is missing.
    NoSuchFile,
    /// `(13: Permission denied)` while connecting: socket mode/owner vs the worker user.
    PermissionDenied,
    /// `upstream timed out` or `(110: …)` towards an upstream; the client gets 504.
    TimedOut,
    /// `upstream prematurely closed connection` / `… FastCGI stdout`: the backend hung up.
    PrematurelyClosed,
    /// `(104: Connection reset by peer)` from an upstream.
    ResetByPeer,
    /// `upstream sent too big header`: larger than `proxy_buffer_size`.
    TooBigHeader,
    /// The upstream does not speak the protocol nginx expects (HTTP vs FastCGI, garbage).
    InvalidHeader,
    /// `no live upstreams`: every peer of a group is down; a secondary symptom.
    NoLiveUpstreams,
    /// An upstream name nginx could not resolve, at load time or at run time.
    HostNotFound,
    /// Any other nginx line (notices, static-file 404s, client errors, …).
    Other,
}

impl LogClass {
    /// Every class, in declaration order.
    pub const ALL: [LogClass; 11] = [
        LogClass::ConnectionRefused,
        LogClass::NoSuchFile,
        LogClass::PermissionDenied,
        LogClass::TimedOut,
        LogClass::PrematurelyClosed,
        LogClass::ResetByPeer,
        LogClass::TooBigHeader,
        LogClass::InvalidHeader,
        LogClass::NoLiveUpstreams,
        LogClass::HostNotFound,
        LogClass::Other,
    ];
}

/// One classified error-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
    /// Time as nginx wrote it: `YYYY/MM/DD HH:MM:SS` (local time of the nginx host).
    pub time: String,
    /// Level as written between the brackets: `error`, `crit`, `emerg`, …
    pub level: String,
    /// Process id of the writer (master or worker).
    pub pid: Option<u32>,
    /// nginx's connection number, the `N` of `*N`.
    pub connection: Option<u64>,
    /// What the line reports.
    pub class: LogClass,
    /// The system error number in `(111: Connection refused)`. `None` for `host_not_found`:
    /// the number in resolver messages is a resolver code, not an errno.
    pub errno: Option<i32>,
    /// The text after the `*N ` prefix up to `, client:` (or the end of the line).
    pub message: String,
    /// What nginx was doing: the text after ` while `, e.g. `connecting to upstream`.
    pub phase: Option<String>,
    /// Client address.
    pub client: Option<String>,
    /// First `server_name` of the server block that handled the request.
    pub server: Option<String>,
    /// The request line, as written (not unescaped).
    pub request: Option<String>,
    /// The `upstream: "…"` value as written; for name-resolution failures without that field,
    /// the name nginx could not resolve.
    pub upstream: Option<String>,
    /// The address nginx dialled: `127.0.0.1:8000`, `[::1]:8000` or `unix:/run/php/x.sock`.
    pub upstream_addr: Option<String>,
    /// The request's Host header.
    pub host: Option<String>,
    /// Configuration file named by a load-time `host not found in upstream` line.
    pub file: Option<String>,
    /// Line in `file`.
    pub line: Option<u32>,
}

/// What the reader found in one error log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorLogFacts {
    /// The file that was read.
    pub path: PathBuf,
    /// Its size when reading began; bytes appended later are left for the next read.
    pub size: u64,
    /// Offset of the first byte read (a line boundary).
    pub read_from: u64,
    /// Every nginx line read, in file order.
    pub entries: Vec<LogEntry>,
    /// Number of entries per class; classes with no entry are absent.
    pub counts: BTreeMap<LogClass, usize>,
    /// Complete lines that were not nginx log lines (backend noise, blank lines, binary junk).
    pub skipped_lines: usize,
    /// The file ended inside a line (nginx was writing it); that line was not classified.
    pub partial_tail: bool,
    /// Where to continue with [`read_error_log_since`]: the start of the unfinished last line,
    /// or `size`.
    pub resume_at: u64,
    /// Lines stamped later than the machine's clock allows ([`ErrorLogFacts::reject_future`]):
    /// forged through a client's CR/LF or from a skewed clock, they are left out of `entries`
    /// (never evidence, never the clock's anchor) and only counted here.
    pub future_lines: usize,
}

/// How far past the machine's local clock a line's time may be and still be nginx's own (60 s).
/// nginx stamps a line with a time it cached earlier, never a later one; the slack is for a
/// clock stepped back a little. It is less than half the quarter hour that
/// `engine::recency::zone_offset` rounds to, so a forged line inside it cannot move the
/// offset every other line is mapped with.
pub const FUTURE_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The machine's wall clock in its own time zone (`TZ`, else `/etc/localtime`), as nginx
/// writes its times; UTC when the zone cannot be read.
pub fn local_now() -> jiff::civil::DateTime {
    jiff::Zoned::now().datetime()
}

/// Whether a line stamped `time` (`YYYY/MM/DD HH:MM:SS`, local) is later than `now` plus
/// [`FUTURE_SLACK`]. A time that does not read as a date is not in the future (the parser
/// only keeps lines that open with nginx's time stamp).
pub fn is_future(time: &str, now: jiff::civil::DateTime) -> bool {
    FutureLimit::of(now).is_passed_by(time)
}

/// [`is_future`]'s limit, worked out once for a whole log.
struct FutureLimit {
    limit: Option<jiff::civil::DateTime>,
    /// The limit as nginx writes a time: a time of that fixed shape (zero-padded numbers,
    /// largest first) that sorts at or before it as text is not later, so the common line is
    /// told with one compare and no date parse.
    text: Option<String>,
}

impl FutureLimit {
    const FORMAT: &'static str = "%Y/%m/%d %H:%M:%S";

    fn of(now: jiff::civil::DateTime) -> Self {
        let limit = now.checked_add(FUTURE_SLACK).ok();
        let text = limit
            .map(|l| l.strftime(Self::FORMAT).to_string())
            .filter(|t| split_time(t).is_some_and(|(_, rest)| rest.is_empty()));
        FutureLimit { limit, text }
    }

    fn is_passed_by(&self, time: &str) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        let shaped = split_time(time).is_some_and(|(_, rest)| rest.is_empty());
        if let Some(text) = &self.text {
            if shaped && time <= text.as_str() {
                return false;
            }
        }
        jiff::civil::DateTime::strptime(Self::FORMAT, time).is_ok_and(|at| at > limit)
    }
}

impl ErrorLogFacts {
    /// Leaves out every line stamped later than `now` (the machine's local clock, see
    /// [`local_now`]) plus [`FUTURE_SLACK`], counting them in `future_lines`; `counts` is
    /// recounted. A client can put a line of its own into the log (an encoded CR/LF in a path
    /// nginx logs decoded); dated in the future and read as the newest line, it would make
    /// every real line look old.
    pub fn reject_future(&mut self, now: jiff::civil::DateTime) {
        let before = self.entries.len();
        let limit = FutureLimit::of(now);
        self.entries.retain(|e| !limit.is_passed_by(&e.time));
        let rejected = before - self.entries.len();
        if rejected == 0 {
            return;
        }
        self.future_lines += rejected;
        self.counts.clear();
        for entry in &self.entries {
            *self.counts.entry(entry.class).or_insert(0) += 1;
        }
        tracing::warn!(
            path = %self.path.display(),
            lines = rejected,
            "error-log lines dated in the future are not evidence"
        );
    }
}

/// Reading the error log failed.
#[derive(Debug, thiserror::Error)]
pub enum ErrorLogError {
    /// The file could not be opened or its size read.
    #[error(
        "cannot open error log `{}`: {source}\nhelp: check the `error_log` path in the nginx configuration and that this user may read it",
        path.display()
    )]
    Open {
        /// The error log.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Reading failed part-way.
    #[error("cannot read error log `{}` at byte {offset}: {source}", path.display())]
    Read {
        /// The error log.
        path: PathBuf,
        /// Where reading failed.
        offset: u64,
        /// What the system said.
        source: io::Error,
    },
}

/// How a row of [`CLASS_TABLE`] recognises a line.
enum Pattern {
    /// The message starts with this text (nginx's fixed wording).
    Prefix(&'static str),
    /// The message contains this text (it follows a name nginx interpolates).
    Contains(&'static str),
    /// The system error number, only when nginx was talking to an upstream: the phase mentions
    /// `upstream` or the message is a `connect()` failure. A static file's `open() … (2: …)` or
    /// the resolver's `send() failed (111: …) while resolving` stay `other`.
    UpstreamErrno(i32),
}

/// The classification table. The first row that matches wins, so the order matters:
/// 1. `no live upstreams` and the name-resolution texts come first, because resolver messages
///    carry numbers like `(110: Operation timed out)` that the errno rows would take.
/// 2. nginx's fixed upstream texts (`upstream timed out (110: …)` is a timeout by text).
/// 3. Bare errnos last, limited to upstream context.
const CLASS_TABLE: &[(Pattern, LogClass)] = &[
    (
        Pattern::Prefix("no live upstreams"),
        LogClass::NoLiveUpstreams,
    ),
    (
        Pattern::Prefix("host not found in upstream"),
        LogClass::HostNotFound,
    ),
    (
        Pattern::Prefix("no resolver defined to resolve"),
        LogClass::HostNotFound,
    ),
    (
        Pattern::Contains(" could not be resolved"),
        LogClass::HostNotFound,
    ),
    (Pattern::Prefix("upstream timed out"), LogClass::TimedOut),
    (
        Pattern::Prefix("upstream prematurely closed connection"),
        LogClass::PrematurelyClosed,
    ),
    (
        Pattern::Prefix("upstream prematurely closed FastCGI stdout"),
        LogClass::PrematurelyClosed,
    ),
    (
        Pattern::Prefix("upstream sent too big header"),
        LogClass::TooBigHeader,
    ),
    (
        Pattern::Prefix("upstream sent invalid header"),
        LogClass::InvalidHeader,
    ),
    (
        Pattern::Prefix("upstream sent no valid HTTP/1.0 header"),
        LogClass::InvalidHeader,
    ),
    (
        Pattern::Prefix("upstream sent unsupported FastCGI protocol version"),
        LogClass::InvalidHeader,
    ),
    (Pattern::UpstreamErrno(111), LogClass::ConnectionRefused),
    (Pattern::UpstreamErrno(2), LogClass::NoSuchFile),
    (Pattern::UpstreamErrno(13), LogClass::PermissionDenied),
    (Pattern::UpstreamErrno(110), LogClass::TimedOut),
    (Pattern::UpstreamErrno(104), LogClass::ResetByPeer),
];

/// Whether `level` is one nginx writes: `emerg`, `alert`, `crit`, `error`, `warn`, `notice`,
/// `info` or `debug`, in its own order.
fn is_level(level: &str) -> bool {
    matches!(
        level,
        "emerg" | "alert" | "crit" | "error" | "warn" | "notice" | "info" | "debug"
    )
}

/// One classified error-log line, its fields borrowed from the line: what [`scan`] hands out,
/// so that classifying a large log allocates nothing per line.
///
/// [`scan`]: crate::facts::log_scan::scan
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: &'a str,
    pub level: &'a str,
    pub pid: Option<u32>,
    pub connection: Option<u64>,
    pub class: LogClass,
    pub errno: Option<i32>,
    pub message: &'a str,
    pub phase: Option<&'a str>,
    pub client: Option<&'a str>,
    pub server: Option<&'a str>,
    pub request: Option<&'a str>,
    /// `upstream: "…"` as written, or for `host_not_found` the name nginx could not resolve.
    pub upstream: Option<&'a str>,
    pub host: Option<&'a str>,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
}

impl<'a> LogLine<'a> {
    /// The address nginx dialled (see [`LogEntry::upstream_addr`]).
    pub fn dialled(&self) -> Option<String> {
        self.dialled_str().map(Cow::into_owned)
    }

    /// [`LogLine::dialled`], borrowed from the line where the line writes it in its normal form
    /// (an IPv4 address and port as nginx prints them: no copy per line).
    pub fn dialled_str(&self) -> Option<Cow<'a, str>> {
        match self.upstream {
            Some(upstream) => upstream_pair_address(upstream),
            None => connect_target(self.message).and_then(dialled_address),
        }
    }

    /// The owned entry, at `offset` in its file.
    pub fn to_entry(&self, offset: u64) -> LogEntry {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        LogEntry {
            offset,
            time: self.time.to_owned(),
            level: self.level.to_owned(),
            pid: self.pid,
            connection: self.connection,
            class: self.class,
            errno: self.errno,
            message: self.message.to_owned(),
            phase: owned(self.phase),
            client: owned(self.client),
            server: owned(self.server),
            request: owned(self.request),
            upstream: owned(self.upstream),
            upstream_addr: self.dialled(),
            host: owned(self.host),
            file: owned(self.file),
            line: self.line,
        }
    }
}

/// Parses and classifies one error-log line (without its line break; a trailing `\r` or `\n`
/// is ignored). Returns `None` for a line that is not an nginx log line. `offset` is 0: the
/// reader fills it in.
pub fn classify_line(line: &str) -> Option<LogEntry> {
    parse_line(line).map(|l| l.to_entry(0))
}

/// [`classify_line`] without copying: the fields borrow from `line`.
pub fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let line = trim_line_break(line);
    let (time, rest) = split_time(line)?;
    let rest = rest.strip_prefix(" [")?;
    let (level, rest) = split_at_text(rest, "] ")?;
    if !is_level(level) {
        return None;
    }
    let (pid, rest) = split_pid(rest);
    let (connection, body) = split_connection(rest);

    let (message, tail) = split_tail(body);
    // the last ` while `: the phase follows it, the errno precedes it
    let (head, after_while) = match rfind_while(message) {
        Some(i) => (
            message.get(..i).unwrap_or(message),
            message.get(i + WHILE.len()..),
        ),
        None => (message, None),
    };
    let phase = after_while.and_then(phase_of);
    let errno = errno_of(head);
    let class = classify(message, phase, errno);

    let mut parsed = LogLine {
        time,
        level,
        pid,
        connection,
        class,
        errno,
        message,
        phase,
        client: None,
        server: None,
        request: None,
        upstream: None,
        host: None,
        file: None,
        line: None,
    };
    if let Some(tail) = tail {
        parsed.client = Some(tail.client);
        parsed.server = tail.server;
        parsed.request = tail.quoted[KEY_REQUEST];
        parsed.upstream = tail.quoted[KEY_UPSTREAM];
        parsed.host = tail.quoted[KEY_HOST];
    }
    if class == LogClass::HostNotFound {
        parsed.errno = None;
        let (name, file, line) = unresolved_name(message);
        if parsed.upstream.is_none() {
            parsed.upstream = name;
        }
        parsed.file = file;
        parsed.line = line;
    }
    Some(parsed)
}

const WHILE: &str = " while ";
const CLIENT: &str = ", client: ";
const UNRESOLVED: &str = " could not be resolved";

/// Whether `message` holds ` could not be resolved`: found by its `v` (a vectorised search for
/// a letter the other messages of the table hardly have), then one compare. A substring
/// searcher's set-up per call cost more than the search on lines this short.
fn has_unresolved(message: &[u8]) -> bool {
    const V_AT: usize = 19;
    debug_assert_eq!(UNRESOLVED.as_bytes().get(V_AT), Some(&b'v'));
    memchr::memchr_iter(b'v', message).any(|v| {
        v.checked_sub(V_AT)
            .and_then(|start| message.get(start..))
            .is_some_and(|from| from.starts_with(UNRESOLVED.as_bytes()))
    })
}

/// Where each `, client: ` starts in `body`, first to last (by its comma, which is rare in a
/// message; the text cannot overlap itself).
fn client_starts(body: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = body.as_bytes();
    memchr::memchr_iter(b',', bytes).filter(move |&i| {
        bytes
            .get(i..)
            .is_some_and(|from| from.starts_with(CLIENT.as_bytes()))
    })
}

/// Where the last ` while ` starts in `message`: the `w`s from the end, each checked for the
/// whole text around it (a vectorised search for the one byte, then one compare).
fn rfind_while(message: &str) -> Option<usize> {
    let bytes = message.as_bytes();
    memchr::memrchr_iter(b'w', bytes).find_map(|w| {
        let i = w.checked_sub(1)?;
        (bytes.get(i..i + WHILE.len()) == Some(WHILE.as_bytes())).then_some(i)
    })
}

/// `s` split around the first `text` (of two bytes, the first of them ASCII), as
/// `str::split_once` without building a searcher per call.
fn split_at_text<'s>(s: &'s str, text: &str) -> Option<(&'s str, &'s str)> {
    let i = find_text(s, text)?;
    Some((s.get(..i)?, s.get(i + text.len()..)?))
}

/// Where the first `text` (of two bytes or more, the first ASCII) starts in `s`: each
/// occurrence of its first byte (a vectorised search) is compared with the rest.
fn find_text(s: &str, text: &str) -> Option<usize> {
    let (&first, rest) = text.as_bytes().split_first()?;
    let bytes = s.as_bytes();
    memchr::memchr_iter(first, bytes).find(|&i| {
        bytes
            .get(i + 1..)
            .is_some_and(|after| after.starts_with(rest))
    })
}

/// `s` with the `\n` and `\r` at its end cut off, as `trim_end_matches(['\n', '\r'])`.
fn trim_line_break(s: &str) -> &str {
    let kept = s
        .bytes()
        .rposition(|b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    s.get(..kept).unwrap_or(s)
}

/// Whether `message` starts with `text`, the first byte compared before the rest (most rows
/// of the table differ there, and a call to compare costs more than the row).
fn has_prefix(message: &[u8], text: &str) -> bool {
    message.first() == text.as_bytes().first() && message.starts_with(text.as_bytes())
}

fn classify(message: &str, phase: Option<&str>, errno: Option<i32>) -> LogClass {
    let bytes = message.as_bytes();
    // what follows is only asked for a line with an errno the table knows
    let upstream_context = || {
        phase.is_some_and(|p| find_text(p, "upstream").is_some())
            || has_prefix(bytes, "connect() failed")
            || has_prefix(bytes, "connect() to ")
    };
    CLASS_TABLE
        .iter()
        .find(|(pattern, _)| match pattern {
            Pattern::Prefix(text) => has_prefix(bytes, text),
            Pattern::Contains(text) if *text == UNRESOLVED => has_unresolved(bytes),
            Pattern::Contains(text) => message.contains(text),
            Pattern::UpstreamErrno(n) => errno == Some(*n) && upstream_context(),
        })
        .map_or(LogClass::Other, |(_, class)| *class)
}

/// `s` without its byte at `i` (an ASCII byte), split around it.
fn split_around(s: &str, i: usize) -> Option<(&str, &str)> {
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// `YYYY/MM/DD HH:MM:SS` at the start of the line.
fn split_time(line: &str) -> Option<(&str, &str)> {
    const SHAPE: &[u8] = b"dddd/dd/dd dd:dd:dd";
    let head = line.as_bytes().get(..SHAPE.len())?;
    let fits = head.iter().zip(SHAPE).all(|(b, s)| match s {
        b'd' => b.is_ascii_digit(),
        other => b == other,
    });
    // The head is ASCII, so the split is on a char boundary.
    fits.then(|| line.split_at(SHAPE.len()))
}

/// `PID#TID: ` (both decimal).
fn split_pid(rest: &str) -> (Option<u32>, &str) {
    let Some((ids, after)) = split_at_text(rest, ": ") else {
        return (None, rest);
    };
    let Some((pid, tid)) = memchr::memchr(b'#', ids.as_bytes()).and_then(|i| split_around(ids, i))
    else {
        return (None, rest);
    };
    if tid.is_empty() || !tid.bytes().all(|b| b.is_ascii_digit()) {
        return (None, rest);
    }
    match pid.parse() {
        Ok(pid) => (Some(pid), after),
        Err(_) => (None, rest),
    }
}

/// `*N ` before the message.
fn split_connection(rest: &str) -> (Option<u64>, &str) {
    let Some(after_star) = rest.strip_prefix('*') else {
        return (None, rest);
    };
    let Some((number, body)) =
        memchr::memchr(b' ', after_star.as_bytes()).and_then(|i| split_around(after_star, i))
    else {
        return (None, rest);
    };
    match number.parse() {
        Ok(n) => (Some(n), body),
        Err(_) => (None, rest),
    }
}

/// The text after the last ` while ` (`after`), up to any `, key: …` nginx appended (e.g.
/// `, resolver:`).
fn phase_of(after: &str) -> Option<&str> {
    let phase = take_until_comma(after).0;
    let plain = !phase.is_empty()
        && phase
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ');
    plain.then_some(phase)
}

/// The last `(N: text)` in the message before the phase (`head`: the message up to its last
/// ` while `).
fn errno_of(head: &str) -> Option<i32> {
    let bytes = head.as_bytes();
    memchr::memrchr_iter(b'(', bytes).find_map(|i| {
        let inner = bytes.get(i + 1..)?;
        let n = inner.iter().take_while(|b| b.is_ascii_digit()).count();
        let after = inner.get(n..)?;
        if n == 0 || !after.starts_with(b": ") {
            return None;
        }
        let digits = head.get(i + 1..i + 1 + n)?;
        memchr::memchr(b')', after.get(2..)?).and_then(|_| digits.parse().ok())
    })
}

/// The `X` of `connect() to X failed`.
fn connect_target(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("connect() to ")?;
    find_text(rest, " failed").and_then(|i| rest.get(..i))
}

/// The dialled address of an `upstream: "…"` value, which nginx's http module always writes
/// with its scheme (`http://127.0.0.1:8000/`, `fastcgi://unix:/run/x.sock:`). A value without
/// one names no address: it is not nginx's, but a client's forged line (a decoded path can
/// start a line of its own after an encoded CR/LF, yet cannot hold `//`, which nginx merges),
/// or a stream-module line, whose proxies are no route of an http site.
fn upstream_pair_address(upstream: &str) -> Option<Cow<'_, str>> {
    split_scheme(upstream)
        .filter(|(scheme, _)| !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_lowercase()))
        .and_then(|(scheme, rest)| dialled_after_scheme(Some(scheme), rest))
}

/// `s` split around its first `://`, as `split_once("://")` (without building a substring
/// searcher per call; `proxy_pass` targets are split with it too).
pub(crate) fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let i = find_text(s, "://")?;
    Some((s.get(..i)?, s.get(i + 3..)?))
}

/// Normalises an `upstream: "…"` value or a `connect() to` target to the dialled address.
/// `None` when it names no address (an upstream group's name in `no live upstreams`).
fn dialled_address(upstream: &str) -> Option<Cow<'_, str>> {
    match split_scheme(upstream) {
        Some((scheme, rest)) => dialled_after_scheme(Some(scheme), rest),
        None => dialled_after_scheme(None, upstream),
    }
}

/// [`dialled_address`] of the value split at its `://` (`scheme`), or of one without any.
fn dialled_after_scheme<'u>(scheme: Option<&str>, rest: &'u str) -> Option<Cow<'u, str>> {
    if let Some(path) = rest.strip_prefix("unix:") {
        // nginx writes `unix:PATH` + `:` + URI. HTTP-like schemes always carry a URI (from
        // `/`), and proxy_pass cannot name a path with `:`; the others carry no URI, so only
        // the separator is cut and a `:` inside the path survives.
        let path = match scheme {
            Some("http" | "https") => path.split(':').next().unwrap_or(path),
            Some(_) => path.strip_suffix(':').unwrap_or(path),
            None => path,
        };
        if path.is_empty() {
            return None;
        }
        // `unix:PATH` as written when nothing was cut from its end
        return Some(match rest.get(..5 + path.len()) {
            Some(written) => Cow::Borrowed(written),
            None => Cow::Owned(format!("unix:{path}")),
        });
    }
    let end = memchr::memchr2(b'/', b'?', rest.as_bytes()).unwrap_or(rest.len());
    let authority = rest.get(..end).unwrap_or(rest);
    if is_normal_ipv4_and_port(authority) {
        return Some(Cow::Borrowed(authority));
    }
    let addr = authority.parse::<SocketAddr>().ok()?;
    // IPv4 parses only without leading zeros: the text is the normal form unless the port has one
    let normal = addr.is_ipv4()
        && authority.rsplit_once(':').is_some_and(|(_, port)| {
            port.bytes().all(|b| b.is_ascii_digit()) && (port == "0" || !port.starts_with('0'))
        });
    Some(if normal {
        Cow::Borrowed(authority)
    } else {
        Cow::Owned(addr.to_string())
    })
}

/// Whether `text` is `A.B.C.D:PORT` exactly as an IPv4 socket address prints (decimal
/// numbers without leading zeros, each octet at most 255, the port at most 65535): what nearly
/// every upstream value holds, told without the general parser.
fn is_normal_ipv4_and_port(text: &str) -> bool {
    // the number just read ends a field: octets 0 to 3, then the port (4)
    let fits = |field: usize, value: u32, digits: u32, zero_first: bool| {
        let max = if field == 4 { 65535 } else { 255 };
        digits > 0 && !(zero_first && digits > 1) && value <= max
    };
    let mut field = 0;
    let (mut value, mut digits, mut zero_first) = (0u32, 0u32, false);
    for &b in text.as_bytes() {
        match b {
            b'0'..=b'9' => {
                if digits == 0 {
                    zero_first = b == b'0';
                }
                digits += 1;
                if digits > 5 {
                    return false;
                }
                value = value * 10 + u32::from(b - b'0');
            }
            b'.' if field < 3 => {
                if !fits(field, value, digits, zero_first) {
                    return false;
                }
                (field, value, digits) = (field + 1, 0, 0);
            }
            b':' if field == 3 => {
                if !fits(field, value, digits, zero_first) {
                    return false;
                }
                (field, value, digits) = (4, 0, 0);
            }
            _ => return false,
        }
    }
    field == 4 && fits(field, value, digits, zero_first)
}

/// For `host_not_found` messages: the unresolved name and, at load time, `FILE:LINE`.
fn unresolved_name(message: &str) -> (Option<&str>, Option<&str>, Option<u32>) {
    if let Some(rest) = message.strip_prefix("host not found in upstream \"") {
        let Some((name, after)) = rest.split_once('"') else {
            return (None, None, None);
        };
        let place = after.strip_prefix(" in ").and_then(|p| {
            let (file, line) = p.rsplit_once(':')?;
            Some((file, line.parse().ok()?))
        });
        return match place {
            Some((file, line)) => (Some(name), Some(file), Some(line)),
            None => (Some(name), None, None),
        };
    }
    if let Some(rest) = message.strip_prefix("no resolver defined to resolve ") {
        let name = rest.split([' ', ',']).next().filter(|n| !n.is_empty());
        return (name, None, None);
    }
    if let Some((name, _)) = message.split_once(" could not be resolved") {
        let name = name.rsplit(' ').next().filter(|n| !n.is_empty());
        return (name, None, None);
    }
    (None, None, None)
}

const KEY_REQUEST: usize = 0;
const KEY_UPSTREAM: usize = 2;
const KEY_HOST: usize = 3;
/// The quoted pairs in the order nginx appends them (`ngx_http_log_error_handler`).
const QUOTED_KEYS: [&str; 5] = [
    ", request: \"",
    ", subrequest: \"",
    ", upstream: \"",
    ", host: \"",
    ", referrer: \"",
];

/// The `, client: …` part of a line.
#[derive(Debug, Default)]
struct Tail<'a> {
    client: &'a str,
    server: Option<&'a str>,
    quoted: [Option<&'a str>; 5],
}

/// Splits the body into the message and the trailing pairs. The first `, client: ` whose
/// remainder parses completely wins (a message can quote a path holding `, client: `). If none
/// does, the line was cut by nginx's line-length limit: the first one is parsed leniently.
fn split_tail(body: &str) -> (&str, Option<Tail<'_>>) {
    for lenient in [false, true] {
        for i in client_starts(body) {
            let (message, rest) = body.split_at(i);
            if let Some(tail) = parse_tail(rest.get(CLIENT.len()..).unwrap_or(""), lenient) {
                return (message, Some(tail));
            }
            if lenient {
                break;
            }
        }
    }
    (body, None)
}

fn parse_tail(rest: &str, lenient: bool) -> Option<Tail<'_>> {
    let (client, mut rest) = take_until_comma(rest);
    if client.is_empty() || memchr::memchr2(b' ', b'"', client.as_bytes()).is_some() {
        return None;
    }
    let mut tail = Tail {
        client,
        ..Tail::default()
    };
    if let Some(after) = rest.strip_prefix(", server: ") {
        let (server, after) = take_until_comma(after);
        if memchr::memchr(b'"', server.as_bytes()).is_some() {
            return None;
        }
        tail.server = (!server.is_empty()).then_some(server);
        rest = after;
    }
    if !lenient {
        if let Some(quoted) = plain_pairs(rest) {
            tail.quoted = quoted;
            return Some(tail);
        }
    }
    let mut search = QuotedSearch {
        line_end: rest.len(),
        failed: HashSet::new(),
        lenient,
    };
    search.parse(rest, 0, &mut tail.quoted).then_some(tail)
}

/// The pairs when each value ends at its first `"` — what nearly every line is — or `None`,
/// and the backtracking search decides. This is the search's own first answer (it tries the
/// earliest closing quote first at every key), except for a request line: there an end after
/// ` HTTP/x.y` is preferred, so a request whose first quote does not follow one is left to it.
fn plain_pairs(rest: &str) -> Option<[Option<&str>; 5]> {
    let mut out = [None; 5];
    let mut s = rest;
    let mut first_key = 0;
    while !s.is_empty() {
        let (key, value_and_more) = QUOTED_KEYS
            .iter()
            .enumerate()
            .skip(first_key)
            .find_map(|(k, marker)| strip_key(s, marker).map(|v| (k, v)))?;
        let end = memchr::memchr(b'"', value_and_more.as_bytes())?;
        let value = value_and_more.get(..end)?;
        if key == KEY_REQUEST && !ends_with_http_version(value) {
            return None;
        }
        *out.get_mut(key)? = Some(value);
        s = value_and_more.get(end + 1..)?;
        first_key = key + 1;
    }
    Some(out)
}

/// `s` after `marker` (a key of [`QUOTED_KEYS`]) if it starts with it. The keys differ from
/// their third byte on: it is compared first.
fn strip_key<'s>(s: &'s str, marker: &str) -> Option<&'s str> {
    if s.as_bytes().get(2) != marker.as_bytes().get(2) {
        return None;
    }
    s.strip_prefix(marker)
}

/// Splits at the first `, ` (or the end).
fn take_until_comma(s: &str) -> (&str, &str) {
    match find_text(s, ", ") {
        Some(i) => s.split_at(i),
        None => (s, ""),
    }
}

/// Backtracking over where each quoted value ends, with a memo of dead ends so a hostile line
/// full of `", host: "` stays linear-ish. nginx caps a line at 2048 bytes anyway.
struct QuotedSearch {
    line_end: usize,
    failed: HashSet<(usize, usize)>,
    lenient: bool,
}

impl QuotedSearch {
    /// Parses `rest` as quoted pairs with keys from `first_key` on, filling `out`.
    fn parse<'a>(
        &mut self,
        rest: &'a str,
        first_key: usize,
        out: &mut [Option<&'a str>; 5],
    ) -> bool {
        if rest.is_empty() {
            return true;
        }
        let position = self.line_end - rest.len();
        if self.failed.contains(&(position, first_key)) {
            return false;
        }
        for key in first_key..QUOTED_KEYS.len() {
            let Some(value_and_more) = QUOTED_KEYS.get(key).and_then(|k| rest.strip_prefix(k))
            else {
                continue;
            };
            for end in self.value_ends(value_and_more, key) {
                let (value, more) = value_and_more.split_at(end);
                let more = more.get(1..).unwrap_or("");
                if self.parse(more, key + 1, out) {
                    if let Some(slot) = out.get_mut(key) {
                        *slot = Some(value);
                    }
                    return true;
                }
            }
            break;
        }
        self.failed.insert((position, first_key));
        false
    }

    /// Candidate positions of the closing quote of a value of `key`: a `"` followed by the end
    /// of the line or by a later key. For the request, ends right after ` HTTP/x.y` are tried
    /// first (a request line that never reached an upstream may hold anything). In lenient
    /// mode the end of the line closes a value cut short.
    fn value_ends(&self, s: &str, key: usize) -> Vec<usize> {
        let later = QUOTED_KEYS.get(key + 1..).unwrap_or(&[]);
        let mut ends: Vec<usize> = s
            .match_indices('"')
            .map(|(i, _)| i)
            .filter(|&i| {
                let after = s.get(i + 1..).unwrap_or("");
                after.is_empty() || later.iter().any(|k| after.starts_with(k))
            })
            .collect();
        if key == KEY_REQUEST {
            ends.sort_by_key(|&i| !ends_with_http_version(s.get(..i).unwrap_or("")));
        }
        if self.lenient && !s.ends_with('"') {
            ends.push(s.len());
        }
        ends
    }
}

/// Whether the request line ends in ` HTTP/x.y` (the last ` HTTP/` is then 9 bytes from the
/// end: `HTTP/x.y` holds no space).
fn ends_with_http_version(request: &str) -> bool {
    let b = request.as_bytes();
    let Some(tail) = b.len().checked_sub(9).and_then(|start| b.get(start..)) else {
        return false;
    };
    tail.starts_with(b" HTTP/")
        && tail.get(6).is_some_and(u8::is_ascii_digit)
        && tail.get(7) == Some(&b'.')
        && tail.get(8).is_some_and(u8::is_ascii_digit)
}

/// Longest line read (8 KiB); nginx itself cuts lines at 2048 bytes (`NGX_MAX_ERROR_STR`), so
/// anything longer is not an nginx line and is skipped without being held in memory or parsed
/// (the quoted-field search is quadratic in a line built of `, key: "` repeats).
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Streaming line reader: feed it bytes as they come, get classified entries back. A last line
/// without its newline is held until the newline arrives.
#[derive(Debug, Clone)]
pub struct LogReader {
    /// File offset of the next byte fed.
    offset: u64,
    /// Bytes of the unfinished line.
    pending: Vec<u8>,
    /// The unfinished line is longer than [`MAX_LINE_BYTES`] and is being dropped.
    discarding: bool,
    skipped: usize,
    classify_partial: bool,
}

impl LogReader {
    /// A reader whose first fed byte sits at `offset` in the file.
    pub fn new(offset: u64) -> Self {
        Self {
            offset,
            pending: Vec::new(),
            discarding: false,
            skipped: 0,
            classify_partial: false,
        }
    }

    /// Whether [`LogReader::finish`] classifies an unfinished last line (default: no, nginx
    /// may still be writing it).
    pub fn classify_partial_tail(mut self, yes: bool) -> Self {
        self.classify_partial = yes;
        self
    }

    /// Consumes `bytes`, returning the entries of every line they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogEntry> {
        let mut entries = Vec::new();
        let mut rest = bytes;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(newline);
            rest = after.get(1..).unwrap_or(&[]);
            let consumed = line.len() as u64 + 1;
            if self.discarding {
                self.discarding = false;
                self.skipped += 1;
            } else if self.pending.is_empty() {
                self.emit(line, self.offset, &mut entries);
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                let start = self.offset - (whole.len() - line.len()) as u64;
                self.emit(&whole, start, &mut entries);
            }
            self.offset += consumed;
        }
        self.hold(rest);
        entries
    }

    /// Ends the stream. The unfinished last line is dropped unless
    /// [`LogReader::classify_partial_tail`] asked for it.
    pub fn finish(&mut self) -> Option<LogEntry> {
        let pending = std::mem::take(&mut self.pending);
        let start = self.offset - pending.len() as u64;
        self.discarding = false;
        if !self.classify_partial || pending.is_empty() {
            return None;
        }
        let mut entries = Vec::new();
        self.emit(&pending, start, &mut entries);
        entries.pop()
    }

    /// Complete lines so far that were not nginx lines.
    pub fn skipped_lines(&self) -> usize {
        self.skipped
    }

    /// Whether bytes of an unfinished line are held.
    pub fn has_partial_line(&self) -> bool {
        !self.pending.is_empty() || self.discarding
    }

    /// File offset where the unfinished line starts, or of the next byte to feed.
    pub fn line_start(&self) -> u64 {
        self.offset - self.pending.len() as u64
    }

    fn hold(&mut self, rest: &[u8]) {
        self.offset += rest.len() as u64;
        if self.discarding {
            return;
        }
        if self.pending.len() + rest.len() > MAX_LINE_BYTES {
            self.pending.clear();
            self.discarding = true;
        } else {
            self.pending.extend_from_slice(rest);
        }
    }

    fn emit(&mut self, line: &[u8], start: u64, entries: &mut Vec<LogEntry>) {
        if line.len() > MAX_LINE_BYTES {
            self.skipped += 1;
            return;
        }
        let text = String::from_utf8_lossy(line);
        match classify_line(&text) {
            Some(mut entry) => {
                entry.offset = start;
                entries.push(entry);
            }
            None => self.skipped += 1,
        }
    }
}

/// Reads at most the last `max_bytes` of the error log, starting at the first line boundary in
/// that window. Invalid UTF-8 is replaced; an unfinished last line is not classified.
/// Lines dated in the future are left out ([`ErrorLogFacts::reject_future`]).
pub fn read_error_log(path: &Path, max_bytes: u64) -> Result<ErrorLogFacts, ErrorLogError> {
    let (file, size) = open(path)?;
    let mut facts = read_range(file, path, size, size.saturating_sub(max_bytes))?;
    facts.reject_future(local_now());
    Ok(facts)
}

/// Reads the error log from `offset` (e.g. the size recorded before a reload) to its current
/// end. A file now shorter than `offset` was truncated or rotated: it is read from the start.
/// An `offset` inside a line moves on to the next line boundary.
pub fn read_error_log_since(path: &Path, offset: u64) -> Result<ErrorLogFacts, ErrorLogError> {
    let (file, size) = open(path)?;
    let start = if offset > size { 0 } else { offset };
    let mut facts = read_range(file, path, size, start)?;
    facts.reject_future(local_now());
    Ok(facts)
}

fn open(path: &Path) -> Result<(File, u64), ErrorLogError> {
    let open_error = |source| ErrorLogError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_error)?;
    let size = file.metadata().map_err(open_error)?.len();
    Ok((file, size))
}

const CHUNK_BYTES: usize = 64 * 1024;

/// Reads `[start, size)`, first moving `start` to a line boundary: the byte before it must be a
/// newline, or the rest of that line is dropped.
fn read_range(
    mut file: File,
    path: &Path,
    size: u64,
    start: u64,
) -> Result<ErrorLogFacts, ErrorLogError> {
    let read_error = |offset, source| ErrorLogError::Read {
        path: path.to_owned(),
        offset,
        source,
    };
    let mut position = start.saturating_sub(1);
    file.seek(SeekFrom::Start(position))
        .map_err(|e| read_error(position, e))?;
    let mut input = file.take(size - position);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    // While looking for the line boundary, bytes up to the first newline are dropped.
    let mut seeking_boundary = start > 0;
    let mut read_from = start;
    let mut reader = LogReader::new(start);
    let mut entries = Vec::new();
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(position, e)),
        };
        let chunk = buffer.get(..n).unwrap_or(&[]);
        let chunk_start = position;
        position += n as u64;
        let chunk = if seeking_boundary {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    seeking_boundary = false;
                    read_from = chunk_start + i as u64 + 1;
                    reader = LogReader::new(read_from);
                    chunk.get(i + 1..).unwrap_or(&[])
                }
                None => continue,
            }
        } else {
            chunk
        };
        entries.extend(reader.feed(chunk));
    }
    if seeking_boundary {
        // No line boundary in the window: nothing whole to read.
        read_from = size;
    }
    let partial_tail = reader.has_partial_line() || (seeking_boundary && size > start);
    let resume_at = if seeking_boundary {
        size
    } else {
        reader.line_start()
    };
    let mut counts = BTreeMap::new();
    for entry in &entries {
        *counts.entry(entry.class).or_insert(0) += 1;
    }
    Ok(ErrorLogFacts {
        path: path.to_owned(),
        size,
        read_from,
        entries,
        counts,
        skipped_lines: reader.skipped_lines(),
        partial_tail,
        resume_at,
        future_lines: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_searches_find_what_a_substring_search_finds() {
        let texts = [
            "",
            " could not be resolved",
            "app could not be resolved (3: Host not found)",
            "x could not be resolve",
            "live invalid resolved v could not be resolved, client: a, client: b",
            ", client: ",
            "a,, client: , client: x",
            ",client: no space",
            "recv() failed (104: Connection reset by peer) while reading response header from upstream",
        ];
        for text in texts {
            assert_eq!(
                has_unresolved(text.as_bytes()),
                text.contains(UNRESOLVED),
                "{text:?}"
            );
            let want: Vec<usize> = text.match_indices(CLIENT).map(|(i, _)| i).collect();
            assert_eq!(client_starts(text).collect::<Vec<_>>(), want, "{text:?}");
        }
    }

    #[test]
    fn a_line_dated_in_the_future_is_not_evidence_and_is_counted() {
        let lines = [
            "2026/11/26 09:07:30 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a.lab, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"a.lab\"",
            // 59 s ahead of the clock: inside the slack, nginx's own
            "2026/11/26 09:08:59 [error] 7#7: *2 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a.lab, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"a.lab\"",
            // forged through a decoded path, a year ahead, read as the newest line
            "2027/11/26 09:07:37 [error] 7#7: *3 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a.lab, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:1/\", host: \"a.lab\"",
            // a minute and a second ahead
            "2026/11/26 09:09:01 [error] 7#7: *4 open() \"/srv/x\" failed (2: No such file or directory), client: 127.0.0.1, server: a.lab, request: \"GET /x HTTP/1.1\", host: \"a.lab\"",
        ];
        let mut text = lines.join("\n");
        text.push('\n');
        let dir = std::env::temp_dir().join(format!("medic-future-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("error.log");
        std::fs::write(&path, text).unwrap();
        let (file, size) = open(&path).unwrap();
        let mut facts = read_range(file, &path, size, 0).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(facts.entries.len(), 4);
        let now = jiff::civil::date(2026, 11, 26).at(9, 8, 0, 0);
        facts.reject_future(now);
        assert_eq!(facts.future_lines, 2);
        let kept: Vec<Option<u64>> = facts.entries.iter().map(|e| e.connection).collect();
        assert_eq!(kept, [Some(1), Some(2)]);
        assert_eq!(facts.counts.get(&LogClass::ConnectionRefused), Some(&2));
        assert_eq!(facts.counts.get(&LogClass::Other), None);
        assert!(
            facts
                .entries
                .iter()
                .all(|e| e.upstream_addr.as_deref() == Some("127.0.0.1:8000")),
            "the forged upstream is gone"
        );
        // the edges: exactly the slack is still nginx's, a second more is not
        assert!(!is_future("2026/11/26 09:09:00", now));
        assert!(is_future("2026/11/26 09:09:01", now));
        assert!(!is_future("2025/01/01 00:00:00", now));
        assert!(!is_future("not a time", now));
        // of nginx's shape but no date: later as text, not later in time
        assert!(!is_future("2026/13/40 99:99:99", now));
        assert!(!is_future("2026/11/26 09:09:00 and more", now));
        // across midnight and a year's end
        let late = jiff::civil::date(2026, 12, 31).at(23, 59, 30, 0);
        assert!(!is_future("2027/01/01 00:00:29", late));
        assert!(is_future("2027/01/01 00:00:31", late));
    }

    #[test]
    fn plain_pairs_agree_with_the_search_wherever_they_answer() {
        let tails = [
            ", request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"a\"",
            ", request: \"GET / HTTP/1.1\", host: \"a\", referrer: \"http://x/\"",
            ", request: \"GET /\" HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"a\"",
            ", request: \"GET /a\", upstream: \"x HTTP/1.1\", host: \"h\"",
            ", request: \"GET /?, upstream: \"http://evil:1/\" HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"a\"",
            ", request: \"GET / HTTP/1.1\", host: \"a\", referrer: \"\", host: \"b\"",
            ", host: \"a\"",
            "",
        ];
        for rest in tails {
            let mut searched = [None; 5];
            let mut search = QuotedSearch {
                line_end: rest.len(),
                failed: HashSet::new(),
                lenient: false,
            };
            let found = search.parse(rest, 0, &mut searched);
            if let Some(plain) = plain_pairs(rest) {
                assert!(found, "{rest}");
                assert_eq!(plain, searched, "{rest}");
            }
        }
        assert!(
            plain_pairs(tails[0]).is_some(),
            "the common line takes the plain path"
        );
    }
    use std::io::Write;

    const LAB: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/error_log/lab-runtime.log"
    ));
    const NGINX_T: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/error_log/nginx-t.log"
    ));
    const CRLF: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/error_log/crlf.log"
    ));
    const PARTIAL: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/error_log/partial-tail.log"
    ));
    const GARBAGE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/error_log/garbage.log"
    ));

    fn read_all(bytes: &[u8]) -> (Vec<LogEntry>, LogReader) {
        let mut reader = LogReader::new(0);
        let entries = reader.feed(bytes);
        (entries, reader)
    }

    fn lab() -> Vec<LogEntry> {
        read_all(LAB).0
    }

    /// The one upstream-error entry of the lab log whose request line starts with `request`.
    fn by_request(entries: &[LogEntry], request: &str) -> LogEntry {
        let found: Vec<&LogEntry> = entries
            .iter()
            .filter(|e| e.level != "info" && e.level != "warn")
            .filter(|e| e.request.as_deref().is_some_and(|r| r.starts_with(request)))
            .collect();
        assert_eq!(found.len(), 1, "entries for {request}: {found:#?}");
        found[0].clone()
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file.flush().unwrap();
        file
    }

    #[test]
    fn every_lab_line_is_an_nginx_line() {
        let (entries, reader) = read_all(LAB);
        assert_eq!(reader.skipped_lines(), 0);
        assert!(!reader.has_partial_line());
        assert_eq!(entries.len(), LAB.iter().filter(|&&b| b == b'\n').count());
        for e in &entries {
            let at = &LAB[e.offset as usize..];
            assert!(at.starts_with(e.time.as_bytes()), "offset of {e:?}");
            assert!(e.offset == 0 || LAB[e.offset as usize - 1] == b'\n');
            assert!(e.pid.is_some());
        }
    }

    #[test]
    fn connection_refused_tcp() {
        let e = by_request(&lab(), "GET /refused?q=1");
        assert_eq!(e.class, LogClass::ConnectionRefused);
        assert_eq!(e.time, "2026/11/26 09:06:28");
        assert_eq!(e.level, "error");
        assert_eq!(e.pid, Some(14756));
        assert_eq!(e.connection, Some(1));
        assert_eq!(e.errno, Some(111));
        assert_eq!(
            e.message,
            "connect() failed (111: Connection refused) while connecting to upstream"
        );
        assert_eq!(e.phase.as_deref(), Some("connecting to upstream"));
        assert_eq!(e.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(e.server.as_deref(), Some("lab.test"));
        assert_eq!(e.request.as_deref(), Some("GET /refused?q=1 HTTP/1.1"));
        assert_eq!(
            e.upstream.as_deref(),
            Some("http://127.0.0.1:19069/refused?q=1")
        );
        assert_eq!(e.upstream_addr.as_deref(), Some("127.0.0.1:19069"));
        assert_eq!(e.host.as_deref(), Some("127.0.0.1:19040"));
        assert_eq!((e.file, e.line), (None, None));
    }

    #[test]
    fn connection_refused_ipv6_and_stale_unix_socket() {
        let entries = lab();
        let v6 = by_request(&entries, "GET /refused6");
        assert_eq!(v6.class, LogClass::ConnectionRefused);
        assert_eq!(v6.upstream_addr.as_deref(), Some("[::1]:19069"));
        let stale = by_request(&entries, "GET /stale HTTP");
        assert_eq!(stale.class, LogClass::ConnectionRefused);
        assert_eq!(
            stale.upstream_addr.as_deref(),
            Some("unix:/tmp/errlog-lab/stale.sock")
        );
    }

    #[test]
    fn no_such_file_is_crit_with_the_socket_path() {
        let entries = lab();
        let http = by_request(&entries, "GET /nosock?");
        assert_eq!(http.class, LogClass::NoSuchFile);
        assert_eq!(http.level, "crit");
        assert_eq!(http.errno, Some(2));
        assert_eq!(
            http.upstream.as_deref(),
            Some("http://unix:/tmp/errlog-lab/missing.sock:/?q=1")
        );
        assert_eq!(
            http.upstream_addr.as_deref(),
            Some("unix:/tmp/errlog-lab/missing.sock")
        );
        let fcgi = by_request(&entries, "GET /nosockfcgi");
        assert_eq!(fcgi.class, LogClass::NoSuchFile);
        assert_eq!(
            fcgi.upstream_addr.as_deref(),
            Some("unix:/tmp/errlog-lab/php/php8.2-fpm.sock")
        );
    }

    #[test]
    fn permission_denied() {
        let e = by_request(&lab(), "GET /perm?");
        assert_eq!(e.class, LogClass::PermissionDenied);
        assert_eq!(e.level, "crit");
        assert_eq!(e.errno, Some(13));
        assert_eq!(
            e.upstream_addr.as_deref(),
            Some("unix:/tmp/errlog-lab/perm.sock")
        );
    }

    #[test]
    fn timed_out_reading_and_connecting() {
        let entries = lab();
        let slow = by_request(&entries, "GET /slow");
        assert_eq!(slow.class, LogClass::TimedOut);
        assert_eq!(slow.errno, Some(110));
        assert_eq!(
            slow.phase.as_deref(),
            Some("reading response header from upstream")
        );
        let connect = by_request(&entries, "GET /blackhole");
        assert_eq!(connect.class, LogClass::TimedOut);
        assert_eq!(connect.phase.as_deref(), Some("connecting to upstream"));
        assert_eq!(connect.upstream_addr.as_deref(), Some("127.0.0.1:19074"));
    }

    #[test]
    fn prematurely_closed_http_and_fastcgi() {
        let entries = lab();
        for request in ["GET /close", "GET /fcgiclose", "GET /fcgistdout"] {
            let e = by_request(&entries, request);
            assert_eq!(e.class, LogClass::PrematurelyClosed, "{request}");
            assert_eq!(e.errno, None);
        }
        let fcgi = by_request(&entries, "GET /fcgistdout");
        assert!(fcgi
            .message
            .starts_with("upstream prematurely closed FastCGI stdout"));
        assert_eq!(fcgi.upstream_addr.as_deref(), Some("127.0.0.1:19068"));
    }

    #[test]
    fn reset_by_peer() {
        let e = by_request(&lab(), "GET /reset");
        assert_eq!(e.class, LogClass::ResetByPeer);
        assert_eq!(e.errno, Some(104));
        assert!(e.message.starts_with("recv() failed"));
    }

    #[test]
    fn too_big_header() {
        let e = by_request(&lab(), "GET /big");
        assert_eq!(e.class, LogClass::TooBigHeader);
        assert_eq!(e.upstream_addr.as_deref(), Some("127.0.0.1:19062"));
    }

    #[test]
    fn invalid_header_in_its_three_wordings() {
        let entries = lab();
        let garbage = by_request(&entries, "GET /garbage");
        assert!(garbage
            .message
            .starts_with("upstream sent no valid HTTP/1.0 header"));
        let invalid = by_request(&entries, "GET /invalid");
        assert!(invalid
            .message
            .starts_with("upstream sent invalid header: \"Bad\\x01...\""));
        let fcgi = by_request(&entries, "GET /fcgihttp");
        assert!(fcgi
            .message
            .contains("unsupported FastCGI protocol version: 72"));
        assert_eq!(fcgi.upstream.as_deref(), Some("fastcgi://127.0.0.1:19066"));
        assert_eq!(fcgi.upstream_addr.as_deref(), Some("127.0.0.1:19066"));
        for e in [garbage, invalid, fcgi] {
            assert_eq!(e.class, LogClass::InvalidHeader, "{}", e.message);
        }
    }

    #[test]
    fn no_live_upstreams_names_the_group_not_an_address() {
        let entries = lab();
        let e = by_request(&entries, "GET /alldown");
        assert_eq!(e.class, LogClass::NoLiveUpstreams);
        assert_eq!(e.upstream.as_deref(), Some("http://alldown/alldown?q=1"));
        assert_eq!(e.upstream_addr, None);
        let after_retries: Vec<&LogEntry> = entries
            .iter()
            .filter(|e| e.upstream.as_deref() == Some("http://pair/pair?q=1"))
            .collect();
        assert_eq!(after_retries.len(), 1);
        assert_eq!(after_retries[0].class, LogClass::NoLiveUpstreams);
        let disabled = entries
            .iter()
            .find(|e| e.level == "warn" && e.message.starts_with("upstream server temporarily"))
            .unwrap();
        assert_eq!(disabled.class, LogClass::Other);
    }

    #[test]
    fn host_not_found_at_load_time_from_nginx_t() {
        let (entries, reader) = read_all(NGINX_T);
        assert_eq!(reader.skipped_lines(), 0);
        assert_eq!(entries.len(), 2);
        let group = &entries[0];
        assert_eq!(group.class, LogClass::HostNotFound);
        assert_eq!(group.level, "emerg");
        assert_eq!(group.connection, None);
        assert_eq!(group.upstream.as_deref(), Some("app.nosuch.invalid:8000"));
        assert_eq!(group.upstream_addr, None);
        assert_eq!(group.file.as_deref(), Some("/tmp/errlog-lab/bad-t.conf"));
        assert_eq!(group.line, Some(4));
        assert_eq!(
            entries[1].upstream.as_deref(),
            Some("backend.nosuch.invalid")
        );
        assert_eq!(entries[1].line, Some(6));
    }

    #[test]
    fn host_not_found_after_a_failed_reload() {
        let entries = lab();
        let emergs: Vec<(usize, &LogEntry)> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.level == "emerg")
            .collect();
        // First the `nginx -s reload` that parsed the file itself and never signalled, then
        // the master after a plain SIGHUP: it logs and keeps the old configuration.
        assert_eq!(emergs.len(), 2);
        let (at, emerg) = emergs[1];
        assert_eq!(entries[at - 1].message, "reconfiguring");
        assert_eq!(emerg.pid, entries[at - 1].pid);
        for (_, e) in emergs {
            assert_eq!(e.class, LogClass::HostNotFound);
            assert_eq!(e.upstream.as_deref(), Some("api.nosuch.invalid"));
            assert_eq!(e.file.as_deref(), Some("/tmp/errlog-lab/nginx.conf"));
            assert_eq!(e.line, Some(40));
        }
    }

    #[test]
    fn host_not_found_at_run_time() {
        let entries = lab();
        let none = by_request(&entries, "GET /noresolver");
        assert_eq!(none.class, LogClass::HostNotFound);
        assert_eq!(none.upstream.as_deref(), Some("nosuch.invalid"));
        assert_eq!(
            none.message,
            "no resolver defined to resolve nosuch.invalid"
        );
        let nx = by_request(&entries, "GET /resolv?");
        assert_eq!(nx.class, LogClass::HostNotFound);
        assert_eq!(nx.upstream.as_deref(), Some("nosuch.invalid"));
        assert_eq!(nx.errno, None, "(3: Host not found) is a resolver code");
        let timeout = by_request(&entries, "GET /resolvdead");
        assert_eq!(timeout.class, LogClass::HostNotFound, "not timed_out");
        assert_eq!(timeout.upstream.as_deref(), Some("dead.nosuch.invalid"));
    }

    #[test]
    fn resolver_socket_errors_are_not_upstream_errors() {
        let entries = lab();
        let e = entries
            .iter()
            .find(|e| e.message.starts_with("send() failed (111"))
            .unwrap();
        assert_eq!(e.class, LogClass::Other);
        assert_eq!(e.errno, Some(111));
        assert_eq!(e.phase.as_deref(), Some("resolving"));
        assert_eq!(e.connection, None);
        assert_eq!(e.client, None);
    }

    #[test]
    fn static_file_errors_are_other() {
        let entries = lab();
        let favicon = by_request(&entries, "GET /static/favicon.ico");
        assert_eq!(favicon.class, LogClass::Other);
        assert_eq!(favicon.errno, Some(2));
        assert_eq!(favicon.upstream_addr, None);
        // The path in the message holds `, client: x`; the real pairs come after it.
        let tricky = by_request(&entries, "GET /static/a,%20client");
        assert_eq!(
            tricky.message,
            "open() \"/tmp/errlog-lab/www/static/a, client: x\" failed (2: No such file or directory)"
        );
        assert_eq!(tricky.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(tricky.host.as_deref(), Some("lab.test"));
    }

    #[test]
    fn quotes_inside_request_host_and_referrer() {
        let entries = lab();
        let e = by_request(&entries, "GET /refused/a\"b?x=%22");
        assert_eq!(
            e.request.as_deref(),
            Some("GET /refused/a\"b?x=%22,%20upstream:%20%22http://evil/ HTTP/1.1")
        );
        assert_eq!(e.upstream_addr.as_deref(), Some("127.0.0.1:19069"));
        assert_eq!(
            e.host.as_deref(),
            Some("lab.test"),
            "a referrer cannot fake the host"
        );
        let host = entries
            .iter()
            .find(|e| e.host.as_deref() == Some("a\"b"))
            .unwrap();
        assert_eq!(host.class, LogClass::ConnectionRefused);
        // An invalid request line (400) carrying a fake client and server.
        let invalid: Vec<&LogEntry> = entries
            .iter()
            .filter(|e| e.message.starts_with("client sent invalid request"))
            .collect();
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].client.as_deref(), Some("127.0.0.1"));
        assert_eq!(invalid[0].server.as_deref(), Some("lab.test"));
        assert_eq!(
            invalid[0].request.as_deref(),
            Some("GET /refused/a\"b?x=\", client: 1.2.3.4, server: evil HTTP/1.1")
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let e = by_request(&lab(), "GET /refused/caf");
        assert_eq!(e.class, LogClass::ConnectionRefused);
        assert!(e
            .request
            .unwrap()
            .contains("café/\u{fffd}\u{fffd} HTTP/1.1"));
    }

    #[test]
    fn crlf_lines() {
        let (entries, reader) = read_all(CRLF);
        assert_eq!(reader.skipped_lines(), 0);
        let classes: Vec<LogClass> = entries.iter().map(|e| e.class).collect();
        assert_eq!(
            classes,
            [
                LogClass::ConnectionRefused,
                LogClass::PermissionDenied,
                LogClass::TimedOut
            ]
        );
        for e in &entries {
            assert_eq!(e.host.as_deref(), Some("127.0.0.1:19040"));
            assert!(!format!("{e:?}").contains('\r'));
        }
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let (entries, reader) = read_all(GARBAGE);
        let classes: Vec<LogClass> = entries.iter().map(|e| e.class).collect();
        assert_eq!(
            classes,
            [LogClass::PrematurelyClosed, LogClass::ResetByPeer]
        );
        // nginx's stderr form, a blank line, binary junk, backend noise, an unknown level and
        // an indented continuation.
        assert_eq!(reader.skipped_lines(), 6);
    }

    #[test]
    fn partial_last_line_is_held_and_not_classified() {
        let (entries, mut reader) = read_all(PARTIAL);
        assert_eq!(entries.len(), 2);
        assert!(reader.has_partial_line());
        let tail_start = PARTIAL.iter().rposition(|&b| b == b'\n').unwrap() as u64 + 1;
        assert_eq!(reader.line_start(), tail_start);
        assert_eq!(reader.finish(), None);

        let mut reader = LogReader::new(0).classify_partial_tail(true);
        reader.feed(PARTIAL);
        let last = reader.finish().unwrap();
        assert_eq!(last.class, LogClass::TooBigHeader);
        assert_eq!(last.offset, tail_start);

        let file = file_with(PARTIAL);
        let facts = read_error_log(file.path(), u64::MAX).unwrap();
        assert_eq!(facts.entries.len(), 2);
        assert!(facts.partial_tail);
        assert_eq!(facts.resume_at, tail_start);
        assert_eq!(facts.skipped_lines, 0);
    }

    #[test]
    fn byte_by_byte_feeding_matches_one_feed() {
        let whole = read_all(LAB).0;
        let mut reader = LogReader::new(0);
        let mut pieces = Vec::new();
        for chunk in LAB.chunks(7) {
            pieces.extend(reader.feed(chunk));
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn an_overlong_line_is_skipped_without_buffering_it() {
        let mut reader = LogReader::new(0);
        let junk = vec![b'x'; MAX_LINE_BYTES + 10];
        assert!(reader.feed(&junk).is_empty());
        assert!(reader.pending.is_empty());
        let entries = reader.feed(b"tail\n");
        assert!(entries.is_empty());
        let entries = reader.feed(&CRLF[..CRLF.iter().position(|&b| b == b'\n').unwrap() + 1]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].offset, junk.len() as u64 + 5);
        assert_eq!(reader.skipped_lines(), 1);
    }

    #[test]
    fn a_line_cut_by_nginx_keeps_its_client() {
        let line = "2026/11/26 09:06:28 [error] 14756#14756: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: lab.test, request: \"GET /aaaaaaaaaaaa";
        let e = classify_line(line).unwrap();
        assert_eq!(e.class, LogClass::ConnectionRefused);
        assert_eq!(e.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(e.request.as_deref(), Some("GET /aaaaaaaaaaaa"));
        assert_eq!(e.upstream, None);
    }

    #[test]
    fn lines_that_are_not_nginx_lines() {
        for line in [
            "",
            "nginx: [emerg] host not found in upstream \"x\" in /etc/nginx/nginx.conf:1",
            "2026/11/26 09:06:28",
            "2026/11/26 09:06:28 [error]",
            "2026-11-26 09:06:28 [error] 1#1: x",
            "2026/11/26 09:06:28 [ERROR] 1#1: x",
        ] {
            assert_eq!(classify_line(line), None, "{line:?}");
        }
        let bare = classify_line("2026/11/26 09:06:28 [alert] no pid here").unwrap();
        assert_eq!(bare.pid, None);
        assert_eq!(bare.message, "no pid here");
    }

    #[test]
    fn an_upstream_value_without_a_scheme_names_no_address() {
        // the lab's forgery: a whole line of its own from a decoded path, the upstream written
        // without `http://` (nginx merges the slashes of a path)
        let forged = "2026/12/01 16:17:47 [error] 1#1: *998 upstream sent too big header while reading response header from upstream, client: 127.0.0.1, server: api.lab, request: \"GET / HTTP/1.1\", upstream: \"127.0.0.1:18101\", host: \"api.lab\"";
        let entry = classify_line(forged).unwrap();
        assert_eq!(entry.class, LogClass::TooBigHeader);
        assert_eq!(entry.upstream_addr, None);
        for value in [
            "127.0.0.1:18101",
            "http:/127.0.0.1:18101/",
            "unix:/run/x.sock",
            "://127.0.0.1:1/",
            "HTTP://127.0.0.1:1/",
        ] {
            assert_eq!(upstream_pair_address(value), None, "{value}");
        }
        for (value, addr) in [
            ("http://127.0.0.1:8000/", "127.0.0.1:8000"),
            ("fastcgi://unix:/run/php/x.sock:", "unix:/run/php/x.sock"),
            ("grpcs://[::1]:50051", "[::1]:50051"),
        ] {
            assert_eq!(
                upstream_pair_address(value).as_deref(),
                Some(addr),
                "{value}"
            );
        }
        // nginx's own `connect() to` form for a unix socket keeps its address
        let fpm = "2026/11/26 09:06:28 [crit] 1#1: *1 connect() to unix:/run/php/x.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: php.lab, request: \"GET / HTTP/1.1\", host: \"php.lab\"";
        assert_eq!(
            classify_line(fpm).unwrap().upstream_addr.as_deref(),
            Some("unix:/run/php/x.sock")
        );
    }

    #[test]
    fn upstream_addresses() {
        for (upstream, addr) in [
            ("http://127.0.0.1:8000/path", Some("127.0.0.1:8000")),
            ("https://[::1]:8443/", Some("[::1]:8443")),
            (
                "fastcgi://unix:/run/php/x.sock:",
                Some("unix:/run/php/x.sock"),
            ),
            ("http://unix:/tmp/a.sock:/", Some("unix:/tmp/a.sock")),
            ("uwsgi://unix:/run/a:b.sock:", Some("unix:/run/a:b.sock")),
            ("grpc://10.0.0.5:50051", Some("10.0.0.5:50051")),
            ("unix:/run/php/x.sock", Some("unix:/run/php/x.sock")),
            ("http://backend/x", None),
            ("http://unix:", None),
            // written in another form than the normal one: normalised (a copy)
            ("http://127.0.0.1:08000/", Some("127.0.0.1:8000")),
            ("http://[0:0::1]:80/", Some("[::1]:80")),
            ("http://127.0.0.01:80/", None),
        ] {
            assert_eq!(dialled_address(upstream).as_deref(), addr, "{upstream}");
            // borrowed where the line holds the normal form (IPv6 is always normalised)
            if let (Some(got), Some(want)) = (dialled_address(upstream), addr) {
                let borrowed = matches!(got, Cow::Borrowed(_));
                let written = upstream.contains(want) && !want.starts_with('[');
                assert_eq!(borrowed, written, "{upstream}");
            }
        }
    }

    #[test]
    fn the_table_order_decides() {
        let line = |message: &str| {
            classify_line(&format!("2026/11/26 09:06:28 [error] 1#1: *1 {message}"))
                .unwrap()
                .class
        };
        assert_eq!(
            line("upstream timed out (110: Connection timed out) while reading upstream"),
            LogClass::TimedOut
        );
        assert_eq!(
            line("x.example could not be resolved (110: Operation timed out)"),
            LogClass::HostNotFound
        );
        assert_eq!(
            line("connect() to 127.0.0.1:8000 failed (111: Connection refused) while connecting to upstream"),
            LogClass::ConnectionRefused
        );
        assert_eq!(
            line("connect() failed (11: Resource temporarily unavailable) while connecting to upstream"),
            LogClass::Other
        );
    }

    #[test]
    fn reading_the_tail_starts_at_a_line_boundary() {
        let file = file_with(LAB);
        let size = LAB.len() as u64;
        let facts = read_error_log(file.path(), 1000).unwrap();
        assert_eq!(facts.size, size);
        assert!(facts.read_from >= size - 1000);
        assert_eq!(LAB[facts.read_from as usize - 1], b'\n');
        assert_eq!(facts.entries[0].offset, facts.read_from);
        assert!(!facts.partial_tail);
        assert_eq!(facts.resume_at, size);
        let all = read_error_log(file.path(), u64::MAX).unwrap();
        assert_eq!(all.read_from, 0);
        assert_eq!(all.entries, lab());
        assert_eq!(all.counts.get(&LogClass::ConnectionRefused), Some(&10));
        assert_eq!(all.counts.values().sum::<usize>(), all.entries.len());
        let none = read_error_log(file.path(), 0).unwrap();
        assert!(none.entries.is_empty());
        assert_eq!(none.read_from, size);
        assert!(!none.partial_tail);
    }

    #[test]
    fn reading_since_an_offset() {
        let file = file_with(LAB);
        let size = LAB.len() as u64;
        let all = lab();
        let from = all[50].offset;
        let since = read_error_log_since(file.path(), from).unwrap();
        assert_eq!(since.read_from, from);
        assert_eq!(since.entries, all[50..].to_vec());
        // Inside a line: on to the next boundary.
        let inside = read_error_log_since(file.path(), from + 3).unwrap();
        assert_eq!(inside.read_from, all[51].offset);
        // At the end: nothing new.
        let end = read_error_log_since(file.path(), size).unwrap();
        assert!(end.entries.is_empty());
        assert_eq!(end.resume_at, size);
    }

    #[test]
    fn a_truncated_file_is_read_from_the_start() {
        let file = file_with(CRLF);
        let facts = read_error_log_since(file.path(), 1_000_000).unwrap();
        assert_eq!(facts.read_from, 0);
        assert_eq!(facts.entries.len(), 3);
        assert_eq!(facts.size, CRLF.len() as u64);
    }

    #[test]
    fn a_missing_file_says_where_and_what_to_do() {
        let err = read_error_log(Path::new("/nonexistent/error.log"), 10).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("cannot open error log `/nonexistent/error.log`: "));
        assert!(text.contains("\nhelp: "));
    }

    #[test]
    fn facts_serialise_with_snake_case_classes() {
        let (entries, _) = read_all(CRLF);
        let json = serde_json::to_value(&entries[0]).unwrap();
        assert_eq!(json["class"], "connection_refused");
        let mut counts = BTreeMap::new();
        counts.insert(LogClass::NoLiveUpstreams, 2usize);
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"no_live_upstreams":2}"#
        );
    }

    #[test]
    fn the_fast_helpers_answer_as_the_general_ones() {
        // every line of the fixtures and the fuzz seeds, and the pieces parse_line cuts them in
        let mut texts: Vec<String> = Vec::new();
        let mut add = |bytes: &[u8]| {
            for line in bytes.split(|&b| b == b'\n') {
                texts.push(String::from_utf8_lossy(line).into_owned());
            }
        };
        for bytes in [LAB, NGINX_T, CRLF, GARBAGE, PARTIAL] {
            add(bytes);
        }
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/error_log");
        for seed in std::fs::read_dir(seeds).unwrap() {
            add(&std::fs::read(seed.unwrap().path()).unwrap());
        }
        for text in [
            "a while ",
            " while  while x",
            "while ",
            " whil",
            "\r\n\r",
            "x\r",
            "é\n",
            "::",
            ":/",
        ] {
            texts.push(text.to_string());
        }
        let mut pieces: Vec<String> = Vec::new();
        for text in &texts {
            pieces.push(text.clone());
            pieces.extend(text.split(['"', ' ']).map(str::to_string));
            pieces.extend(text.split("://").skip(1).map(str::to_string));
        }
        for addr in [
            "127.0.0.1:8000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "256.0.0.1:80",
            "1.2.3.4:65536",
            "1.2.3.4:080",
            "01.2.3.4:80",
            "1.2.3:80",
            "1.2.3.4.5:80",
            "1.2.3.4:",
            ":80",
            "1.2.3.4",
            "1..3.4:80",
            "1.2.3.4:99999",
            "1.2.3.4:000001",
            "[::1]:80",
            "1.2.3.4:8:0",
            "1.2.3.4:+8",
        ] {
            pieces.push(addr.to_string());
        }
        for text in texts.iter().chain(&pieces) {
            assert_eq!(
                trim_line_break(text),
                text.trim_end_matches(['\n', '\r']),
                "{text:?}"
            );
            assert_eq!(rfind_while(text), text.rfind(WHILE), "{text:?}");
            for needle in [", ", "] ", ": ", " failed", "://"] {
                assert_eq!(
                    find_text(text, needle),
                    text.find(needle),
                    "{text:?} {needle:?}"
                );
            }
            assert_eq!(split_scheme(text), text.split_once("://"), "{text:?}");
            let std_normal = text.parse::<SocketAddr>().is_ok_and(|a| {
                a.is_ipv4()
                    && text.rsplit_once(':').is_some_and(|(_, port)| {
                        port.bytes().all(|b| b.is_ascii_digit())
                            && (port == "0" || !port.starts_with('0'))
                    })
            });
            assert_eq!(is_normal_ipv4_and_port(text), std_normal, "{text:?}");
        }
    }

    #[test]
    fn throughput_over_100k_lines() {
        let lines: Vec<&[u8]> = LAB
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut log = Vec::new();
        for i in 0..100_000 {
            log.extend_from_slice(lines[i % lines.len()]);
            log.push(b'\n');
        }
        let started = std::time::Instant::now();
        let mut reader = LogReader::new(0);
        let mut entries = 0;
        for chunk in log.chunks(CHUNK_BYTES) {
            entries += reader.feed(chunk).len();
        }
        let elapsed = started.elapsed();
        assert_eq!(entries, 100_000);
        println!(
            "error_log: classified 100000 lines ({} MiB) in {:.3} s: {:.0} lines/s",
            log.len() / (1024 * 1024),
            elapsed.as_secs_f64(),
            100_000.0 / elapsed.as_secs_f64()
        );
    }
}
