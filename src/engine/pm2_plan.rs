//! Planning the PM2 actions: `pm2` (restart one app, or apply its ecosystem entry) and
//! `set_bind_host` for an app whose host is a literal string in its ecosystem file. Pure:
//! the file is read through the caller's reader.

use super::context::Target;
use super::plan::{FileEdit, PlannedAction, ReadFile};
use super::render::validate_bind_host;
use crate::adapters::fs::bytes_hash;
use crate::facts::pm2::find_host_literal;
use crate::playbook::context::Pm2Context;
use crate::playbook::Pm2Op;
use std::path::PathBuf;

/// Whether the target's backend is a PM2 app whose bind host is known (then `set_bind_host`
/// edits its ecosystem file, not a unit's setting).
pub fn binds_pm2_app(target: &Target) -> bool {
    target
        .context
        .pm2
        .as_ref()
        .is_some_and(|p| p.bind.is_some())
}

fn daemon(target: &Target) -> Result<&Pm2Context, String> {
    target
        .context
        .pm2
        .as_ref()
        .ok_or_else(|| "no PM2 app is known for this upstream".to_string())
}

/// `pm2: {app, op}`.
pub fn plan_pm2(app: &str, op: Pm2Op, target: &Target) -> Result<PlannedAction, String> {
    let pm2 = daemon(target)?;
    if app.is_empty() || app.starts_with('-') || app.contains(char::is_whitespace) {
        return Err(format!("`{app}` is not a PM2 app name"));
    }
    if pm2.name != app {
        return Err(format!(
            "`{app}` is not the PM2 app behind this upstream; only that one app is touched"
        ));
    }
    let ecosystem = match op {
        Pm2Op::Restart => None,
        Pm2Op::ApplyEcosystem => Some(PathBuf::from(
            &pm2.bind
                .as_ref()
                .ok_or("the app's ecosystem file is not known")?
                .file,
        )),
    };
    Ok(PlannedAction::Pm2 {
        app: app.to_string(),
        op,
        home: PathBuf::from(&pm2.home),
        binary: PathBuf::from(&pm2.binary),
        uid: pm2.uid,
        gid: pm2.gid,
        ecosystem,
    })
}

/// `set_bind_host` for a PM2 app: the literal host string of its ecosystem entry replaced, and
/// nothing else of the file.
pub fn plan_bind(host: &str, target: &Target, read: ReadFile<'_>) -> Result<PlannedAction, String> {
    validate_bind_host(host).map_err(|e| format!("bind host `{host}`: {e}"))?;
    let pm2 = daemon(target)?;
    let app = pm2.name.as_str();
    let file = pm2
        .bind
        .as_ref()
        .map(|b| b.file.as_str())
        .ok_or("the app's ecosystem file is not known")?;
    let path = PathBuf::from(file);
    let before = read(&path).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let found = find_host_literal(&before, app).map_err(|e| format!("`{file}`: {e}"))?;
    let mut after = String::with_capacity(before.len());
    after.push_str(before.get(..found.start).unwrap_or_default());
    after.push_str(host);
    after.push_str(before.get(found.end..).unwrap_or_default());
    Ok(PlannedAction::SetBindHost {
        unit: format!("pm2 app `{app}`"),
        host: host.to_string(),
        previous: found.value,
        key: found.key,
        edit: FileEdit {
            path,
            before_hash: Some(bytes_hash(before.as_bytes())),
            after,
        },
        daemon_reload: false,
    })
}
