//! Follows nginx's error log with inotify and reports what the new lines say about upstreams:
//! each distinct (class, dialled address) once per wake-up, with how many lines said it. The
//! lines are found with the classification prefilter (`facts::log_scan::scan`), so a line that
//! names no upstream failure costs the search only, and at most `WINDOW` bytes are read per
//! wake-up (the newest: a storm that wrote more is skipped to its end), so a flood of lines
//! costs bounded memory and time. Survives logrotate both ways: rename-and-create (the old file
//! is read to its end, then the new one from its start) and copytruncate (a file shorter than
//! the offset is read again from 0). Old lines present at startup are not reported: they are
//! history, not news.

use super::inotify::{InotifyError, Watches};
use crate::facts::error_log::{LogClass, MAX_LINE_BYTES};
use nix::sys::inotify::{AddWatchFlags, WatchDescriptor};
use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the file is checked even without an inotify event while the file itself cannot
/// be watched (its directory's events still tell a rotation).
const RESCAN: Duration = Duration::from_secs(2);

/// The same safety net while the file is watched: an event missed is the only reason left.
const RESCAN_WATCHED: Duration = Duration::from_secs(10);

/// The least time between two reads while lines keep coming. The first line after a quiet
/// spell is read at once (the leading edge: a fault is heard without delay); while a storm
/// writes, its lines are read at most every `SPACING`, so it costs a few reads a second, not
/// one (and the stats and seeks with it) per write nginx made.
const SPACING: Duration = Duration::from_millis(20);

/// Setting up the follower failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Inotify(#[from] InotifyError),
    #[error("cannot watch `{}`: {source}", path.display())]
    Watch { path: PathBuf, source: nix::Error },
}

/// The open file being read and where.
struct Open {
    file: File,
    ino: u64,
    offset: u64,
    /// The last bytes before `offset`, to notice a truncation that was written past the old
    /// size again before this follower looked (copytruncate racing nginx).
    tail: Vec<u8>,
    /// The read buffer, kept (`CHUNK` + `MAX_LINE_BYTES`, allocated at the first read); its
    /// first `held` bytes are an unfinished last line (at most `MAX_LINE_BYTES`).
    buf: Vec<u8>,
    held: usize,
    /// The bytes up to the next newline are the rest of a line not read whole (skipped after
    /// a storm, or longer than `MAX_LINE_BYTES`): dropped.
    skip_to_newline: bool,
    watch: Option<WatchDescriptor>,
}

/// At most this much of the file is read per wake-up (1 MiB).
pub const WINDOW: u64 = 1 << 20;

/// The file is read this much at a time, through one buffer.
pub const CHUNK: usize = 64 * 1024;

/// What new lines said about one upstream: its class and the address nginx dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: LogClass,
    pub upstream_addr: Option<String>,
    /// What the lines named when no address can be told (an upstream group's name for
    /// `no live upstreams`, a host nginx could not resolve).
    pub upstream: Option<String>,
    /// How many lines said it in this read.
    pub lines: usize,
}

/// How many bytes before the offset are compared.
const TAIL_BYTES: u64 = 64;

/// The `len` bytes of `file` before `end`.
fn bytes_before(file: &File, end: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let start = end.saturating_sub(len);
    let mut buf = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    match file.read_exact_at(&mut buf, start) {
        Ok(()) => buf,
        Err(_) => Vec::new(),
    }
}

/// An error-log follower; `run` calls back for each upstream failure heard.
pub struct Follower {
    path: PathBuf,
    inotify: Watches,
    open: Option<Open>,
}

const FILE_EVENTS: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_DELETE_SELF);
const DIR_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE);

impl Follower {
    /// Starts following `path` at its current end (or from its start once it appears).
    pub fn new(path: &Path) -> Result<Self, FollowError> {
        let inotify = Watches::new()?;
        if let Some(dir) = path.parent() {
            inotify
                .add(dir, DIR_EVENTS)
                .map_err(|source| FollowError::Watch {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let mut follower = Self {
            path: path.to_path_buf(),
            inotify,
            open: None,
        };
        follower.open = follower.open_current(true);
        Ok(follower)
    }

    /// Follows forever, calling `on_failure` with what each wake-up's new lines said.
    pub async fn run(mut self, mut on_failure: impl FnMut(&Failure)) {
        loop {
            // woken by an event, or by the rescan
            let rescan = match &self.open {
                Some(Open { watch: Some(_), .. }) => RESCAN_WATCHED,
                _ => RESCAN,
            };
            let _ = tokio::time::timeout(rescan, self.inotify.changed()).await;
            let before = self.position();
            for failure in self.poll() {
                on_failure(&failure);
            }
            if self.position() != before {
                // lines came: the next ones wait out the spacing (events meanwhile queue up
                // and are drained in one read)
                tokio::time::sleep(SPACING).await;
            }
        }
    }

    /// Which file is followed and how far it was read.
    fn position(&self) -> Option<(u64, u64)> {
        self.open.as_ref().map(|o| (o.ino, o.offset))
    }

    /// Reads what is new (at most `WINDOW` bytes of each file), switching files after a
    /// rotation. Returns the upstream failures heard.
    pub fn poll(&mut self) -> Vec<Failure> {
        let mut entries = Vec::new();
        let current_ino = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if let Some(open) = &mut self.open {
            entries.extend(read_new(open, &self.path));
        }
        let rotated = match (&self.open, current_ino) {
            (Some(open), Some(ino)) => open.ino != ino,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if rotated {
            if let Some(old) = self.open.take() {
                if let Some(wd) = old.watch {
                    self.inotify.remove(wd);
                }
                tracing::info!(path = %self.path.display(), "error log rotated; following the new file");
            }
            self.open = self.open_current(false);
            if let Some(open) = &mut self.open {
                entries.extend(read_new(open, &self.path));
            }
        }
        entries
    }

    fn open_current(&self, at_end: bool) -> Option<Open> {
        let file = File::open(&self.path).ok()?;
        let meta = file.metadata().ok()?;
        let offset = if at_end { meta.len() } else { 0 };
        let watch = self
            .inotify
            .add(&self.path, FILE_EVENTS)
            .map_err(|e| tracing::debug!(error = %e, "cannot watch the error log file itself"))
            .ok();
        let tail = bytes_before(&file, offset, TAIL_BYTES);
        Some(Open {
            file,
            ino: meta.ino(),
            offset,
            tail,
            buf: Vec::new(),
            held: 0,
            skip_to_newline: false,
            watch,
        })
    }
}

/// Reads `open` from its offset to its end (at most the last `WINDOW` bytes of it); a file
/// now shorter was truncated and is read from 0.
///
/// The bytes go through the one buffer `open` keeps, `CHUNK` at a time, so a storm costs the
/// same memory as a quiet day: a buffer sized to each read was taken from the heap at every
/// wake-up, and the allocator kept the high-water mark after the storm ended.
fn read_new(open: &mut Open, path: &Path) -> Vec<Failure> {
    let Ok(meta) = open.file.metadata() else {
        return Vec::new();
    };
    let rewritten = meta.len() >= open.offset
        && bytes_before(&open.file, open.offset, open.tail.len() as u64) != open.tail;
    if meta.len() < open.offset || rewritten {
        tracing::info!(path = %path.display(), "error log truncated; reading it from the start");
        open.offset = 0;
        open.tail.clear();
        open.held = 0;
        open.skip_to_newline = false;
    }
    if meta.len() == open.offset {
        return Vec::new();
    }
    let behind = meta.len() - open.offset;
    if behind > WINDOW {
        // a storm wrote more than a window since the last wake-up: its newest lines say what
        // the skipped ones said
        tracing::debug!(path = %path.display(), skipped_bytes = behind - WINDOW, "error log: reading only the newest window");
        open.offset = meta.len() - WINDOW;
        open.held = 0;
        open.skip_to_newline = true;
    }
    if open.file.seek(SeekFrom::Start(open.offset)).is_err() {
        return Vec::new();
    }
    let mut want = usize::try_from(meta.len() - open.offset).unwrap_or(0);
    let mut failures = Vec::new();
    while want > 0 {
        let got = match read_chunk(open, want) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the error log");
                break;
            }
        };
        want -= got;
        open.offset += got as u64;
        remember_tail(open, got);
        scan_held(open, got, &mut failures);
    }
    failures
}

/// Reads up to `want` bytes (at most `CHUNK`) after the unfinished line `open` holds.
fn read_chunk(open: &mut Open, want: usize) -> std::io::Result<usize> {
    if open.buf.len() < CHUNK + MAX_LINE_BYTES {
        open.buf.resize(CHUNK + MAX_LINE_BYTES, 0);
    }
    let end = open.held + want.min(CHUNK);
    let Some(into) = open.buf.get_mut(open.held..end) else {
        return Ok(0);
    };
    loop {
        match open.file.read(into) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => return read,
        }
    }
}

/// Keeps the last `TAIL_BYTES` before the offset, from the `got` bytes just read.
fn remember_tail(open: &mut Open, got: usize) {
    let fresh = open.buf.get(open.held..open.held + got).unwrap_or_default();
    let fresh = fresh
        .get(fresh.len().saturating_sub(TAIL_BYTES as usize)..)
        .unwrap_or_default();
    open.tail.extend_from_slice(fresh);
    let drop = open.tail.len().saturating_sub(TAIL_BYTES as usize);
    open.tail.drain(..drop);
}

/// Classifies the complete lines of what `open` holds plus the `got` bytes just read, counts
/// each upstream failure into `failures`, and keeps the unfinished last line for the next read.
fn scan_held(open: &mut Open, got: usize, failures: &mut Vec<Failure>) {
    let len = open.held + got;
    let bytes = open.buf.get(..len).unwrap_or_default();
    let mut from = 0;
    if open.skip_to_newline {
        match memchr::memchr(b'\n', bytes) {
            Some(i) => {
                from = i + 1;
                open.skip_to_newline = false;
            }
            None => {
                open.held = 0;
                return;
            }
        }
    }
    let text = bytes.get(from..).unwrap_or_default();
    let rest = crate::facts::log_scan::scan(text, |_, line| {
        if line.class != LogClass::Other {
            let address = line.dialled_str();
            let named = if address.is_none() {
                line.upstream
            } else {
                None
            };
            count(failures, line.class, address, named);
        }
    });
    let unfinished = len - (from + rest).min(len);
    if unfinished > MAX_LINE_BYTES {
        open.skip_to_newline = true;
        open.held = 0;
    } else {
        open.buf.copy_within(len - unfinished..len, 0);
        open.held = unfinished;
    }
}

/// One more line about (class, dialled address, named upstream): a storm of one failure
/// copies its text once, not once per line.
fn count(
    failures: &mut Vec<Failure>,
    class: LogClass,
    address: Option<Cow<'_, str>>,
    named: Option<&str>,
) {
    let same = |f: &&mut Failure| {
        f.class == class
            && f.upstream_addr.as_deref() == address.as_deref()
            && f.upstream.as_deref() == named
    };
    match failures.iter_mut().find(same) {
        Some(f) => f.lines += 1,
        None => failures.push(Failure {
            class,
            upstream_addr: address.map(Cow::into_owned),
            upstream: named.map(str::to_string),
            lines: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const REFUSED: &str = "2024/05/01 10:00:00 [error] 12#12: *7 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: api.lab, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"api.lab\"\n";
    const NOTICE: &str = "2024/05/01 10:00:01 [notice] 12#12: signal process started\n";

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn upstream_failures(f: &mut Follower) -> Vec<String> {
        f.poll()
            .into_iter()
            .filter(|e| e.class != LogClass::Other)
            .filter_map(|e| e.upstream_addr)
            .collect()
    }

    #[tokio::test]
    async fn a_storm_is_read_one_window_at_a_time_and_heard_once_per_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        append(&log, NOTICE);
        let mut f = Follower::new(&log).unwrap();
        // 8 MiB of one failure, interleaved with other lines
        let lines = 8 * (1 << 20) / (REFUSED.len() + NOTICE.len());
        let burst = format!("{REFUSED}{NOTICE}").repeat(lines);
        append(&log, &burst);
        let heard = f.poll();
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert_eq!(heard[0].class, LogClass::ConnectionRefused);
        assert_eq!(heard[0].upstream_addr.as_deref(), Some("127.0.0.1:8000"));
        let window_lines = WINDOW as usize / (REFUSED.len() + NOTICE.len());
        assert!(
            heard[0].lines <= window_lines + 1 && heard[0].lines + 2 >= window_lines,
            "only the newest window is read: {} lines of {lines}",
            heard[0].lines
        );
        let open = f.open.as_ref().unwrap();
        assert!(open.held <= MAX_LINE_BYTES);
        assert_eq!(open.buf.len(), CHUNK + MAX_LINE_BYTES, "one buffer, kept");
        // and it continues exactly at the end
        append(&log, REFUSED);
        let heard = f.poll();
        assert_eq!(heard.len(), 1);
        assert_eq!(heard[0].lines, 1);
    }

    #[tokio::test]
    async fn lines_across_the_reads_of_one_wake_up_are_each_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        append(&log, NOTICE);
        let mut f = Follower::new(&log).unwrap();
        // several chunks, their boundaries falling inside lines
        let lines = 5 * CHUNK / REFUSED.len() + 3;
        append(&log, &format!("{REFUSED}{NOTICE}").repeat(lines));
        let heard = f.poll();
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert_eq!(heard[0].lines, lines);
        assert_eq!(f.open.as_ref().unwrap().held, 0);
    }

    #[tokio::test]
    async fn follows_appends_but_not_history() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        append(&log, REFUSED);
        let mut f = Follower::new(&log).unwrap();
        assert!(upstream_failures(&mut f).is_empty(), "history is not news");
        append(&log, NOTICE);
        append(&log, REFUSED);
        assert_eq!(upstream_failures(&mut f), ["127.0.0.1:8000"]);
        // half a line waits for its end
        let (a, b) = REFUSED.split_at(40);
        append(&log, a);
        assert!(upstream_failures(&mut f).is_empty());
        append(&log, b);
        assert_eq!(upstream_failures(&mut f).len(), 1);
    }

    #[tokio::test]
    async fn survives_rename_and_create() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        append(&log, NOTICE);
        let mut f = Follower::new(&log).unwrap();
        std::fs::rename(&log, dir.path().join("error.log.1")).unwrap();
        // nginx writes on into the renamed file until it reopens its logs
        append(&dir.path().join("error.log.1"), REFUSED);
        append(&log, REFUSED);
        assert_eq!(
            upstream_failures(&mut f).len(),
            2,
            "the old file's tail and the new file"
        );
        append(&log, REFUSED);
        assert_eq!(upstream_failures(&mut f).len(), 1);
    }

    #[tokio::test]
    async fn survives_copytruncate() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        append(&log, NOTICE);
        append(&log, NOTICE);
        let mut f = Follower::new(&log).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, REFUSED);
        assert_eq!(upstream_failures(&mut f).len(), 1);
    }

    #[tokio::test]
    async fn wakes_on_inotify() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        append(&log, NOTICE);
        let f = Follower::new(&log).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(f.run(move |e: &Failure| {
            let _ = tx.send(e.upstream_addr.clone());
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        append(&log, REFUSED);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Some("127.0.0.1:8000".to_string())));
        assert!(
            started.elapsed() < RESCAN,
            "woken by inotify, not by the rescan: {:?}",
            started.elapsed()
        );
        task.abort();
    }
}
