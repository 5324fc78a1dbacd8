//! Findings → plan: each conclusive finding's actions with their parameters rendered, and every
//! file edit computed in full (new content, the hash of the content it replaces, a unified diff).
//! Pure: files are read through the caller's reader, nothing is written.

use super::coherence::{self, Change, Verdict};
use super::context::Target;
use super::dropin;
use super::evaluate::Finding;
use super::render::{
    render, validate_account_name, validate_bind_host, validate_nginx_directive,
    validate_nginx_value, validate_setting, validate_socket_mode,
};
use crate::adapters::fs::bytes_hash;
use crate::facts::php_fpm::set_ini_value;
use crate::nginx_conf::{replace_span, Span};
use crate::playbook::context::BindContext;
use crate::playbook::{Action, PlaybookSet, SystemdOp};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `plan` prints and `apply --plan` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Seconds since the epoch when the facts were taken.
    pub created_at: u64,
    #[serde(skip_deserializing)]
    pub findings: Vec<Finding>,
    pub actions: Vec<Step>,
}

/// One action of one finding, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The playbook (cause) that asked for it.
    pub playbook: String,
    /// Index of its finding in `findings`; steps of one finding form one transaction.
    pub finding: usize,
    /// `site location -> upstream`.
    pub target: String,
    #[serde(flatten)]
    pub action: PlannedAction,
    /// The unified diff of a file edit.
    pub diff: Option<String>,
}

/// An action with every parameter rendered and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlannedAction {
    Systemd {
        unit: String,
        op: SystemdOp,
    },
    SetBindHost {
        unit: String,
        host: String,
        previous: String,
        key: String,
        edit: FileEdit,
        /// The edit is a unit drop-in: the manager must reread its units before the restart.
        #[serde(default)]
        daemon_reload: bool,
    },
    RenderSite {
        directive: String,
        edit: FileEdit,
    },
    /// One directive inserted into, or replaced inside, the target's location block.
    SetDirective {
        /// The directive as written: `proxy_buffer_size 16k;`.
        directive: String,
        /// The value written in the location before, when it was written there.
        previous: Option<String>,
        /// `path` of the location.
        location: String,
        edit: FileEdit,
    },
    WaitListen {
        address: String,
        timeout_ms: u64,
    },
    /// A PHP-FPM pool's socket ownership, set so nginx's workers may connect.
    SetPoolListen {
        unit: String,
        pool: String,
        owner: String,
        group: String,
        mode: String,
        /// `listen.owner`, `listen.group`, `listen.mode` before (null: not set, php-fpm's default).
        previous: [Option<String>; 3],
        edit: FileEdit,
    },
    NginxTest {},
    NginxReload {},
    Probe {
        url: String,
        /// The `Host` (and TLS server name) that reaches the site's server block, for a probe
        /// on the site's own address (`route.aim`); absent: the URL's own host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        expect: u16,
        timeout_ms: u64,
    },
    /// A site reaching a backend this transaction changed answers again (any status but
    /// nginx's own 502, 503 or 504): no fix silently breaks a neighbour.
    ProbeSite {
        /// `site location`.
        site: String,
        url: String,
        /// As for `Probe`: the `Host` (and TLS server name) of the neighbour's server block.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        timeout_ms: u64,
    },
    /// One PM2 app restarted, or its edited ecosystem entry applied and saved.
    Pm2 {
        app: String,
        op: crate::playbook::Pm2Op,
        /// The daemon: `PM2_HOME`, its `pm2`, the home's owner (commands run as them).
        home: PathBuf,
        binary: PathBuf,
        uid: u32,
        gid: u32,
        /// The ecosystem file, for `apply_ecosystem`.
        ecosystem: Option<PathBuf>,
    },
}

/// A whole-file replacement, valid only while the file still has the content it was planned on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdit {
    pub path: PathBuf,
    /// sha256 of the content the edit was computed from; `None`: the file must not exist yet.
    pub before_hash: Option<String>,
    pub after: String,
}

impl PlannedAction {
    /// The file this action edits, if any.
    pub fn edit(&self) -> Option<&FileEdit> {
        match self {
            Self::SetBindHost { edit, .. }
            | Self::RenderSite { edit, .. }
            | Self::SetPoolListen { edit, .. }
            | Self::SetDirective { edit, .. } => Some(edit),
            _ => None,
        }
    }
}

/// Reads a file's text for planning.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// How long a neighbour site gets to answer after a transaction changed its backend.
const NEIGHBOUR_TIMEOUT_MS: u64 = 10_000;

/// Plans the actions of every conclusive finding as one coherent change for the host (see
/// `coherence`): a finding another's fix covers plans nothing of its own, a fix that would
/// break another site is a conflict (inconclusive, both sides named), the restarts of an
/// upstream group whose servers were all down form one transaction that resets the group, and
/// every transaction ends by probing each other site that reaches what it changed. A finding
/// whose actions cannot be planned (a value fails validation, a file cannot be read) is made
/// inconclusive with the reason.
pub fn plan(
    created_at: u64,
    playbooks: &PlaybookSet,
    targets: &[Target],
    mut findings: Vec<Finding>,
    read: ReadFile<'_>,
) -> Plan {
    let changes: Vec<Vec<Change>> = findings
        .iter()
        .map(|f| {
            let (Some(playbook), Some(target)) = (playbooks.get(&f.cause), targets.get(f.target))
            else {
                return Vec::new();
            };
            if !f.conclusive {
                return Vec::new();
            }
            plan_finding(&playbook.actions, target, read, &[])
                .map(|steps| changes_of(target, &steps))
                .unwrap_or_default()
        })
        .collect();
    let may_reload = !findings.iter().any(|f| {
        f.target == super::preflight::GLOBAL_TARGET
            && [
                super::preflight::HOST_NOT_FOUND,
                super::preflight::CONFIG_INVALID,
            ]
            .contains(&f.cause.as_str())
    });
    let decisions = coherence::decide(targets, &findings, &changes, may_reload);
    // finding → the finding whose transaction covers it
    let mut covered_into: Vec<Option<usize>> = vec![None; findings.len()];
    for ((f, verdict), into) in findings
        .iter_mut()
        .zip(&decisions.verdicts)
        .zip(covered_into.iter_mut())
    {
        match verdict {
            Verdict::Act => {}
            Verdict::Covered { by, why } => {
                f.covered_by = Some(why.clone());
                *into = Some(*by);
            }
            Verdict::Conflict(why) => {
                f.conclusive = false;
                f.missing.push(why.clone());
            }
        }
    }
    let mut actions: Vec<Step> = Vec::new();
    for index in 0..findings.len() {
        let members: Vec<usize> = match decisions
            .resets
            .iter()
            .find(|r| r.findings.first() == Some(&index))
        {
            Some(reset) => reset.findings.clone(),
            None if findings.get(index).is_some_and(|f| f.covered_by.is_some()) => continue,
            None => vec![index],
        };
        let reset = decisions
            .resets
            .iter()
            .any(|r| r.findings.first() == Some(&index));
        let mut steps: Vec<Step> = Vec::new();
        let mut head: Option<usize> = None;
        for &member in &members {
            let Some(finding) = findings.get_mut(member) else {
                continue;
            };
            let (Some(playbook), Some(target)) =
                (playbooks.get(&finding.cause), targets.get(finding.target))
            else {
                continue;
            };
            if !finding.conclusive {
                continue;
            }
            let earlier: Vec<Step> = actions.iter().chain(&steps).cloned().collect();
            match plan_finding(&playbook.actions, target, read, &earlier) {
                Ok(planned) => {
                    let txn = *head.get_or_insert(member);
                    if txn == member {
                        finding.covered_by = None;
                    }
                    steps.extend(planned.into_iter().map(|(action, diff)| Step {
                        playbook: finding.cause.clone(),
                        finding: txn,
                        target: target.label.clone(),
                        action,
                        diff,
                    }));
                }
                Err(reason) => {
                    finding.conclusive = false;
                    finding.covered_by = None;
                    finding.missing.push(format!("cannot plan: {reason}"));
                }
            }
        }
        let Some(txn) = head else { continue };
        if reset {
            steps = with_group_reset(steps);
        }
        // the findings this transaction heals: its own, and those covered by one of them
        let heals: Vec<usize> = (0..findings.len())
            .filter(|i| {
                members.contains(i)
                    || covered_into
                        .get(*i)
                        .copied()
                        .flatten()
                        .is_some_and(|by| members.contains(&by))
            })
            .collect();
        steps.extend(neighbour_probes(targets, &findings, &heals, txn, &steps));
        actions.extend(steps);
    }
    Plan {
        created_at,
        findings,
        actions,
    }
}

/// What planned steps change, as far as other sites can tell.
fn changes_of(target: &Target, steps: &[(PlannedAction, Option<String>)]) -> Vec<Change> {
    let port = crate::config::UpstreamAddr::parse(&target.endpoint.address).and_then(|a| match a {
        crate::config::UpstreamAddr::Tcp { port, .. } => Some(port),
        crate::config::UpstreamAddr::Unix { .. } => None,
    });
    steps
        .iter()
        .filter_map(|(action, _)| match action {
            PlannedAction::SetBindHost { unit, host, .. } => Some(Change::Bind {
                unit: unit.clone(),
                host: host.clone(),
                port: port?,
            }),
            PlannedAction::RenderSite { directive, .. } => Some(Change::Pass {
                route: target.route.at.clone(),
                dials: pass_dials(directive),
            }),
            PlannedAction::Systemd { unit, .. } => Some(Change::UnitState { unit: unit.clone() }),
            _ => None,
        })
        .collect()
}

/// The literal `host:port` a rendered pass directive dials (a name or a group: none known).
pub(crate) fn pass_dials(directive: &str) -> Vec<String> {
    let mut words = directive.trim().trim_end_matches(';').split_whitespace();
    let (Some(name), Some(raw)) = (words.next(), words.next()) else {
        return Vec::new();
    };
    match crate::facts::nginx::parse_pass(name, raw, &Default::default()) {
        crate::facts::nginx::Target::Tcp { host, port, .. }
            if host.parse::<std::net::IpAddr>().is_ok() =>
        {
            vec![crate::config::UpstreamAddr::Tcp { host, port }.to_string()]
        }
        _ => Vec::new(),
    }
}

/// The steps of a group's restarts, then a reset of nginx's failure state of the group (test,
/// reload), then the probes: the site answers right after the restarts, not after
/// `fail_timeout`.
fn with_group_reset(steps: Vec<Step>) -> Vec<Step> {
    let (probes, mut out): (Vec<Step>, Vec<Step>) = steps
        .into_iter()
        .partition(|s| matches!(s.action, PlannedAction::Probe { .. }));
    let Some(first) = out.first().cloned() else {
        return probes;
    };
    for action in [PlannedAction::NginxTest {}, PlannedAction::NginxReload {}] {
        out.push(Step {
            action,
            diff: None,
            ..first.clone()
        });
    }
    for probe in probes {
        if !out.iter().any(|s| s.action == probe.action) {
            out.push(probe);
        }
    }
    out
}

/// One probe of every other site reaching a unit the steps restart or rebind, unless a step
/// already probes it, or the site has a finding this transaction does not heal (it is broken
/// either way, or another transaction heals and probes it).
fn neighbour_probes(
    targets: &[Target],
    findings: &[Finding],
    heals: &[usize],
    txn: usize,
    steps: &[Step],
) -> Vec<Step> {
    let units: Vec<&str> = steps
        .iter()
        .filter_map(|s| match &s.action {
            PlannedAction::Systemd { unit, .. }
            | PlannedAction::SetBindHost { unit, .. }
            | PlannedAction::SetPoolListen { unit, .. } => Some(unit.as_str()),
            _ => None,
        })
        .collect();
    let mut probed: Vec<String> = steps
        .iter()
        .filter_map(|s| match &s.action {
            PlannedAction::Probe { url, .. } | PlannedAction::ProbeSite { url, .. } => {
                Some(url.clone())
            }
            _ => None,
        })
        .collect();
    let broken: Vec<&str> = findings
        .iter()
        .enumerate()
        .filter(|(i, _)| !heals.contains(i))
        .filter_map(|(_, f)| targets.get(f.target))
        .map(|t| t.route.at.as_str())
        .collect();
    let (Some(first), false) = (steps.first(), units.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in targets {
        let reaches = t
            .endpoint
            .unit
            .as_deref()
            .is_some_and(|u| units.contains(&u));
        let url = t.context.site.url.as_str();
        if !reaches || broken.contains(&t.route.at.as_str()) || probed.iter().any(|p| p == url) {
            continue;
        }
        // a neighbour no probe can be aimed at is not probed (the daemon skips it too)
        let Ok(host) = t.route.aim.host_for(url) else {
            continue;
        };
        probed.push(url.to_string());
        out.push(Step {
            playbook: first.playbook.clone(),
            finding: txn,
            target: t.label.clone(),
            action: PlannedAction::ProbeSite {
                site: format!("{} {}", t.route.site, t.route.location),
                url: url.to_string(),
                host,
                timeout_ms: NEIGHBOUR_TIMEOUT_MS,
            },
            diff: None,
        });
    }
    out
}

fn plan_finding(
    actions: &[Action],
    target: &Target,
    read: ReadFile<'_>,
    earlier: &[Step],
) -> Result<Vec<(PlannedAction, Option<String>)>, String> {
    let mut steps: Vec<(PlannedAction, Option<String>)> = Vec::new();
    for action in actions {
        // A later edit of a file this finding already edits builds on that edit.
        let pending: Vec<FileEdit> = steps
            .iter()
            .filter_map(|(a, _)| a.edit().cloned())
            .collect();
        let overlay = |path: &Path| match pending.iter().rev().find(|e| e.path == path) {
            Some(edit) => Ok(edit.after.clone()),
            None => read(path),
        };
        let read: ReadFile<'_> = &overlay;
        let planned = plan_action(action, target, read)?;
        if let Some(edit) = planned.edit() {
            if earlier
                .iter()
                .any(|s| s.action.edit().is_some_and(|e| e.path == edit.path))
            {
                return Err(format!(
                    "`{}` is already edited by an earlier finding; run again after that change",
                    edit.path.display()
                ));
            }
        }
        let diff = planned.edit().map(|edit| unified_diff(edit, read));
        let duplicate = earlier.iter().any(|s| {
            s.action == planned
                && !matches!(
                    planned,
                    PlannedAction::NginxTest {} | PlannedAction::NginxReload {}
                )
        });
        if !duplicate {
            steps.push((planned, diff));
        }
    }
    Ok(steps)
}

fn text(template: &str, target: &Target) -> Result<String, String> {
    render(template, &target.context.json()).map_err(|e| e.to_string())
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn plan_action(
    action: &Action,
    target: &Target,
    read: ReadFile<'_>,
) -> Result<PlannedAction, String> {
    Ok(match action {
        Action::Systemd { unit, op } => {
            let unit = text(unit, target)?;
            validate_nginx_value(&unit).map_err(|e| format!("unit `{unit}`: {e}"))?;
            PlannedAction::Systemd { unit, op: *op }
        }
        Action::SetBindHost { host } if super::pm2_plan::binds_pm2_app(target) => {
            super::pm2_plan::plan_bind(&text(host, target)?, target, read)?
        }
        Action::SetBindHost { host } => plan_bind(&text(host, target)?, target, read)?,
        Action::Pm2 { app, op } => super::pm2_plan::plan_pm2(&text(app, target)?, *op, target)?,
        Action::RenderSite { template, source } => plan_site(template, source, target, read)?,
        Action::SetDirective { name, value } => {
            plan_set_directive(&text(name, target)?, &text(value, target)?, target, read)?
        }
        Action::WaitListen { address, timeout } => {
            let address = text(address, target)?;
            validate_nginx_value(&address).map_err(|e| format!("address `{address}`: {e}"))?;
            PlannedAction::WaitListen {
                address,
                timeout_ms: millis(*timeout),
            }
        }
        Action::SetPoolListen { owner, group, mode } => plan_pool_listen(
            &text(owner, target)?,
            &text(group, target)?,
            mode,
            target,
            read,
        )?,
        Action::NginxTest => PlannedAction::NginxTest {},
        Action::NginxReload => PlannedAction::NginxReload {},
        Action::Probe {
            url,
            expect,
            timeout,
        } => {
            let url = text(url, target)?;
            PlannedAction::Probe {
                host: target.route.aim.host_for(&url)?,
                url,
                expect: *expect,
                timeout_ms: millis(*timeout),
            }
        }
    })
}

fn plan_bind(host: &str, target: &Target, read: ReadFile<'_>) -> Result<PlannedAction, String> {
    validate_bind_host(host).map_err(|e| format!("bind host `{host}`: {e}"))?;
    let unit_context = target.context.unit.as_ref().ok_or("no unit is known")?;
    let unit = unit_context.name.as_str();
    let Some(bind) = &unit_context.bind else {
        return Err("the backend's bind setting is not known".into());
    };
    let (file, key) = (bind.file.as_str(), bind.key.as_str());
    if bind.from == "exec_start" {
        return plan_exec_start_bind(host, unit, bind, read);
    }
    let path = PathBuf::from(file);
    let before = read(&path).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let (after, previous) = replace_env_value(&before, key, host)
        .ok_or_else(|| format!("`{file}` has no `{key}=` line"))?;
    Ok(PlannedAction::SetBindHost {
        unit: unit.to_string(),
        host: host.to_string(),
        previous,
        key: key.to_string(),
        edit: FileEdit {
            path,
            before_hash: Some(bytes_hash(before.as_bytes())),
            after,
        },
        daemon_reload: false,
    })
}

/// Rebinds a backend whose host is written in its `ExecStart`: a drop-in with the same command
/// line, only the host changed.
fn plan_exec_start_bind(
    host: &str,
    unit: &str,
    bind: &BindContext,
    read: ReadFile<'_>,
) -> Result<PlannedAction, String> {
    let missing = || "the ExecStart bind facts are incomplete".to_string();
    let file = bind.file.as_str();
    let previous = bind.value.as_deref().ok_or_else(missing)?;
    let exec = bind.exec_start.as_ref().ok_or_else(missing)?;
    let (index, port) = (exec.index, exec.port);
    let mut argv = exec.argv.clone();
    let word = argv.get_mut(index).ok_or_else(missing)?;
    *word = dropin::replace_host(word, previous, host, port);
    let note = format!("{unit} binds {host}, the address nginx dials (was {previous})");
    let after = dropin::render_dropin(&argv, exec.ignore_failure, &note);
    let path = PathBuf::from(file);
    let before_hash = match read(&path) {
        Ok(text) => Some(bytes_hash(text.as_bytes())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read `{file}`: {e}")),
    };
    Ok(PlannedAction::SetBindHost {
        unit: unit.to_string(),
        host: host.to_string(),
        previous: previous.to_string(),
        key: "ExecStart".into(),
        edit: FileEdit {
            path,
            before_hash,
            after,
        },
        daemon_reload: true,
    })
}

/// Sets the pool's `listen.owner`/`listen.group`/`listen.mode`, in the file and section the
/// pool is defined in.
fn plan_pool_listen(
    owner: &str,
    group: &str,
    mode: &str,
    target: &Target,
    read: ReadFile<'_>,
) -> Result<PlannedAction, String> {
    validate_account_name(owner).map_err(|e| format!("listen.owner: {e}"))?;
    validate_account_name(group).map_err(|e| format!("listen.group: {e}"))?;
    validate_socket_mode(mode).map_err(|e| format!("listen.mode: {e}"))?;
    let Some(pool) = &target.context.endpoint.pool else {
        return Err("no PHP-FPM pool is known to listen on this socket".into());
    };
    let (file, name) = (pool.file.as_str(), pool.name.as_str());
    let unit = pool.unit.as_str();
    let path = PathBuf::from(file);
    let before = read(&path).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let mut after = before.clone();
    let mut previous: [Option<String>; 3] = Default::default();
    for (slot, (key, value)) in previous.iter_mut().zip([
        ("listen.owner", owner),
        ("listen.group", group),
        ("listen.mode", mode),
    ]) {
        let (text, old) = set_ini_value(&after, name, key, value)
            .ok_or_else(|| format!("`{file}` has no `[{name}]` section"))?;
        after = text;
        *slot = old;
    }
    Ok(PlannedAction::SetPoolListen {
        unit: unit.to_string(),
        pool: name.to_string(),
        owner: owner.to_string(),
        group: group.to_string(),
        mode: mode.to_string(),
        previous,
        edit: FileEdit {
            path,
            before_hash: Some(bytes_hash(before.as_bytes())),
            after,
        },
    })
}

fn plan_site(
    template: &str,
    source: &str,
    target: &Target,
    read: ReadFile<'_>,
) -> Result<PlannedAction, String> {
    let rendered = render(source, &target.context.json())
        .map_err(|e| format!("template `{template}`: {e}"))?;
    let pass = &target.route.pass;
    let directive = validate_nginx_directive(&rendered, &pass.directive)
        .map_err(|e| format!("template `{template}` rendered `{}`: {e}", rendered.trim()))?;
    let path = pass.at.file.to_path_buf();
    let before = read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let span = Span {
        start: pass.at.start,
        end: pass.at.end,
    };
    let current = before.get(span.start..span.end).unwrap_or_default();
    if !current.starts_with(&pass.directive) {
        return Err(format!(
            "`{}` changed since the facts were taken",
            path.display()
        ));
    }
    let after = replace_span(&before, span, &directive)
        .ok_or_else(|| format!("`{}` changed since the facts were taken", path.display()))?;
    Ok(PlannedAction::RenderSite {
        directive,
        edit: FileEdit {
            path,
            before_hash: Some(bytes_hash(before.as_bytes())),
            after,
        },
    })
}

// ----- set_directive (nginx-side causes) -----

/// Plans `name value;` inside the target's location block: the directive written directly in
/// the block is replaced (its span only), else the new line is inserted above the pass directive
/// (or the block's first directive) with its indentation. Every other byte stays.
fn plan_set_directive(
    name: &str,
    value: &str,
    target: &Target,
    read: ReadFile<'_>,
) -> Result<PlannedAction, String> {
    let directive = validate_setting(name, value).map_err(|e| e.to_string())?;
    let Some(location) = &target.context.location else {
        return Err("the location block of this target is not known".into());
    };
    let (file, line, path_text) = (
        location.file.as_str(),
        location.line,
        location.path.as_str(),
    );
    let path = PathBuf::from(file);
    let before = read(&path).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let (after, previous) = set_in_location(
        &before,
        &path,
        line,
        &target.route.directive,
        name,
        &directive,
    )?;
    Ok(PlannedAction::SetDirective {
        directive,
        previous,
        location: path_text.to_string(),
        edit: FileEdit {
            path,
            before_hash: Some(bytes_hash(before.as_bytes())),
            after,
        },
    })
}

/// Sets `directive` (named `name`) in the `location` block that starts on `line` and holds a
/// `pass` directive; returns the new text and the value written there before.
pub fn set_in_location(
    text: &str,
    path: &Path,
    line: usize,
    pass: &str,
    name: &str,
    directive: &str,
) -> Result<(String, Option<String>), String> {
    let changed = || format!("`{}` changed since the facts were taken", path.display());
    let tree = crate::nginx_conf::parse(path, text, 0).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    collect_locations(&tree, line, &mut found);
    let location = match found.as_slice() {
        [one] => *one,
        [] => return Err(changed()),
        _ => {
            return Err(format!(
                "several locations start on line {line} of `{}`",
                path.display()
            ))
        }
    };
    if !holds_directive(location.children(), pass) {
        return Err(changed());
    }
    let children = location.children();
    if let Some(existing) = children.iter().find(|d| d.name == name) {
        let previous: Vec<&str> = existing.args.iter().map(|a| a.value.as_str()).collect();
        let after = replace_span(text, existing.span, directive).ok_or_else(changed)?;
        return Ok((after, Some(previous.join(" "))));
    }
    // Right above the pass directive when it is written in the block itself (so several
    // inserts keep their order), else above the block's first directive.
    let first = children
        .iter()
        .find(|d| d.name == pass)
        .or_else(|| children.first())
        .ok_or_else(changed)?;
    let line_start = text
        .get(..first.span.start)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let indent = text.get(line_start..first.span.start).ok_or_else(changed)?;
    let (at, insert) = if indent.chars().all(|c| c == ' ' || c == '\t') {
        (line_start, format!("{indent}{directive}\n"))
    } else {
        (first.span.start, format!("{directive} "))
    };
    let span = Span { start: at, end: at };
    let after = replace_span(text, span, &insert).ok_or_else(changed)?;
    Ok((after, None))
}

fn collect_locations<'d>(
    ds: &'d [crate::nginx_conf::Directive],
    line: usize,
    out: &mut Vec<&'d crate::nginx_conf::Directive>,
) {
    for d in ds {
        if d.name == "location" && d.block.is_some() && d.pos.line == line {
            out.push(d);
        }
        collect_locations(d.children(), line, out);
    }
}

fn holds_directive(ds: &[crate::nginx_conf::Directive], name: &str) -> bool {
    ds.iter()
        .any(|d| d.name == name || (d.name == "if" && holds_directive(d.children(), name)))
}
// ----- end of set_directive -----

/// Replaces the value of the last `KEY=` line (the one systemd uses), keeping `export` and the
/// quote style; returns the new text and the old value.
pub fn replace_env_value(text: &str, key: &str, value: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    fn assignment<'t>(line: &'t str, key: &str) -> Option<(&'t str, usize)> {
        let body = line.trim_end_matches(['\n', '\r']);
        let rest = body.trim_start();
        let rest = rest.strip_prefix("export ").unwrap_or(rest);
        let (k, old) = rest.split_once('=')?;
        (k.trim() == key).then_some((body, old.len()))
    }
    let index = lines.iter().rposition(|l| assignment(l, key).is_some())?;
    let line = lines.get(index)?;
    let (body, old_len) = assignment(line, key)?;
    let (prefix, old) = body.split_at(body.len() - old_len);
    let ending = &line[body.len()..];
    let quote = old
        .trim()
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'');
    let q = quote.map(String::from).unwrap_or_default();
    let previous = old.trim().trim_matches(['"', '\'']).to_string();
    let mut out = String::with_capacity(text.len() + value.len());
    for (i, l) in lines.iter().enumerate() {
        if i == index {
            out.push_str(&format!("{prefix}{q}{value}{q}{ending}"));
        } else {
            out.push_str(l);
        }
    }
    Some((out, previous))
}

fn unified_diff(edit: &FileEdit, read: ReadFile<'_>) -> String {
    let before = read(&edit.path).unwrap_or_default();
    let name = edit.path.display().to_string();
    similar::TextDiff::from_lines(&before, &edit.after)
        .unified_diff()
        .context_radius(2)
        .header(&name, &name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_in_location_inserts_or_replaces_and_keeps_every_other_byte() {
        let path = Path::new("/x.conf");
        let text = "server {\n    location / {\n        proxy_pass http://a;\n    }\n    location /b {\n\tproxy_buffer_size 4k;\n\tproxy_pass http://b;\n    }\n}\n";
        let (after, previous) = set_in_location(
            text,
            path,
            2,
            "proxy_pass",
            "proxy_buffer_size",
            "proxy_buffer_size 16k;",
        )
        .unwrap();
        assert_eq!(previous, None);
        assert_eq!(
            after,
            text.replace(
                "        proxy_pass http://a;",
                "        proxy_buffer_size 16k;\n        proxy_pass http://a;"
            )
        );
        let (after, previous) = set_in_location(
            text,
            path,
            5,
            "proxy_pass",
            "proxy_buffer_size",
            "proxy_buffer_size 16k;",
        )
        .unwrap();
        assert_eq!(previous.as_deref(), Some("4k"));
        assert_eq!(
            after,
            text.replace("proxy_buffer_size 4k;", "proxy_buffer_size 16k;")
        );
        let one_line = "location / { proxy_pass http://a; }\n";
        let (after, _) = set_in_location(
            one_line,
            path,
            1,
            "proxy_pass",
            "proxy_buffers",
            "proxy_buffers 4 16k;",
        )
        .unwrap();
        assert_eq!(
            after,
            "location / { proxy_buffers 4 16k; proxy_pass http://a; }\n"
        );
        assert!(set_in_location(
            text,
            path,
            3,
            "proxy_pass",
            "proxy_buffers",
            "proxy_buffers 4 16k;"
        )
        .unwrap_err()
        .contains("changed since the facts were taken"));
    }

    #[test]
    fn env_values_are_replaced_in_place() {
        let (after, old) =
            replace_env_value("# api\nHOST=127.0.0.2\nPORT=8000\n", "HOST", "127.0.0.1").unwrap();
        assert_eq!(after, "# api\nHOST=127.0.0.1\nPORT=8000\n");
        assert_eq!(old, "127.0.0.2");
        let (after, _) = replace_env_value("export HOST=\"::1\"\r\n", "HOST", "127.0.0.1").unwrap();
        assert_eq!(after, "export HOST=\"127.0.0.1\"\r\n");
        assert!(replace_env_value("PORT=1\n", "HOST", "x").is_none());
        let (after, _) = replace_env_value("HOST=a\nHOST=b\n", "HOST", "c").unwrap();
        assert_eq!(
            after, "HOST=a\nHOST=c\n",
            "the last assignment is the one systemd uses"
        );
    }
}
