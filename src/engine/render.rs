//! Strict handlebars rendering of playbook strings, and the checks a rendered value must pass
//! before it may reach an nginx configuration file or a backend's bind setting.
//!
//! Rendering is strict (a variable missing from the facts is an error, never an empty string) and
//! does no HTML escaping: the output goes into configuration files and unit names, not web pages.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use handlebars::{Handlebars, RenderErrorReason, Renderable, TemplateErrorReason};
use serde_json::Value;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template text is not valid handlebars.
    #[error("invalid template syntax{}: {reason}", at(*.line, *.column))]
    Syntax {
        /// What the parser objected to.
        reason: String,
        /// 1-based line inside the template, when known.
        line: Option<usize>,
        /// 1-based column inside the template, when known.
        column: Option<usize>,
    },
    /// The template names a variable the facts do not have (or that is null).
    #[error("variable `{variable}` is missing from the facts")]
    Missing {
        /// The variable path as written in the template.
        variable: String,
    },
    /// Any other failure while rendering (a helper misused, a partial that does not exist).
    #[error("template failed to render: {reason}")]
    Other {
        /// What handlebars reported.
        reason: String,
    },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(1), Some(column)) => format!(" at column {column} of the template"),
        (Some(line), Some(column)) => {
            format!(" at line {line}, column {column} of the template")
        }
        (Some(line), None) => format!(" at line {line} of the template"),
        _ => String::new(),
    }
}

impl RenderError {
    fn from_handlebars(err: &handlebars::RenderError) -> Self {
        match err.reason() {
            RenderErrorReason::TemplateError(template) => {
                let (line, column) = match template.pos() {
                    Some((line, column)) => (Some(line), Some(column)),
                    None => (None, None),
                };
                let reason = match template.reason() {
                    // The parser's own detail names grammar rules, which helps nobody.
                    TemplateErrorReason::InvalidSyntax(_) => {
                        "a `{{…}}` expression is malformed or not closed".to_string()
                    }
                    other => first_line(&other.to_string()),
                };
                RenderError::Syntax {
                    reason,
                    line,
                    column,
                }
            }
            RenderErrorReason::MissingVariable(Some(variable)) => RenderError::Missing {
                variable: variable.clone(),
            },
            RenderErrorReason::MissingVariable(None) => RenderError::Other {
                reason: "a looked-up value is missing from the facts".to_string(),
            },
            other => RenderError::Other {
                reason: first_line(&other.to_string()),
            },
        }
    }
}

/// Handlebars reports some errors over several lines (with an ASCII-art pointer); keep the first.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

fn registry() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry
    })
}

/// Renders `template` against `ctx` in strict mode, without HTML escaping.
///
/// A null fact counts as missing (handlebars alone would render it as an empty string, and
/// `proxy_pass http://:8000;` is worse than an error); `{{#if fact}}` still tests it safely.
pub fn render(template: &str, ctx: &Value) -> Result<String, RenderError> {
    render_in(template, &RenderContext::of(without_nulls(ctx.clone())))
}

/// A context made ready for rendering once, for several templates: without nulls, wrapped for
/// handlebars (which would otherwise copy the whole context per render).
pub struct RenderContext(handlebars::Context);

impl RenderContext {
    /// `ctx`, its nulls removed.
    pub fn of(ctx_without_nulls: Value) -> Self {
        Self(handlebars::Context::from(ctx_without_nulls))
    }
}

/// As [`render`], in a context made ready once. Each template text is compiled once per
/// process: a playbook set has few, rendered for thousands of targets.
pub fn render_in(template: &str, ctx: &RenderContext) -> Result<String, RenderError> {
    let compiled = compiled(template)?;
    let mut out = Rendered(String::new());
    let mut rc = handlebars::RenderContext::new(None);
    compiled
        .render(registry(), &ctx.0, &mut rc, &mut out)
        .map_err(|err| RenderError::from_handlebars(&err))?;
    Ok(out.0)
}

/// A rendered text that grows as it is written. Handlebars' own `StringOutput` starts at 8 KB
/// and keeps that capacity in the string it returns: one evidence line per finding held 8 KB,
/// 280 MB at 35,000 findings.
struct Rendered(String);

impl handlebars::Output for Rendered {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        self.0.push_str(seg);
        Ok(())
    }
}

/// The compiled template of `text`, from the process-wide cache.
fn compiled(text: &str) -> Result<Arc<handlebars::Template>, RenderError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<handlebars::Template>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let lock = |c: &'static Mutex<_>| c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(t) = lock(cache).get(text) {
        return Ok(Arc::clone(t));
    }
    let template = Arc::new(
        handlebars::Template::compile(text)
            .map_err(|err| RenderError::from_handlebars(&err.into()))?,
    );
    lock(cache).insert(text.to_string(), Arc::clone(&template));
    Ok(template)
}

/// Renders evidence lines, leaving out those that name a fact the context does not have (an
/// inconclusive finding often lacks the very facts some of its lines describe). Lines are
/// checked when playbooks load, so any other failure is left out too rather than aborting.
pub fn render_evidence(lines: &[String], ctx: &RenderContext) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| render_in(line, ctx).ok())
        .collect()
}

/// `ctx` with every null member of every mapping removed (list items keep their positions).
/// Conditions see no difference: a null fact is an absent one.
pub fn without_nulls(mut ctx: Value) -> Value {
    strip_nulls(&mut ctx);
    ctx
}

/// [`without_nulls`] in place: the maps are kept, not rebuilt (a target's context has hundreds
/// of members, and thousands of targets are evaluated per snapshot).
fn strip_nulls(ctx: &mut Value) {
    match ctx {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Checks that `template` is valid handlebars, without rendering it.
pub fn compile(template: &str) -> Result<(), RenderError> {
    handlebars::Template::compile(template)
        .map(|_| ())
        .map_err(|err| RenderError::from_handlebars(&err.into()))
}

/// Why a rendered value may not be written into an nginx file or a bind setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeValue {
    /// The value is empty.
    #[error("the value is empty")]
    Empty,
    /// The value contains a character nginx (or a shell-style config file) would read as syntax.
    #[error("`{value}` contains {what}, which would be read as configuration syntax")]
    Forbidden {
        /// The offending value, with control characters escaped.
        value: String,
        /// Which character, in words.
        what: &'static str,
    },
    /// A bind host that listens on every interface.
    #[error("`{value}` listens on every interface and would expose the backend around nginx")]
    Wildcard {
        /// The offending value.
        value: String,
    },
    /// Not a user or group name.
    #[error("`{value}` is not a user or group name")]
    AccountName {
        /// The offending value.
        value: String,
    },
    /// A socket mode that is not octal or grants too much.
    #[error("mode `{value}` {reason}")]
    Mode {
        /// The offending value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Checks one value (a host, a port, an address such as `127.0.0.1:8000` or `unix:/run/app.sock`)
/// before it is placed into an nginx directive: it must be non-empty and free of `;`, braces,
/// quotes, backslashes, whitespace (newlines included), control characters, `$` and `#`.
pub fn validate_nginx_value(value: &str) -> Result<(), UnsafeValue> {
    if value.is_empty() {
        return Err(UnsafeValue::Empty);
    }
    for c in value.chars() {
        let what = match c {
            ';' => "`;`",
            '{' | '}' => "a brace",
            '"' | '\'' | '`' => "a quote",
            '\\' => "a backslash",
            '$' => "`$` (a variable)",
            '#' => "`#` (a comment)",
            '\n' | '\r' => "a line break",
            c if c.is_whitespace() => "whitespace",
            c if c.is_control() => "a control character",
            _ => continue,
        };
        return Err(UnsafeValue::Forbidden {
            value: value.escape_debug().to_string(),
            what,
        });
    }
    Ok(())
}

/// Checks a host a backend is about to be bound to: a safe value that is not a wildcard
/// (`0.0.0.0`, `::`, `[::]`, `*`). The fix for a bind mismatch is the exact address nginx dials.
pub fn validate_bind_host(host: &str) -> Result<(), UnsafeValue> {
    validate_nginx_value(host)?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let unspecified = bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if unspecified || bare == "*" {
        return Err(UnsafeValue::Wildcard {
            value: host.to_string(),
        });
    }
    Ok(())
}

/// Checks a user or group name a socket is about to be given: what `useradd` accepts
/// (`[a-z_][a-z0-9_.-]*`, at most 32 characters, optionally ending in `$`).
pub fn validate_account_name(name: &str) -> Result<(), UnsafeValue> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(UnsafeValue::AccountName {
            value: name.to_string(),
        })
    }
}

/// Checks a socket mode: octal, and no bit for other users (a socket anybody may connect to
/// is never the fix; `0666` and `0777` least of all). The owner and group need read and write.
pub fn validate_socket_mode(mode: &str) -> Result<(), UnsafeValue> {
    let parsed = crate::facts::socket_access::parse_mode(mode);
    match parsed {
        None => Err(UnsafeValue::Mode {
            value: mode.to_string(),
            reason: "is not an octal mode such as `0660`".into(),
        }),
        Some(m) if m & 0o007 != 0 => Err(UnsafeValue::Mode {
            value: mode.to_string(),
            reason: "lets every local user connect to the backend".into(),
        }),
        Some(m) if m & 0o660 != 0o660 => Err(UnsafeValue::Mode {
            value: mode.to_string(),
            reason: "does not let both the owner and the group read and write the socket".into(),
        }),
        Some(m) if m & 0o7000 != 0 => Err(UnsafeValue::Mode {
            value: mode.to_string(),
            reason: "sets setuid, setgid or sticky bits, which a socket does not need".into(),
        }),
        Some(_) => Ok(()),
    }
}

/// Why a rendered directive may not replace the one in the nginx configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    /// Nothing but whitespace was rendered.
    #[error("the rendered directive is empty")]
    Empty,
    /// The rendered text spans several lines.
    #[error("the rendered directive spans several lines; it must be one `name arg...;` line")]
    MultiLine,
    /// The rendered text does not end with `;`.
    #[error("the rendered directive `{text}` does not end with `;`")]
    MissingSemicolon {
        /// The rendered text.
        text: String,
    },
    /// The directive name is not the one being replaced.
    #[error("the rendered directive is `{found}`, expected `{expected}`")]
    WrongName {
        /// The directive being replaced.
        expected: String,
        /// The directive that was rendered.
        found: String,
    },
    /// The directive has no arguments.
    #[error("the rendered directive `{name}` has no arguments")]
    NoArguments {
        /// The directive name.
        name: String,
    },
    /// An argument failed the value check.
    #[error("argument {index} of the rendered directive: {source}")]
    BadArgument {
        /// 1-based argument position.
        index: usize,
        /// What is wrong with it.
        source: UnsafeValue,
    },
}

/// Checks that `text` is exactly one `expected_name arg...;` line whose arguments pass
/// [`validate_nginx_value`], and returns it normalised (trimmed, single spaces).
pub fn validate_nginx_directive(text: &str, expected_name: &str) -> Result<String, DirectiveError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DirectiveError::Empty);
    }
    if text.contains(['\n', '\r']) {
        return Err(DirectiveError::MultiLine);
    }
    let body = text
        .strip_suffix(';')
        .ok_or_else(|| DirectiveError::MissingSemicolon {
            text: text.escape_debug().to_string(),
        })?;
    let mut words = body.split_whitespace();
    let name = words.next().ok_or(DirectiveError::Empty)?;
    if name != expected_name {
        return Err(DirectiveError::WrongName {
            expected: expected_name.to_string(),
            found: name.escape_debug().to_string(),
        });
    }
    let args: Vec<&str> = words.collect();
    if args.is_empty() {
        return Err(DirectiveError::NoArguments {
            name: name.to_string(),
        });
    }
    for (i, arg) in args.iter().enumerate() {
        validate_nginx_value(arg).map_err(|source| DirectiveError::BadArgument {
            index: i + 1,
            source,
        })?;
    }
    Ok(format!("{name} {};", args.join(" ")))
}

/// Why a `set_directive` name or value may not be written into a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// The name is not a `proxy_`/`fastcgi_`/`uwsgi_`/`scgi_`/`grpc_` directive.
    #[error("`{name}` is not a proxy_, fastcgi_, uwsgi_, scgi_ or grpc_ directive")]
    Name {
        /// The offending name, escaped.
        name: String,
    },
    /// The name is a pass directive (rewritten only by `render_site`).
    #[error("`{name}` is a pass directive; rewrite it with `render_site`")]
    Pass {
        /// The offending name.
        name: String,
    },
    /// The value is empty or has more than four words.
    #[error("the value must be one to four words separated by single spaces, found `{value}`")]
    Words {
        /// The offending value, escaped.
        value: String,
    },
    /// A word of the value failed the value check.
    #[error("word {index} of the value: {source}")]
    Word {
        /// 1-based word position.
        index: usize,
        /// Why the word is unsafe.
        source: UnsafeValue,
    },
}

/// Checks a directive `set_directive` may write inside a location: a lowercase
/// `proxy_`/`fastcgi_`/`uwsgi_`/`scgi_`/`grpc_` name that is not a pass directive, and one to four
/// words, each passing [`validate_nginx_value`]. Returns the directive as written: `name value;`.
pub fn validate_setting(name: &str, value: &str) -> Result<String, SettingError> {
    let family = ["proxy_", "fastcgi_", "uwsgi_", "scgi_", "grpc_"]
        .iter()
        .find_map(|p| name.strip_prefix(p));
    let well_formed = family.is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    });
    if !well_formed {
        return Err(SettingError::Name {
            name: name.escape_debug().to_string(),
        });
    }
    if name.ends_with("_pass") {
        return Err(SettingError::Pass {
            name: name.to_string(),
        });
    }
    let words: Vec<&str> = value.split(' ').collect();
    if value.is_empty() || words.len() > 4 {
        return Err(SettingError::Words {
            value: value.escape_debug().to_string(),
        });
    }
    for (i, word) in words.iter().enumerate() {
        validate_nginx_value(word).map_err(|source| SettingError::Word {
            index: i + 1,
            source,
        })?;
    }
    Ok(format!("{name} {value};"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_checked_before_they_reach_a_location() {
        assert_eq!(
            validate_setting("proxy_buffers", "4 16k"),
            Ok("proxy_buffers 4 16k;".to_string())
        );
        assert!(matches!(
            validate_setting("include", "/etc/passwd"),
            Err(SettingError::Name { .. })
        ));
        assert!(matches!(
            validate_setting("proxy_pass", "http://x"),
            Err(SettingError::Pass { .. })
        ));
        assert!(matches!(
            validate_setting("proxy_buffer_size", "16k; include /x"),
            Err(SettingError::Word { index: 1, .. })
        ));
        assert!(matches!(
            validate_setting("proxy_buffers", "4  16k"),
            Err(SettingError::Word { index: 2, .. })
        ));
        assert!(matches!(
            validate_setting("proxy_buffers", ""),
            Err(SettingError::Words { .. })
        ));
    }

    fn ctx() -> Value {
        json!({
            "pass": {"directive": "proxy_pass", "scheme": "http", "uri": ""},
            "endpoint": {"host": "127.0.0.1", "port": 18010, "path": null},
            "unit": {"name": "api.service", "other_ports": [18011]},
            "site": {"name": "<b>&"}
        })
    }

    #[test]
    fn renders_paths_and_array_indexes() {
        let out = render(
            "{{pass.directive}} {{pass.scheme}}://{{endpoint.host}}:{{unit.other_ports.[0]}}{{pass.uri}};",
            &ctx(),
        );
        assert_eq!(out, Ok("proxy_pass http://127.0.0.1:18011;".to_string()));
    }

    #[test]
    fn does_not_html_escape() {
        assert_eq!(render("{{site.name}}", &ctx()), Ok("<b>&".to_string()));
    }

    #[test]
    fn missing_variable_is_an_error() {
        assert_eq!(
            render("{{unit.nme}}", &ctx()),
            Err(RenderError::Missing {
                variable: "unit.nme".to_string()
            })
        );
        let err = render("{{unit.nme}}", &ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "variable `unit.nme` is missing from the facts"
        );
    }

    #[test]
    fn null_variable_is_an_error() {
        assert!(matches!(
            render("{{endpoint.path}}", &ctx()),
            Err(RenderError::Missing { .. })
        ));
    }

    #[test]
    fn evidence_leaves_out_lines_about_absent_facts() {
        let lines = vec![
            "nothing listens on {{endpoint.host}}".to_string(),
            "{{unit.nme}} is down".to_string(),
        ];
        assert_eq!(
            render_evidence(&lines, &RenderContext::of(without_nulls(ctx()))),
            ["nothing listens on 127.0.0.1"]
        );
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        assert!(render("{{unit.other_ports.[3]}}", &ctx()).is_err());
    }

    #[test]
    fn if_on_empty_or_null_takes_the_else_branch() {
        let ctx = json!({"pass": {"scheme": "", "none": null}});
        assert_eq!(
            render("{{#if pass.scheme}}x{{else}}y{{/if}}", &ctx),
            Ok("y".to_string())
        );
        assert_eq!(
            render("{{#if pass.none}}x{{else}}y{{/if}}", &ctx),
            Ok("y".to_string())
        );
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = render("{{unit.name", &ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid template syntax at column 12 of the template: a `{{…}}` expression is malformed or not closed"
        );
        let err = render("{{#if a}}\n{{/each}}", &ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid template syntax at line 2, column 1 of the template: helper \"if\" was opened, but \"each\" is closing"
        );
        assert!(compile("{{#if x}}").is_err());
        assert_eq!(compile("plain {{x}}"), Ok(()));
    }

    #[test]
    fn values_accept_addresses() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:18010",
            "[::1]:8000",
            "unix:/run/app.sock",
            "http://127.0.0.1:18011/api",
            "18010",
        ] {
            assert_eq!(validate_nginx_value(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn values_reject_injection() {
        for bad in [
            "127.0.0.1; include /etc/passwd",
            "127.0.0.1;",
            "x}",
            "{",
            "\"a\"",
            "'a'",
            "a b",
            "a\tb",
            "127.0.0.1\nproxy_pass evil",
            "$host",
            "a#b",
            "a\\b",
            "a\u{0}b",
        ] {
            assert!(validate_nginx_value(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(validate_nginx_value(""), Err(UnsafeValue::Empty));
        assert_eq!(
            validate_nginx_value("1.2.3.4;evil")
                .unwrap_err()
                .to_string(),
            "`1.2.3.4;evil` contains `;`, which would be read as configuration syntax"
        );
        assert_eq!(
            validate_nginx_value("a\nb").unwrap_err().to_string(),
            "`a\\nb` contains a line break, which would be read as configuration syntax"
        );
    }

    #[test]
    fn bind_host_rejects_wildcards() {
        for bad in ["0.0.0.0", "::", "[::]", "*", "0:0:0:0:0:0:0:0"] {
            assert!(
                matches!(validate_bind_host(bad), Err(UnsafeValue::Wildcard { .. })),
                "{bad}"
            );
        }
        assert_eq!(validate_bind_host("127.0.0.1"), Ok(()));
        assert_eq!(validate_bind_host("::1"), Ok(()));
        assert_eq!(validate_bind_host("localhost"), Ok(()));
        assert!(validate_bind_host("127.0.0.1 0.0.0.0").is_err());
    }

    #[test]
    fn directive_accepts_one_line() {
        assert_eq!(
            validate_nginx_directive("proxy_pass http://127.0.0.1:18011;\n", "proxy_pass"),
            Ok("proxy_pass http://127.0.0.1:18011;".to_string())
        );
        assert_eq!(
            validate_nginx_directive("fastcgi_pass  unix:/run/php.sock;", "fastcgi_pass"),
            Ok("fastcgi_pass unix:/run/php.sock;".to_string())
        );
    }

    #[test]
    fn directive_rejects_injection_and_shape_errors() {
        let check = |text: &str| validate_nginx_directive(text, "proxy_pass");
        assert_eq!(check("  \n"), Err(DirectiveError::Empty));
        assert_eq!(
            check("proxy_pass http://a;\nreturn 200;"),
            Err(DirectiveError::MultiLine)
        );
        assert!(matches!(
            check("proxy_pass http://a"),
            Err(DirectiveError::MissingSemicolon { .. })
        ));
        assert!(matches!(
            check("return 200;"),
            Err(DirectiveError::WrongName { .. })
        ));
        assert!(matches!(
            check("proxy_pass ;"),
            Err(DirectiveError::NoArguments { .. })
        ));
        assert!(matches!(
            check("proxy_pass http://a; return 200;"),
            Err(DirectiveError::BadArgument { index: 1, .. })
        ));
        assert!(matches!(
            check("proxy_pass http://a/$request_uri;"),
            Err(DirectiveError::BadArgument { .. })
        ));
        assert!(matches!(
            check("proxy_pass http://a} server {;"),
            Err(DirectiveError::BadArgument { .. })
        ));
        assert_eq!(
            check("proxy_pass http://a#x;").unwrap_err().to_string(),
            "argument 1 of the rendered directive: `http://a#x` contains `#` (a comment), which would be read as configuration syntax"
        );
    }
}
