//! Turns the serde types of `schema.rs` into a built [`Playbook`], collecting every problem with
//! the field path it concerns (`load.rs` turns paths into `line:col`).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::schema::{ActionSpec, ConditionSpec, PlaybookSpec};
use super::suggest;
use super::{
    parse_duration, Action, Condition, FactPath, FactTest, Playbook, Requirement, Stage, SystemdOp,
};
use crate::engine::render::{self, RenderError};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A field path such as `actions[2].systemd.unit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        FieldPath(segs)
    }

    fn index(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A problem found in one playbook, before it has a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub stage: Stage,
    pub path: FieldPath,
    pub reason: String,
    pub help: Option<String>,
}

/// The `.hbs` files found in the template dirs: name → (path, text).
pub(crate) type TemplateIndex = BTreeMap<String, (PathBuf, String)>;

const TESTS: [&str; 7] = ["is", "in", "exists", "count", "gt", "lt", "not_empty"];
const HEADS: [&str; 4] = ["all", "any", "not", "fact"];

struct Builder<'a> {
    sample: &'a Value,
    templates: &'a TemplateIndex,
    template_dirs: &'a [PathBuf],
    issues: Vec<Issue>,
}

impl Builder<'_> {
    fn issue(&mut self, stage: Stage, path: FieldPath, reason: String, help: Option<String>) {
        self.issues.push(Issue {
            stage,
            path,
            reason,
            help,
        });
    }

    fn condition(&mut self, spec: &ConditionSpec, path: &FieldPath) -> Option<Condition> {
        let heads: Vec<&str> = [
            spec.all.is_some(),
            spec.any.is_some(),
            spec.not.is_some(),
            spec.fact.is_some(),
        ]
        .iter()
        .zip(HEADS)
        .filter_map(|(present, name)| present.then_some(name))
        .collect();
        let tests = present_tests(spec);
        match heads.as_slice() {
            [] if tests.is_empty() => {
                self.issue(
                    Stage::Semantic,
                    path.clone(),
                    "empty condition".to_string(),
                    Some(format!("a condition is one of {}", suggest::quoted(&HEADS))),
                );
                None
            }
            [] => {
                self.issue(
                    Stage::Semantic,
                    path.clone(),
                    format!(
                        "`{}` needs `fact:` naming what it tests",
                        tests.join("`, `")
                    ),
                    Some("write `{ fact: unit.active_state, is: active }`".to_string()),
                );
                None
            }
            [_, _, ..] => {
                self.issue(
                    Stage::Semantic,
                    path.clone(),
                    format!(
                        "a condition takes one of `all`, `any`, `not` or `fact`, found {}",
                        suggest::quoted(&heads)
                    ),
                    Some("nest them, as in `all: [ {fact: ..}, {not: ..} ]`".to_string()),
                );
                None
            }
            ["fact"] => self.fact(spec, path, &tests),
            [head] => {
                if let Some(test) = tests.first() {
                    self.issue(
                        Stage::Semantic,
                        path.clone(),
                        format!("`{test}` goes with `fact`, not with `{head}`"),
                        None,
                    );
                }
                if let Some(not) = &spec.not {
                    let inner = self.nested(not, &path.key("not"))?;
                    return Some(Condition::Not(Box::new(inner)));
                }
                let (list, is_all) = match (&spec.all, &spec.any) {
                    (Some(list), _) => (list, true),
                    (None, Some(list)) => (list, false),
                    (None, None) => return None,
                };
                let list_path = path.key(head);
                if list.is_empty() {
                    self.issue(
                        Stage::Semantic,
                        list_path.clone(),
                        format!("`{head}` needs at least one condition"),
                        None,
                    );
                }
                let mut built = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    if let Some(c) = self.nested(item, &list_path.index(i)) {
                        built.push(c);
                    }
                }
                let complete = built.len() == list.len() && tests.is_empty();
                complete.then_some(if is_all {
                    Condition::All(built)
                } else {
                    Condition::Any(built)
                })
            }
        }
    }

    /// A condition below the top of `when` or a `conclusive` item, where `missing` has no place.
    fn nested(&mut self, spec: &ConditionSpec, path: &FieldPath) -> Option<Condition> {
        if spec.missing.is_some() {
            self.issue(
                Stage::Semantic,
                path.key("missing"),
                "`missing` only goes at the top of a `conclusive` item".to_string(),
                None,
            );
        }
        self.condition(spec, path)
    }

    fn fact(
        &mut self,
        spec: &ConditionSpec,
        path: &FieldPath,
        tests: &[&str],
    ) -> Option<Condition> {
        let text = spec.fact.as_deref().unwrap_or_default();
        let fact_path = match FactPath::parse(text) {
            Some(fact_path) => {
                if let Err((reason, help)) = known_fact(fact_path.segments(), self.sample) {
                    self.issue(Stage::Semantic, path.key("fact"), reason, help);
                }
                Some(fact_path)
            }
            None => {
                self.issue(
                    Stage::Semantic,
                    path.key("fact"),
                    format!("`{text}` is not a fact path"),
                    Some(
                        "write dotted names such as `unit.active_state` or `unit.other_ports.0`"
                            .to_string(),
                    ),
                );
                None
            }
        };
        let test = match tests {
            [] => {
                self.issue(
                    Stage::Semantic,
                    path.clone(),
                    format!("`fact: {text}` needs a test"),
                    Some(format!("add one of {}", suggest::quoted(&TESTS))),
                );
                None
            }
            [_, _, ..] => {
                self.issue(
                    Stage::Semantic,
                    path.clone(),
                    format!(
                        "`fact: {text}` takes one test, found {}",
                        suggest::quoted(tests)
                    ),
                    Some("combine tests with `all:`".to_string()),
                );
                None
            }
            [_] => self.test(spec, path),
        };
        Some(Condition::Fact {
            path: fact_path?,
            test: test?,
        })
    }

    fn test(&mut self, spec: &ConditionSpec, path: &FieldPath) -> Option<FactTest> {
        if let Some(value) = &spec.is {
            if value.is_null() {
                self.null_test(path.key("is"));
                return None;
            }
            return Some(FactTest::Is(value.clone()));
        }
        if let Some(values) = &spec.in_ {
            if values.is_empty() {
                self.issue(
                    Stage::Semantic,
                    path.key("in"),
                    "`in` needs at least one value".to_string(),
                    None,
                );
                return None;
            }
            if let Some(i) = values.iter().position(Value::is_null) {
                self.null_test(path.key("in").index(i));
                return None;
            }
            return Some(FactTest::In(values.clone()));
        }
        let test = if let Some(b) = spec.exists {
            FactTest::Exists(b)
        } else if let Some(n) = spec.count {
            FactTest::Count(n)
        } else if let Some(n) = spec.gt {
            FactTest::Gt(n)
        } else if let Some(n) = spec.lt {
            FactTest::Lt(n)
        } else {
            FactTest::NotEmpty(spec.not_empty?)
        };
        Some(test)
    }

    fn null_test(&mut self, path: FieldPath) {
        self.issue(
            Stage::Semantic,
            path,
            "a null value never matches: a null fact is absent".to_string(),
            Some("test absence with `exists: false`".to_string()),
        );
    }

    /// Renders a template against the sample context, reporting failures; the output on success.
    fn template(&mut self, text: &str, path: &FieldPath) -> Option<String> {
        match render::render(text, self.sample) {
            Ok(out) => Some(out),
            Err(err) => {
                let help = match &err {
                    RenderError::Missing { variable } => missing_help(variable, self.sample),
                    RenderError::Syntax { .. } => {
                        Some("handlebars variables look like `{{unit.name}}`".to_string())
                    }
                    RenderError::Other { .. } => None,
                };
                self.issue(Stage::Templates, path.clone(), err.to_string(), help);
                None
            }
        }
    }

    fn duration(&mut self, text: &str, path: FieldPath) -> Option<std::time::Duration> {
        let duration = parse_duration(text);
        if duration.is_none() {
            self.issue(
                Stage::Semantic,
                path,
                format!("invalid duration `{text}`"),
                Some(
                    "write a whole number above zero with a unit: `500ms`, `15s`, `2m` or `1h`"
                        .to_string(),
                ),
            );
        }
        duration
    }

    fn action(&mut self, spec: &ActionSpec, path: &FieldPath) -> Option<Action> {
        match spec {
            ActionSpec::Systemd(p) => {
                let path = path.key("systemd");
                let unit = self.template(&p.unit, &path.key("unit"));
                if let Some(unit) = unit.filter(|u| u.is_empty() || u.contains(char::is_whitespace))
                {
                    self.issue(
                        Stage::Templates,
                        path.key("unit"),
                        format!("renders to `{unit}`, which is not a unit name"),
                        None,
                    );
                }
                let op = SystemdOp::parse(&p.op);
                if op.is_none() {
                    self.issue(
                        Stage::Semantic,
                        path.key("op"),
                        format!("unknown operation `{}`", p.op),
                        suggest::help(&p.op, &SystemdOp::NAMES),
                    );
                }
                Some(Action::Systemd {
                    unit: p.unit.clone(),
                    op: op?,
                })
            }
            ActionSpec::Pm2(p) => {
                let path = path.key("pm2");
                let app = self.template(&p.app, &path.key("app"));
                if let Some(app) = app.filter(|a| a.is_empty() || a.contains(char::is_whitespace)) {
                    self.issue(
                        Stage::Templates,
                        path.key("app"),
                        format!("renders to `{app}`, which is not a PM2 app name"),
                        None,
                    );
                }
                let op = crate::playbook::Pm2Op::parse(&p.op);
                if op.is_none() {
                    self.issue(
                        Stage::Semantic,
                        path.key("op"),
                        format!("unknown operation `{}`", p.op),
                        suggest::help(&p.op, &crate::playbook::Pm2Op::NAMES),
                    );
                }
                Some(Action::Pm2 {
                    app: p.app.clone(),
                    op: op?,
                })
            }
            ActionSpec::SetBindHost(p) => {
                let path = path.key("set_bind_host").key("host");
                if let Some(host) = self.template(&p.host, &path) {
                    if let Err(err) = render::validate_bind_host(&host) {
                        self.issue(
                            Stage::Templates,
                            path.clone(),
                            format!("with the sample facts: {err}"),
                            Some(
                                "bind the exact address nginx dials: `{{endpoint.host}}`"
                                    .to_string(),
                            ),
                        );
                    }
                }
                Some(Action::SetBindHost {
                    host: p.host.clone(),
                })
            }
            ActionSpec::SetPoolListen(p) => {
                let path = path.key("set_pool_listen");
                for (field, text) in [("owner", &p.owner), ("group", &p.group)] {
                    if let Some(name) = self.template(text, &path.key(field)) {
                        if let Err(err) = render::validate_account_name(&name) {
                            self.issue(
                                Stage::Templates,
                                path.key(field),
                                format!("with the sample facts: {err}"),
                                Some(format!(
                                    "name nginx's worker {}: `{{{{nginx.{}}}}}`",
                                    if field == "owner" { "user" } else { "group" },
                                    if field == "owner" { "user" } else { "group" }
                                )),
                            );
                        }
                    }
                }
                match render::validate_socket_mode(&p.mode) {
                    Ok(()) => Some(Action::SetPoolListen {
                        owner: p.owner.clone(),
                        group: p.group.clone(),
                        mode: p.mode.trim().to_string(),
                    }),
                    Err(err) => {
                        self.issue(
                            Stage::Semantic,
                            path.key("mode"),
                            err.to_string(),
                            Some(
                                "grant nginx's user through the owner or the group: `0660`"
                                    .to_string(),
                            ),
                        );
                        None
                    }
                }
            }
            ActionSpec::RenderSite(p) => {
                let path = path.key("render_site").key("template");
                let name = p.template.as_str();
                let plain = !name.is_empty()
                    && !name.starts_with('.')
                    && !name.contains(['/', '\\'])
                    && !name.contains("{{");
                if !plain {
                    self.issue(
                        Stage::Semantic,
                        path,
                        format!("`{name}` is not a template file name"),
                        Some(
                            "name a file in a template dir, such as `pass-target.hbs`".to_string(),
                        ),
                    );
                    return None;
                }
                match self.templates.get(name) {
                    Some((_, source)) => Some(Action::RenderSite {
                        template: name.to_string(),
                        source: source.clone(),
                    }),
                    None => {
                        let names: Vec<&str> = self.templates.keys().map(String::as_str).collect();
                        let dirs: Vec<String> = self
                            .template_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect();
                        let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
                        let help = suggest::closest(name, names.iter().copied())
                            .map(|best| format!("did you mean `{best}`?"))
                            .unwrap_or_else(|| format!("add `{name}` to a template dir"));
                        self.issue(
                            Stage::Templates,
                            path,
                            format!(
                                "template `{name}` not found in {}",
                                if dirs.is_empty() {
                                    "any template dir (none is configured)".to_string()
                                } else {
                                    suggest::quoted(&dirs)
                                }
                            ),
                            Some(help),
                        );
                        None
                    }
                }
            }
            ActionSpec::SetDirective(p) => {
                let path = path.key("set_directive");
                let name = self.template(&p.name, &path.key("name"));
                let value = self.template(&p.value, &path.key("value"));
                if let (Some(name), Some(value)) = (name, value) {
                    if let Err(err) = render::validate_setting(&name, &value) {
                        let field = match err {
                            render::SettingError::Name { .. }
                            | render::SettingError::Pass { .. } => "name",
                            _ => "value",
                        };
                        self.issue(
                            Stage::Templates,
                            path.key(field),
                            format!("with the sample facts: {err}"),
                            Some(
                                "set one buffer or timeout directive, as in `name: \"{{location.prefix}}_buffer_size\"`"
                                    .to_string(),
                            ),
                        );
                    }
                }
                Some(Action::SetDirective {
                    name: p.name.clone(),
                    value: p.value.clone(),
                })
            }
            ActionSpec::WaitListen(p) => {
                let path = path.key("wait_listen");
                if let Some(address) = self.template(&p.address, &path.key("address")) {
                    if let Err(err) = render::validate_nginx_value(&address) {
                        self.issue(
                            Stage::Templates,
                            path.key("address"),
                            format!("with the sample facts: {err}"),
                            None,
                        );
                    }
                }
                let timeout = self.duration(&p.timeout, path.key("timeout"));
                Some(Action::WaitListen {
                    address: p.address.clone(),
                    timeout: timeout?,
                })
            }
            ActionSpec::NginxTest => Some(Action::NginxTest),
            ActionSpec::NginxReload => Some(Action::NginxReload),
            ActionSpec::Probe(p) => {
                let path = path.key("probe");
                if let Some(url) = self.template(&p.url, &path.key("url")) {
                    let http = url.starts_with("http://") || url.starts_with("https://");
                    if !http || url.contains(char::is_whitespace) {
                        self.issue(
                            Stage::Templates,
                            path.key("url"),
                            format!(
                                "renders to `{}`, which is not an http(s) URL",
                                url.escape_debug()
                            ),
                            Some("probe the site, as in `{{site.url}}`".to_string()),
                        );
                    }
                }
                let expect_ok = (100..=599).contains(&p.expect);
                if !expect_ok {
                    self.issue(
                        Stage::Semantic,
                        path.key("expect"),
                        format!("`{}` is not an HTTP status", p.expect),
                        Some("expect a status between 100 and 599, such as `200`".to_string()),
                    );
                }
                let timeout = self.duration(&p.timeout, path.key("timeout"));
                expect_ok.then_some(())?;
                Some(Action::Probe {
                    url: p.url.clone(),
                    expect: p.expect,
                    timeout: timeout?,
                })
            }
        }
    }
}

fn present_tests(spec: &ConditionSpec) -> Vec<&'static str> {
    [
        spec.is.is_some(),
        spec.in_.is_some(),
        spec.exists.is_some(),
        spec.count.is_some(),
        spec.gt.is_some(),
        spec.lt.is_some(),
        spec.not_empty.is_some(),
    ]
    .iter()
    .zip(TESTS)
    .filter_map(|(present, name)| present.then_some(name))
    .collect()
}

/// Checks a fact path against the sample context. Below a null or an empty list, anything goes.
fn known_fact(segments: &[String], sample: &Value) -> Result<(), (String, Option<String>)> {
    let mut value = sample;
    for (i, segment) in segments.iter().enumerate() {
        let walked = segments.get(..i).unwrap_or_default().join(".");
        value = match value {
            Value::Object(map) => match map.get(segment) {
                Some(next) => next,
                None => {
                    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    let whole = segments.join(".");
                    let help = match suggest::closest(segment, keys.iter().copied()) {
                        Some(best) => {
                            let mut fixed = segments.to_vec();
                            if let Some(slot) = fixed.get_mut(i) {
                                *slot = best.to_string();
                            }
                            format!("did you mean `{}`?", fixed.join("."))
                        }
                        None if walked.is_empty() => {
                            format!("facts start with one of {}", suggest::quoted(&keys))
                        }
                        None => format!("`{walked}` has {}", suggest::quoted(&keys)),
                    };
                    return Err((format!("unknown fact `{whole}`"), Some(help)));
                }
            },
            Value::Array(items) => {
                if segment.parse::<usize>().is_err() {
                    return Err((
                        format!("`{walked}` is a list; `{segment}` is not an index"),
                        Some(format!("index it with a number, as in `{walked}.0`")),
                    ));
                }
                match items.first() {
                    Some(first) => first,
                    None => return Ok(()),
                }
            }
            Value::Null => return Ok(()),
            _ => {
                return Err((
                    format!("`{walked}` is a single value and has no `{segment}`"),
                    None,
                ))
            }
        };
    }
    Ok(())
}

/// Help for a template variable missing from the sample context.
fn missing_help(variable: &str, sample: &Value) -> Option<String> {
    let segments: Vec<String> = variable
        .split('.')
        .map(|s| s.trim_start_matches('[').trim_end_matches(']').to_string())
        .collect();
    match known_fact(&segments, sample) {
        Err((_, help)) => help,
        Ok(()) => Some(format!(
            "`{variable}` can be absent; guard it with `{{{{#if {variable}}}}}`"
        )),
    }
}

/// Builds one playbook, or returns every problem found in it.
pub(crate) fn build(
    spec: &PlaybookSpec,
    file: &Path,
    templates: &TemplateIndex,
    template_dirs: &[PathBuf],
    sample: &Value,
) -> Result<Playbook, Vec<Issue>> {
    let mut b = Builder {
        sample,
        templates,
        template_dirs,
        issues: Vec::new(),
    };
    let root = FieldPath::default();

    let id_ok = !spec.id.is_empty()
        && spec
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        let mut fixed = String::new();
        for c in spec.id.chars() {
            let c = c.to_ascii_lowercase();
            let _ = fixed.write_char(if c.is_ascii_alphanumeric() { c } else { '-' });
        }
        b.issue(
            Stage::Semantic,
            root.key("id"),
            format!("invalid id `{}`", spec.id),
            Some(if fixed.is_empty() {
                "an id holds lowercase letters, digits and `-`".to_string()
            } else {
                format!("an id holds lowercase letters, digits and `-`, such as `{fixed}`")
            }),
        );
    }
    if spec.description.trim().is_empty() {
        b.issue(
            Stage::Semantic,
            root.key("description"),
            "the description is empty".to_string(),
            Some("say in one line what the cause is".to_string()),
        );
    }

    let when_path = root.key("when");
    let when = b.nested(&spec.when, &when_path);

    let mut conclusive = Vec::new();
    for (i, item) in spec.conclusive.iter().enumerate() {
        let path = root.key("conclusive").index(i);
        let condition = b.condition(item, &path);
        let missing = match item.missing.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => Some(text.to_string()),
            _ => {
                b.issue(
                    Stage::Semantic,
                    path.clone(),
                    "a `conclusive` item needs a `missing:` text".to_string(),
                    Some("say what is missing and how to provide it".to_string()),
                );
                None
            }
        };
        if let (Some(condition), Some(missing)) = (condition, missing) {
            conclusive.push(Requirement { condition, missing });
        }
    }

    for (i, line) in spec.evidence.iter().enumerate() {
        b.template(line, &root.key("evidence").index(i));
    }

    let mut actions = Vec::new();
    for (i, spec) in spec.actions.iter().enumerate() {
        if let Some(action) = b.action(spec, &root.key("actions").index(i)) {
            actions.push(action);
        }
    }

    if !b.issues.is_empty() {
        return Err(b.issues);
    }
    match when {
        Some(when) => Ok(Playbook {
            id: spec.id.clone(),
            description: spec.description.trim().to_string(),
            severity: spec.severity,
            priority: spec.priority,
            when,
            conclusive,
            evidence: spec.evidence.clone(),
            actions,
            file: file.to_path_buf(),
        }),
        // Unreachable: a condition that did not build always leaves an issue.
        None => Err(vec![Issue {
            stage: Stage::Semantic,
            path: when_path,
            reason: "invalid condition".to_string(),
            help: None,
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        super::super::sample_context()
    }

    #[test]
    fn field_paths_display_like_serde_path_to_error() {
        let path = FieldPath::default()
            .key("actions")
            .index(2)
            .key("systemd")
            .key("unit");
        assert_eq!(path.to_string(), "actions[2].systemd.unit");
    }

    #[test]
    fn known_facts_are_checked_against_the_sample() {
        let s = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(known_fact(&s("unit.active_state"), &sample()), Ok(()));
        assert_eq!(known_fact(&s("unit.other_ports.0"), &sample()), Ok(()));
        assert_eq!(known_fact(&s("endpoint.listener.pid"), &sample()), Ok(()));
        assert_eq!(
            known_fact(&s("unit.activ_state"), &sample()),
            Err((
                "unknown fact `unit.activ_state`".to_string(),
                Some("did you mean `unit.active_state`?".to_string())
            ))
        );
        assert_eq!(
            known_fact(&s("unit.other_ports.first"), &sample()).map_err(|e| e.0),
            Err("`unit.other_ports` is a list; `first` is not an index".to_string())
        );
        assert_eq!(
            known_fact(&s("endpoint.port.x"), &sample()).map_err(|e| e.0),
            Err("`endpoint.port` is a single value and has no `x`".to_string())
        );
    }

    #[test]
    fn missing_help_suggests_the_close_variable() {
        assert_eq!(
            missing_help("unit.nme", &sample()),
            Some("did you mean `unit.name`?".to_string())
        );
        assert_eq!(
            missing_help("endpoint.listener", &sample()),
            Some(
                "`endpoint.listener` can be absent; guard it with `{{#if endpoint.listener}}`"
                    .to_string()
            )
        );
    }
}
