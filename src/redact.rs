//! What nginx-medic shows and logs, made safe to show: environment values other than the bind
//! key are redacted (an `.env` holds secrets beside `HOST=`), and control characters in a
//! backend's output are escaped (terminal escapes, carriage returns that forge a line).

use crate::engine::plan::{Plan, PlannedAction, Step};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What a redacted value reads as.
pub const REDACTED: &str = "<redacted>";

/// Whether the value of `key` is shown: the bind key (`keep`), and, where no bind key is known
/// (`facts`), the keys that conventionally hold a bind host or port.
fn shown(key: &str, keep: Option<&str>) -> bool {
    match keep {
        Some(keep) => key == keep,
        None => crate::engine::context::BIND_KEYS.contains(&key) || key.ends_with("PORT"),
    }
}

/// One `KEY=value` line (`export` allowed) with its value redacted unless [`shown`].
fn env_line<'a>(line: &'a str, keep: Option<&str>) -> Cow<'a, str> {
    let body = line.trim_start();
    if body.starts_with('#') {
        return Cow::Borrowed(line);
    }
    let unexported = body.strip_prefix("export ").unwrap_or(body).trim_start();
    let Some((key, value)) = unexported.split_once('=') else {
        return Cow::Borrowed(line);
    };
    let key = key.trim_end();
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_key || shown(key, keep) || value.trim().is_empty() {
        return Cow::Borrowed(line);
    }
    let head = line.len() - value.len();
    Cow::Owned(format!(
        "{}{REDACTED}",
        line.get(..head).unwrap_or_default()
    ))
}

/// An environment file's text with every value but `keep`'s redacted; other lines (comments,
/// blank ones) and line endings unchanged.
pub fn env_text(text: &str, keep: Option<&str>) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            format!("{}{end}", env_line(body, keep))
        })
        .collect()
}

/// A unified diff of an environment file, its context and changed lines redacted as
/// [`env_text`].
pub fn env_diff(diff: &str, keep: Option<&str>) -> String {
    diff_lines(diff, |text| env_text(text, keep))
}

/// One line of a PHP-FPM pool file with the value of an `env[NAME] = value` redacted: a pool
/// passes secrets to PHP that way. Other settings (`listen.*`, `pm.*`) are shown.
fn pool_line(line: &str) -> Cow<'_, str> {
    let body = line.trim_start();
    let Some(rest) = body.strip_prefix("env[") else {
        return Cow::Borrowed(line);
    };
    let Some((_, value)) = rest.split_once('=') else {
        return Cow::Borrowed(line);
    };
    if value.trim().is_empty() {
        return Cow::Borrowed(line);
    }
    let head = line.len() - value.len();
    Cow::Owned(format!(
        "{} {REDACTED}",
        line.get(..head).unwrap_or_default()
    ))
}

/// A pool file's text with every `env[…]` value redacted; line endings unchanged.
pub fn pool_text(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(body) => format!("{}\n", pool_line(body)),
            None => pool_line(line).into_owned(),
        })
        .collect()
}

/// The lines of a unified diff, each context or changed line's text passed through `redact`.
fn diff_lines(diff: &str, redact: impl Fn(&str) -> String) -> String {
    diff.split_inclusive('\n')
        .map(|line| {
            if line.starts_with("+++") || line.starts_with("---") || line.starts_with("@@") {
                return line.to_string();
            }
            match line.char_indices().nth(1) {
                Some((at, _)) if line.starts_with([' ', '+', '-']) => {
                    let (mark, rest) = line.split_at(at);
                    format!("{mark}{}", redact(rest))
                }
                _ => line.to_string(),
            }
        })
        .collect()
}

/// A plan step as shown: the edit of an environment file keeps only the bind key's value, and
/// the edit of a PHP-FPM pool hides its `env[…]` values, in the new content and in the diff. A
/// unit drop-in (nginx-medic writes only the command line into it) or a configuration file is
/// shown as is.
pub fn step(step: &mut Step) {
    match &mut step.action {
        PlannedAction::SetBindHost {
            key,
            edit,
            daemon_reload: false,
            ..
        } => {
            edit.after = env_text(&edit.after, Some(key));
            if let Some(diff) = &mut step.diff {
                *diff = env_diff(diff, Some(key));
            }
        }
        PlannedAction::SetPoolListen { edit, .. } => {
            edit.after = pool_text(&edit.after);
            if let Some(diff) = &mut step.diff {
                *diff = diff_lines(diff, pool_text);
            }
        }
        _ => {}
    }
}

/// A plan as shown and written (`plan`, `plan --out`, `apply --json`): see [`step`].
pub fn plan(plan: &mut Plan) {
    plan.actions.iter_mut().for_each(step);
}

/// Environment variables as shown (`facts`): bind hosts and ports only.
pub fn env_vars(vars: &mut BTreeMap<String, String>) {
    for (key, value) in vars.iter_mut() {
        if !shown(key, None) && !value.is_empty() {
            *value = REDACTED.to_string();
        }
    }
}

/// `KEY=value` assignments (`Environment=`) as shown: see [`env_vars`].
pub fn assignments(list: &mut [String]) {
    for kv in list.iter_mut() {
        if let Cow::Owned(redacted) = env_line(kv, None) {
            *kv = redacted;
        }
    }
}

/// Text from a backend (its output, its journal) with control characters escaped as `\x1b`, so
/// it can neither drive a terminal nor forge a line; tabs stay.
pub fn control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            c if c.is_control() => {
                out.push_str(&c.escape_unicode().to_string().replace("\\u{", "\\x{"))
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_env_values_are_redacted_and_its_listen_settings_shown() {
        let text = "[www]\nlisten = /run/php/fpm.sock\nlisten.owner = www-data\nenv[DB_PASSWORD] = hunter2\n  env[EMPTY] =\n";
        assert_eq!(
            pool_text(text),
            "[www]\nlisten = /run/php/fpm.sock\nlisten.owner = www-data\nenv[DB_PASSWORD] = <redacted>\n  env[EMPTY] =\n"
        );
        let diff = "--- a/www.conf\n+++ b/www.conf\n@@ -1,3 +1,3 @@\n-listen.owner = nobody\n+listen.owner = www-data\n env[TOKEN] = abc\n";
        assert_eq!(
            diff_lines(diff, pool_text),
            "--- a/www.conf\n+++ b/www.conf\n@@ -1,3 +1,3 @@\n-listen.owner = nobody\n+listen.owner = www-data\n env[TOKEN] = <redacted>\n"
        );
    }

    #[test]
    fn env_values_but_the_bind_key_are_redacted() {
        let text = "# app\nHOST=127.0.0.1\nSECRET_KEY=hunter2\nexport DB_URL=postgres://u:p@h/db\nEMPTY=\nPORT=3000";
        assert_eq!(
            env_text(text, Some("HOST")),
            "# app\nHOST=127.0.0.1\nSECRET_KEY=<redacted>\nexport DB_URL=<redacted>\nEMPTY=\nPORT=<redacted>"
        );
        let diff = "--- a/.env\n+++ b/.env\n@@ -1,2 +1,2 @@\n-HOST=0.0.0.0\n+HOST=127.0.0.1\n SECRET_KEY=hunter2\n";
        assert_eq!(
            env_diff(diff, Some("HOST")),
            "--- a/.env\n+++ b/.env\n@@ -1,2 +1,2 @@\n-HOST=0.0.0.0\n+HOST=127.0.0.1\n SECRET_KEY=<redacted>\n"
        );
        let mut vars = BTreeMap::from([
            ("HOST".to_string(), "::1".to_string()),
            ("PORT".to_string(), "8080".to_string()),
            ("API_TOKEN".to_string(), "abc".to_string()),
        ]);
        env_vars(&mut vars);
        assert_eq!(vars["API_TOKEN"], REDACTED);
        assert_eq!(
            (vars["HOST"].as_str(), vars["PORT"].as_str()),
            ("::1", "8080")
        );
        let mut list = vec!["NODE_ENV=production".to_string(), "HOST=127.0.0.1".into()];
        assignments(&mut list);
        assert_eq!(list, ["NODE_ENV=<redacted>", "HOST=127.0.0.1"]);
    }

    #[test]
    fn control_characters_in_backend_output_are_escaped() {
        assert_eq!(control("plain\ttext"), "plain\ttext");
        assert_eq!(
            control("\u{1b}[2Jok\rFAKE: healed\u{0}"),
            "\\x{1b}[2Jok\\x{d}FAKE: healed\\x{0}"
        );
    }
}
