//! Facts → findings: every target is matched against the playbooks in priority order. The first
//! playbook whose `when` holds names the cause; later matches are reported as "also matched" and
//! never act. A finding whose `conclusive` requirements fail is reported with what is missing.

use super::conditions::{evaluate as holds, lookup_in, unmet, Facts};
use super::context::Target;
use super::render::{render_evidence, without_nulls, RenderContext};
use crate::playbook::context::{TargetContext, SECTIONS};
use crate::playbook::{FactPath, PlaybookSet, Severity};
use serde::Serialize;
use serde_json::Value;
use std::cell::OnceCell;

/// A named cause found on one target, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The playbook id.
    pub cause: String,
    pub description: String,
    pub severity: Severity,
    /// The site (first `server_name`).
    pub site: String,
    pub location: String,
    /// The address nginx dials: `host:port` or `unix:/path`.
    pub upstream: String,
    pub unit: Option<String>,
    pub evidence: Vec<String>,
    /// Whether the evidence is conclusive enough to act on.
    pub conclusive: bool,
    /// What is missing before anything may be done (empty when conclusive).
    pub missing: Vec<String>,
    /// Other playbooks that matched this target too, lower in priority.
    pub also_matched: Vec<String>,
    /// Another finding's fix heals this target too, so nothing of its own is planned: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    /// Index of the target in the evaluated list.
    #[serde(skip)]
    pub target: usize,
}

/// Matches every target against the playbooks.
pub fn evaluate(playbooks: &PlaybookSet, targets: &[Target]) -> Vec<Finding> {
    let evaluator = Evaluator::new(playbooks);
    targets
        .iter()
        .enumerate()
        .filter_map(|(index, target)| evaluator.finding_for(index, target))
        .collect()
}

/// A playbook set made ready to match many targets: which sections each playbook's evidence
/// templates read is worked out once, not for every target (the text searches were a tenth
/// of evaluating one).
pub struct Evaluator<'p> {
    playbooks: &'p PlaybookSet,
    /// For each playbook, in order: which context sections its evidence may read.
    sections: Vec<[bool; SECTIONS.len()]>,
}

impl<'p> Evaluator<'p> {
    pub fn new(playbooks: &'p PlaybookSet) -> Self {
        Evaluator {
            playbooks,
            sections: playbooks
                .iter()
                .map(|p| template_sections(&p.evidence))
                .collect(),
        }
    }

    /// The finding of one target, if a playbook's `when` holds for it (`index`: its place in
    /// the evaluated list).
    pub fn finding_for(&self, index: usize, target: &Target) -> Option<Finding> {
        let ctx = Lazy::of(&target.context);
        let mut matched = self
            .playbooks
            .iter()
            .zip(&self.sections)
            .filter(|(p, _)| holds(&p.when, &ctx));
        let (first, sections) = matched.next()?;
        let missing = unmet(&first.conclusive, &ctx);
        let also_matched = matched.map(|(p, _)| p.id.clone()).collect();
        let evidence = render_evidence(&first.evidence, &RenderContext::of(ctx.json_of(sections)));
        Some(Finding {
            cause: first.id.clone(),
            description: first.description.clone(),
            severity: first.severity,
            site: target.route.site.clone(),
            location: target.route.location.clone(),
            upstream: target.endpoint.address.clone(),
            unit: target.endpoint.unit.clone(),
            evidence,
            conclusive: missing.is_empty(),
            missing,
            also_matched,
            covered_by: None,
            target: index,
        })
    }
}

/// Which sections `templates` may read: every section whose name one of them holds, or all
/// of them when one could reach the root without naming a section.
fn template_sections(templates: &[String]) -> [bool; SECTIONS.len()] {
    let whole = templates.iter().any(|t| reaches_root(t));
    SECTIONS.map(|name| whole || templates.iter().any(|t| t.contains(name)))
}

/// A target's context as conditions and templates see it (without nulls), each top-level
/// section made JSON only when a condition first reads it: turning whole contexts into JSON
/// was about a quarter of `diagnose` at 10,000 sites, and most conditions read one section.
struct Lazy<'a> {
    context: &'a TargetContext,
    sections: [OnceCell<Value>; SECTIONS.len()],
}

impl<'a> Lazy<'a> {
    fn of(context: &'a TargetContext) -> Self {
        Lazy {
            context,
            sections: Default::default(),
        }
    }

    /// The context templates render against: the `wanted` sections (see
    /// [`template_sections`]), so the text is what the whole context gives.
    fn json_of(self, wanted: &[bool; SECTIONS.len()]) -> Value {
        let mut map = serde_json::Map::new();
        for ((cell, name), wanted) in self.sections.into_iter().zip(SECTIONS).zip(wanted) {
            if !wanted {
                continue;
            }
            let value = cell
                .into_inner()
                .unwrap_or_else(|| without_nulls(self.context.section_json(name)));
            if !value.is_null() {
                map.insert(name.to_string(), value);
            }
        }
        Value::Object(map)
    }
}

impl Facts for Lazy<'_> {
    fn fact(&self, path: &FactPath) -> Option<&Value> {
        let (first, rest) = path.segments().split_first()?;
        let (name, cell) = SECTIONS
            .iter()
            .zip(&self.sections)
            .find(|(name, _)| *name == first)?;
        let section = cell.get_or_init(|| without_nulls(self.context.section_json(name)));
        lookup_in(rest, section)
    }
}

/// Whether a template may read the context's root without naming a section: `@root`, `../`,
/// a partial, `.`, or `this` outside a block that moves it.
fn reaches_root(template: &str) -> bool {
    ["@root", "../", "{{>", "{{.", " .}}", " . ", "(.", ".)"]
        .iter()
        .any(|m| template.contains(m))
        || (template.contains("this")
            && !template.contains("{{#each")
            && !template.contains("{{#with"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PlaybookSet {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::playbook::load_dirs(&[root.join("playbooks")], &[root.join("templates")]).unwrap()
    }

    /// Contexts that differ in what is absent: the sample with every field, and with the
    /// optional sections cut one at a time.
    fn contexts() -> Vec<TargetContext> {
        let full = TargetContext::sample();
        let mut out = vec![full.clone()];
        let mut c = full.clone();
        c.unit = None;
        out.push(c);
        let mut c = full.clone();
        c.location = None;
        c.reproduction = None;
        out.push(c);
        let mut c = full.clone();
        c.pm2 = None;
        c.unsupervised = None;
        c.endpoint.listening = !c.endpoint.listening;
        out.push(c);
        out
    }

    #[test]
    fn the_lazy_context_decides_and_renders_as_the_whole_one() {
        let playbooks = shipped();
        for context in contexts() {
            let whole = without_nulls(context.json());
            for p in playbooks.iter() {
                let lazy = Lazy::of(&context);
                assert_eq!(holds(&p.when, &lazy), holds(&p.when, &whole), "{}", p.id);
                assert_eq!(
                    unmet(&p.conclusive, &lazy),
                    unmet(&p.conclusive, &whole),
                    "{}",
                    p.id
                );
                let rendered = render_evidence(
                    &p.evidence,
                    &RenderContext::of(Lazy::of(&context).json_of(&template_sections(&p.evidence))),
                );
                let expected = render_evidence(&p.evidence, &RenderContext::of(whole.clone()));
                assert_eq!(rendered, expected, "{}", p.id);
            }
        }
    }

    #[test]
    fn a_template_that_may_read_the_root_gets_every_section() {
        assert!(!reaches_root("nothing listens on {{endpoint.address}}"));
        assert!(!reaches_root(
            "{{#each unit.output}}\n    {{this}}{{/each}}"
        ));
        assert!(reaches_root("{{this}}"));
        assert!(reaches_root("{{@root.unit.name}}"));
        assert!(reaches_root(
            "{{#each unit.output}}{{../site.name}}{{/each}}"
        ));
        let context = TargetContext::sample();
        let json = |t: &str| Lazy::of(&context).json_of(&template_sections(&[t.to_string()]));
        let Value::Object(map) = json("{{this}}") else {
            panic!("an object");
        };
        assert_eq!(map.len(), SECTIONS.len());
        let Value::Object(map) = json("{{endpoint.address}}") else {
            panic!("an object");
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["endpoint"]);
    }
}
