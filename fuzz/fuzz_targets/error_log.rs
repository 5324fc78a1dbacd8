//! Error-log lines: `parse_line` on every line, the multi-pattern `scan` over the whole buffer and
//! the streaming `LogReader` fed in two pieces. No input may panic, and the fast paths must agree
//! with the plain parser: `scan` hands out exactly the reported lines `parse_line` finds, and
//! where the reader's input is cut does not change what it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_medic::facts::error_log::{parse_line, LogReader};
use nginx_medic::facts::log_scan::{is_reported, scan};

fuzz_target!(|data: &[u8]| {
    // the first byte chooses where the reader's input is cut
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };

    let mut found = Vec::new();
    let rest = scan(bytes, |offset, line| found.push((offset, line)));
    let complete = memrchr_newline(bytes).map_or(0, |i| i + 1);
    assert_eq!(rest, complete, "scan stops at the last newline");

    let mut expected = Vec::new();
    let mut offset = 0;
    for line in bytes
        .get(..complete)
        .unwrap_or_default()
        .split_inclusive(|&b| b == b'\n')
    {
        if let Some(parsed) = std::str::from_utf8(line).ok().and_then(parse_line) {
            if is_reported(&parsed) {
                expected.push((offset, parsed));
            }
        }
        offset += line.len();
    }
    assert_eq!(found, expected, "scan and parse_line disagree");

    let whole = {
        let mut reader = LogReader::new(7).classify_partial_tail(true);
        let mut entries = reader.feed(bytes);
        entries.extend(reader.finish());
        entries
    };
    let at = usize::from(cut).min(bytes.len());
    let (first, second) = bytes.split_at(at);
    let mut reader = LogReader::new(7).classify_partial_tail(true);
    let mut pieces = reader.feed(first);
    pieces.extend(reader.feed(second));
    pieces.extend(reader.finish());
    assert_eq!(
        whole, pieces,
        "the reader depends on where its input is cut (at {at})"
    );
});

fn memrchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'\n')
}
