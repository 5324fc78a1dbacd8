//! Builds the directive tree of one file from the lexer's statements; `include` is left as an
//! ordinary directive here (see `include.rs`).

use std::cell::Cell;
use std::path::Path;

use super::lexer::{LexError, Lexer, Stop, Word};
use super::{Arg, ConfError, Directive, FilePos, Pos, Span};

/// Blocks nested deeper than this are refused rather than risk the stack.
const MAX_DEPTH: usize = 100;

/// Maps byte offsets to 1-based line:col.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// The line of the last answer.
    hint: Cell<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        LineIndex {
            text,
            starts,
            hint: Cell::new(1),
        }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        // the parser asks in nearly increasing order: try the line of the last answer and the
        // next one before searching
        let hint = self.hint.get();
        let within = |line: usize| {
            line >= 1
                && self.starts.get(line - 1).is_some_and(|&s| s <= offset)
                && self.starts.get(line).map_or(true, |&next| offset < next)
        };
        let line = if within(hint) {
            hint
        } else if within(hint + 1) {
            hint + 1
        } else {
            self.starts.partition_point(|&s| s <= offset).max(1)
        };
        self.hint.set(line);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let col = match self.text.get(start..offset) {
            Some(s) if s.is_ascii() => s.len(),
            Some(s) => s.chars().count(),
            None => offset.saturating_sub(start),
        };
        Pos { line, col: col + 1 }
    }
}

struct Parser<'a> {
    path: &'a Path,
    text: &'a str,
    file: usize,
    lines: LineIndex<'a>,
    lexer: Lexer<'a>,
    /// The words of the statement being read, one buffer for all of them.
    words: Vec<Word>,
    /// The directives read so far of the blocks being read, innermost last.
    pending: Vec<Directive>,
}

/// Parses the text of one file into its directives, without expanding `include`.
///
/// `path` is only used in error messages; `file` is stored in every directive.
pub fn parse(path: &Path, text: &str, file: usize) -> Result<Vec<Directive>, ConfError> {
    let mut parser = Parser {
        path,
        text,
        file,
        lines: LineIndex::new(text),
        lexer: Lexer::new(text),
        words: Vec::new(),
        pending: Vec::new(),
    };
    let (directives, _) = parser.block(None, 0)?;
    Ok(directives)
}

impl Parser<'_> {
    fn at(&self, offset: usize) -> FilePos {
        FilePos {
            file: self.path.to_path_buf(),
            pos: self.lines.pos(offset),
        }
    }

    fn error(&self, offset: usize, reason: String) -> ConfError {
        ConfError::Syntax {
            at: self.at(offset),
            reason,
        }
    }

    fn lex_error(&self, e: LexError) -> ConfError {
        let eof = self.text.len();
        match e {
            LexError::Unexpected { at, ch } => self.error(at, format!("unexpected \"{ch}\"")),
            LexError::UnterminatedQuote { opened } => self.error(
                eof,
                format!(
                    "unterminated quoted string (opened at {})",
                    self.lines.pos(opened)
                ),
            ),
            LexError::UnexpectedEof { started } => self.error(
                eof,
                format!(
                    "unexpected end of file, expecting \";\" or \"}}\" (directive started at {})",
                    self.lines.pos(started)
                ),
            ),
        }
    }

    fn arg(&self, w: Word) -> Arg {
        Arg {
            span: Span {
                start: w.start,
                end: w.end,
            },
            pos: self.lines.pos(w.start),
            value: w.value,
        }
    }

    /// Parses directives up to the `}` closing the block opened by the directive at `opened`
    /// (or to the end of the text at the top level); returns them and the offset of that `}`.
    fn block(
        &mut self,
        opened: Option<usize>,
        depth: usize,
    ) -> Result<(Vec<Directive>, usize), ConfError> {
        // the directives of every open block stand on one stack, this block's from `base` on,
        // and move into a vector of their exact size when it closes
        let base = self.pending.len();
        loop {
            let end = self
                .lexer
                .next_into(&mut self.words)
                .map_err(|e| self.lex_error(e))?;
            let mut buffer = std::mem::take(&mut self.words);
            let mut words = buffer.drain(..);
            let name = words.next();
            let args: Vec<Arg> = words.map(|w| self.arg(w)).collect();
            self.words = buffer;
            match (name, end) {
                (_, Stop::BlockEnd(at)) => {
                    return match opened {
                        Some(_) => Ok((self.pending.split_off(base), at)),
                        None => Err(self.error(at, "unexpected \"}\"".to_string())),
                    }
                }
                (_, Stop::Eof) => {
                    return match opened {
                        None => Ok((self.pending.split_off(base), self.text.len())),
                        Some(o) => Err(self.error(
                            self.text.len(),
                            format!(
                                "unexpected end of file, expecting \"}}\" (block opened at {})",
                                self.lines.pos(o)
                            ),
                        )),
                    }
                }
                // the lexer never ends an empty statement with `;` or `{`
                (None, Stop::Semicolon(at)) => {
                    return Err(self.error(at, "unexpected \";\"".to_string()))
                }
                (None, Stop::BlockStart(at)) => {
                    return Err(self.error(at, "unexpected \"{\"".to_string()))
                }
                (Some(name), Stop::Semicolon(at)) => {
                    let start = name.start;
                    self.pending.push(Directive {
                        name: name.value,
                        args,
                        file: self.file,
                        span: Span { start, end: at + 1 },
                        pos: self.lines.pos(start),
                        block: None,
                    });
                }
                (Some(name), Stop::BlockStart(at)) => {
                    let start = name.start;
                    if depth >= MAX_DEPTH {
                        return Err(self.error(
                            at,
                            format!("blocks nested more than {MAX_DEPTH} levels deep"),
                        ));
                    }
                    let (children, close) = if name.value.ends_with("_by_lua_block") {
                        // OpenResty: the block holds Lua code, kept opaque
                        let close = self.lexer.skip_lua_block(start).map_err(|e| match e {
                            LexError::UnexpectedEof { .. } => self.error(
                                self.text.len(),
                                format!(
                                    "unexpected end of file, expecting \"}}\" (lua block opened at {})",
                                    self.lines.pos(start)
                                ),
                            ),
                            other => self.lex_error(other),
                        })?;
                        (Vec::new(), close)
                    } else {
                        self.block(Some(start), depth + 1)?
                    };
                    self.pending.push(Directive {
                        name: name.value,
                        args,
                        file: self.file,
                        span: Span {
                            start,
                            end: close + 1,
                        },
                        pos: self.lines.pos(start),
                        block: Some(children),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Directive>, String> {
        parse(Path::new("/etc/nginx/x.conf"), text, 0).map_err(|e| e.to_string())
    }

    #[test]
    fn positions_and_spans() {
        let text = "events {}\nhttp {\n\tserver {\n\t\tlisten 80;\n\t}\n}\n";
        let tree = p(text).unwrap();
        assert_eq!(tree.len(), 2);
        let http = &tree[1];
        assert_eq!(http.pos, Pos { line: 2, col: 1 });
        assert_eq!(
            &text[http.span.start..http.span.end],
            "http {\n\tserver {\n\t\tlisten 80;\n\t}\n}"
        );
        let listen = &http.children()[0].children()[0];
        assert_eq!(listen.pos, Pos { line: 4, col: 3 });
        assert_eq!(&text[listen.span.start..listen.span.end], "listen 80;");
        assert_eq!(listen.args[0].pos, Pos { line: 4, col: 10 });
        assert_eq!(listen.args[0].raw(text), Some("80"));
        assert_eq!(tree[0].block, Some(vec![]));
    }

    #[test]
    fn positions_do_not_depend_on_the_order_asked() {
        let text = "a é b\n\nxé;\n  yy;\n";
        let fresh = |o: usize| LineIndex::new(text).pos(o);
        let reused = LineIndex::new(text);
        let offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        for &o in offsets
            .iter()
            .chain(offsets.iter().rev())
            .chain([&3, &0, &12, &1])
        {
            assert_eq!(reused.pos(o), fresh(o), "offset {o}");
        }
        assert_eq!(fresh(text.find('y').unwrap()), Pos { line: 4, col: 3 });
        assert_eq!(fresh(text.find('b').unwrap()), Pos { line: 1, col: 5 });
    }

    #[test]
    fn columns_count_characters() {
        let tree = p("# é\nreturn 200 \"é\" x;").unwrap();
        assert_eq!(tree[0].args[2].pos, Pos { line: 2, col: 16 });
    }

    #[test]
    fn syntax_errors_name_file_line_col() {
        assert_eq!(
            p("http {\n  server {\n  }\n}\n}\n").unwrap_err(),
            "/etc/nginx/x.conf:5:1: unexpected \"}\""
        );
        assert_eq!(
            p("http {\n    server {\n").unwrap_err(),
            "/etc/nginx/x.conf:3:1: unexpected end of file, expecting \"}\" (block opened at 2:5)"
        );
        assert_eq!(
            p("http {\n    return 200 \"ok;\n}\n").unwrap_err(),
            "/etc/nginx/x.conf:4:1: unterminated quoted string (opened at 2:16)"
        );
        assert_eq!(
            p("user www-data").unwrap_err(),
            "/etc/nginx/x.conf:1:14: unexpected end of file, expecting \";\" or \"}\" (directive started at 1:1)"
        );
        assert_eq!(
            p("http {\n  listen 80 }\n").unwrap_err(),
            "/etc/nginx/x.conf:2:13: unexpected \"}\""
        );
        assert_eq!(
            p("  ;").unwrap_err(),
            "/etc/nginx/x.conf:1:3: unexpected \";\""
        );
        assert_eq!(
            p("{}").unwrap_err(),
            "/etc/nginx/x.conf:1:1: unexpected \"{\""
        );
    }

    #[test]
    fn lua_blocks_are_opaque() {
        // what lua-nginx-module reads as one Lua chunk: braces inside Lua strings, long strings
        // and comments, and Lua's own table braces, do not end the block
        let lua = r#"content_by_lua_block {
            local t = { a = "}", b = '{' }  -- a } in a comment
            local s = [==[ } ]] { ]==]
            --[[ } ]] ngx.say("x\"}")
            if t then ngx.say(s) end
        }"#;
        let text = format!("location / {{\n    {lua}\n    proxy_pass http://a;\n}}\n");
        let tree = p(&text).unwrap();
        let location = &tree[0];
        let [block, pass] = location.children() else {
            panic!("{:#?}", location.children())
        };
        assert_eq!(block.name, "content_by_lua_block");
        assert_eq!(block.block, Some(vec![]), "no nginx directives inside");
        assert_eq!(&text[block.span.start..block.span.end], lua);
        assert_eq!(
            (pass.name.as_str(), pass.arg(0)),
            ("proxy_pass", Some("http://a"))
        );
        // an argument before the block, as `set_by_lua_block $v { … }`
        let tree = p("set_by_lua_block $v { return ngx.var.a .. \"}\" }\nx y;").unwrap();
        assert_eq!(tree[0].arg(0), Some("$v"));
        assert_eq!(tree[1].name, "x");
        // an unclosed Lua block or string is an error with a place, not a panic
        assert_eq!(
            p("content_by_lua_block { ngx.say('x') ").unwrap_err(),
            "/etc/nginx/x.conf:1:37: unexpected end of file, expecting \"}\" (lua block opened at 1:1)"
        );
        assert!(p("content_by_lua_block { ngx.say('x) }")
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn quoting_follows_nginx() {
        let tree = p(concat!(
            "return 200 \"a;b#c\";\n",
            "add_header X 'it\\'s' always;\n",
            "set $v \"${host}x\";\n",
            "return 200 a\\;b;\n",
        ))
        .unwrap();
        assert_eq!(tree[0].arg(1), Some("a;b#c"), "`;` and `#` inside quotes");
        assert_eq!(tree[1].arg(1), Some("it's"));
        assert_eq!(tree[2].arg(1), Some("${host}x"));
        assert_eq!(
            tree[3].arg(1),
            Some("a\\;b"),
            "an escaped `;` does not end the word"
        );
        assert_eq!(tree.len(), 4);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = "a {".repeat(10_000);
        assert!(p(&text)
            .unwrap_err()
            .contains("nested more than 100 levels"));
    }
}
