//! Loads a configuration with its `include`s, as nginx does: relative paths against the conf
//! prefix (the main file's directory), globs sorted bytewise, a missing plain file an error,
//! a glob matching nothing fine; each file listed once, cycles refused.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::parse::parse;
use super::{path_key, ConfError, Config, Directive, FilePos, Pos, SourceFile};

/// Read access to configuration files, so the loader can run against memory in tests.
pub trait SourceFs {
    /// The whole text of a file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The paths matching a glob pattern (`*`, `?`, `[...]`, no leading-dot matches); an empty
    /// list when nothing matches. The order does not matter: the loader sorts.
    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

fn match_options() -> glob::MatchOptions {
    glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    }
}

fn pattern_str(pattern: &Path) -> io::Result<&str> {
    pattern
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pattern is not valid UTF-8"))
}

impl SourceFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read(path).map(text_of_bytes)
    }

    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
        let paths = glob::glob_with(pattern_str(pattern)?, match_options())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.msg))?;
        // like glob(3) without GLOB_ERR, unreadable directories are skipped
        Ok(paths.filter_map(Result::ok).collect())
    }
}

/// The text of a configuration file as nginx reads it: bytes. UTF-8 is kept as it is; each byte
/// of a sequence that is not UTF-8 (a Latin-1 comment) reads as `?`, so that every byte offset
/// still names the same byte of the file (spans, line:col) and the lexer splits the words where
/// nginx does (nginx gives such bytes no meaning either). Such a file is read, never rewritten:
/// an edit re-reads the file as UTF-8 and is refused.
pub fn text_of_bytes(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let bytes = e.into_bytes();
            let mut out = String::with_capacity(bytes.len());
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(valid) => {
                        out.push_str(valid);
                        break;
                    }
                    Err(e) => {
                        let (valid, after) = rest.split_at(e.valid_up_to());
                        out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                        let bad = e.error_len().unwrap_or(after.len()).max(1);
                        out.extend((0..bad).map(|_| '?'));
                        rest = after.get(bad..).unwrap_or_default();
                    }
                }
            }
            out
        }
    }
}

/// Files held in memory, for tests and for checking a configuration that is not on disk yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFs {
    /// Path → text.
    pub files: BTreeMap<PathBuf, String>,
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file.
    pub fn insert(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> &mut Self {
        self.files.insert(path.into(), text.into());
        self
    }
}

impl SourceFs for MemFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(nix::errno::Errno::ENOENT as i32))
    }

    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
        let pattern = glob::Pattern::new(pattern_str(pattern)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.msg))?;
        Ok(self
            .files
            .keys()
            .filter(|p| pattern.matches_path_with(p, match_options()))
            .cloned()
            .collect())
    }
}

/// The system's text for an I/O error, without Rust's ` (os error N)` suffix.
fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text.get(..i).unwrap_or(&text).to_string(),
        _ => text,
    }
}

/// Loads `conf` and every file it includes into nginx's logical tree.
///
/// Relative `include` paths are resolved against the directory of `conf` (nginx's conf prefix).
pub fn load(conf: &Path, fs: &dyn SourceFs) -> Result<Config, ConfError> {
    let mut loader = Loader {
        fs,
        prefix: conf.parent().unwrap_or(Path::new("")).to_path_buf(),
        files: Vec::new(),
        index: HashMap::new(),
        stack: Vec::new(),
        leaves: Vec::new(),
    };
    let directives = loader.file(conf, None)?;
    Ok(Config {
        files: loader.files,
        directives,
    })
}

struct Loader<'a> {
    fs: &'a dyn SourceFs,
    prefix: PathBuf,
    files: Vec<SourceFile>,
    /// The index in `files` of each file read, by [`path_key`].
    index: HashMap<OsString, usize>,
    /// The chain of files being read (index in `files`), outermost first.
    stack: Vec<usize>,
    /// By index in `files`: what is known of a file that includes nothing (a snippet, included
    /// at every site that needs it).
    leaves: Vec<Leaf>,
}

/// What the loader knows of a file's directives when it is included again.
#[derive(Default)]
enum Leaf {
    /// Not parsed yet, or it includes other files: parsed at each include.
    #[default]
    Unknown,
    /// Parsed once, and it includes nothing.
    Seen,
    /// Its directives, parsed a second time and kept: an include is textual and the text is the
    /// one kept at the first reading, so each further include is a copy of them.
    Kept(Vec<Directive>),
}

/// Whether any directive of `ds`, at any depth, is an `include`.
fn includes_any(ds: &[Directive]) -> bool {
    ds.iter()
        .any(|d| d.name == "include" || includes_any(d.children()))
}

/// The `include` directive that names a file: its file and position, made into a [`FilePos`]
/// only for an error (a large configuration has tens of thousands of includes).
#[derive(Clone, Copy)]
struct IncludeAt<'a> {
    file: &'a Path,
    pos: Pos,
}

impl IncludeAt<'_> {
    fn file_pos(self) -> FilePos {
        FilePos {
            file: self.file.to_path_buf(),
            pos: self.pos,
        }
    }
}

impl Loader<'_> {
    /// The directives of the file at `path` with its includes expanded; `from` is the `include`
    /// that names it (none for the main file). A file included again is read and parsed from
    /// the text kept at its first reading, as `nginx -T` shows it once.
    fn file(&mut self, path: &Path, from: Option<IncludeAt>) -> Result<Vec<Directive>, ConfError> {
        let key = path_key(path);
        let known = self.index.get(&*key).copied();
        if let Some(i) = known.and_then(|idx| self.stack.iter().position(|s| *s == idx)) {
            // a file's path is the one it was first read by, which is equal to `path`
            let mut chain: Vec<PathBuf> = self
                .stack
                .get(i..)
                .unwrap_or_default()
                .iter()
                .filter_map(|s| self.files.get(*s))
                .map(|f| f.path.clone())
                .collect();
            chain.push(path.to_path_buf());
            return Err(ConfError::Cycle {
                // `from` is always set here: the main file is never on the stack yet
                at: from.map_or_else(
                    || FilePos {
                        file: path.to_path_buf(),
                        pos: Pos { line: 1, col: 1 },
                    },
                    IncludeAt::file_pos,
                ),
                chain,
            });
        }
        let idx = match known {
            Some(i) => i,
            None => {
                let text = self.fs.read(path).map_err(|e| ConfError::Open {
                    path: path.to_path_buf(),
                    reason: io_reason(&e),
                    included_from: from.map(IncludeAt::file_pos),
                })?;
                let i = self.files.len();
                self.files.push(SourceFile {
                    path: path.to_path_buf(),
                    text,
                });
                self.index.insert(path_key(path).into_owned(), i);
                i
            }
        };
        if let Some(Leaf::Kept(directives)) = self.leaves.get(idx) {
            return Ok(directives.clone());
        }
        let text = self.files.get(idx).map_or("", |f| f.text.as_str());
        let mut directives = parse(path, text, idx)?;
        if !includes_any(&directives) {
            if self.leaves.len() <= idx {
                self.leaves.resize_with(idx + 1, Leaf::default);
            }
            if let Some(leaf) = self.leaves.get_mut(idx) {
                *leaf = match leaf {
                    Leaf::Unknown => Leaf::Seen,
                    _ => Leaf::Kept(directives.clone()),
                };
            }
            return Ok(directives);
        }
        self.stack.push(idx);
        let expanded = self.expand(&mut directives, path);
        self.stack.pop();
        expanded.map(|()| directives)
    }

    /// Replaces each `include` by itself followed by the directives it names, recursively.
    fn expand(&mut self, directives: &mut Vec<Directive>, path: &Path) -> Result<(), ConfError> {
        if !directives.iter().any(|d| d.name == "include") {
            // nothing to insert at this level: the blocks are expanded where they stand
            for d in directives.iter_mut() {
                if let Some(children) = d.block.as_mut() {
                    self.expand(children, path)?;
                }
            }
            return Ok(());
        }
        let directives_in = std::mem::take(directives);
        let out = directives;
        out.reserve(directives_in.len());
        for mut d in directives_in {
            if let Some(children) = d.block.as_mut() {
                self.expand(children, path)?;
            }
            if d.name != "include" {
                out.push(d);
                continue;
            }
            let at = IncludeAt {
                file: path,
                pos: d.pos,
            };
            if d.block.is_some() {
                return Err(ConfError::Syntax {
                    at: at.file_pos(),
                    reason: "directive \"include\" is not terminated by \";\"".into(),
                });
            }
            let target: Cow<Path> = match d.args.as_slice() {
                // an absolute path is its own target, as `join` would make it
                [arg] if arg.value.starts_with('/') => Cow::Borrowed(Path::new(arg.value.as_str())),
                [arg] => Cow::Owned(self.prefix.join(arg.value.as_str())),
                _ => {
                    return Err(ConfError::Syntax {
                        at: at.file_pos(),
                        reason: "invalid number of arguments in \"include\" directive".into(),
                    })
                }
            };
            let bytes = target.as_os_str().as_bytes();
            if !bytes.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) {
                let included = self.file(&target, Some(at))?;
                out.push(d);
                out.extend(included);
                continue;
            }
            let mut matches = self.fs.glob(&target).map_err(|e| ConfError::Glob {
                at: at.file_pos(),
                pattern: target.to_path_buf(),
                reason: io_reason(&e),
            })?;
            matches.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
            out.push(d);
            for m in matches {
                let included = self.file(&m, Some(at))?;
                out.extend(included);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(files: &[(&str, &str)]) -> MemFs {
        let mut fs = MemFs::new();
        for (p, t) in files {
            fs.insert(*p, *t);
        }
        fs
    }

    fn names(ds: &[Directive]) -> Vec<String> {
        ds.iter()
            .map(|d| match &d.block {
                Some(b) => format!("{}{{{}}}", d.name, names(b).join(" ")),
                None => d.name.to_string(),
            })
            .collect()
    }

    #[test]
    fn includes_expand_in_place_with_sorted_globs() {
        let fs = fs(&[
            (
                "/etc/nginx/nginx.conf",
                "a;\nhttp { include sites/*; b; }\ninclude /etc/nginx/last.conf;\n",
            ),
            ("/etc/nginx/sites/B", "sb;"),
            ("/etc/nginx/sites/a", "sa; include snip.conf;"),
            ("/etc/nginx/sites/.hidden", "hidden;"),
            ("/etc/nginx/sites/_x", "sx;"),
            ("/etc/nginx/snip.conf", "snip;"),
            ("/etc/nginx/last.conf", "last;"),
        ]);
        let c = load(Path::new("/etc/nginx/nginx.conf"), &fs).unwrap();
        assert_eq!(
            names(&c.directives),
            [
                "a",
                "http{include sb sx sa include snip b}",
                "include",
                "last"
            ]
        );
        let paths: Vec<_> = c.files.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/etc/nginx/nginx.conf",
                "/etc/nginx/sites/B",
                "/etc/nginx/sites/_x",
                "/etc/nginx/sites/a",
                "/etc/nginx/snip.conf",
                "/etc/nginx/last.conf",
            ]
        );
        let sa = &c.directives[1].children()[3];
        assert_eq!((sa.name.as_str(), sa.file), ("sa", 3));
    }

    #[test]
    fn a_file_included_twice_is_listed_once_but_appears_twice() {
        let fs = fs(&[
            ("/c/nginx.conf", "include x.conf; include x.conf;"),
            ("/c/x.conf", "x;"),
        ]);
        let c = load(Path::new("/c/nginx.conf"), &fs).unwrap();
        assert_eq!(c.files.len(), 2);
        assert_eq!(names(&c.directives), ["include", "x", "include", "x"]);
    }

    #[test]
    fn a_snippet_included_many_times_gives_what_parsing_it_gives() {
        let snippet = "a 1;\nb \"x y\" {\n  c;\n}\n";
        let fs = fs(&[
            (
                "/c/nginx.conf",
                "http {\n  include s.conf;\n  server {\n    include s.conf;\n    location / { include s.conf; include s.conf; }\n  }\n}\n",
            ),
            ("/c/s.conf", snippet),
        ]);
        let c = load(Path::new("/c/nginx.conf"), &fs).unwrap();
        let parsed = parse(Path::new("/c/s.conf"), snippet, 1).unwrap();
        let http = c.directives[0].children();
        let server = http[3].children();
        let location = server[3].children();
        for got in [&http[1..3], &server[1..3], &location[1..3], &location[4..6]] {
            assert_eq!(got, parsed.as_slice());
        }
        assert_eq!(c.files.len(), 2);
    }

    #[test]
    fn empty_glob_is_fine_missing_file_is_not() {
        let fs = fs(&[(
            "/c/nginx.conf",
            "include conf.d/*.conf;\ninclude  missing.conf;\n",
        )]);
        let err = load(Path::new("/c/nginx.conf"), &fs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "open() \"/c/missing.conf\" failed: No such file or directory (included from /c/nginx.conf:2:1)"
        );
        let err = load(Path::new("/c/none.conf"), &fs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "open() \"/c/none.conf\" failed: No such file or directory"
        );
    }

    #[test]
    fn cycles_are_refused() {
        let fs = fs(&[
            ("/c/nginx.conf", "http {\n  include a.conf;\n}\n"),
            ("/c/a.conf", "include b.conf;"),
            ("/c/b.conf", "\n\n   include /c/a.conf;"),
        ]);
        let err = load(Path::new("/c/nginx.conf"), &fs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/c/b.conf:3:4: include cycle: \"/c/a.conf\" -> \"/c/b.conf\" -> \"/c/a.conf\""
        );
    }

    #[test]
    fn include_needs_one_argument_and_no_block() {
        let fs = fs(&[("/c/nginx.conf", "include a b;")]);
        assert_eq!(
            load(Path::new("/c/nginx.conf"), &fs)
                .unwrap_err()
                .to_string(),
            "/c/nginx.conf:1:1: invalid number of arguments in \"include\" directive"
        );
        let fs = fs_one("include a {}");
        assert_eq!(
            load(Path::new("/c/nginx.conf"), &fs)
                .unwrap_err()
                .to_string(),
            "/c/nginx.conf:1:1: directive \"include\" is not terminated by \";\""
        );
    }

    fn fs_one(text: &str) -> MemFs {
        fs(&[("/c/nginx.conf", text)])
    }

    #[test]
    fn real_fs_reads_bytes_that_are_not_utf8_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        // a Latin-1 comment (`é` is 0xe9), then a directive after it
        std::fs::write(
            &path,
            b"# caf\xe9 \xff\xfe\nuser w\xe9b;\nworker_processes 2;\n",
        )
        .unwrap();
        let conf = load(&path, &RealFs).unwrap();
        assert_eq!(
            conf.files[0].text,
            "# caf? ??\nuser w?b;\nworker_processes 2;\n"
        );
        let [user, workers] = conf.directives.as_slice() else {
            panic!("{:?}", conf.directives)
        };
        assert_eq!((user.name.as_str(), user.arg(0)), ("user", Some("w?b")));
        assert_eq!(workers.span.start, 20, "offsets are the file's bytes");
        assert_eq!(workers.pos.line, 3);
        assert_eq!(text_of_bytes("é ok".as_bytes().to_vec()), "é ok");
        assert_eq!(
            text_of_bytes(b"\xe2\x82".to_vec()),
            "??",
            "a cut-off sequence"
        );
    }

    #[test]
    fn real_fs_reports_the_system_reason() {
        let err = load(Path::new("/nonexistent/nginx-medic/nginx.conf"), &RealFs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "open() \"/nonexistent/nginx-medic/nginx.conf\" failed: No such file or directory"
        );
    }
}
