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

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub use include::{load, text_of_bytes, MemFs, RealFs, SourceFs};
pub use parse::parse;

/// A half-open byte range `start..end` in the text of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

/// A 1-based line and column (the column counts characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    /// The value as nginx sees it: quotes removed, `\"` `\'` `\\` `\t` `\r` `\n` unescaped.
    /// (A short word is held inline, without an allocation of its own: a large configuration
    /// has hundreds of thousands of them.)
    pub value: CompactString,
    /// Where the word stands in its file, quotes included ([`Arg::raw`] is its text).
    pub span: Span,
    /// Line and column of the word's first byte.
    pub pos: Pos,
}

impl Arg {
    /// The word exactly as written, quotes included, out of `text`, its file's text (the word is
    /// not kept twice: [`Config::text_of`] reads a directive the same way).
    pub fn raw<'t>(&self, text: &'t str) -> Option<&'t str> {
        text.get(self.span.start..self.span.end)
    }
}

/// A simple directive (`name args;`) or a block directive (`name args { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// The directive name (the unescaped first word).
    pub name: CompactString,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// The path as nginx names it (relative includes joined to the conf prefix, not canonicalised).
    pub path: PathBuf,
    /// The whole text of the file; a byte that is not part of UTF-8 text reads as `?`
    /// ([`text_of_bytes`]), so offsets are the file's own.
    pub text: String,
}

/// A loaded configuration: every file in the order nginx reads them (each once, as `nginx -T`
/// lists them) and the logical directive tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The bytes of `path` with its components normalised as `Path`'s equality sees them (`a//b`
/// is `a/b`; a trailing `/` or `/.` and an inner `/./` do not count), so that equal paths have
/// equal keys. Hashing these bytes is much cheaper than hashing a `Path` (which hashes it
/// component by component), and a path written plainly, as nearly all are, is its own key.
pub(crate) fn path_key(path: &Path) -> Cow<'_, OsStr> {
    let b = path.as_os_str().as_bytes();
    // no `//` or `/./`, and no `/` or `/.` at the end of a path longer than one byte
    let plain = memchr::memchr_iter(b'/', b).all(|i| {
        let after = b.get(i + 1..).unwrap_or_default();
        match after {
            [] => b.len() == 1,
            [b'/', ..] | [b'.'] | [b'.', b'/', ..] => false,
            _ => true,
        }
    });
    if plain {
        Cow::Borrowed(path.as_os_str())
    } else {
        Cow::Owned(path.components().collect::<PathBuf>().into_os_string())
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
    fn path_keys_are_equal_when_the_paths_are() {
        let key = |p: &str| path_key(Path::new(p)).into_owned();
        for (a, b) in [
            ("/a/b", "/a//b"),
            ("/a/b", "/a/./b"),
            ("/a/b", "/a/b/"),
            ("/a/b", "/a/b/."),
            ("/", "//"),
            ("a/b", "a//b/"),
        ] {
            assert_eq!(Path::new(a), Path::new(b));
            assert_eq!(key(a), key(b), "{a} {b}");
        }
        for (a, b) in [
            ("/a/b", "/a/c"),
            ("./a", "a"),
            ("/a", "a"),
            ("/a/../b", "/b"),
        ] {
            assert_ne!(Path::new(a), Path::new(b));
            assert_ne!(key(a), key(b), "{a} {b}");
        }
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

/// Test helpers: the fixtures under `tests/fixtures/nginx/`, mounted in memory.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::MemFs;
    use std::path::{Path, PathBuf};

    /// The fixture directory `name`.
    pub(crate) fn dir(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/nginx")
            .join(name)
    }

    fn walk(dir: &Path, at: &Path, fs: &mut MemFs) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let target = at.join(entry.file_name());
            if path.is_dir() {
                walk(&path, &target, fs);
            } else {
                fs.insert(target, std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    /// Every file of fixture `name`, as if the directory were at `at`.
    pub(crate) fn mount(name: &str, at: &str) -> MemFs {
        let mut fs = MemFs::new();
        walk(&dir(name), Path::new(at), &mut fs);
        fs
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;
    use std::path::Path;

    fn load_error(name: &str, main: &str) -> String {
        let fs = fixtures::mount(name, "/etc/nginx");
        load(&Path::new("/etc/nginx").join(main), &fs)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_fixtures_give_exact_errors() {
        assert_eq!(
            load_error("malformed", "unbalanced.conf"),
            "/etc/nginx/unbalanced.conf:10:1: unexpected end of file, expecting \"}\" (block opened at 3:1)"
        );
        assert_eq!(
            load_error("malformed", "extra-brace.conf"),
            "/etc/nginx/extra-brace.conf:7:1: unexpected \"}\""
        );
        assert_eq!(
            load_error("malformed", "unterminated.conf"),
            "/etc/nginx/unterminated.conf:8:1: unterminated quoted string (opened at 4:27)"
        );
        assert_eq!(
            load_error("malformed", "glued-quote.conf"),
            "/etc/nginx/glued-quote.conf:2:25: unexpected \"t\""
        );
        assert_eq!(
            load_error("malformed", "missing-include.conf"),
            "open() \"/etc/nginx/missing.conf\" failed: No such file or directory \
             (included from /etc/nginx/missing-include.conf:4:5)"
        );
        assert_eq!(
            load_error("malformed", "cycle/nginx.conf"),
            "/etc/nginx/cycle/b.conf:5:1: include cycle: \"/etc/nginx/cycle/a.conf\" -> \
             \"/etc/nginx/cycle/b.conf\" -> \"/etc/nginx/cycle/a.conf\""
        );
    }

    /// Every prefix of every fixture file parses or fails cleanly, never panics.
    #[test]
    fn truncated_fixtures_never_panic() {
        for name in ["debian", "multisite", "php", "malformed"] {
            let fs = fixtures::mount(name, "/etc/nginx");
            for (path, text) in &fs.files {
                let cuts = text.char_indices().map(|(i, _)| i).chain([text.len()]);
                for cut in cuts {
                    let _ = parse(path, &text[..cut], 0);
                    let _ = parse(path, &text[cut..], 0);
                }
            }
        }
        for text in [
            "\"", "'", "\\", "$", "${", "a \"b\"", "a {", "}", "a;}", "\"a\"\\",
        ] {
            let _ = parse(Path::new("/x"), text, 0);
        }
    }

    /// The fuzz target's property (`fuzz/fuzz_targets/nginx_conf.rs`) over its seeds: each seed
    /// split at NUL bytes into the main file and files of `conf.d/`, loaded without a panic, and
    /// every span naming its own bytes; then the facts drawn from it.
    #[test]
    fn the_fuzz_seeds_load_with_exact_spans() {
        fn check(conf: &Config, ds: &[Directive]) {
            for d in ds {
                let file = &conf.files[d.file].text;
                assert!(
                    conf.text_of(d).is_some(),
                    "span {:?} of `{}`",
                    d.span,
                    d.name
                );
                for a in &d.args {
                    let raw = a.raw(file).unwrap();
                    assert!(raw == a.value || raw.contains(['"', '\'', '\\']), "{raw}");
                }
                check(conf, d.children());
            }
        }
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/nginx_conf");
        let mut seen = 0;
        for entry in std::fs::read_dir(seeds).unwrap() {
            let text = text_of_bytes(std::fs::read(entry.unwrap().path()).unwrap());
            let mut fs = MemFs::new();
            let main = Path::new("/etc/nginx/nginx.conf");
            for (i, part) in text.splitn(4, '\0').enumerate() {
                match i {
                    0 => fs.insert(main, part),
                    _ => fs.insert(format!("/etc/nginx/conf.d/{i}.conf"), part),
                };
            }
            let _ = parse(main, &text, 0);
            if let Ok(conf) = load(main, &fs) {
                check(&conf, &conf.directives);
                let _ = crate::facts::nginx::extract(&conf, Path::new("/etc/nginx"));
            }
            seen += 1;
        }
        assert!(seen > 10, "{seen} seeds");
    }

    #[test]
    fn loaded_files_keep_their_exact_text() {
        let fs = fixtures::mount("debian", "/etc/nginx");
        let conf = load(Path::new("/etc/nginx/nginx.conf"), &fs).unwrap();
        for f in &conf.files {
            assert_eq!(Some(&f.text), fs.files.get(&f.path));
        }
        // each directive's span text starts with its name and ends with `;` or `}`
        fn check(conf: &Config, ds: &[Directive]) {
            for d in ds {
                let text = conf.text_of(d).unwrap();
                assert!(text.starts_with(d.name.as_str()), "{text}");
                assert!(text.ends_with(';') || text.ends_with('}'), "{text}");
                for a in &d.args {
                    let file = &conf.files[d.file].text;
                    let raw = a.raw(file).unwrap();
                    assert!(raw == a.value || raw.contains(['"', '\'', '\\']), "{raw}");
                }
                check(conf, d.children());
            }
        }
        check(&conf, &conf.directives);
    }
}
