//! The `nginx -t` fact: whether the configuration on disk loads at all, before nginx-medic
//! touches anything, and the problems nginx reports in its own words with their `file:line`.

use serde::{Deserialize, Serialize};

/// The outcome of `nginx -t`, as gathered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NginxTest {
    /// Whether the configuration test passed.
    pub ok: bool,
    /// Each `[emerg]`/`[alert]`/`[crit]` line of nginx's output, parsed.
    pub problems: Vec<ConfigProblem>,
    /// nginx's whole output (stderr), trimmed.
    pub output: String,
}

/// One problem nginx reported while testing its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    /// `emerg`, `alert` or `crit`.
    pub level: String,
    /// The message without the trailing ` in FILE:LINE`.
    pub message: String,
    /// The file nginx names, when it names one.
    pub file: Option<String>,
    /// The line in `file`.
    pub line: Option<u32>,
    /// For `host not found in upstream "x"`: the name.
    pub host_not_found: Option<String>,
}

impl NginxTest {
    /// Builds the fact from the exit status and stderr of `nginx -t`.
    pub fn from_output(ok: bool, output: &str) -> Self {
        NginxTest {
            ok,
            problems: output.lines().filter_map(parse_problem).collect(),
            output: output.trim().to_string(),
        }
    }
}

/// Parses one line of `nginx -t` output: `nginx: [emerg] MSG in FILE:LINE` or, once an
/// `error_log` is known, `YYYY/MM/DD HH:MM:SS [emerg] PID#TID: MSG in FILE:LINE`.
pub fn parse_problem(line: &str) -> Option<ConfigProblem> {
    let open = line.find('[')?;
    let close = open + line.get(open..)?.find(']')?;
    let level = line.get(open + 1..close)?;
    if !matches!(level, "emerg" | "alert" | "crit") {
        return None;
    }
    let mut rest = line.get(close + 1..)?.trim_start();
    // `PID#TID: ` after a timestamped level
    if let Some((head, tail)) = rest.split_once(": ") {
        if head.contains('#') && head.chars().all(|c| c.is_ascii_digit() || c == '#') {
            rest = tail;
        }
    }
    let (message, file, line_no) = match rest.rsplit_once(" in ") {
        Some((msg, place)) => match place.rsplit_once(':') {
            Some((file, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                (msg, Some(file.to_string()), n.parse().ok())
            }
            _ => (rest, None, None),
        },
        None => (rest, None, None),
    };
    let host_not_found = message
        .strip_prefix("host not found in upstream \"")
        .and_then(|r| r.split_once('"'))
        .map(|(name, _)| name.to_string());
    Some(ConfigProblem {
        level: level.to_string(),
        message: message.to_string(),
        file,
        line: line_no,
        host_not_found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/nginx_test/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn host_not_found_names_the_host_and_the_place() {
        let t = NginxTest::from_output(false, &fixture("host-not-found.stderr"));
        assert_eq!(
            t.problems,
            vec![ConfigProblem {
                level: "emerg".into(),
                message: "host not found in upstream \"app.nosuch.invalid\"".into(),
                file: Some("/tmp/ngt/a.conf".into()),
                line: Some(8),
                host_not_found: Some("app.nosuch.invalid".into()),
            }]
        );
    }

    #[test]
    fn syntax_errors_and_the_untimestamped_form() {
        let t = NginxTest::from_output(false, &fixture("syntax.stderr"));
        assert_eq!(t.problems.len(), 1);
        assert_eq!(t.problems[0].message, "unexpected \"}\"");
        assert_eq!(t.problems[0].line, Some(9));
        assert_eq!(t.problems[0].host_not_found, None);
        let t = NginxTest::from_output(false, &fixture("no-error-log.stderr"));
        assert_eq!(t.problems[0].message, "unknown directive \"proxy_pas\"");
        assert_eq!(
            t.problems[0].file.as_deref(),
            Some("/etc/nginx/sites-enabled/app.conf")
        );
        assert_eq!(t.problems[0].line, Some(7));
    }

    #[test]
    fn other_lines_are_not_problems() {
        assert_eq!(
            parse_problem("nginx: configuration file /x test failed"),
            None
        );
        assert_eq!(parse_problem("nginx: [warn] the \"user\" directive"), None);
        let p = parse_problem("nginx: [emerg] no \"events\" section in configuration").unwrap();
        assert_eq!((p.file, p.line), (None, None));
    }
}
