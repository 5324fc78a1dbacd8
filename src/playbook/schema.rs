//! The serde shape of a playbook file. Nothing outside `playbook/` sees these types.
//!
//! The shape is deliberately loose where a check needs a location and every error at once
//! (conditions, durations, operations are strings or options here); `validate.rs` does the checks.

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::Severity;

/// One playbook file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaybookSpec {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub priority: u32,
    pub when: ConditionSpec,
    #[serde(default)]
    pub conclusive: Vec<ConditionSpec>,
    #[serde(default)]
    pub evidence: Vec<String>,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

/// A condition: exactly one of `all`, `any`, `not` or `fact` (with one test); `missing` only in
/// `conclusive` items.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConditionSpec {
    pub all: Option<Vec<ConditionSpec>>,
    pub any: Option<Vec<ConditionSpec>>,
    pub not: Option<Box<ConditionSpec>>,
    pub fact: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub is: Option<Value>,
    #[serde(rename = "in")]
    pub in_: Option<Vec<Value>>,
    pub exists: Option<bool>,
    pub count: Option<u64>,
    pub gt: Option<f64>,
    pub lt: Option<f64>,
    pub not_empty: Option<bool>,
    pub missing: Option<String>,
}

/// Keeps an explicit `null` as `Some(Value::Null)` so that it can be reported.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// One action: a mapping with exactly one key, the action kind.
///
/// serde_yaml reads enums from `!tags` only, so the single-key mapping is read by hand.
#[derive(Debug)]
pub(crate) enum ActionSpec {
    Systemd(SystemdSpec),
    SetBindHost(SetBindHostSpec),
    RenderSite(RenderSiteSpec),
    SetDirective(SetDirectiveSpec),
    WaitListen(WaitListenSpec),
    NginxTest,
    NginxReload,
    Probe(ProbeSpec),
    SetPoolListen(SetPoolListenSpec),
    Pm2(Pm2Spec),
}

/// The action kinds, as spelled in playbooks.
pub(crate) const ACTION_KINDS: &[&str] = &[
    "systemd",
    "set_bind_host",
    "render_site",
    "set_directive",
    "wait_listen",
    "nginx_test",
    "nginx_reload",
    "probe",
    "set_pool_listen",
    "pm2",
];

impl<'de> Deserialize<'de> for ActionSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ActionVisitor)
    }
}

struct ActionVisitor;

impl<'de> Visitor<'de> for ActionVisitor {
    type Value = ActionSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an action, a mapping with one key such as `systemd:`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActionSpec, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "empty action: an action is a mapping with one key, the action kind",
            ));
        };
        let action = match kind.as_str() {
            "systemd" => ActionSpec::Systemd(map.next_value()?),
            "set_bind_host" => ActionSpec::SetBindHost(map.next_value()?),
            "render_site" => ActionSpec::RenderSite(map.next_value()?),
            "set_directive" => ActionSpec::SetDirective(map.next_value()?),
            "wait_listen" => ActionSpec::WaitListen(map.next_value()?),
            "nginx_test" => {
                map.next_value::<Option<NoParams>>()?;
                ActionSpec::NginxTest
            }
            "nginx_reload" => {
                map.next_value::<Option<NoParams>>()?;
                ActionSpec::NginxReload
            }
            "probe" => ActionSpec::Probe(map.next_value()?),
            "set_pool_listen" => ActionSpec::SetPoolListen(map.next_value()?),
            "pm2" => ActionSpec::Pm2(map.next_value()?),
            other => return Err(de::Error::unknown_variant(other, ACTION_KINDS)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "an action has exactly one key, found `{kind}` and `{extra}`; make `{extra}` a separate list item"
            )));
        }
        Ok(action)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemdSpec {
    pub unit: String,
    pub op: String,
}

/// `pm2: {app, op}`: one PM2 app, never the daemon.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pm2Spec {
    pub app: String,
    pub op: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetBindHostSpec {
    pub host: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenderSiteSpec {
    pub template: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetDirectiveSpec {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitListenSpec {
    pub address: String,
    #[serde(deserialize_with = "scalar_text")]
    pub timeout: String,
}

/// `set_pool_listen: {owner, group, mode}`; `mode` may be written as a YAML number.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPoolListenSpec {
    pub owner: String,
    pub group: String,
    #[serde(deserialize_with = "scalar_text")]
    pub mode: String,
}

/// `nginx_test: {}` and `nginx_reload: {}` take no parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeSpec {
    pub url: String,
    pub expect: u16,
    #[serde(deserialize_with = "scalar_text")]
    pub timeout: String,
}

/// Reads a duration as text even when YAML typed it as a number (`timeout: 15`), so that the
/// semantic check can say "add a unit" instead of "expected a string".
fn scalar_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as `15s`")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Text)
}
