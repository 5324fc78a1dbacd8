//! The only YAML reader for playbooks: finds the files, parses each straight from its text (so
//! errors keep `file:line:col` and the field path), builds them, and checks the templates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::{Location, PlaybookError, PlaybookErrors, Stage};
use super::sample::sample_context;
use super::schema::{ActionSpec, PlaybookSpec};
use super::suggest;
use super::validate::{build, FieldPath, Seg, TemplateIndex};
use super::{Playbook, PlaybookSet};
use crate::engine::render::{self, RenderError};

/// Loads the playbooks of `dirs` (in order; a later dir overrides an earlier one's playbook with
/// the same id) with the `render_site` templates of `template_dirs`. A missing dir is skipped.
/// Fails with every error found, as [`check`] reports them.
pub fn load_dirs<P: AsRef<Path>, Q: AsRef<Path>>(
    dirs: &[P],
    template_dirs: &[Q],
) -> Result<PlaybookSet, PlaybookErrors> {
    let (set, errors) = load(dirs, template_dirs);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(PlaybookErrors(errors))
    }
}

/// Checks every playbook file of `dirs` and every template they use, and returns every error,
/// ordered by stage (parse, semantic, templates), then file and position.
pub fn check<P: AsRef<Path>, Q: AsRef<Path>>(
    dirs: &[P],
    template_dirs: &[Q],
) -> Vec<PlaybookError> {
    load(dirs, template_dirs).1
}

fn load<P: AsRef<Path>, Q: AsRef<Path>>(
    dirs: &[P],
    template_dirs: &[Q],
) -> (PlaybookSet, Vec<PlaybookError>) {
    let mut errors = Vec::new();
    let template_dirs: Vec<PathBuf> = template_dirs
        .iter()
        .map(|d| d.as_ref().to_path_buf())
        .collect();
    let templates = read_templates(&template_dirs, &mut errors);
    let sample = sample_context();

    let mut effective: BTreeMap<String, Playbook> = BTreeMap::new();
    let mut used_templates = BTreeSet::new();
    for dir in dirs {
        let dir = dir.as_ref();
        let Some(files) = list(dir, &["yaml", "yml"], &mut errors) else {
            continue;
        };
        let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            let text = match fs::read_to_string(&file) {
                Ok(text) => text,
                Err(err) => {
                    errors.push(io_error(&file, &err));
                    continue;
                }
            };
            let spec = match parse(&text) {
                Ok(spec) => spec,
                Err(mut err) => {
                    err.file = file;
                    errors.push(*err);
                    continue;
                }
            };
            for action in &spec.actions {
                if let ActionSpec::RenderSite(p) = action {
                    used_templates.insert(p.template.clone());
                }
            }
            if let Some(first) = ids.get(&spec.id) {
                errors.push(PlaybookError {
                    stage: Stage::Semantic,
                    location: locate(&text, &[Seg::Key("id".to_string())]),
                    field: Some("id".to_string()),
                    reason: format!("duplicate id `{}`", spec.id),
                    help: Some(format!(
                        "`{}` in the same dir has it already; ids are unique per dir (a later dir overrides an earlier one)",
                        first.file_name().unwrap_or_default().to_string_lossy()
                    )),
                    file: file.clone(),
                });
            } else {
                ids.insert(spec.id.clone(), file.clone());
            }
            match build(&spec, &file, &templates, &template_dirs, &sample) {
                Ok(playbook) => {
                    if let Some(old) = effective.insert(playbook.id.clone(), playbook) {
                        tracing::debug!(id = %old.id, overridden = %old.file.display(), "playbook overridden");
                    }
                }
                Err(issues) => errors.extend(issues.into_iter().map(|issue| PlaybookError {
                    stage: issue.stage,
                    location: locate(&text, &issue.path.0),
                    field: Some(issue.path.to_string()).filter(|f| !f.is_empty()),
                    reason: issue.reason,
                    help: issue.help,
                    file: file.clone(),
                })),
            }
        }
    }

    for name in &used_templates {
        if let Some((path, source)) = templates.get(name) {
            check_template(path, source, &sample, &mut errors);
        }
    }

    errors.sort_by(|a, b| (a.stage, &a.file, a.location).cmp(&(b.stage, &b.file, b.location)));
    (PlaybookSet::new(effective.into_values().collect()), errors)
}

/// The files of `dir` with one of `extensions`, sorted; `None` when the dir does not exist.
fn list(dir: &Path, extensions: &[&str], errors: &mut Vec<PlaybookError>) -> Option<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            errors.push(io_error(dir, &err));
            return None;
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let wanted = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| extensions.contains(&e));
                if wanted && path.is_file() {
                    files.push(path);
                }
            }
            Err(err) => errors.push(io_error(dir, &err)),
        }
    }
    files.sort();
    Some(files)
}

fn io_error(path: &Path, err: &io::Error) -> PlaybookError {
    PlaybookError {
        stage: Stage::Parse,
        file: path.to_path_buf(),
        location: None,
        field: None,
        reason: format!("cannot read: {err}"),
        help: None,
    }
}

/// Reads the `.hbs` files of the template dirs; a later dir overrides an earlier one's file.
fn read_templates(dirs: &[PathBuf], errors: &mut Vec<PlaybookError>) -> TemplateIndex {
    let mut index = TemplateIndex::new();
    for dir in dirs {
        for path in list(dir, &["hbs"], errors).unwrap_or_default() {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            match fs::read_to_string(&path) {
                Ok(text) => {
                    index.insert(name, (path, text));
                }
                Err(err) => errors.push(io_error(&path, &err)),
            }
        }
    }
    index
}

/// Renders a `render_site` template against the sample (once as a `proxy_pass` over http, once as
/// a `fastcgi_pass` without a scheme) and checks that the result is one safe directive.
fn check_template(path: &Path, source: &str, sample: &Value, errors: &mut Vec<PlaybookError>) {
    let mut fastcgi = sample.clone();
    if let Some(pass) = fastcgi.get_mut("pass").and_then(Value::as_object_mut) {
        pass.insert("directive".to_string(), Value::from("fastcgi_pass"));
        pass.insert("scheme".to_string(), Value::Null);
    }
    for (what, ctx) in [
        ("a `proxy_pass` target", sample),
        ("a `fastcgi_pass` target", &fastcgi),
    ] {
        let directive = ctx
            .pointer("/pass/directive")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let error = |location, reason: String, help| PlaybookError {
            stage: Stage::Templates,
            file: path.to_path_buf(),
            location,
            field: None,
            reason,
            help,
        };
        match render::render(source, ctx) {
            Ok(out) => {
                if let Err(err) = render::validate_nginx_directive(&out, directive) {
                    errors.push(error(
                        None,
                        format!("rendered for {what}: {err}"),
                        Some("render the whole pass directive on one line, as in `{{pass.directive}} …;`".to_string()),
                    ));
                    return;
                }
            }
            Err(err) => {
                let location = match &err {
                    RenderError::Syntax {
                        line: Some(line),
                        column: Some(column),
                        ..
                    } => Some(Location {
                        line: *line,
                        column: *column,
                    }),
                    _ => None,
                };
                let help = match &err {
                    RenderError::Missing { variable } if variable == "pass.scheme" => Some(
                        "fastcgi and uwsgi targets have no scheme: wrap it in `{{#if pass.scheme}}…{{/if}}`"
                            .to_string(),
                    ),
                    _ => None,
                };
                errors.push(error(location, format!("rendered for {what}: {err}"), help));
                return;
            }
        }
    }
}

/// Parses one playbook file; the error's `file` is left empty for the caller to fill.
fn parse(text: &str) -> Result<PlaybookSpec, Box<PlaybookError>> {
    let error = |location, field, reason, help| {
        Box::new(PlaybookError {
            stage: Stage::Parse,
            file: PathBuf::new(),
            location,
            field,
            reason,
            help,
        })
    };
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(error(
            None,
            None,
            "the file is empty".to_string(),
            Some(
                "a playbook needs `id`, `description`, `severity`, `priority` and `when`"
                    .to_string(),
            ),
        ));
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let segs: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let mut field = FieldPath(segs.clone());
        let inner = err.into_inner();
        let message = strip_yaml_decoration(&inner.to_string());
        // The path of an unknown field ends with the field itself; name the mapping instead.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let word = rest.split('`').next().unwrap_or_default();
            if matches!(field.0.last(), Some(Seg::Key(k)) if k == word) {
                field.0.pop();
            }
        }
        let location = inner
            .location()
            .map(|l| Location {
                line: l.line(),
                column: l.column(),
            })
            .or_else(|| locate(text, &segs));
        let (reason, help) = explain(&message, &field);
        let field = Some(field.to_string()).filter(|f| !f.is_empty());
        error(location, field, reason, help)
    })
}

/// Removes what serde_yaml adds to a message: ` at line L column C` and a leading `path: `.
fn strip_yaml_decoration(message: &str) -> String {
    let mut out = message.to_string();
    while let Some(start) = out.find(" at line ") {
        let rest = out.get(start + " at line ".len()..).unwrap_or_default();
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line_len = digits(rest);
        let after_line = rest.get(line_len..).unwrap_or_default();
        let Some(col) = after_line.strip_prefix(" column ") else {
            break;
        };
        let end = start + " at line ".len() + line_len + " column ".len() + digits(col);
        out.replace_range(start..end, "");
    }
    if let Some((prefix, rest)) = out.split_once(": ") {
        let is_path = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]?".contains(c));
        if is_path {
            out = rest.to_string();
        }
    }
    out
}

/// Turns a serde message into a reason in house style and, where possible, a help line.
fn explain(message: &str, field: &FieldPath) -> (String, Option<String>) {
    if let Some(rest) = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("unknown variant "))
    {
        let (word, candidates) = split_expected(rest);
        let in_actions =
            matches!(field.0.as_slice(), [Seg::Key(k), Seg::Index(_)] if k == "actions");
        let what = if message.starts_with("unknown field ") {
            "field"
        } else if in_actions {
            "action"
        } else {
            "value"
        };
        let help = if candidates.is_empty() {
            Some("this mapping takes no fields".to_string())
        } else {
            suggest::help(word, &candidates)
        };
        return (format!("unknown {what} `{word}`"), help);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return (
                    format!(
                        "expected {}, found {}",
                        expected_words(expected),
                        found_words(found)
                    ),
                    None,
                );
            }
        }
    }
    if message.starts_with("EOF while parsing") {
        return (
            "the document ends too early".to_string(),
            Some("a playbook is a mapping with `id`, `description`, `severity`, `priority` and `when`".to_string()),
        );
    }
    (message.to_string(), None)
}

/// Splits "`word`, expected one of `a`, `b`" into the word and the candidates.
fn split_expected(rest: &str) -> (&str, Vec<&str>) {
    let mut ticks = rest.split('`');
    let _ = ticks.next();
    let word = ticks.next().unwrap_or_default();
    let candidates = ticks
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, c)| c)
        .collect();
    (word, candidates)
}

fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a mapping".to_string(),
        "enum ActionSpec" => "an action, a mapping with one key such as `systemd:`".to_string(),
        "struct NoParams" => "an empty mapping `{}`".to_string(),
        other if other.starts_with("struct ") => "a mapping".to_string(),
        other if other.starts_with("enum ") => "one of the listed names".to_string(),
        other => other.to_string(),
    }
}

fn found_words(found: &str) -> String {
    if let Some(text) = found
        .strip_prefix("string \"")
        .and_then(|s| s.strip_suffix('"'))
    {
        return format!("`{text}`");
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(value) = found.strip_prefix(prefix) {
            return value.to_string();
        }
    }
    match found {
        "sequence" => "a list".to_string(),
        "map" => "a mapping".to_string(),
        "unit value" => "nothing".to_string(),
        other => other.to_string(),
    }
}

/// The position of the node at `path` in `text` (or of the nearest ancestor that exists).
///
/// serde_yaml does not expose node positions, but it stamps an error with the position of the
/// node being read; so walk to the node with a deserializer that fails there, and read the stamp.
pub(crate) fn locate(text: &str, path: &[Seg]) -> Option<Location> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match (Finder { path }).deserialize(deserializer) {
        Ok(()) => None,
        Err(err) => err.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
    }
}

struct Finder<'a> {
    path: &'a [Seg],
}

const STOP: &str = "located";

impl<'de> DeserializeSeed<'de> for Finder<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => deserializer.deserialize_any(Here),
            Some((Seg::Key(key), rest)) => deserializer.deserialize_map(Walk {
                key: Some(key),
                index: 0,
                rest,
            }),
            Some((Seg::Index(index), rest)) => deserializer.deserialize_seq(Walk {
                key: None,
                index: *index,
                rest,
            }),
        }
    }
}

/// Fails on whatever node it is given, so that the error carries that node's position.
struct Here;

impl Visitor<'_> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STOP)
    }
}

/// Walks into the entry `key` of a mapping, or the item `index` of a list.
struct Walk<'a> {
    key: Option<&'a str>,
    index: usize,
    rest: &'a [Seg],
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STOP)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            if self.key.is_some() && key.as_str() == self.key {
                return map.next_value_seed(Finder { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(serde::de::Error::custom(STOP))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            if self.key.is_none() && i == self.index {
                seq.next_element_seed(Finder { path: self.rest })?;
                return Err(serde::de::Error::custom(STOP));
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(serde::de::Error::custom(STOP));
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = "tests/fixtures/playbooks/bad";

    /// Every error of every file in `tests/fixtures/playbooks/bad/`, in one run, stage by stage.
    #[test]
    fn check_reports_every_error_of_every_file() {
        let errors: Vec<String> = check(&[BAD], &["templates"])
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            // parse / schema: one per file, the file stops there
            "tests/fixtures/playbooks/bad/empty.yml: the file is empty\n  help: a playbook needs `id`, `description`, `severity`, `priority` and `when`",
            "tests/fixtures/playbooks/bad/unknown-action.yaml:8:5: actions[1]: unknown action `wait_listn`\n  help: did you mean `wait_listen`?",
            "tests/fixtures/playbooks/bad/unknown-key.yaml:7:16: actions[0].systemd: unknown field `unti`\n  help: did you mean `unit`?",
            "tests/fixtures/playbooks/bad/wrong-type.yaml:4:11: priority: expected a whole number, found `high`",
            // semantic: every problem of a file
            "tests/fixtures/playbooks/bad/bad-duration.yaml:8:15: when.all[1].fact: unknown fact `unit.activ_state`\n  help: did you mean `unit.active_state`?",
            "tests/fixtures/playbooks/bad/bad-duration.yaml:10:43: actions[0].systemd.op: unknown operation `restrat`\n  help: did you mean `restart`?",
            "tests/fixtures/playbooks/bad/bad-duration.yaml:11:62: actions[1].wait_listen.timeout: invalid duration `15`\n  help: write a whole number above zero with a unit: `500ms`, `15s`, `2m` or `1h`",
            "tests/fixtures/playbooks/bad/bad-duration.yaml:12:43: actions[2].probe.expect: `42` is not an HTTP status\n  help: expect a status between 100 and 599, such as `200`",
            "tests/fixtures/playbooks/bad/bad-duration.yaml:12:56: actions[2].probe.timeout: invalid duration `1.5s`\n  help: write a whole number above zero with a unit: `500ms`, `15s`, `2m` or `1h`",
            "tests/fixtures/playbooks/bad/duplicate-id.yaml:1:5: id: duplicate id `bad-duration`\n  help: `bad-duration.yaml` in the same dir has it already; ids are unique per dir (a later dir overrides an earlier one)",
            "tests/fixtures/playbooks/bad/unsafe-actions.yaml:7:5: conclusive[0]: a `conclusive` item needs a `missing:` text\n  help: say what is missing and how to provide it",
            // templates: rendered strictly against the sample facts
            "tests/fixtures/playbooks/bad/bad-handlebars.yaml:7:5: evidence[0]: invalid template syntax at column 38 of the template: a `{{…}}` expression is malformed or not closed\n  help: handlebars variables look like `{{unit.name}}`",
            "tests/fixtures/playbooks/bad/bad-handlebars.yaml:8:5: evidence[1]: variable `unit.nme` is missing from the facts\n  help: did you mean `unit.name`?",
            "tests/fixtures/playbooks/bad/unsafe-actions.yaml:9:28: actions[0].set_bind_host.host: with the sample facts: `0.0.0.0` listens on every interface and would expose the backend around nginx\n  help: bind the exact address nginx dials: `{{endpoint.host}}`",
            "tests/fixtures/playbooks/bad/unsafe-actions.yaml:10:30: actions[1].render_site.template: template `pass-targt.hbs` not found in `templates`\n  help: did you mean `pass-target.hbs`?",
        ];
        assert_eq!(errors, expected);
    }

    #[test]
    fn load_dirs_fails_with_every_error() {
        let err = load_dirs(&[BAD], &["templates"]).unwrap_err();
        assert_eq!(err.0.len(), 15);
        assert!(err.to_string().starts_with("15 playbook errors found\n"));
    }

    #[test]
    fn missing_dirs_are_skipped() {
        let set = load_dirs(&["no/such/dir"], &["no/such/templates"]).unwrap();
        assert!(set.is_empty());
    }

    const HEAD: &str = "id: t\ndescription: d\nseverity: info\npriority: 1\n";

    /// `check` on one file holding `text`, with the temporary dir's prefix removed.
    fn errors_of(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.yaml"), text).unwrap();
        let prefix = format!("{}/", dir.path().display());
        check(&[dir.path()], &["templates"])
            .iter()
            .map(|e| e.to_string().replace(&prefix, ""))
            .collect()
    }

    fn errors_of_body(body: &str) -> Vec<String> {
        errors_of(&format!("{HEAD}{body}"))
    }

    #[test]
    fn yaml_syntax_errors_have_a_location() {
        assert_eq!(
            errors_of("id: t\n  description: [\n"),
            ["t.yaml:2:14: mapping values are not allowed in this context"]
        );
    }

    #[test]
    fn missing_and_unknown_top_level_fields() {
        assert_eq!(
            errors_of("id: t\ndescription: d\nseverity: info\npriority: 1\n"),
            ["t.yaml:1:1: missing field `when`"]
        );
        assert_eq!(
            errors_of_body("when: { fact: endpoint.listening, is: false }\nactons: []\n"),
            ["t.yaml:6:1: unknown field `actons`\n  help: did you mean `actions`?"]
        );
        assert_eq!(
            errors_of(&HEAD.replace("info", "critcal")),
            ["t.yaml:3:11: severity: unknown value `critcal`\n  help: did you mean `critical`?"]
        );
    }

    #[test]
    fn action_shapes() {
        let when = "when: { fact: endpoint.listening, is: false }\n";
        assert_eq!(
            errors_of_body(&format!("{when}actions:\n  - nginx_test\n")),
            ["t.yaml:7:5: actions[0]: expected an action, a mapping with one key such as `systemd:`, found `nginx_test`"]
        );
        assert_eq!(
            errors_of_body(&format!(
                "{when}actions:\n  - nginx_test:\n  - nginx_reload: {{}}\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            errors_of_body(&format!("{when}actions:\n  - nginx_test: {{}}\n    nginx_reload: {{}}\n")),
            ["t.yaml:7:5: actions[0]: an action has exactly one key, found `nginx_test` and `nginx_reload`; make `nginx_reload` a separate list item"]
        );
        assert_eq!(
            errors_of_body(&format!("{when}actions:\n  - nginx_test: {{ now: true }}\n")),
            ["t.yaml:7:19: actions[0].nginx_test: unknown field `now`\n  help: this mapping takes no fields"]
        );
        assert_eq!(
            errors_of_body(&format!(
                "{when}actions:\n  - systemd: {{ unit: x.service }}\n"
            )),
            ["t.yaml:7:14: actions[0].systemd: missing field `op`"]
        );
        assert_eq!(
            errors_of_body(&format!("{when}actions:\n  - probe: {{ url: \"{{{{site.url}}}}\", expect: ok, timeout: 1s }}\n")),
            ["t.yaml:7:43: actions[0].probe.expect: expected a whole number, found `ok`"]
        );
    }

    #[test]
    fn condition_shapes() {
        let errors = errors_of_body(
            "when:\n  all:\n    - { fact: endpoint.listening }\n    - { fact: unit.name, exists: true, is: x }\n    - { all: [], fact: x }\n    - { is: 1 }\n    - {}\n    - { fact: unit.other_ports.first, count: 1 }\n    - { fact: endpoint.port.x, gt: 1 }\n    - { fact: \"unit..name\", exists: true }\n    - { fact: unit.bind, is: null }\n    - { fact: unit.name, exists: true, missing: nope }\n    - { fact: unit.name, in: [] }\n    - { not: { fact: unit.nam, exists: true } }\n",
        );
        let expected = [
            "t.yaml:7:7: when.all[0]: `fact: endpoint.listening` needs a test\n  help: add one of `is`, `in`, `exists`, `count`, `gt`, `lt`, `not_empty`",
            "t.yaml:8:7: when.all[1]: `fact: unit.name` takes one test, found `is`, `exists`\n  help: combine tests with `all:`",
            "t.yaml:9:7: when.all[2]: a condition takes one of `all`, `any`, `not` or `fact`, found `all`, `fact`\n  help: nest them, as in `all: [ {fact: ..}, {not: ..} ]`",
            "t.yaml:10:7: when.all[3]: `is` needs `fact:` naming what it tests\n  help: write `{ fact: unit.active_state, is: active }`",
            "t.yaml:11:7: when.all[4]: empty condition\n  help: a condition is one of `all`, `any`, `not`, `fact`",
            "t.yaml:12:15: when.all[5].fact: `unit.other_ports` is a list; `first` is not an index\n  help: index it with a number, as in `unit.other_ports.0`",
            "t.yaml:13:15: when.all[6].fact: `endpoint.port` is a single value and has no `x`",
            "t.yaml:14:15: when.all[7].fact: `unit..name` is not a fact path\n  help: write dotted names such as `unit.active_state` or `unit.other_ports.0`",
            "t.yaml:15:30: when.all[8].is: a null value never matches: a null fact is absent\n  help: test absence with `exists: false`",
            "t.yaml:16:49: when.all[9].missing: `missing` only goes at the top of a `conclusive` item",
            "t.yaml:17:30: when.all[10].in: `in` needs at least one value",
            "t.yaml:18:22: when.all[11].not.fact: unknown fact `unit.nam`\n  help: did you mean `unit.name`?",
        ];
        assert_eq!(errors, expected);
    }

    #[test]
    fn template_files_are_rendered_for_proxy_and_fastcgi() {
        let playbooks = tempfile::tempdir().unwrap();
        let templates = tempfile::tempdir().unwrap();
        let body = "when: { fact: endpoint.listening, is: false }\nactions:\n  - render_site: { template: t.hbs }\n";
        std::fs::write(playbooks.path().join("t.yaml"), format!("{HEAD}{body}")).unwrap();
        let run = |template: &str| -> Vec<String> {
            std::fs::write(templates.path().join("t.hbs"), template).unwrap();
            let prefix = format!("{}/", templates.path().display());
            check(&[playbooks.path()], &[templates.path()])
                .iter()
                .map(|e| e.to_string().replace(&prefix, ""))
                .collect()
        };
        assert_eq!(
            run("{{pass.directive}} {{#if pass.scheme}}{{pass.scheme}}://{{/if}}{{endpoint.host}}:{{unit.other_ports.[0]}};\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            run("{{pass.directive}} {{pass.scheme}}://{{endpoint.host}}:{{unit.other_ports.[0]}};\n"),
            ["t.hbs: rendered for a `fastcgi_pass` target: variable `pass.scheme` is missing from the facts\n  help: fastcgi and uwsgi targets have no scheme: wrap it in `{{#if pass.scheme}}…{{/if}}`"]
        );
        assert_eq!(
            run("proxy_pass http://{{endpoint.host}}:{{unit.other_ports.[0]}};\n"),
            ["t.hbs: rendered for a `fastcgi_pass` target: the rendered directive is `proxy_pass`, expected `fastcgi_pass`\n  help: render the whole pass directive on one line, as in `{{pass.directive}} …;`"]
        );
        assert_eq!(
            run("{{pass.directive}} {{endpoint.address}};\nreturn 200;\n"),
            ["t.hbs: rendered for a `proxy_pass` target: the rendered directive spans several lines; it must be one `name arg...;` line\n  help: render the whole pass directive on one line, as in `{{pass.directive}} …;`"]
        );
        assert_eq!(
            run("{{pass.directive}}\n{{#if x}}"),
            ["t.hbs:2:10: rendered for a `proxy_pass` target: invalid template syntax at line 2, column 10 of the template: a `{{…}}` expression is malformed or not closed"]
        );
    }

    #[test]
    fn duplicate_ids_within_a_dir_are_errors_across_dirs_overrides() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let text = format!("{HEAD}when: {{ fact: endpoint.listening, is: false }}\n");
        std::fs::write(a.path().join("one.yaml"), &text).unwrap();
        std::fs::write(b.path().join("two.yaml"), &text).unwrap();
        let set = load_dirs(&[a.path(), b.path()], &["templates"]).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("t").unwrap().file, b.path().join("two.yaml"));
        std::fs::write(b.path().join("three.yml"), &text).unwrap();
        let errors = check(&[a.path(), b.path()], &["templates"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, b.path().join("two.yaml"));
        assert_eq!(errors[0].reason, "duplicate id `t`");
    }

    #[test]
    fn locate_finds_nodes_or_their_nearest_ancestor() {
        let text = "a:\n  b: [x, { c: 1 }]\nd: 2\n";
        let key = |k: &str| Seg::Key(k.to_string());
        let at = |path: &[Seg]| locate(text, path).map(|l| (l.line, l.column));
        assert_eq!(at(&[key("d")]), Some((3, 4)));
        assert_eq!(
            at(&[key("a"), key("b"), Seg::Index(1), key("c")]),
            Some((2, 15))
        );
        assert_eq!(at(&[key("a"), key("b"), Seg::Index(0)]), Some((2, 7)));
        assert_eq!(at(&[key("a"), key("zz")]), Some((2, 3)));
        assert_eq!(at(&[key("a"), key("b"), Seg::Index(9)]), Some((2, 6)));
    }

    #[test]
    fn serde_messages_lose_yaml_decoration() {
        assert_eq!(
            strip_yaml_decoration(
                "actions[0].systemd: unknown field `x`, expected `unit` at line 3 column 7"
            ),
            "unknown field `x`, expected `unit`"
        );
        assert_eq!(
            strip_yaml_decoration("invalid type: string \"a: b\", expected u32"),
            "invalid type: string \"a: b\", expected u32"
        );
    }
}
