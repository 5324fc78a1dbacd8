//! Classification at memory speed: the lines of an error log that can say something about an
//! upstream (or a broken reload) are found with one multi-pattern search over the whole buffer
//! (`aho-corasick`, SIMD where the CPU has it), and only those lines are parsed, their fields
//! borrowed. Every other line costs the search and nothing else.
//!
//! The patterns are the fixed texts of nginx's messages behind every class but `other`
//! (`CLASS_TABLE` in `error_log`), the `(N: ` of the errnos it classifies, and the levels a
//! reload check reads (`emerg] `, `alert] `, `crit] `: without the ` [` every line has, which
//! would make each line a candidate to verify). A line none of them occurs in is `other` for
//! [`parse_line`] as well; the unit tests hold the two to that.
//!
//! A large buffer is cut in two at a line break and the halves are searched on two threads;
//! the lines are still handed out in order, on the caller's thread.

use crate::facts::error_log::{parse_line, LogClass, LogLine, MAX_LINE_BYTES};
use aho_corasick::{AhoCorasick, MatchKind};
use std::sync::OnceLock;

/// The texts a line must hold to be anything but an `other` line of level `error` or below.
const PATTERNS: &[&str] = &[
    "no live upstreams",
    "host not found in upstream",
    "no resolver defined to resolve",
    " could not be resolved",
    "upstream timed out",
    "upstream prematurely closed",
    "upstream sent ",
    "(111: ",
    "(2: ",
    "(13: ",
    "(110: ",
    "(104: ",
    "emerg] ",
    "alert] ",
    "crit] ",
];

/// A buffer at least this long (1 MiB) is searched on two threads: below it, starting a thread
/// costs more than it saves.
const SPLIT_BYTES: usize = 1 << 20;

/// The search: the packed (SIMD) searcher where the CPU has it, whose matches need no second
/// check, else the automaton.
enum Searcher {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Searcher {
    fn find(&self, text: &[u8], span: std::ops::Range<usize>) -> Option<(usize, usize)> {
        match self {
            Searcher::Packed(s) => s.find_in(text, span.into()).map(|m| (m.start(), m.end())),
            Searcher::Automaton(a) => a
                .find(aho_corasick::Input::new(text).span(span))
                .map(|m| (m.start(), m.end())),
        }
    }
}

fn searcher() -> &'static Searcher {
    static SEARCHER: OnceLock<Searcher> = OnceLock::new();
    SEARCHER.get_or_init(|| {
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(PATTERNS)
            .build();
        match packed {
            Some(packed) => Searcher::Packed(packed),
            None => Searcher::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(PATTERNS)
                    .unwrap_or_else(|e| unreachable!("the fixed patterns build: {e}")),
            ),
        }
    })
}

/// Whether [`scan`] hands a line of this level and class out.
pub fn is_reported(line: &LogLine<'_>) -> bool {
    line.class != LogClass::Other || matches!(line.level, "emerg" | "alert" | "crit")
}

/// Calls `found(offset, line)` for each complete line of `bytes` that is not an `other` line
/// of level `error` or below, in order; `offset` is the line's first byte within `bytes`. A
/// last line without its newline is left alone: the return value is where it starts (or
/// `bytes.len()`), so that a caller reading a growing file continues from there. Bytes that are
/// not UTF-8 make a line unparseable, as nginx never writes such a line itself, and so does a
/// line longer than [`MAX_LINE_BYTES`].
pub fn scan<'a>(bytes: &'a [u8], mut found: impl FnMut(usize, LogLine<'a>)) -> usize {
    let complete = match memchr::memrchr(b'\n', bytes) {
        Some(last) => last + 1,
        None => return 0,
    };
    let Some(text) = bytes.get(..complete) else {
        return 0;
    };
    // the second half starts after the line break nearest the middle
    let half = if complete >= SPLIT_BYTES {
        memchr::memchr(b'\n', text.get(complete / 2..).unwrap_or_default())
            .map(|i| complete / 2 + i + 1)
            .filter(|&h| h < complete)
    } else {
        None
    };
    match half {
        None => scan_lines(text, 0, &mut found),
        Some(half) => {
            let (first, second) = text.split_at(half);
            let later = std::thread::scope(|s| {
                let worker = s.spawn(|| {
                    let mut lines = Vec::new();
                    scan_lines(second, half, &mut |offset, line| lines.push((offset, line)));
                    lines
                });
                scan_lines(first, 0, &mut found);
                worker.join()
            });
            match later {
                Ok(lines) => lines.into_iter().for_each(|(o, l)| found(o, l)),
                // the worker cannot panic short of a bug: search the half here instead
                Err(_) => scan_lines(second, half, &mut found),
            }
        }
    }
    complete
}

/// The lines of `text` (complete lines, the last one ending in a line break) that [`scan`]
/// reports, with their offsets plus `base`.
fn scan_lines<'a>(text: &'a [u8], base: usize, found: &mut impl FnMut(usize, LogLine<'a>)) {
    let complete = text.len();
    let mut at = 0;
    while let Some((hit_start, hit_end)) = searcher().find(text, at..complete) {
        let start = memchr::memrchr(b'\n', text.get(at..hit_start).unwrap_or_default())
            .map_or(at, |i| at + i + 1);
        let end = memchr::memchr(b'\n', text.get(hit_end..).unwrap_or_default())
            .map_or(complete, |i| hit_end + i);
        if let Some(line) = text
            .get(start..end)
            .filter(|l| l.len() <= MAX_LINE_BYTES)
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(parse_line)
            .filter(is_reported)
        {
            found(base + start, line);
        }
        at = end + 1;
        if at >= complete {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::error_log::classify_line;

    /// Lines of every class, of other classes that look alike, and of the levels.
    const LINES: &[&str] = &[
        "2026/11/26 09:00:01 [error] 10#10: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\", host: \"a\"",
        "2026/11/26 09:00:02 [crit] 10#10: *2 connect() to unix:/run/php/x.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: b, request: \"GET /x.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/x.sock:\", host: \"b\"",
        "2026/11/26 09:00:03 [crit] 10#10: *3 connect() to unix:/run/app.sock failed (13: Permission denied) while connecting to upstream, client: 127.0.0.1, server: c, request: \"GET / HTTP/1.1\", upstream: \"http://unix:/run/app.sock:/\", host: \"c\"",
        "2026/11/26 09:00:04 [error] 10#10: *4 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: d, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"d\"",
        "2026/11/26 09:00:05 [error] 10#10: *5 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: e, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8002/\", host: \"e\"",
        "2026/11/26 09:00:06 [error] 10#10: *6 upstream sent too big header while reading response header from upstream, client: 127.0.0.1, server: f, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8003/\", host: \"f\"",
        "2026/11/26 09:00:07 [error] 10#10: *7 no live upstreams while connecting to upstream, client: 127.0.0.1, server: g, request: \"GET / HTTP/1.1\", upstream: \"http://app/\", host: \"g\"",
        "2026/11/26 09:00:08 [error] 10#10: *8 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 127.0.0.1, server: h, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8004/\", host: \"h\"",
        "2026/11/26 09:00:09 [error] 10#10: *9 upstream sent invalid header while reading response header from upstream, client: 127.0.0.1, server: i, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8005/\", host: \"i\"",
        "2026/11/26 09:00:10 [emerg] 10#10: host not found in upstream \"app.invalid\" in /etc/nginx/sites-enabled/x:3",
        "2026/11/26 09:00:11 [error] 10#10: *10 app.invalid could not be resolved (3: Host not found), client: 127.0.0.1, server: j, request: \"GET / HTTP/1.1\", host: \"j\"",
        "2026/11/26 09:00:12 [error] 10#10: *11 no resolver defined to resolve app.internal, client: 127.0.0.1, server: k, request: \"GET / HTTP/1.1\", host: \"k\"",
        // other: a static file's errno, a client error, a notice, the resolver's own errno
        "2026/11/26 09:00:13 [error] 10#10: *12 open() \"/var/www/html/favicon.ico\" failed (2: No such file or directory), client: 127.0.0.1, server: l, request: \"GET /favicon.ico HTTP/1.1\", host: \"l\"",
        "2026/11/26 09:00:14 [error] 10#10: *13 client intended to send too large body: 1048577 bytes, client: 127.0.0.1, server: m, request: \"POST / HTTP/1.1\", host: \"m\"",
        "2026/11/26 09:00:15 [notice] 10#10: signal process started",
        "2026/11/26 09:00:16 [error] 10#10: send() failed (111: Connection refused) while resolving, resolver: 127.0.0.53:53",
        "2026/11/26 09:00:17 [alert] 10#10: worker process 11 exited on signal 9",
        // a client's request line holding the texts: other, and no upstream taken from it
        "2026/11/26 09:00:18 [error] 10#10: *14 open() \"/srv/no live upstreams\" failed (2: No such file or directory), client: 127.0.0.1, server: n, request: \"GET /upstream%20timed%20out HTTP/1.1\", host: \"n\"",
        "not an nginx line (111: at all)",
    ];

    fn joined(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn hands_out_exactly_the_lines_the_full_parser_reports() {
        let text = joined(LINES);
        let mut got = Vec::new();
        let end = scan(text.as_bytes(), |offset, line| {
            got.push((offset, line.to_entry(offset as u64)))
        });
        assert_eq!(end, text.len());
        let mut want = Vec::new();
        let mut offset = 0;
        for line in LINES {
            if let Some(e) = classify_line(line) {
                if e.class != LogClass::Other
                    || matches!(e.level.as_str(), "emerg" | "alert" | "crit")
                {
                    let mut e = e;
                    e.offset = offset as u64;
                    want.push((offset, e));
                }
            }
            offset += line.len() + 1;
        }
        assert_eq!(got, want);
        assert_eq!(
            got.len(),
            13,
            "the 12 lines of a class and the `[alert]` one"
        );
    }

    #[test]
    fn every_line_the_parser_classifies_holds_a_pattern() {
        for line in LINES {
            let Some(e) = classify_line(line) else {
                continue;
            };
            let reported = e.class != LogClass::Other
                || matches!(e.level.as_str(), "emerg" | "alert" | "crit");
            assert_eq!(
                reported,
                reported && PATTERNS.iter().any(|p| line.contains(p)),
                "{line}"
            );
        }
    }

    #[test]
    fn an_unfinished_last_line_is_left_for_later() {
        let mut text = joined(&LINES[..2]);
        let whole = text.len();
        text.push_str(&LINES[3][..40]);
        let mut n = 0;
        assert_eq!(scan(text.as_bytes(), |_, _| n += 1), whole);
        assert_eq!(n, 2);
        assert_eq!(scan(LINES[0].as_bytes(), |_, _| n += 1), 0);
        assert_eq!(n, 2);
    }

    #[test]
    fn two_patterns_on_one_line_hand_it_out_once() {
        let line = "2026/11/26 09:00:04 [crit] 10#10: *4 upstream timed out (110: Connection timed out) while connecting to upstream, client: 127.0.0.1, server: d, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"d\"\n";
        let mut n = 0;
        scan(line.as_bytes(), |_, l| {
            assert_eq!(l.class, LogClass::TimedOut);
            assert_eq!(l.dialled().as_deref(), Some("127.0.0.1:8001"));
            n += 1;
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn a_buffer_searched_on_two_threads_hands_out_what_one_thread_does() {
        let mut text = String::new();
        while text.len() < 3 * SPLIT_BYTES {
            text.push_str(&joined(LINES));
        }
        text.push_str(&LINES[0][..30]);
        let mut split = Vec::new();
        let end = scan(text.as_bytes(), |offset, line| split.push((offset, line)));
        let mut whole = Vec::new();
        scan_lines(
            text.as_bytes().get(..end).unwrap(),
            0,
            &mut |offset, line| whole.push((offset, line)),
        );
        assert_eq!(end, text.len() - 30);
        assert_eq!(split.len(), whole.len());
        assert!(split == whole, "the same lines, in the same order");
        assert!(split.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// The fuzz target's property (`fuzz/fuzz_targets/error_log.rs`) over its seeds, each also
    /// cut at every line break: `scan` hands out exactly the reported lines `parse_line` finds.
    #[test]
    fn the_fuzz_seeds_agree_with_the_plain_parser() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/error_log");
        let mut checked = 0;
        for seed in std::fs::read_dir(seeds).unwrap() {
            let data = std::fs::read(seed.unwrap().path()).unwrap();
            // the fuzz input's first byte chooses a cut; here the whole seed is the log too
            let mut inputs = vec![data.as_slice()];
            inputs.extend(data.get(1..));
            for bytes in inputs {
                let mut found = Vec::new();
                let rest = scan(bytes, |offset, line| found.push((offset, line)));
                let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                assert_eq!(rest, complete);
                let mut expected = Vec::new();
                let mut offset = 0;
                for line in bytes[..complete].split_inclusive(|&b| b == b'\n') {
                    if let Some(parsed) = std::str::from_utf8(line).ok().and_then(parse_line) {
                        if is_reported(&parsed) {
                            expected.push((offset, parsed));
                        }
                    }
                    offset += line.len();
                }
                assert_eq!(found, expected);
                checked += expected.len();
            }
        }
        assert!(checked > 0, "the seeds hold reported lines");
    }

    #[test]
    fn bytes_that_are_not_utf8_spoil_only_their_line() {
        let mut bytes = b"2026/11/26 09:00:01 [error] 1#1: *1 connect() failed (111: \xff) while connecting to upstream\n".to_vec();
        bytes.extend_from_slice(joined(&LINES[..1]).as_bytes());
        let mut got = Vec::new();
        scan(&bytes, |_, l| got.push(l.class));
        assert_eq!(got, vec![LogClass::ConnectionRefused]);
    }
}
