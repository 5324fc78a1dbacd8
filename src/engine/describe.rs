//! One line for a person saying what a planned action does: the plan printout and the daemon's
//! `observe` log use the same words.

use crate::engine::plan::PlannedAction;

/// One line saying what an action does.
pub fn describe(action: &PlannedAction) -> String {
    match action {
        PlannedAction::Systemd { unit, op } => format!("systemd {op} {unit}"),
        PlannedAction::Pm2 {
            app,
            op: crate::playbook::Pm2Op::Restart,
            home,
            ..
        } => format!("pm2 restart {app} (PM2_HOME={})", home.display()),
        PlannedAction::Pm2 {
            app,
            ecosystem,
            home,
            ..
        } => format!(
            "pm2 startOrRestart {} --only {app} --update-env, then pm2 save (PM2_HOME={})",
            ecosystem.as_deref().map_or_else(String::new, |e| e.display().to_string()),
            home.display()
        ),
        PlannedAction::SetBindHost {
            unit,
            host,
            previous,
            edit,
            daemon_reload: true,
            ..
        } => format!(
            "set the bind host of {unit} in its ExecStart: {previous} -> {host} (drop-in {}, then daemon-reload)",
            edit.path.display()
        ),
        PlannedAction::SetBindHost {
            unit,
            host,
            previous,
            key,
            edit,
            ..
        } => format!(
            "set the bind host of {unit}: {key}={previous} -> {key}={host} in {}",
            edit.path.display()
        ),
        PlannedAction::RenderSite { directive, edit } => {
            format!(
                "rewrite the pass directive in {}: {directive}",
                edit.path.display()
            )
        }
        PlannedAction::SetDirective {
            directive,
            previous,
            location,
            edit,
        } => match previous {
            Some(old) => format!(
                "set `{directive}` in location {location} of {} (was {old})",
                edit.path.display()
            ),
            None => format!(
                "add `{directive}` to location {location} of {}",
                edit.path.display()
            ),
        },
        PlannedAction::WaitListen {
            address,
            timeout_ms,
        } => {
            format!(
                "wait until {address} listens (at most {} s)",
                timeout_ms / 1000
            )
        }
        PlannedAction::NginxTest {} => "nginx -t".into(),
        PlannedAction::NginxReload {} => {
            "reload nginx, then check the error log for [emerg]".into()
        }
        PlannedAction::Probe {
            url,
            host: Some(host),
            expect,
            ..
        } => format!("probe {url} as `Host: {host}`, expect {expect}"),
        PlannedAction::Probe { url, expect, .. } => format!("probe {url}, expect {expect}"),
        PlannedAction::ProbeSite { site, url, .. } => {
            format!("probe the neighbour `{site}` at {url}, expect an answer (not 502/503/504)")
        }
        PlannedAction::SetPoolListen {
            pool,
            owner,
            group,
            mode,
            previous,
            edit,
            ..
        } => {
            let was = |v: &Option<String>| v.clone().unwrap_or_else(|| "(default)".into());
            format!(
                "let nginx's workers connect to pool `{pool}`: listen.owner {} -> {owner}, listen.group {} -> {group}, listen.mode {} -> {mode} in {}",
                was(&previous[0]),
                was(&previous[1]),
                was(&previous[2]),
                edit.path.display()
            )
        }
    }
}
