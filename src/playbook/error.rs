//! Playbook errors: where (`file:line:col` and the field path), what, and how to fix it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// The stage of `playbooks check` that found an error; errors are reported stage by stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the file, YAML syntax and the shape of the document.
    Parse,
    /// Meaning: ids, conditions, durations, operations, duplicate ids.
    Semantic,
    /// Templates compiled and rendered strictly against sample facts, `render_site` files found.
    Templates,
}

/// A 1-based position in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem in one playbook (or template) file.
///
/// Displays as `FILE:LINE:COL: FIELD: reason`, followed by `\n  help: …` when there is advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct PlaybookError {
    /// The stage that found it.
    pub stage: Stage,
    /// The file.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// The field path, such as `actions[2].systemd.unit`, when the error is about one field.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl PlaybookError {
    fn render(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some(at) = self.location {
            out.push_str(&format!(":{}:{}", at.line, at.column));
        }
        if let Some(field) = &self.field {
            out.push_str(&format!(": {field}"));
        }
        out.push_str(&format!(": {}", self.reason));
        if let Some(help) = &self.help {
            out.push_str(&format!("\n  help: {help}"));
        }
        out
    }
}

/// Every error found while loading playbooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct PlaybookErrors(pub Vec<PlaybookError>);

impl fmt::Display for PlaybookErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} playbook error{} found",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            write!(f, "\n{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_location_field_and_help() {
        let error = PlaybookError {
            stage: Stage::Parse,
            file: PathBuf::from("playbooks/x.yaml"),
            location: Some(Location { line: 3, column: 7 }),
            field: Some("actions[0].systemd".to_string()),
            reason: "unknown field `unti`".to_string(),
            help: Some("did you mean `unit`?".to_string()),
        };
        assert_eq!(
            error.to_string(),
            "playbooks/x.yaml:3:7: actions[0].systemd: unknown field `unti`\n  help: did you mean `unit`?"
        );
        let bare = PlaybookError {
            location: None,
            field: None,
            help: None,
            ..error
        };
        assert_eq!(bare.to_string(), "playbooks/x.yaml: unknown field `unti`");
    }
}
