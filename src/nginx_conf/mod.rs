//! The nginx configuration language: lexer, parser and `include` expansion, keeping exact positions.
//!
//! [`load`] reads the main file and every file it includes through a [`SourceFs`], and returns
//! nginx's logical tree: the directives of an included file stand where the `include` stood (right
//! after the `include` directive itself), while each directive remembers the file, byte span and
//! line:col it came from, so an edit can rewrite one directive or one argument with
//! [`replace_span`] and leave every other byte untouched.

mod include;
mod lexer;
mod parse;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use include::{load, MemFs, RealFs, SourceFs};
pub use parse::parse;

/// A half-open byte range `start..end` in the text of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

/// A 1-based line and column (the column counts characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Pos {
    /// Line number, from 1.
    pub line: usize,
    /// Column number in characters, from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One word of a directive (the name or an argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    /// The value as nginx sees it: quotes removed, `\"` `\'` `\\` `\t` `\r` `\n` unescaped.
    pub value: String,
    /// The word exactly as written, quotes included.
    pub raw: String,
    /// Where `raw` stands in its file.
    pub span: Span,
    /// Line and column of the first byte of `raw`.
    pub pos: Pos,
}

/// A simple directive (`name args;`) or a block directive (`name args { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The directive name (the unescaped first word).
    pub name: String,
    /// The arguments after the name.
    pub args: Vec<Arg>,
    /// Index of the file it was read from in [`Config::files`].
    pub file: usize,
    /// From the first byte of the name to its `;` or closing `}`, inclusive.
    pub span: Span,
    /// Line and column of the name.
    pub pos: Pos,
    /// The directives inside `{ ... }`, for a block directive.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The value of argument `i` (0 is the first argument after the name).
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|a| a.value.as_str())
    }

    /// The directives inside the block, or nothing for a simple directive.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// One configuration file as it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceFile {
    /// The path as nginx names it (relative includes joined to the conf prefix, not canonicalised).
    pub path: PathBuf,
    /// The whole text of the file.
    pub text: String,
}

/// A loaded configuration: every file in the order nginx reads them (each once, as `nginx -T`
/// lists them) and the logical directive tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The main file first, then each included file the first time it is included.
    pub files: Vec<SourceFile>,
    /// The top-level directives with includes expanded in place.
    pub directives: Vec<Directive>,
}

impl Config {
    /// The file a directive came from.
    pub fn file_of(&self, d: &Directive) -> Option<&SourceFile> {
        self.files.get(d.file)
    }

    /// The exact source text of a directive.
    pub fn text_of(&self, d: &Directive) -> Option<&str> {
        self.file_of(d)?.text.get(d.span.start..d.span.end)
    }
}

/// A position in a named file, shown as `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilePos {
    /// The file.
    pub file: PathBuf,
    /// Line and column in it.
    pub pos: Pos,
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.pos)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// The text is not valid nginx syntax.
    #[error("{at}: {reason}")]
    Syntax {
        /// Where the problem was found.
        at: FilePos,
        /// One line saying what is wrong.
        reason: String,
    },
    /// A file could not be read.
    #[error("open() \"{}\" failed: {reason}{}", path.display(), IncludedFrom(included_from))]
    Open {
        /// The file nginx would open.
        path: PathBuf,
        /// The system's reason, e.g. `No such file or directory`.
        reason: String,
        /// The `include` that named it, none for the main file.
        included_from: Option<FilePos>,
    },
    /// A glob pattern in an `include` could not be expanded.
    #[error("{at}: include \"{}\" failed: {reason}", pattern.display())]
    Glob {
        /// The `include` directive.
        at: FilePos,
        /// The pattern, joined to the conf prefix.
        pattern: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// A file includes itself, directly or through other files.
    #[error("{at}: include cycle: {}", Chain(chain))]
    Cycle {
        /// The `include` directive that closes the cycle.
        at: FilePos,
        /// The files in the cycle, starting and ending with the same file.
        chain: Vec<PathBuf>,
    },
}

struct IncludedFrom<'a>(&'a Option<FilePos>);

impl fmt::Display for IncludedFrom<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " (included from {at})"),
            None => Ok(()),
        }
    }
}

struct Chain<'a>(&'a [PathBuf]);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "\"{}\"", p.display())?;
        }
        Ok(())
    }
}

/// Replaces the bytes of `span` in `text` by `new`, leaving every other byte as it was.
///
/// Returns `None` when the span is reversed, out of range or not on character boundaries.
pub fn replace_span(text: &str, span: Span, new: &str) -> Option<String> {
    let before = text.get(..span.start)?;
    let after = text.get(span.end..)?;
    if span.start > span.end {
        return None;
    }
    let mut out = String::with_capacity(before.len() + new.len() + after.len());
    out.push_str(before);
    out.push_str(new);
    out.push_str(after);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn replace_span_rewrites_exactly_one_argument() {
        let text = "http {\n    server { proxy_pass http://127.0.0.1:8000; }\n}\n";
        let config = parse(Path::new("/x.conf"), text, 0).unwrap();
        let pass = &config[0].children()[0].children()[0];
        assert_eq!(pass.name, "proxy_pass");
        let arg = &pass.args[0];
        let out = replace_span(text, arg.span, "http://127.0.0.1:9000").unwrap();
        assert_eq!(
            out,
            "http {\n    server { proxy_pass http://127.0.0.1:9000; }\n}\n"
        );
        let out = replace_span(text, pass.span, "fastcgi_pass unix:/x.sock;").unwrap();
        assert_eq!(
            out,
            "http {\n    server { fastcgi_pass unix:/x.sock; }\n}\n"
        );
    }

    #[test]
    fn replace_span_refuses_bad_spans() {
        assert_eq!(replace_span("abc", Span { start: 2, end: 1 }, "x"), None);
        assert_eq!(replace_span("abc", Span { start: 1, end: 9 }, "x"), None);
        assert_eq!(replace_span("é", Span { start: 1, end: 2 }, "x"), None);
        assert_eq!(
            replace_span("abc", Span { start: 3, end: 3 }, "d").as_deref(),
            Some("abcd")
        );
    }
}
