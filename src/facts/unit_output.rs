//! Where a service's own output goes, from its unit file: `StandardOutput=append:/path` and the
//! like. systemd 252 puts only the kind (`append`) on the bus, not the path, so the path is read
//! from the unit file and its drop-ins. Pure: the caller reads the files.

use std::path::PathBuf;

/// How many lines of a backend's output are kept as evidence.
pub const OUTPUT_LINES: usize = 8;

/// The file a `StandardOutput=`/`StandardError=` setting (`key`) writes to, from the unit file
/// texts in the order systemd reads them (fragment, then drop-ins): the last assignment wins and
/// an empty one resets it. `None` when the output does not go to a file.
pub fn output_file(unit_texts: &[String], key: &str) -> Option<PathBuf> {
    let mut found: Option<PathBuf> = None;
    for text in unit_texts {
        let mut in_service = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() != key {
                continue;
            }
            let v = v.trim();
            found = ["append:", "file:", "truncate:"]
                .iter()
                .find_map(|prefix| v.strip_prefix(prefix))
                .filter(|p| p.starts_with('/'))
                .map(PathBuf::from);
        }
    }
    found
}

/// The last `n` non-empty lines of a text, trailing whitespace trimmed, control characters
/// escaped (the backend's output is shown and logged as evidence).
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .take(n)
        .map(|l| crate::redact::control(l).into_owned())
        .collect();
    lines.reverse();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_file_assignment_of_the_service_section_wins() {
        let fragment = "[Unit]\nStandardOutput=append:/nope\n[Service]\nExecStart=/x\nStandardOutput=append:/var/log/app.log\nStandardError=inherit\n".to_string();
        assert_eq!(
            output_file(std::slice::from_ref(&fragment), "StandardOutput"),
            Some(PathBuf::from("/var/log/app.log"))
        );
        assert_eq!(
            output_file(std::slice::from_ref(&fragment), "StandardError"),
            None
        );
        let dropin = "[Service]\nStandardOutput=file:/var/log/other.log\n".to_string();
        assert_eq!(
            output_file(&[fragment.clone(), dropin], "StandardOutput"),
            Some(PathBuf::from("/var/log/other.log"))
        );
        let reset = "[Service]\nStandardOutput=journal\n".to_string();
        assert_eq!(output_file(&[fragment, reset], "StandardOutput"), None);
    }

    #[test]
    fn last_lines_skip_blank_ones() {
        assert_eq!(last_lines("a\nb\n\nc  \n\n", 2), ["b", "c"]);
        assert_eq!(last_lines("", 3), Vec::<String>::new());
        assert_eq!(
            last_lines("\u{1b}[31mred\rforged", 1),
            ["\\x{1b}[31mred\\x{d}forged"]
        );
    }
}
