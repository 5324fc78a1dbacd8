//! PHP-FPM pools: which socket each pool listens on and where its `listen.owner`, `listen.group`
//! and `listen.mode` are set. Pure: the caller reads files and expands globs.
//!
//! A unit started with `--fpm-config FILE` (or `-y FILE`) is a PHP-FPM master; FILE and the files
//! its `include =` globs name hold `[pool]` sections with `listen = …`. A stopped pool has no
//! socket to own, so this is how its socket is tied to its unit.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One `[pool]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpmPool {
    /// The section name (`www`).
    pub name: String,
    /// The file that holds the section.
    pub file: PathBuf,
    /// The unit whose master runs the pool.
    pub unit: String,
    /// `listen =` as written, with `$pool` expanded.
    pub listen: Option<String>,
    /// `listen` as an upstream address: `unix:/path`, `host:port` or `*:port`.
    pub address: Option<String>,
    /// `listen.owner`, `listen.group`, `listen.mode` (absent: php-fpm's defaults, the pool's
    /// user and group and `0660`).
    pub listen_owner: Option<String>,
    pub listen_group: Option<String>,
    pub listen_mode: Option<String>,
    /// The pool's `user` and `group`.
    pub user: Option<String>,
    pub group: Option<String>,
}

/// The config file a PHP-FPM master was started with: `--fpm-config FILE`, `--fpm-config=FILE`,
/// `-y FILE` or `-yFILE`.
pub fn fpm_config_arg(argv: &[String]) -> Option<PathBuf> {
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        if word == "--fpm-config" || word == "-y" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.strip_prefix("--fpm-config=") {
            return Some(PathBuf::from(path));
        }
        if let Some(path) = word.strip_prefix("-y").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// One `key = value` line of an ini-style file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// The section the line is in (`None` before the first `[section]`).
    pub section: Option<String>,
    pub key: String,
    /// The value, unquoted.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// Parses an ini-style file as php-fpm reads it: `[section]`, `key = value`, `;` and `#`
/// comments, values optionally in double quotes.
pub fn parse_ini(text: &str) -> Vec<IniEntry> {
    let mut section = None;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.push(IniEntry {
            section: section.clone(),
            key: key.trim().to_string(),
            value: value.to_string(),
            line: i + 1,
        });
    }
    out
}

/// Every pool of the master started with config `main`: the pools in `main` and in the files
/// its `include =` globs name, in order. `read` reads a file; `expand` expands a glob (sorted,
/// as php-fpm does). An unreadable file contributes nothing.
pub fn pools(
    unit: &str,
    main: &Path,
    read: &dyn Fn(&Path) -> Option<String>,
    expand: &dyn Fn(&str) -> Vec<PathBuf>,
) -> Vec<FpmPool> {
    let Some(text) = read(main) else {
        return Vec::new();
    };
    let entries = parse_ini(&text);
    let mut out = pools_in(unit, main, &entries);
    let base = main.parent().unwrap_or(Path::new("/"));
    for include in entries
        .iter()
        .filter(|e| e.key == "include" && e.section.as_deref().map_or(true, is_global))
    {
        let pattern = if include.value.starts_with('/') {
            include.value.clone()
        } else {
            base.join(&include.value).display().to_string()
        };
        for file in expand(&pattern) {
            if let Some(text) = read(&file) {
                out.extend(pools_in(unit, &file, &parse_ini(&text)));
            }
        }
    }
    out
}

fn is_global(section: &str) -> bool {
    section == "global"
}

fn pools_in(unit: &str, file: &Path, entries: &[IniEntry]) -> Vec<FpmPool> {
    let mut names: Vec<&str> = Vec::new();
    for e in entries {
        if let Some(s) = e.section.as_deref().filter(|s| !is_global(s)) {
            if !names.contains(&s) {
                names.push(s);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            // php-fpm keeps the last assignment of a key.
            let get = |key: &str| {
                entries
                    .iter()
                    .rev()
                    .find(|e| e.section.as_deref() == Some(name) && e.key == key)
                    .map(|e| e.value.replace("$pool", name))
            };
            let listen = get("listen");
            FpmPool {
                name: name.to_string(),
                file: file.to_path_buf(),
                unit: unit.to_string(),
                address: listen.as_deref().and_then(listen_address),
                listen,
                listen_owner: get("listen.owner"),
                listen_group: get("listen.group"),
                listen_mode: get("listen.mode"),
                user: get("user"),
                group: get("group"),
            }
        })
        .collect()
}

/// `listen` as an upstream address: a path is `unix:PATH`, `PORT` alone listens on every
/// address (`*:PORT`), `HOST:PORT` stays.
pub fn listen_address(listen: &str) -> Option<String> {
    let listen = listen.trim();
    if listen.starts_with('/') {
        return Some(format!("unix:{listen}"));
    }
    if listen.parse::<u16>().is_ok() {
        return Some(format!("*:{listen}"));
    }
    let (_, port) = listen.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some(listen.to_string())
}

/// Sets `key = value` in section `[section]` of an ini-style text: the last assignment of the
/// key is replaced (keeping its indentation), else a line is added after the section's `listen`
/// line, else at the end of the section. Returns the new text and the old value, or `None` when
/// the section is not in the text.
pub fn set_ini_value(
    text: &str,
    section: &str,
    key: &str,
    value: &str,
) -> Option<(String, Option<String>)> {
    let entries = parse_ini(text);
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let ending = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let in_section = |e: &&IniEntry| e.section.as_deref() == Some(section);
    if let Some(e) = entries.iter().filter(in_section).rfind(|e| e.key == key) {
        let slot = lines.get_mut(e.line - 1)?;
        let indent: String = slot.chars().take_while(|c| c.is_whitespace()).collect();
        let end = if slot.ends_with('\n') { ending } else { "" };
        *slot = format!("{indent}{key} = {value}{end}");
        return Some((lines.concat(), Some(e.value.clone())));
    }
    // The section's header line, then its last line (before the next header).
    let header = text.lines().position(|l| {
        l.trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .is_some_and(|n| n.trim() == section)
    })?;
    let after = entries
        .iter()
        .filter(in_section)
        .rfind(|e| e.key == "listen")
        .or_else(|| entries.iter().rfind(in_section))
        .map_or(header + 1, |e| e.line);
    if let Some(last) = lines.get_mut(after.saturating_sub(1)) {
        if !last.ends_with('\n') {
            last.push_str(ending);
        }
    }
    let at = after.min(lines.len());
    lines.insert(at, format!("{key} = {value}{ending}"));
    Some((lines.concat(), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MAIN: &str = "; lab\n[global]\npid = /run/php/fpm.pid\ndaemonize = no\n\ninclude = /etc/php/pool.d/*.conf\n";
    const WWW: &str = "[www]\nuser = www-data\ngroup = www-data\nlisten = /run/php/$pool.sock\nlisten.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\npm = static\n";
    const API: &str = "[api]\nlisten = 127.0.0.1:9001\n[admin]\nlisten = 9002\n";

    fn files() -> BTreeMap<PathBuf, String> {
        [
            ("/etc/php/php-fpm.conf", MAIN),
            ("/etc/php/pool.d/www.conf", WWW),
            ("/etc/php/pool.d/api.conf", API),
        ]
        .into_iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect()
    }

    #[test]
    fn finds_the_config_argument() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let want = Some(PathBuf::from("/etc/php/8.2/fpm/php-fpm.conf"));
        assert_eq!(
            fpm_config_arg(&argv(&[
                "/usr/sbin/php-fpm8.2",
                "--nodaemonize",
                "--fpm-config",
                "/etc/php/8.2/fpm/php-fpm.conf"
            ])),
            want
        );
        assert_eq!(
            fpm_config_arg(&argv(&[
                "php-fpm",
                "--fpm-config=/etc/php/8.2/fpm/php-fpm.conf"
            ])),
            want
        );
        assert_eq!(
            fpm_config_arg(&argv(&["php-fpm", "-y", "/etc/php/8.2/fpm/php-fpm.conf"])),
            want
        );
        assert_eq!(fpm_config_arg(&argv(&["gunicorn", "--bind", "x"])), None);
    }

    #[test]
    fn reads_pools_from_the_main_file_and_its_includes() {
        let files = files();
        let read = |p: &Path| files.get(p).cloned();
        let expand = |pattern: &str| {
            assert_eq!(pattern, "/etc/php/pool.d/*.conf");
            vec![
                PathBuf::from("/etc/php/pool.d/api.conf"),
                PathBuf::from("/etc/php/pool.d/www.conf"),
            ]
        };
        let pools = pools(
            "php8.2-fpm.service",
            Path::new("/etc/php/php-fpm.conf"),
            &read,
            &expand,
        );
        let summary: Vec<(&str, Option<&str>)> = pools
            .iter()
            .map(|p| (p.name.as_str(), p.address.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("api", Some("127.0.0.1:9001")),
                ("admin", Some("*:9002")),
                ("www", Some("unix:/run/php/www.sock"))
            ]
        );
        let www = &pools[2];
        assert_eq!(www.file, PathBuf::from("/etc/php/pool.d/www.conf"));
        assert_eq!(www.unit, "php8.2-fpm.service");
        assert_eq!(www.listen.as_deref(), Some("/run/php/www.sock"));
        assert_eq!(
            (
                www.listen_owner.as_deref(),
                www.listen_group.as_deref(),
                www.listen_mode.as_deref()
            ),
            (Some("www-data"), Some("www-data"), Some("0660"))
        );
        assert_eq!(www.user.as_deref(), Some("www-data"));
        assert_eq!(pools[0].listen_owner, None);
    }

    #[test]
    fn relative_includes_resolve_beside_the_main_file_and_unreadable_files_are_skipped() {
        let read = |p: &Path| {
            (p == Path::new("/etc/php/php-fpm.conf")).then(|| {
                "[global]\ninclude=pool.d/*.conf\n[inline]\nlisten = \"/run/a.sock\"\n".to_string()
            })
        };
        let expand = |pattern: &str| {
            assert_eq!(pattern, "/etc/php/pool.d/*.conf");
            vec![PathBuf::from("/etc/php/pool.d/gone.conf")]
        };
        let pools = pools(
            "f.service",
            Path::new("/etc/php/php-fpm.conf"),
            &read,
            &expand,
        );
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].address.as_deref(), Some("unix:/run/a.sock"));
        assert!(super::pools("f", Path::new("/nope"), &read, &expand).is_empty());
    }

    #[test]
    fn ini_values_are_set_in_place_or_added_after_listen() {
        let (after, old) = set_ini_value(WWW, "www", "listen.owner", "nginx").unwrap();
        assert_eq!(old.as_deref(), Some("www-data"));
        assert!(after.contains("\nlisten.owner = nginx\n"), "{after}");
        assert_eq!(after.lines().count(), WWW.lines().count());

        let text =
            "[a]\nlisten = /a.sock\n[b]\n  listen = /b.sock\n  listen.mode = 0600\npm = static\n";
        let (after, old) = set_ini_value(text, "b", "listen.mode", "0660").unwrap();
        assert_eq!(old.as_deref(), Some("0600"));
        assert_eq!(
            after,
            "[a]\nlisten = /a.sock\n[b]\n  listen = /b.sock\n  listen.mode = 0660\npm = static\n"
        );
        let (after, old) = set_ini_value(text, "b", "listen.owner", "www-data").unwrap();
        assert_eq!(old, None);
        assert_eq!(
            after,
            "[a]\nlisten = /a.sock\n[b]\n  listen = /b.sock\nlisten.owner = www-data\n  listen.mode = 0600\npm = static\n"
        );
        let (after, _) = set_ini_value("[c]\npm = static", "c", "listen.group", "g").unwrap();
        assert_eq!(after, "[c]\npm = static\nlisten.group = g\n");
        assert!(set_ini_value(text, "nope", "k", "v").is_none());
        let (after, _) = set_ini_value(text, "a", "listen.mode", "0660").unwrap();
        assert!(
            after.starts_with("[a]\nlisten = /a.sock\nlisten.mode = 0660\n[b]\n"),
            "{after}"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            listen_address("/run/x.sock").as_deref(),
            Some("unix:/run/x.sock")
        );
        assert_eq!(listen_address("9000").as_deref(), Some("*:9000"));
        assert_eq!(listen_address("[::1]:9000").as_deref(), Some("[::1]:9000"));
        assert_eq!(listen_address("garbage"), None);
    }
}
