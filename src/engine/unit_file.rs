//! A ready systemd unit for a backend that no supervisor runs (started by hand, from a shell,
//! tmux or `nohup`): its command line, working directory and user, bound to the address nginx
//! dials; its environment only as commented-out names, never values. Pure.

use super::dropin;
use crate::facts::supervision::{env_names_worth_listing, ProcessFacts};

/// Interpreters whose script names the program better than they do.
const INTERPRETERS: [&str; 6] = ["python", "node", "ruby", "perl", "php", "bun"];

/// The unit's name: the program and the port (`uvicorn-8000.service`).
pub fn unit_name(process: &ProcessFacts, port: Option<u16>) -> String {
    let base = |w: &str| {
        let name = w.rsplit('/').next().unwrap_or(w);
        let name = name.split('.').next().unwrap_or(name);
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect::<String>()
    };
    let first = process.cmdline.first().map(|w| base(w)).unwrap_or_default();
    let interpreted = INTERPRETERS.iter().any(|i| first.starts_with(i));
    let program = match process.cmdline.get(1) {
        Some(script) if interpreted && !script.starts_with('-') => base(script),
        _ => first,
    };
    let program = if program.is_empty() {
        "backend".to_string()
    } else {
        program
    };
    match port {
        Some(port) => format!("{program}-{port}.service"),
        None => format!("{program}.service"),
    }
}

/// The command line as the unit runs it: an absolute first word (`/proc/PID/exe` when the
/// process was started by a bare name), the bind host switched to the one nginx dials.
pub fn exec_argv(process: &ProcessFacts, host: Option<&str>, port: Option<u16>) -> Vec<String> {
    let mut argv = process.cmdline.clone();
    if let Some(first) = argv.first_mut() {
        if !first.starts_with('/') {
            let from_cwd = process
                .cwd
                .as_deref()
                .filter(|_| first.contains('/'))
                .map(|cwd| format!("{cwd}/{}", first.trim_start_matches("./")));
            if let Some(abs) = from_cwd.or_else(|| process.exe.clone()) {
                *first = abs;
            }
        }
    }
    if let (Some(host), Some(port)) = (host, port) {
        rebind(&mut argv, host, port);
    }
    argv
}

/// Switches the word that sets the bind host (`--host 0.0.0.0`, `--bind 127.0.0.2:8000`) to
/// `host`, when exactly one word sets it for `port`.
fn rebind(argv: &mut [String], host: &str, port: u16) {
    if dropin::find_host_word(argv, host, port).is_some() {
        return; // already the address nginx dials
    }
    let flags = ["--host", "-H", "--bind-host", "--address", "--listen-host"];
    let mut at: Option<(usize, String)> = None;
    for (i, w) in argv.iter().enumerate() {
        let after_flag = i > 0 && argv.get(i - 1).is_some_and(|p| flags.contains(&p.as_str()));
        let old = if after_flag {
            Some(w.clone())
        } else {
            flags
                .iter()
                .find_map(|f| w.strip_prefix(f).and_then(|r| r.strip_prefix('=')))
                .or_else(|| {
                    w.strip_suffix(&format!(":{port}"))
                        .map(|h| h.rsplit(['=', ' ']).next().unwrap_or(h))
                })
                .map(|h| h.trim_matches(['[', ']']).to_string())
        };
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            if at.is_some() {
                return; // two words set a host: which one binds is not evidence
            }
            at = Some((i, old));
        }
    }
    if let Some((i, old)) = at {
        if let Some(word) = argv.get_mut(i) {
            *word = dropin::replace_host(word, &old, host, port);
        }
    }
}

/// The unit file for a process no supervisor runs, to serve `address` (the address nginx
/// dials, `host`/`port` of it for TCP).
pub fn render(
    process: &ProcessFacts,
    address: &str,
    host: Option<&str>,
    port: Option<u16>,
) -> String {
    let name = unit_name(process, port);
    let argv = exec_argv(process, host, port);
    let exec: Vec<String> = argv
        .iter()
        .map(|w| dropin::quote(&w.replace('$', "$$")))
        .collect();
    let user = process
        .user
        .clone()
        .unwrap_or_else(|| process.uid.to_string());
    let mut out = String::new();
    out.push_str(&format!(
        "# {name}: the backend of {address}, written by nginx-medic from the process last seen\n\
         # listening there (pid {}, started by hand: nothing restarts it when it ends).\n\
         # Install: save as /etc/systemd/system/{name}, then\n\
         #   systemctl daemon-reload && systemctl enable --now {name}\n\
         # and end the hand-started process first if it still runs.\n",
        process.pid
    ));
    out.push_str("[Unit]\n");
    out.push_str(&format!(
        "Description=backend of {address} (was started by hand)\nAfter=network.target\n\n"
    ));
    out.push_str("[Service]\nType=exec\n");
    out.push_str(&format!("User={user}\n"));
    if let Some(cwd) = &process.cwd {
        out.push_str(&format!("WorkingDirectory={}\n", dropin::quote(cwd)));
    }
    out.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    if let (Some(host), Some(port)) = (host, port) {
        if dropin::find_host_word(&argv, host, port).is_none() {
            out.push_str(&format!(
                "# nginx dials {address}: make sure the command binds {host} (its default, or a flag)\n"
            ));
        }
    }
    let names = env_names_worth_listing(&process.env_names);
    if !names.is_empty() {
        out.push_str(
            "# The process had these environment variables; their values are not copied here.\n\
             # Set the ones it needs (or point EnvironmentFile= at a file only root can read):\n",
        );
        for n in names {
            out.push_str(&format!("#Environment={n}=\n"));
        }
    }
    out.push_str("Restart=on-failure\nRestartSec=1s\n\n[Install]\nWantedBy=multi-user.target\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvicorn(host: &str) -> ProcessFacts {
        ProcessFacts {
            pid: 4242,
            exe: Some("/usr/bin/python3.11".into()),
            cmdline: vec![
                "/srv/venv/bin/python3".into(),
                "/srv/venv/bin/uvicorn".into(),
                "main:app".into(),
                "--host".into(),
                host.into(),
                "--port".into(),
                "8000".into(),
            ],
            cwd: Some("/srv/app".into()),
            uid: 1000,
            user: Some("deploy".into()),
            env_names: vec!["PATH".into(), "DATABASE_URL".into(), "PWD".into()],
            unit: None,
            ancestors: vec![1],
            seen_at: 0,
        }
    }

    #[test]
    fn the_unit_runs_the_command_where_and_as_whom_it_ran() {
        let text = render(
            &uvicorn("127.0.0.1"),
            "127.0.0.1:8000",
            Some("127.0.0.1"),
            Some(8000),
        );
        assert!(text.contains("\nUser=deploy\n"), "{text}");
        assert!(text.contains("\nWorkingDirectory=/srv/app\n"), "{text}");
        assert!(
            text.contains("\nExecStart=/srv/venv/bin/python3 /srv/venv/bin/uvicorn main:app --host 127.0.0.1 --port 8000\n"),
            "{text}"
        );
        assert!(text.contains("\n#Environment=DATABASE_URL=\n"), "{text}");
        assert!(!text.contains("#Environment=PWD"), "{text}");
        assert_eq!(unit_name(&uvicorn("x"), Some(8000)), "uvicorn-8000.service");
    }

    #[test]
    fn the_bind_host_is_the_one_nginx_dials() {
        let text = render(
            &uvicorn("0.0.0.0"),
            "127.0.0.1:8000",
            Some("127.0.0.1"),
            Some(8000),
        );
        assert!(text.contains("--host 127.0.0.1 --port 8000"), "{text}");
        let mut gunicorn = uvicorn("x");
        gunicorn.cmdline = vec![
            "/srv/venv/bin/gunicorn".into(),
            "-b".into(),
            "127.0.0.2:8000".into(),
            "app:app".into(),
        ];
        let argv = exec_argv(&gunicorn, Some("127.0.0.1"), Some(8000));
        assert_eq!(
            argv,
            ["/srv/venv/bin/gunicorn", "-b", "127.0.0.1:8000", "app:app"]
        );
        let mut node = uvicorn("x");
        node.cmdline = vec!["node".into(), "server.js".into()];
        node.exe = Some("/usr/bin/node".into());
        assert_eq!(exec_argv(&node, None, None), ["/usr/bin/node", "server.js"]);
        assert_eq!(unit_name(&node, Some(3000)), "server-3000.service");
    }

    #[test]
    fn dollars_and_blanks_survive_the_unit_file() {
        let mut p = uvicorn("127.0.0.1");
        p.cmdline.push("--root-path=/a b$x".into());
        let text = render(&p, "127.0.0.1:8000", Some("127.0.0.1"), Some(8000));
        assert!(text.contains("\"--root-path=/a b$$x\""), "{text}");
    }
}
