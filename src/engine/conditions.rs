//! Pure evaluation of playbook conditions against one target's context.
//!
//! A fact path through a missing or null value is absent; every test on an absent fact is false,
//! except `exists: false`.

use serde_json::Value;

use crate::playbook::{Condition, FactPath, FactTest, Requirement};

/// What conditions look facts up in: a whole context as JSON, or one that makes each top-level
/// section JSON only when a condition first reads it (`engine::evaluate`).
pub trait Facts {
    /// The value at `path`, or `None` when the path is absent (missing, or through or onto
    /// null).
    fn fact(&self, path: &FactPath) -> Option<&Value>;
}

impl Facts for Value {
    fn fact(&self, path: &FactPath) -> Option<&Value> {
        lookup(path, self)
    }
}

/// Whether `condition` holds in `ctx`.
pub fn evaluate<C: Facts + ?Sized>(condition: &Condition, ctx: &C) -> bool {
    match condition {
        Condition::All(conditions) => conditions.iter().all(|c| evaluate(c, ctx)),
        Condition::Any(conditions) => conditions.iter().any(|c| evaluate(c, ctx)),
        Condition::Not(condition) => !evaluate(condition, ctx),
        Condition::Fact { path, test } => test_fact(ctx.fact(path), test),
    }
}

/// The `missing` texts of the requirements that do not hold in `ctx`, in order.
pub fn unmet<C: Facts + ?Sized>(requirements: &[Requirement], ctx: &C) -> Vec<String> {
    requirements
        .iter()
        .filter(|r| !evaluate(&r.condition, ctx))
        .map(|r| r.missing.clone())
        .collect()
}

/// The value at `path`, or `None` when the path is absent (missing, or through or onto null).
pub fn lookup<'a>(path: &FactPath, ctx: &'a Value) -> Option<&'a Value> {
    lookup_in(path.segments(), ctx)
}

/// [`lookup`] of the segments `path` below `value`.
pub fn lookup_in<'a>(path: &[String], mut value: &'a Value) -> Option<&'a Value> {
    for segment in path {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!value.is_null()).then_some(value)
}

fn test_fact(value: Option<&Value>, test: &FactTest) -> bool {
    let Some(value) = value else {
        return matches!(test, FactTest::Exists(false));
    };
    match test {
        FactTest::Is(expected) => same(value, expected),
        FactTest::In(options) => options.iter().any(|o| same(value, o)),
        FactTest::Exists(wanted) => *wanted,
        FactTest::Count(n) => value
            .as_array()
            .is_some_and(|items| items.len() as u64 == *n),
        FactTest::Gt(n) => value.as_f64().is_some_and(|v| v > *n),
        FactTest::Lt(n) => value.as_f64().is_some_and(|v| v < *n),
        FactTest::NotEmpty(wanted) => {
            let empty = match value {
                Value::Array(items) => items.is_empty(),
                Value::String(text) => text.is_empty(),
                Value::Object(map) => map.is_empty(),
                _ => false,
            };
            empty != *wanted
        }
    }
}

/// Equality where numbers compare by value (`18010` from YAML equals `18010.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fact(path: &str, test: FactTest) -> Condition {
        Condition::Fact {
            path: FactPath::parse(path).unwrap(),
            test,
        }
    }

    fn ctx() -> Value {
        json!({
            "endpoint": {"listening": false, "port": 18010, "path": null, "host": "127.0.0.1"},
            "unit": {"name": "api.service", "active_state": "inactive", "other_ports": [18011],
                     "hosts_on_endpoint_port": [], "bind": null},
            "log": {"connection_refused": 2, "timed_out": 0}
        })
    }

    #[test]
    fn is_compares_values() {
        let ctx = ctx();
        assert!(evaluate(
            &fact("endpoint.listening", FactTest::Is(json!(false))),
            &ctx
        ));
        assert!(!evaluate(
            &fact("endpoint.listening", FactTest::Is(json!(true))),
            &ctx
        ));
        assert!(evaluate(
            &fact("endpoint.port", FactTest::Is(json!(18010.0))),
            &ctx
        ));
        assert!(!evaluate(
            &fact("endpoint.port", FactTest::Is(json!("18010"))),
            &ctx
        ));
        assert!(evaluate(
            &fact("unit.active_state", FactTest::Is(json!("inactive"))),
            &ctx
        ));
    }

    #[test]
    fn in_matches_any_option() {
        let ctx = ctx();
        let states = FactTest::In(vec![json!("inactive"), json!("failed")]);
        assert!(evaluate(&fact("unit.active_state", states.clone()), &ctx));
        let active = json!({"unit": {"active_state": "active"}});
        assert!(!evaluate(&fact("unit.active_state", states), &active));
    }

    #[test]
    fn exists_treats_null_and_missing_as_absent() {
        let ctx = ctx();
        assert!(evaluate(&fact("unit.name", FactTest::Exists(true)), &ctx));
        assert!(evaluate(&fact("unit.bind", FactTest::Exists(false)), &ctx));
        assert!(evaluate(&fact("unit.nope", FactTest::Exists(false)), &ctx));
        assert!(evaluate(
            &fact("unit.bind.value", FactTest::Exists(false)),
            &ctx
        ));
        assert!(!evaluate(
            &fact("endpoint.path", FactTest::Exists(true)),
            &ctx
        ));
    }

    #[test]
    fn absent_facts_fail_every_other_test() {
        let ctx = json!({"unit": null});
        for test in [
            FactTest::Is(json!(null)),
            FactTest::Is(json!("x")),
            FactTest::In(vec![json!("x")]),
            FactTest::Exists(true),
            FactTest::Count(0),
            FactTest::Gt(-1.0),
            FactTest::Lt(1.0),
            FactTest::NotEmpty(true),
            FactTest::NotEmpty(false),
        ] {
            assert!(
                !evaluate(&fact("unit.active_state", test.clone()), &ctx),
                "{test:?}"
            );
        }
        assert!(evaluate(
            &fact("unit.active_state", FactTest::Exists(false)),
            &ctx
        ));
        // `not` of an absent test is true: absence is not evidence either way.
        let not = Condition::Not(Box::new(fact(
            "unit.active_state",
            FactTest::Is(json!("x")),
        )));
        assert!(evaluate(&not, &ctx));
    }

    #[test]
    fn count_and_not_empty_and_indexes() {
        let ctx = ctx();
        assert!(evaluate(
            &fact("unit.other_ports", FactTest::Count(1)),
            &ctx
        ));
        assert!(!evaluate(
            &fact("unit.other_ports", FactTest::Count(2)),
            &ctx
        ));
        assert!(!evaluate(&fact("unit.name", FactTest::Count(11)), &ctx));
        assert!(evaluate(
            &fact("unit.other_ports", FactTest::NotEmpty(true)),
            &ctx
        ));
        assert!(evaluate(
            &fact("unit.hosts_on_endpoint_port", FactTest::NotEmpty(false)),
            &ctx
        ));
        assert!(evaluate(&fact("unit.name", FactTest::NotEmpty(true)), &ctx));
        assert!(evaluate(
            &fact("unit.other_ports.0", FactTest::Is(json!(18011))),
            &ctx
        ));
        assert!(evaluate(
            &fact("unit.other_ports.1", FactTest::Exists(false)),
            &ctx
        ));
        assert!(evaluate(
            &fact("unit.other_ports.x", FactTest::Exists(false)),
            &ctx
        ));
    }

    #[test]
    fn gt_and_lt_compare_numbers_only() {
        let ctx = ctx();
        assert!(evaluate(
            &fact("log.connection_refused", FactTest::Gt(0.0)),
            &ctx
        ));
        assert!(!evaluate(&fact("log.timed_out", FactTest::Gt(0.0)), &ctx));
        assert!(evaluate(&fact("log.timed_out", FactTest::Lt(1.0)), &ctx));
        assert!(!evaluate(&fact("unit.name", FactTest::Gt(0.0)), &ctx));
    }

    #[test]
    fn all_any_not_combine() {
        let ctx = ctx();
        let down = fact("endpoint.listening", FactTest::Is(json!(false)));
        let up = fact("endpoint.listening", FactTest::Is(json!(true)));
        assert!(evaluate(
            &Condition::All(vec![down.clone(), down.clone()]),
            &ctx
        ));
        assert!(!evaluate(
            &Condition::All(vec![down.clone(), up.clone()]),
            &ctx
        ));
        assert!(evaluate(
            &Condition::Any(vec![up.clone(), down.clone()]),
            &ctx
        ));
        assert!(!evaluate(&Condition::Any(vec![up.clone()]), &ctx));
        assert!(evaluate(&Condition::Not(Box::new(up)), &ctx));
        assert!(evaluate(&Condition::All(vec![]), &ctx));
        assert!(!evaluate(&Condition::Any(vec![]), &ctx));
    }

    #[test]
    fn unmet_lists_missing_texts_in_order() {
        let ctx = ctx();
        let requirements = vec![
            Requirement {
                condition: fact("unit.bind", FactTest::Exists(true)),
                missing: "no bind setting".to_string(),
            },
            Requirement {
                condition: fact("unit.name", FactTest::Exists(true)),
                missing: "no unit".to_string(),
            },
            Requirement {
                condition: fact("unit.other_ports", FactTest::Count(2)),
                missing: "not two ports".to_string(),
            },
        ];
        assert_eq!(
            unmet(&requirements, &ctx),
            vec!["no bind setting", "not two ports"]
        );
        assert!(unmet(&requirements[1..2], &ctx).is_empty());
    }
}
