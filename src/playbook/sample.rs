//! The built-in sample context that playbook fact paths and templates are checked against.

use super::context::TargetContext;
use serde_json::Value;

/// [`TargetContext::sample`] as the JSON playbooks see: every path the engine builds, so that
/// strict rendering and fact-path checks can see them. A path missing here is reported as an
/// unknown fact by `playbooks check`.
pub fn sample_context() -> Value {
    serde_json::to_value(TargetContext::sample()).unwrap_or(Value::Null)
}
