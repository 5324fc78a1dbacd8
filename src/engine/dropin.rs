//! Bind hosts written in a unit's `ExecStart` (uvicorn `--host`, gunicorn `--bind`, Django
//! `runserver ADDR:PORT`, …): finding the word that sets the host, and the drop-in that replaces
//! the command line with only that host changed. Pure.

use std::path::{Path, PathBuf};

/// The drop-in nginx-medic writes; `zz-` so it sorts after the admin's own drop-ins.
pub const DROPIN_NAME: &str = "zz-nginx-medic-bind.conf";

/// Flags whose next word is a bare bind host.
const HOST_FLAGS: [&str; 5] = ["--host", "-H", "--bind-host", "--address", "--listen-host"];

/// The index of the word that sets the bind host `host` for `port`, if exactly one does:
/// `--host HOST`, `--host=HOST`, or any word holding `HOST:PORT` (`--bind`, `-b`, `runserver`).
pub fn find_host_word(argv: &[String], host: &str, port: u16) -> Option<usize> {
    let bracketed = format!("[{host}]:{port}");
    let plain = format!("{host}:{port}");
    let sets_host = |i: usize, word: &str| {
        let after_flag = i > 0
            && argv
                .get(i - 1)
                .is_some_and(|prev| HOST_FLAGS.contains(&prev.as_str()));
        (after_flag && word == host)
            || HOST_FLAGS
                .iter()
                .any(|f| word.strip_prefix(f).and_then(|r| r.strip_prefix('=')) == Some(host))
            || ends_with_address(word, &plain)
            || ends_with_address(word, &bracketed)
    };
    let mut found = argv
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, w)| sets_host(*i, w));
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// `word` is `ADDR`, or ends with `=ADDR`/`:ADDR` (as in `--bind=ADDR`, `tcp:ADDR`) — not a
/// longer address that merely ends the same way (`10.127.0.0.1:80`).
fn ends_with_address(word: &str, address: &str) -> bool {
    word == address
        || word
            .strip_suffix(address)
            .is_some_and(|head| head.ends_with('=') || head.ends_with(':') || head.ends_with("//"))
}

/// `word` with the bind host `old` replaced by `new` (brackets kept for IPv6 addresses).
pub fn replace_host(word: &str, old: &str, new: &str, port: u16) -> String {
    let wrap = |h: &str| {
        if h.contains(':') {
            format!("[{h}]")
        } else {
            h.to_string()
        }
    };
    let with_port = format!("{}:{port}", wrap(old));
    if let Some(head) = word.strip_suffix(&with_port) {
        return format!("{head}{}:{port}", wrap(new));
    }
    match word.strip_suffix(old) {
        Some(head) => format!("{head}{new}"),
        None => word.to_string(),
    }
}

/// Where a drop-in for `unit` goes: beside an admin's unit file (`/etc/systemd/…`, a user's
/// config dir), else `/etc/systemd/system/UNIT.d/` for a unit shipped in `/lib` or `/usr/lib`.
pub fn dropin_path(fragment: &str, unit: &str) -> Option<PathBuf> {
    let dir = Path::new(fragment).parent()?;
    let vendor = ["/lib/systemd/system", "/usr/lib/systemd/system"];
    let base = if vendor.iter().any(|v| dir == Path::new(v)) {
        PathBuf::from("/etc/systemd/system")
    } else if dir.starts_with("/etc/systemd") || dir.to_string_lossy().contains("/systemd/user") {
        dir.to_path_buf()
    } else {
        return None;
    };
    Some(base.join(format!("{unit}.d")).join(DROPIN_NAME))
}

/// A drop-in that resets `ExecStart=` and sets it to `argv`, quoted as systemd reads it.
pub fn render_dropin(argv: &[String], ignore_failure: bool, note: &str) -> String {
    let words: Vec<String> = argv.iter().map(|w| quote(w)).collect();
    let prefix = if ignore_failure { "-" } else { "" };
    format!(
        "# Written by nginx-medic: {note}\n# Remove this file and run `systemctl daemon-reload` to undo.\n[Service]\nExecStart=\nExecStart={prefix}{}\n",
        words.join(" ")
    )
}

/// Quotes one word for a unit file: `%` doubled (specifiers were already resolved), and words
/// with blanks, quotes, backslashes or `;` double-quoted with C-style escapes.
pub(crate) fn quote(word: &str) -> String {
    let word = word.replace('%', "%%");
    let plain = !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        return word;
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &str) -> Vec<String> {
        words.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn finds_the_host_in_each_backends_spelling() {
        let uvicorn = argv("/v/uvicorn app:app --host 127.0.0.2 --port 8000");
        assert_eq!(find_host_word(&uvicorn, "127.0.0.2", 8000), Some(3));
        let gunicorn = argv("/v/gunicorn --bind 127.0.0.2:8000 app.wsgi");
        assert_eq!(find_host_word(&gunicorn, "127.0.0.2", 8000), Some(2));
        let equals = argv("/v/gunicorn --bind=127.0.0.2:8000 app.wsgi");
        assert_eq!(find_host_word(&equals, "127.0.0.2", 8000), Some(1));
        let runserver = argv("/v/python manage.py runserver 127.0.0.2:8000");
        assert_eq!(find_host_word(&runserver, "127.0.0.2", 8000), Some(3));
        let v6 = argv("/v/gunicorn -b [::1]:8000 app");
        assert_eq!(find_host_word(&v6, "::1", 8000), Some(2));
        let host_eq = argv("/v/uvicorn app:app --host=::1 --port 8000");
        assert_eq!(find_host_word(&host_eq, "::1", 8000), Some(2));
    }

    #[test]
    fn ambiguous_or_absent_hosts_are_not_guessed() {
        assert_eq!(
            find_host_word(&argv("/v/uvicorn app:app --port 8000"), "127.0.0.1", 8000),
            None
        );
        let twice = argv("/v/gunicorn -b 127.0.0.2:8000 -b 127.0.0.2:8000 app");
        assert_eq!(find_host_word(&twice, "127.0.0.2", 8000), None);
        let longer = argv("/v/x --bind 10.127.0.0.2:8000");
        assert_eq!(find_host_word(&longer, "127.0.0.2", 8000), None);
        let env = argv("/v/uvicorn --host ${HOST} --port 8000");
        assert_eq!(find_host_word(&env, "127.0.0.2", 8000), None);
    }

    #[test]
    fn replaces_only_the_host() {
        assert_eq!(
            replace_host("127.0.0.2", "127.0.0.2", "127.0.0.1", 80),
            "127.0.0.1"
        );
        assert_eq!(
            replace_host("--bind=127.0.0.2:8000", "127.0.0.2", "127.0.0.1", 8000),
            "--bind=127.0.0.1:8000"
        );
        assert_eq!(
            replace_host("[::1]:8000", "::1", "127.0.0.1", 8000),
            "127.0.0.1:8000"
        );
        assert_eq!(
            replace_host("127.0.0.1:8000", "127.0.0.1", "::1", 8000),
            "[::1]:8000"
        );
        assert_eq!(
            replace_host("--host=::1", "::1", "127.0.0.1", 8000),
            "--host=127.0.0.1"
        );
    }

    #[test]
    fn dropins_go_where_systemd_reads_admin_overrides() {
        assert_eq!(
            dropin_path("/lib/systemd/system/api.service", "api.service"),
            Some(PathBuf::from(
                "/etc/systemd/system/api.service.d/zz-nginx-medic-bind.conf"
            ))
        );
        assert_eq!(
            dropin_path("/etc/systemd/system/api.service", "api.service"),
            Some(PathBuf::from(
                "/etc/systemd/system/api.service.d/zz-nginx-medic-bind.conf"
            ))
        );
        assert_eq!(
            dropin_path(
                "/tmp/lab/config/systemd/user/django.service",
                "django.service"
            ),
            Some(PathBuf::from(
                "/tmp/lab/config/systemd/user/django.service.d/zz-nginx-medic-bind.conf"
            ))
        );
        assert_eq!(
            dropin_path("/run/systemd/transient/x.service", "x.service"),
            None
        );
    }

    #[test]
    fn dropins_quote_like_systemd() {
        let text = render_dropin(
            &argv("/v/gunicorn --bind 127.0.0.1:8000 app"),
            false,
            "was 127.0.0.2",
        );
        assert!(
            text.ends_with(
                "[Service]\nExecStart=\nExecStart=/v/gunicorn --bind 127.0.0.1:8000 app\n"
            ),
            "{text}"
        );
        let odd = vec![
            "/bin/x".to_string(),
            "a b".into(),
            "50%".into(),
            "q\"".into(),
        ];
        assert!(
            render_dropin(&odd, true, "n").contains("ExecStart=-/bin/x \"a b\" 50%% \"q\\\"\"\n")
        );
    }
}
